"""The two symmetric primitives every sealed value in the project is made of, written once.

    derive(ikm, salt, info)        = HKDF-SHA256(ikm, salt, info), 32 bytes
    Aead(K).seal(P, A)             = N || AES-256-GCM(K, N, P, A)      N = 12 fresh random bytes
    Aead(K).open(N || C, A)        = P, or AuthenticationFailed

Used by the object format (sealed object keys, manifests: gateway/crypto), the key service's store
(wrapped secrets: keyservice/store.py) and its ciphertext blobs (keyservice/blob.py). Random nonces
are safe here because every key seals few messages (one object key, one manifest, one row); the
segment stream, which seals millions of segments under one key, builds its own nonces
(gateway/crypto/stream.py) and takes only `derive` from this module.
"""
from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE


class AuthenticationFailed(Exception):
    """A sealed value did not open: wrong key, wrong associated data, or altered bytes."""


def derive(ikm: bytes, *, salt: bytes | None, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256: a key for one purpose (``info``) from key material shared by several."""
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


class Aead:
    """AES-256-GCM under one key, each message with a fresh random nonce stored in front of it."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"an AES-256-GCM key is {KEY_SIZE} bytes, not {len(key)}")
        self._cipher = AESGCM(key)

    @classmethod
    def derived(cls, ikm: bytes, *, salt: bytes | None, info: bytes) -> "Aead":
        """The AEAD keyed by ``derive(ikm, salt, info)``."""
        return cls(derive(ikm, salt=salt, info=info))

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """nonce(12) || ciphertext || tag(16)."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._cipher.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of a value `seal` made under this key and ``aad``."""
        if len(sealed) < OVERHEAD:
            raise AuthenticationFailed(f"a sealed value is at least {OVERHEAD} bytes, not {len(sealed)}")
        try:
            return self._cipher.decrypt(bytes(sealed[:NONCE_SIZE]), bytes(sealed[NONCE_SIZE:]), aad)
        except InvalidTag:
            raise AuthenticationFailed("the sealed value failed authentication") from None
