"""The reserved x-amz-meta-x-gw-* metadata: exact round trips and refusal of anything malformed."""
from __future__ import annotations

import base64

import pytest

from gateway.crypto import metadata
from gateway.crypto.sse import EncryptionInfo
from gateway.crypto.stream import IntegrityError, StreamParams

PARAMS = StreamParams(bytes(range(16)), bytes(range(100, 107)))
KMS_INFO = EncryptionInfo(
    version=1,
    mode="aws:kms",
    params=PARAMS,
    sealed_key=bytes(range(60)),
    plaintext_size=1234,
    kms_key_arn="arn:aws:kms:us-east-1:111122223333:key/abc",
    wrapped_data_key=b"\xff" * 150,
    kms_context={"project": "blue", "ünï": "cødé"},
)
SSEC_INFO = EncryptionInfo(
    version=1,
    mode="SSE-C",
    params=PARAMS,
    sealed_key=bytes(range(60)),
    plaintext_size=0,
    ssec_salt=b"\x01" * 32,
    ssec_check=b"\x02" * 32,
)


@pytest.mark.parametrize("info", [
    KMS_INFO,
    SSEC_INFO,
    EncryptionInfo(1, "AES256", PARAMS, bytes(60), None, "arn:aws:kms:r:1:key/d", b"w"),
])
def test_encode_decode_round_trip(info: EncryptionInfo) -> None:
    headers = metadata.encode(info)
    assert all(metadata.is_reserved(name) for name in headers)
    assert all(value.isascii() for value in headers.values())
    assert metadata.decode(headers) == info


def test_encoded_kms_headers_are_exact() -> None:
    headers = metadata.encode(KMS_INFO)
    assert headers["x-amz-meta-x-gw-v"] == "1"
    assert headers["x-amz-meta-x-gw-m"] == "aws:kms"
    assert headers["x-amz-meta-x-gw-s"] == "1234"
    assert headers["x-amz-meta-x-gw-p"] == base64.urlsafe_b64encode(PARAMS.encode()).decode().rstrip("=")
    assert set(headers) == {f"x-amz-meta-x-gw-{n}" for n in ("v", "m", "p", "k", "s", "a", "d", "c")}


def test_decode_matches_header_names_case_insensitively_and_ignores_other_headers() -> None:
    headers = {name.title(): value for name, value in metadata.encode(SSEC_INFO).items()}
    headers["Content-Type"] = "text/plain"
    headers["x-amz-meta-client"] = "mine"
    assert metadata.decode(headers) == SSEC_INFO


def test_object_without_our_metadata_decodes_to_none() -> None:
    assert metadata.decode({"Content-Length": "5", "x-amz-meta-mtime": "1"}) is None


@pytest.mark.parametrize("name, expected", [
    ("x-amz-meta-x-gw-k", True), ("X-Amz-Meta-X-Gw-Anything", True), ("x-amz-meta-x-gw", False),
    ("x-amz-meta-gw-k", False), ("x-gw-k", False),
])
def test_is_reserved(name: str, expected: bool) -> None:
    assert metadata.is_reserved(name) is expected


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


@pytest.mark.parametrize("missing", ["v", "m", "p", "k", "a", "d"])
def test_kms_metadata_missing_a_required_field_is_refused(missing: str) -> None:
    with pytest.raises(IntegrityError):
        metadata.decode(_without(metadata.encode(KMS_INFO), f"x-amz-meta-x-gw-{missing}"))


@pytest.mark.parametrize("missing", ["cs", "cc"])
def test_ssec_metadata_missing_a_required_field_is_refused(missing: str) -> None:
    with pytest.raises(IntegrityError):
        metadata.decode(_without(metadata.encode(SSEC_INFO), f"x-amz-meta-x-gw-{missing}"))


@pytest.mark.parametrize("name, value", [
    ("v", "2"), ("v", "01"), ("v", ""), ("m", "rot13"), ("m", ""),
    ("p", "AAAA"), ("p", "!!!!"), ("p", "A"), ("k", base64.urlsafe_b64encode(bytes(59)).decode()),
    ("k", "a b c"), ("s", "-1"), ("s", "1e3"), ("s", "007"), ("s", "12345678901234567890"),
    ("d", ""), ("c", "bm90IGpzb24"), ("c", base64.urlsafe_b64encode(b'{"a": 1}').decode()),
    ("c", base64.urlsafe_b64encode(b'["a"]').decode()), ("c", "_w"),
])
def test_malformed_kms_metadata_is_refused(name: str, value: str) -> None:
    headers = metadata.encode(KMS_INFO)
    headers[f"x-amz-meta-x-gw-{name}"] = value
    with pytest.raises(IntegrityError):
        metadata.decode(headers)


@pytest.mark.parametrize("name, value", [("cs", base64.urlsafe_b64encode(bytes(31)).decode()),
                                         ("cc", base64.urlsafe_b64encode(bytes(33)).decode()), ("cc", "=")])
def test_malformed_ssec_metadata_is_refused(name: str, value: str) -> None:
    headers = metadata.encode(SSEC_INFO)
    headers[f"x-amz-meta-x-gw-{name}"] = value
    with pytest.raises(IntegrityError):
        metadata.decode(headers)


def test_a_lone_reserved_header_is_refused_not_treated_as_plaintext() -> None:
    with pytest.raises(IntegrityError):
        metadata.decode({"x-amz-meta-x-gw-s": "10"})
