"""The gateway's own keys in every bucket (multipart manifests, the bucket state), out of the clients' reach.

A client that could read, write or delete them could not forge a manifest (it is sealed), but it
could delete one and make an object unreadable, so every path that names a key checks it here.
"""
from __future__ import annotations

from gateway.s3errors import S3Error, access_denied

RESERVED_KEY_PREFIX = ".s3gw/"
MANIFEST_PREFIX = RESERVED_KEY_PREFIX + "manifests/"


def is_reserved_key(key: str) -> bool:
    return key.startswith(RESERVED_KEY_PREFIX)


def refuse_reserved_key(key: str) -> None:
    """403 AccessDenied for a key under the reserved prefix."""
    if is_reserved_key(key):
        raise reserved_key_denied()


def reserved_key_denied() -> S3Error:
    return access_denied(f"Keys under {RESERVED_KEY_PREFIX} are reserved by the gateway.")
