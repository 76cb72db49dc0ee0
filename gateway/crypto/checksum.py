"""An object's plaintext checksum, as S3 reports it with ``x-amz-checksum-mode: ENABLED``, sealed under the
object's key.

S3 keeps one checksum per object (FULL_OBJECT: over all its bytes; COMPOSITE: over the parts' checksums, shown
as ``value-N``). The upstream only ever sees ciphertext, so its own checksums are useless to clients, and a
plaintext checksum stored in the clear would let whoever reads the upstream confirm a guess of the content
(a SHA-256 of a known document). So it is sealed, as MinIO seals its checksums under the object key:

    CK     = HKDF(OK, none, "s3gw/v1/checksum")
    sealed = nonce(12) || GCM(CK, nonce, alg(1) || kind(1) || BE16(parts) || digest, A = "s3gw/v1/checksum")

stored in the metadata header ``x-amz-meta-x-gw-h`` (single-stream objects, whose checksum is known when the
upload starts) or inside the sealed manifest (multipart objects, whose checksum is known at Complete);
docs/FORMAT.md §7. ``alg`` is the index in ALGORITHMS; ``kind`` 0 = FULL_OBJECT, 1 = COMPOSITE; ``parts`` the
part count of a composite checksum (0 otherwise).
"""
from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Sequence

from awscrt import checksums as crt

from common.aead import AuthenticationFailed
from gateway.checksums import ALGORITHMS, DIGEST_SIZES, new_hasher
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import IntegrityError

FULL_OBJECT = "FULL_OBJECT"
COMPOSITE = "COMPOSITE"
KINDS = (FULL_OBJECT, COMPOSITE)
# S3's rules for multipart uploads: CRCs combine into a full-object checksum; SHAs only compose (CRC64NVME
# only combines).
FULL_OBJECT_ALGORITHMS = frozenset({"crc32", "crc32c", "crc64nvme"})
COMPOSITE_ALGORITHMS = frozenset({"crc32", "crc32c", "sha1", "sha256"})
_COMBINE = {"crc32": crt.combine_crc32, "crc32c": crt.combine_crc32c, "crc64nvme": crt.combine_crc64nvme}
_HEAD = struct.Struct(">BBH")
_INFO = b"s3gw/v1/checksum"
_AAD = b"s3gw/v1/checksum"


def default_kind(algorithm: str) -> str:
    """The checksum type S3 gives a multipart upload that names only an algorithm."""
    return FULL_OBJECT if algorithm == "crc64nvme" else COMPOSITE


@dataclass(frozen=True)
class ObjectChecksum:
    """One object's checksum: algorithm (one of ALGORITHMS), kind, digest, and part count when composite."""

    algorithm: str
    kind: str
    digest: bytes
    parts: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in DIGEST_SIZES or len(self.digest) != DIGEST_SIZES[self.algorithm]:
            raise ValueError(f"not a {self.algorithm} digest")
        # Any algorithm is FULL_OBJECT over a single-stream object; only a multipart upload restricts it.
        if self.kind not in KINDS or (self.kind == COMPOSITE and self.algorithm not in COMPOSITE_ALGORITHMS):
            raise ValueError(f"a {self.algorithm} checksum cannot be {self.kind}")
        if (self.kind == COMPOSITE) != (self.parts > 0):
            raise ValueError("a composite checksum, and only one, has a part count")

    @property
    def value(self) -> str:
        """As S3 shows it: base64 of the digest, ``-N`` after a composite one."""
        encoded = base64.b64encode(self.digest).decode()
        return f"{encoded}-{self.parts}" if self.kind == COMPOSITE else encoded

    @property
    def header(self) -> str:
        return f"x-amz-checksum-{self.algorithm}"

    @property
    def element(self) -> str:
        """The XML element naming it (ChecksumCRC32 ...)."""
        return "Checksum" + self.algorithm.upper()

    def encode(self) -> bytes:
        return _HEAD.pack(ALGORITHMS.index(self.algorithm), KINDS.index(self.kind), self.parts) + self.digest

    @classmethod
    def decode(cls, raw: bytes) -> "ObjectChecksum":
        if len(raw) < _HEAD.size:
            raise IntegrityError("a stored checksum is too short")
        algorithm, kind, parts = _HEAD.unpack_from(raw)
        if algorithm >= len(ALGORITHMS) or kind >= len(KINDS):
            raise IntegrityError("a stored checksum names an unknown algorithm or type")
        try:
            return cls(ALGORITHMS[algorithm], KINDS[kind], raw[_HEAD.size:], parts)
        except ValueError as exc:
            raise IntegrityError(f"malformed stored checksum: {exc}") from None


def seal_checksum(object_key: ObjectKey, checksum: ObjectChecksum) -> bytes:
    return object_key.aead(_INFO).seal(checksum.encode(), _AAD)


def open_checksum(object_key: ObjectKey, sealed: bytes) -> ObjectChecksum:
    """The checksum ``seal_checksum`` sealed under this object's key; IntegrityError otherwise."""
    try:
        raw = object_key.aead(_INFO).open(sealed, _AAD)
    except AuthenticationFailed:
        raise IntegrityError("the stored checksum failed authentication") from None
    return ObjectChecksum.decode(raw)


def combined(algorithm: str, kind: str, parts: Sequence[tuple[bytes, int]]) -> ObjectChecksum:
    """The object's checksum from its parts' (digest, plaintext size), in part order: a FULL_OBJECT CRC is
    the parts' CRCs combined (as if computed over all the bytes; awscrt's combine), a COMPOSITE one the
    algorithm over the concatenated part digests, with the part count."""
    if kind == COMPOSITE:
        hasher = new_hasher(algorithm)
        for digest, _ in parts:
            hasher.update(digest)
        return ObjectChecksum(algorithm, COMPOSITE, hasher.digest(), len(parts))
    combine = _COMBINE[algorithm]
    size = DIGEST_SIZES[algorithm]
    state = 0
    for digest, length in parts:
        state = combine(state, int.from_bytes(digest, "big"), length)
    return ObjectChecksum(algorithm, FULL_OBJECT, state.to_bytes(size, "big"))
