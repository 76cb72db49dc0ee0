"""The symmetric ciphertext blob returned by Encrypt / GenerateDataKey (format in docs/KMS-BLOB.md).

    version (1 byte) | key id (16 bytes, UUID) | backing key id (16 bytes) | nonce (12 bytes)
    | AES-256-GCM ciphertext + 16-byte tag

The version byte also says where the backing key lives: 0x01 in the key store (wrapped by the root
key), 0x02 in a custom key store's PKCS#11 token (AES-GCM computed by the token), 0x03 in the key store for a
multi-region key, whose id ``mrk-`` + 32 hex digits is stored as those 16 bytes (keyservice/multiregion.py).
Same layout, same AAD.

AAD = the 33-byte header (version, key id, backing key id) followed by the canonical encryption
context (JSON, keys sorted, no whitespace, UTF-8; empty context = empty bytes).
"""

import functools
import json
import uuid
from dataclasses import dataclass

from common.aead import OVERHEAD, Aead, AuthenticationFailed

from .errors import KMSError

VERSION = 1  # the backing key is in the key store
TOKEN_VERSION = 2  # the backing key is in a custom key store's token (keyservice/customkeystores.py)
MRK_VERSION = 3  # the backing key is in the key store; the key id is a multi-region key's mrk- id
VERSIONS = frozenset({VERSION, TOKEN_VERSION, MRK_VERSION})
MRK_PREFIX = "mrk-"
_HEADER_LEN = 1 + 16 + 16
MIN_BLOB_LEN = _HEADER_LEN + OVERHEAD  # header || nonce(12) || tag(16): what Aead.seal puts after the header


@dataclass(frozen=True)
class BlobHeader:
    """What can be read from a blob before decrypting it: which key and which key version."""

    key_id: str
    backing_id: str
    raw: bytes

    @property
    def version(self) -> int:
        return self.raw[0]


def canonical_context(context: dict[str, str] | None) -> bytes:
    """The encryption context as bound into the AAD: sorted-key compact JSON, or b'' when empty."""
    if not context:
        return b""
    return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@functools.lru_cache(maxsize=1024)
def _header_bytes(key_id: str, backing_id: str, version: int = VERSION) -> bytes:
    """The 33-byte header of a key version; cached, as UUID parsing was a hot-path cost."""
    id_bytes = bytes.fromhex(key_id[4:]) if version == MRK_VERSION else uuid.UUID(key_id).bytes
    return bytes([version]) + id_bytes + bytes.fromhex(backing_id)


@functools.lru_cache(maxsize=1024)
def _header_of(raw: bytes) -> BlobHeader:
    """The identity in a raw 33-byte header; cached for the same reason as ``_header_bytes``."""
    key_id = MRK_PREFIX + raw[1:17].hex() if raw[0] == MRK_VERSION else str(uuid.UUID(bytes=raw[1:17]))
    return BlobHeader(key_id, raw[17:33].hex(), raw)


def seal(aead: Aead, key_id: str, backing_id: str, plaintext: bytes, context: bytes,
         version: int = VERSION) -> bytes:
    """Encrypt plaintext under one backing key; `context` is `canonical_context(...)`; ``aead`` is an
    ``Aead`` (``version`` VERSION) or a token key with its seal/open (TOKEN_VERSION).

    The header goes in front of ``Aead.seal``'s nonce || ciphertext || tag and into its AAD, so the
    key identity a reader trusts to pick the key is authenticated too."""
    header = _header_bytes(key_id, backing_id, version)
    return header + aead.seal(plaintext, header + context)


def parse_header(blob: bytes) -> BlobHeader:
    """Read the key identity from a blob; anything malformed is InvalidCiphertextException."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < MIN_BLOB_LEN or blob[0] not in VERSIONS:
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
