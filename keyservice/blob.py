"""The symmetric ciphertext blob returned by Encrypt / GenerateDataKey (format in docs/KMS-BLOB.md).

    version (1 byte, 0x01) | key id (16 bytes, UUID) | backing key id (16 bytes) | nonce (12 bytes)
    | AES-256-GCM ciphertext + 16-byte tag

AAD = the 33-byte header (version, key id, backing key id) followed by the canonical encryption
context (JSON, keys sorted, no whitespace, UTF-8; empty context = empty bytes).
"""

import functools
import json
import uuid
from dataclasses import dataclass

from common.aead import OVERHEAD, Aead, AuthenticationFailed

from .errors import KMSError

VERSION = 1
_HEADER_LEN = 1 + 16 + 16
MIN_BLOB_LEN = _HEADER_LEN + OVERHEAD  # header || nonce(12) || tag(16): what Aead.seal puts after the header


@dataclass(frozen=True)
class BlobHeader:
    """What can be read from a blob before decrypting it: which key and which key version."""

    key_id: str
    backing_id: str
    raw: bytes


def canonical_context(context: dict[str, str] | None) -> bytes:
    """The encryption context as bound into the AAD: sorted-key compact JSON, or b'' when empty."""
    if not context:
        return b""
    return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@functools.lru_cache(maxsize=1024)
def _header_bytes(key_id: str, backing_id: str) -> bytes:
    """The 33-byte header of a key version; cached, as UUID parsing was a hot-path cost."""
    return bytes([VERSION]) + uuid.UUID(key_id).bytes + bytes.fromhex(backing_id)


@functools.lru_cache(maxsize=1024)
def _header_of(raw: bytes) -> BlobHeader:
    """The identity in a raw 33-byte header; cached for the same reason as ``_header_bytes``."""
    return BlobHeader(str(uuid.UUID(bytes=raw[1:17])), raw[17:33].hex(), raw)


def seal(aead: Aead, key_id: str, backing_id: str, plaintext: bytes, context: bytes) -> bytes:
    """Encrypt plaintext under one backing key; `context` is `canonical_context(...)`.

    The header goes in front of ``Aead.seal``'s nonce || ciphertext || tag and into its AAD, so the
    key identity a reader trusts to pick the key is authenticated too."""
    header = _header_bytes(key_id, backing_id)
    return header + aead.seal(plaintext, header + context)


def parse_header(blob: bytes) -> BlobHeader:
    """Read the key identity from a blob; anything malformed is InvalidCiphertextException."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < MIN_BLOB_LEN or blob[0] != VERSION:
        raise invalid_ciphertext()
    return _header_of(bytes(blob[:_HEADER_LEN]))


def open_blob(aead: Aead, blob: bytes, header: BlobHeader, context: bytes) -> bytes:
    """Decrypt a blob whose header was parsed; a wrong context or tampering fails authentication."""
    try:
        return aead.open(bytes(blob[_HEADER_LEN:]), header.raw + context)
    except AuthenticationFailed as exc:
        raise invalid_ciphertext() from exc


def invalid_ciphertext() -> KMSError:
    return KMSError("InvalidCiphertextException", "The ciphertext is invalid or was not produced by this service.")
