"""Loading the root key that wraps every secret in the key store; it is never stored in the database."""

import base64
import binascii
import logging
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from common.files import create_once

ROOT_KEY_BYTES = 32
_SALT_FILE = "root.salt"
_GENERATED_FILE = "root.key"
log = logging.getLogger(__name__)


def load_root_key(*, key_file: str | None, env_value: str | None, passphrase: str | None,
                  data_dir: Path) -> bytes:
    """Return the 32-byte root key from the first source given: key file, env value, passphrase.

    With none, a key is generated in `data_dir/root.key` (mode 0600) and a loud development-only
    warning is emitted, because such a key sits next to the data it protects.
    """
    if key_file:
        try:
            raw = Path(key_file).read_bytes()
        except OSError as exc:
            raise ValueError(f"root key file {key_file} (root_key_file, KEYSERVICE_ROOT_KEY_FILE) cannot be read: "
                             f"{exc.strerror}") from None
        return decode_root_key(raw, f"root key file {key_file}")
    if env_value:
        return decode_root_key(env_value.encode(), "root key environment value")
    if passphrase:
        return _derive_from_passphrase(passphrase, Path(data_dir))
    return _generated_dev_key(Path(data_dir))


def decode_root_key(raw: bytes, where: str) -> bytes:
    """Accept raw 32 bytes, or 32 bytes as base64 or hex text."""
    if len(raw) == ROOT_KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (binascii.unhexlify, lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == ROOT_KEY_BYTES:
            return key
    raise ValueError(f"{where} must hold 32 bytes: raw, hex or base64")


def _derive_from_passphrase(passphrase: str, data_dir: Path) -> bytes:
    """scrypt the passphrase with a per-deployment salt kept (not secret) in the data directory."""
    salt, _ = create_once(data_dir / _SALT_FILE, lambda: os.urandom(16), size=16)
    kdf = Scrypt(salt=salt, length=ROOT_KEY_BYTES, n=2**15, r=8, p=1)
    return kdf.derive(passphrase.encode())


def _generated_dev_key(data_dir: Path) -> bytes:
    """Create (or reuse) data_dir/root.key (0600, created whole even when processes race),
    warning loudly that this is not for production."""
    path = data_dir / _GENERATED_FILE
    warning = (f"WARNING: no root key configured; using a generated key in {path}. "
               "This is for DEVELOPMENT ONLY: the key is stored next to the data it protects.")
    log.warning(warning)
    if not log.hasHandlers():  # no logging configured (a library caller): still say it, once
        print(warning, file=sys.stderr)
    key, _ = create_once(path, lambda: os.urandom(ROOT_KEY_BYTES), size=ROOT_KEY_BYTES)
    return decode_root_key(key, str(path))
