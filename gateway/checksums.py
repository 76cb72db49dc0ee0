"""Checksums a client asks S3 to verify over a request body, computed over the plaintext.

The gateway must verify them itself (upstream only sees ciphertext) and must not forward them.
Only what was asked is hashed: MD5 and SHA-256 are the costliest per-byte steps of a PUT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import zlib
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from awscrt import checksums as crt

from gateway.s3errors import S3Error, bad_digest, invalid_digest, invalid_request, malformed_trailer

ALGORITHMS: tuple[str, ...] = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
CHECKSUM_HEADER_PREFIX = "x-amz-checksum-"
DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_DISPLAY_NAMES = {"crc32": "CRC32", "crc32c": "CRC32C", "crc64nvme": "CRC64NVME", "sha1": "SHA1", "sha256": "SHA256"}
_HEX64 = frozenset("0123456789abcdef")

# Request headers about body integrity, all consumed by the gateway and never sent upstream.
STRIPPED_HEADERS: frozenset[str] = frozenset(
    {CHECKSUM_HEADER_PREFIX + a for a in ALGORITHMS}
    | {"content-md5", "x-amz-sdk-checksum-algorithm", "x-amz-trailer"}
)


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...
    def digest(self) -> bytes: ...
    def b64digest(self) -> str: ...


class _CrcHasher:
    """A running CRC from awscrt, rendered big-endian as S3 does."""

    def __init__(self, fn: Callable[[bytes, int], int], size: int) -> None:
        self._fn = fn
        self._size = size
        self._state = 0

    def update(self, data: bytes) -> None:
        self._state = self._fn(data, self._state)

    def digest(self) -> bytes:
        return self._state.to_bytes(self._size, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode()


class _HashlibHasher:
    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode()


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for one of ALGORITHMS (or "md5")."""
    if algorithm == "crc32":
        return _CrcHasher(zlib.crc32, 4)  # zlib's is faster than awscrt's here (~1.7 vs ~1.1 GB/s)
    if algorithm == "crc32c":
        return _CrcHasher(crt.crc32c, 4)
    if algorithm == "crc64nvme":
        return _CrcHasher(crt.crc64nvme, 8)
    if algorithm in ("sha1", "sha256", "md5"):
        return _HashlibHasher(algorithm)
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def _decode_checksum(algorithm: str, value: str, where: str) -> bytes:
    """Validate a base64 checksum value: it must decode to exactly the algorithm's size."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != DIGEST_SIZES[algorithm]:
        raise invalid_request(f"Value for x-amz-checksum-{algorithm} {where} is invalid.")
    return raw


def _flexible_algorithms(headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """(algorithm, header value, or None when the value comes in a trailer) of the single
    flexible checksum the client sent; (None, None, None) when it sent none."""
    in_header = [a for a in ALGORITHMS if headers.get(CHECKSUM_HEADER_PREFIX + a) is not None]
    trailer_names = [n.strip().lower() for n in headers.get("x-amz-trailer", "").split(",") if n.strip()]
    in_trailer = []
    for name in trailer_names:
        algorithm = name.removeprefix(CHECKSUM_HEADER_PREFIX)
        if not name.startswith(CHECKSUM_HEADER_PREFIX) or algorithm not in ALGORITHMS:
            raise invalid_request(f"The value specified in the x-amz-trailer header is not supported: {name}")
        in_trailer.append(algorithm)
    chosen = in_header + in_trailer
    if len(chosen) > 1:
        raise invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    sdk = headers.get("x-amz-sdk-checksum-algorithm")
    if sdk is not None and (not chosen or sdk.strip().lower() != chosen[0]):
        raise invalid_request(
            "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* "
            "or x-amz-trailer headers were found."
        )
    if not chosen:
        return None, None, None
    algorithm = chosen[0]
    return algorithm, headers.get(CHECKSUM_HEADER_PREFIX + algorithm), algorithm if in_trailer else None


def sent_algorithm(headers: Mapping[str, str]) -> str | None:
    """The flexible checksum algorithm a request names for its body (in a header or a trailer), or None;
    S3's InvalidRequest for contradictory ones."""
    return _flexible_algorithms(headers)[0]


