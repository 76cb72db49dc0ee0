"""OK, the random key of one object (of one upload, for multipart objects), as a type.

The raw 32 bytes never travel through the gateway as ``bytes``: callers hold an ObjectKey, and only
the format code derives from it (segment keys, the manifest key) or seals it under a key-encryption
key. A stale or mixed-up key cannot be passed where another kind of bytes is expected, and it never
shows in a repr or a log line.
"""
from __future__ import annotations

import hashlib
import hmac
import os

from common.aead import Aead, AuthenticationFailed, derive

OBJECT_KEY_SIZE = 32


class ObjectKey:
    """A per-object data encryption key (docs/FORMAT.md §1, OK)."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != OBJECT_KEY_SIZE:
            raise ValueError(f"an object key is {OBJECT_KEY_SIZE} bytes, not {len(raw)}")
        self._key = bytes(raw)

    @classmethod
    def generate(cls) -> "ObjectKey":
        return cls(os.urandom(OBJECT_KEY_SIZE))

    def derive(self, *, salt: bytes | None, info: bytes) -> bytes:
        """HKDF-SHA256(OK, salt, info): a key for one stream or one purpose."""
        return derive(self._key, salt=salt, info=info)

    def aead(self, info: bytes) -> Aead:
        """The nonce||GCM AEAD keyed by HKDF(OK, none, info) (the manifest's)."""
        return Aead.derived(self._key, salt=None, info=info)

    def seal(self, kek: Aead, aad: bytes) -> bytes:
        """n_s || GCM(KEK, n_s, OK, aad): the form stored in the object's metadata."""
        return kek.seal(self._key, aad)

    @classmethod
    def unseal(cls, kek: Aead, sealed: bytes, aad: bytes) -> "ObjectKey":
        """The key `seal` sealed; AuthenticationFailed for a wrong KEK, aad or altered bytes."""
        raw = kek.open(sealed, aad)
        if len(raw) != OBJECT_KEY_SIZE:
            raise AuthenticationFailed("the sealed object key has the wrong length")
        return cls(raw)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the key: names it in caches without keeping it there."""
        return hashlib.sha256(self._key).digest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectKey) and hmac.compare_digest(other._key, self._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return "ObjectKey(<secret>)"
