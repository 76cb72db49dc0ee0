"""Body checksum verification: values cross-checked against botocore's own checksum classes."""

from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.httpchecksum import (CrtCrc32cChecksum, CrtCrc32Checksum, CrtCrc64NvmeChecksum,
                                   Sha1Checksum, Sha256Checksum)
from multidict import CIMultiDict

from gateway.checksums import ALGORITHMS, BodyChecks, new_hasher
from gateway.s3errors import S3Error

BODY = b"The quick brown fox jumps over the lazy dog" * 1000
BOTOCORE = {"crc32": CrtCrc32Checksum, "crc32c": CrtCrc32cChecksum, "crc64nvme": CrtCrc64NvmeChecksum,
            "sha1": Sha1Checksum, "sha256": Sha256Checksum}


def botocore_b64(algorithm: str, data: bytes) -> str:
    checksum = BOTOCORE[algorithm]()
    checksum.update(data)
    return checksum.b64digest()


def run(checks: BodyChecks, data: bytes = BODY, trailers: dict | None = None, piece: int = 777) -> dict:
    for i in range(0, len(data), piece):
        checks.update(data[i:i + piece])
    return checks.finish(trailers or {})


def expect(code: str, status: int, fn, *args, **kw) -> S3Error:
    with pytest.raises(S3Error) as info:
        fn(*args, **kw)
    assert (info.value.code, info.value.status) == (code, status)
    return info.value


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_incremental_hasher_matches_botocore(algorithm):
    hasher = new_hasher(algorithm)
    for i in range(0, len(BODY), 1000):
        hasher.update(BODY[i:i + 1000])
    assert hasher.b64digest() == botocore_b64(algorithm, BODY)


def test_empty_crc32_is_all_zero():
    assert new_hasher("crc32").b64digest() == "AAAAAA=="


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_correct_header_checksum_is_returned_for_echo(algorithm):
    value = botocore_b64(algorithm, BODY)
    checks = BodyChecks.from_headers(CIMultiDict({f"x-amz-checksum-{algorithm}": value}), None)
    assert run(checks) == {f"x-amz-checksum-{algorithm}": value}


@pytest.mark.parametrize("algorithm, name", [("crc32", "CRC32"), ("crc32c", "CRC32C"), ("sha256", "SHA256")])
def test_wrong_header_checksum_is_bad_digest(algorithm, name):
    value = botocore_b64(algorithm, b"other")
    checks = BodyChecks.from_headers(CIMultiDict({f"x-amz-checksum-{algorithm}": value}), None)
    err = expect("BadDigest", 400, run, checks)
    assert err.message == f"The {name} you specified did not match the calculated checksum."


def test_trailer_checksum_is_verified_from_trailers():
    value = botocore_b64("crc32", BODY)
    headers = CIMultiDict({"X-Amz-Trailer": "x-amz-checksum-crc32", "x-amz-sdk-checksum-algorithm": "CRC32"})
    checks = BodyChecks.from_headers(headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert checks.trailer_names == ("x-amz-checksum-crc32",)
    assert run(checks, trailers={"x-amz-checksum-crc32": value}) == {"x-amz-checksum-crc32": value}


def test_wrong_trailer_checksum_is_bad_digest():
    checks = BodyChecks.from_headers(CIMultiDict({"X-Amz-Trailer": "x-amz-checksum-crc32"}), None)
    expect("BadDigest", 400, run, checks, trailers={"x-amz-checksum-crc32": "AAAAAA=="})


def test_missing_trailer_value_is_malformed_trailer():
    checks = BodyChecks.from_headers(CIMultiDict({"X-Amz-Trailer": "x-amz-checksum-crc32"}), None)
    expect("MalformedTrailerError", 400, run, checks, trailers={})


def test_malformed_trailer_value_is_invalid_request():
    checks = BodyChecks.from_headers(CIMultiDict({"X-Amz-Trailer": "x-amz-checksum-crc32"}), None)
    expect("InvalidRequest", 400, run, checks, trailers={"x-amz-checksum-crc32": "!!"})


def test_unsupported_trailer_name_is_invalid_request():
    expect("InvalidRequest", 400, BodyChecks.from_headers, CIMultiDict({"X-Amz-Trailer": "x-foo"}), None)


def test_two_checksum_headers_are_invalid_request():
    headers = CIMultiDict({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-crc32c": "AAAAAA=="})
    expect("InvalidRequest", 400, BodyChecks.from_headers, headers, None)


def test_header_and_trailer_checksum_together_are_invalid_request():
    headers = CIMultiDict({"x-amz-checksum-crc32": "AAAAAA==", "X-Amz-Trailer": "x-amz-checksum-sha1"})
    expect("InvalidRequest", 400, BodyChecks.from_headers, headers, None)


@pytest.mark.parametrize("value", ["AAAA", "not base64!", "AAAAAAAA"])
def test_malformed_checksum_header_is_invalid_request(value):
    expect("InvalidRequest", 400, BodyChecks.from_headers, CIMultiDict({"x-amz-checksum-crc32": value}), None)


def test_sdk_algorithm_without_checksum_is_invalid_request():
    headers = CIMultiDict({"x-amz-sdk-checksum-algorithm": "CRC32"})
    expect("InvalidRequest", 400, BodyChecks.from_headers, headers, None)


def test_correct_content_md5_passes_and_exposes_md5_hex():
    md5 = hashlib.md5(BODY)
    checks = BodyChecks.from_headers(CIMultiDict({"Content-MD5": base64.b64encode(md5.digest()).decode()}), None)
    assert run(checks) == {}
    assert checks.md5_hex == md5.hexdigest()


def test_wrong_content_md5_is_bad_digest():
    headers = CIMultiDict({"Content-MD5": base64.b64encode(hashlib.md5(b"x").digest()).decode()})
    expect("BadDigest", 400, run, BodyChecks.from_headers(headers, None))


@pytest.mark.parametrize("value", ["abc", base64.b64encode(b"short").decode(), "%%%"])
def test_malformed_content_md5_is_invalid_digest(value):
    expect("InvalidDigest", 400, BodyChecks.from_headers, CIMultiDict({"Content-MD5": value}), None)


def test_hex_payload_hash_is_verified():
    good = BodyChecks.from_headers(CIMultiDict(), hashlib.sha256(BODY).hexdigest())
    assert run(good) == {}
    err = expect("XAmzContentSHA256Mismatch", 400, run,
                 BodyChecks.from_headers(CIMultiDict(), hashlib.sha256(b"x").hexdigest()))
    assert err.fields["S3ComputedContentSHA256"] == hashlib.sha256(BODY).hexdigest()


def test_only_requested_hashes_are_computed():
    checks = BodyChecks.from_headers(CIMultiDict(), "UNSIGNED-PAYLOAD")
    assert run(checks) == {}
    assert checks.md5_hex is None


def test_want_md5_and_also_compute_add_gateway_checksums():
    checks = BodyChecks.from_headers(CIMultiDict(), None, want_md5=True, also_compute=("crc32",))
    assert run(checks) == {"x-amz-checksum-crc32": botocore_b64("crc32", BODY)}
    assert checks.md5_hex == hashlib.md5(BODY).hexdigest()


def test_stripped_headers_cover_every_checksum_header():
    assert BodyChecks.header_names_to_strip >= {
        "content-md5", "x-amz-trailer", "x-amz-sdk-checksum-algorithm",
        *(f"x-amz-checksum-{a}" for a in ALGORITHMS)}