class BodyChecks:
    """Everything a client asked us to verify over the plaintext body: an x-amz-checksum-<alg>
    header, a checksum announced in X-Amz-Trailer (its value arrives in the trailer),
    Content-MD5, and a hex X-Amz-Content-SHA256. Also computes what the gateway itself needs
    (`want_md5` for ETags, `also_compute` for checksums it stores) in the same pass."""

    header_names_to_strip: frozenset[str] = STRIPPED_HEADERS

    def __init__(self) -> None:
        self._hashers: dict[str, Hasher] = {}
        self._echoed: frozenset[str] = frozenset()
        self._flexible: str | None = None
        self._flexible_expected: bytes | None = None
        self._trailer_name: str | None = None
        self._md5_expected: bytes | None = None
        self._sha256_expected: str | None = None
        self.md5_hex: str | None = None  # set by finish() when MD5 was computed

    @classmethod
    def from_headers(
        cls,
        headers: Mapping[str, str],
        payload_hash: str | None,
        *,
        want_md5: bool = False,
        also_compute: Collection[str] = (),
    ) -> BodyChecks:
        """Raise S3Error InvalidRequest/InvalidDigest for malformed or contradictory values."""
        checks = cls()
        algorithm, value, trailer_algorithm = _flexible_algorithms(headers)
        if algorithm is not None:
            checks._flexible = algorithm
            if trailer_algorithm is not None:
                checks._trailer_name = CHECKSUM_HEADER_PREFIX + algorithm
            else:
                assert value is not None
                checks._flexible_expected = _decode_checksum(algorithm, value, "header")
        md5 = headers.get("content-md5")
        if md5 is not None:
            checks._md5_expected = _decode_md5(md5)
        if payload_hash is not None and len(payload_hash) == 64 and set(payload_hash) <= _HEX64:
            checks._sha256_expected = payload_hash
        checks._echoed = frozenset(also_compute) | ({algorithm} if algorithm else frozenset())
        wanted = set(checks._echoed)
        if checks._sha256_expected is not None:
            wanted.add("sha256")
        if want_md5 or checks._md5_expected is not None:
            wanted.add("md5")
        checks._hashers = {name: new_hasher(name) for name in sorted(wanted)}
        return checks

    @property
    def announced(self) -> tuple[str, bytes] | None:
        """(algorithm, digest) of the flexible checksum the client sent in a header: known before the body,
        so it can be stored with the object (a trailer's value arrives after the body's last byte)."""
        if self._flexible is None or self._flexible_expected is None:
            return None
        return self._flexible, self._flexible_expected

    @property
    def trailer_algorithm(self) -> str | None:
        """The algorithm of a checksum announced for a trailer, or None."""
        return self._flexible if self._trailer_name is not None else None

    @classmethod
    def computing(cls, algorithms: Collection[str]) -> "BodyChecks":
        """No client checksum to verify; ``algorithms`` computed over the body (a copied part's)."""
        checks = cls()
        checks._echoed = frozenset(algorithms)
        checks._hashers = {name: new_hasher(name) for name in sorted(algorithms)}
        return checks

    @property
    def trailer_names(self) -> tuple[str, ...]:
        """Trailer header names the aws-chunked decoder must find."""
        return (self._trailer_name,) if self._trailer_name else ()

    def update(self, data: bytes) -> None:
        for hasher in self._hashers.values():
            hasher.update(data)

    def finish(self, trailers: Mapping[str, str]) -> dict[str, str]:
        """Verify everything asked for; return `{"x-amz-checksum-<alg>": b64}` for every
        flexible checksum computed (the client's, verified, plus `also_compute`)."""
        digests = {name: hasher.digest() for name, hasher in self._hashers.items()}
        if "md5" in digests:
            self.md5_hex = digests["md5"].hex()
        self._check_sha256(digests)
        self._check_md5(digests)
        self._check_flexible(digests, trailers)
        return {
            CHECKSUM_HEADER_PREFIX + name: base64.b64encode(digest).decode()
            for name, digest in digests.items()
            if name in self._echoed
        }

    def _check_sha256(self, digests: Mapping[str, bytes]) -> None:
        if self._sha256_expected is None:
            return
        computed = digests["sha256"].hex()
        if not hmac.compare_digest(computed, self._sha256_expected):
            raise S3Error(
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
                400,
                ClientComputedContentSHA256=self._sha256_expected,
                S3ComputedContentSHA256=computed,
            )

    def _check_md5(self, digests: Mapping[str, bytes]) -> None:
        if self._md5_expected is not None and not hmac.compare_digest(digests["md5"], self._md5_expected):
            err = bad_digest()
            err.fields.update(
                ExpectedDigest=self._md5_expected.hex(),
                CalculatedDigest=base64.b64encode(digests["md5"]).decode(),
            )
            raise err

    def _check_flexible(self, digests: Mapping[str, bytes], trailers: Mapping[str, str]) -> None:
        if self._flexible is None:
            return
        expected = self._flexible_expected
        if self._trailer_name is not None:
            value = trailers.get(self._trailer_name)
            if value is None:
                raise malformed_trailer()
            expected = _decode_checksum(self._flexible, value, "trailing header")
        assert expected is not None
        if not hmac.compare_digest(digests[self._flexible], expected):
            raise bad_digest(
                f"The {_DISPLAY_NAMES[self._flexible]} you specified did not match the calculated checksum."
            )


def _decode_md5(value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise invalid_digest()
    return raw

