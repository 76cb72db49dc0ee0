"""The gateway secret: 32 bytes keying SSE-C check values, upload tokens and bucket-state records."""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

from common.files import create_once
from gateway.config import ConfigError

log = logging.getLogger("gateway")
SECRET_SIZE = 32


def load_gateway_secret(path: Path) -> bytes:
    """The secret at ``path``, generated on first start.

    Several gateways may start at once on an empty data directory: the secret is created whole
    (temporary file, then linked into place; created exclusively in place where the file system has no
    hard links, readers then waiting for all 32 bytes) and every process that loses the race uses the
    winner's, as they must share it."""
    secret, created = create_once(path, lambda: secrets.token_bytes(SECRET_SIZE), size=SECRET_SIZE)
    if len(secret) != SECRET_SIZE:
        raise ConfigError(f"gateway secret file {path} must hold exactly {SECRET_SIZE} bytes, it holds {len(secret)}")
    if created:
        log.warning("generated a new gateway secret in %s; keep it: SSE-C objects need it", path)
    return secret
