"""The reserved x-amz-meta-x-gw-* metadata: exact round trips and refusal of anything malformed."""
from __future__ import annotations

import base64

import pytest

from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.sse import CustomerKeySeal, KmsSeal, SseMode
from gateway.crypto.stream import IntegrityError, StreamParams

PARAMS = StreamParams(bytes(range(16)), bytes(range(100, 107)))
TAG = metadata.b64u(bytes(range(200, 216)))
KMS_SEAL = KmsSeal(
    mode=SseMode.KMS,
    sealed_key=bytes(range(60)),
    kms_key_arn="arn:aws:kms:us-east-1:111122223333:key/abc",
    wrapped_data_key=b"\xff" * 150,
    kms_context={"project": "blue", "ünï": "cødé"},
)
S3_SEAL = KmsSeal(SseMode.S3, bytes(60), "arn:aws:kms:r:1:key/d", b"w")
SSEC_SEAL = CustomerKeySeal(sealed_key=bytes(range(60)), salt=b"\x01" * 32, check=b"\x02" * 32)
KMS_INFO = EncryptionInfo(KMS_SEAL, SingleStream(PARAMS, 1234))
SSEC_INFO = EncryptionInfo(SSEC_SEAL, SingleStream(PARAMS, 0))
SEALS = {"aws:kms": KMS_SEAL, "AES256": S3_SEAL, "SSE-C": SSEC_SEAL}
LAYOUTS = {"single": SingleStream(PARAMS, 1234), "empty": SingleStream(PARAMS, 0), "multipart": Multipart(TAG)}
SEAL_HEADERS = {"aws:kms": {"a", "d", "c"}, "AES256": {"a", "d"}, "SSE-C": {"cs", "cc"}}
LAYOUT_HEADERS = {"single": {"p", "s"}, "empty": {"p", "s"}, "multipart": {"u"}}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("mode", sorted(SEALS))
def test_encode_decode_round_trip(mode: str, layout: str) -> None:
    info = EncryptionInfo(SEALS[mode], LAYOUTS[layout])
    headers = metadata.encode(info)
    assert all(metadata.is_reserved(name) for name in headers)
    assert all(value.isascii() for value in headers.values())
    names = {"v", "m", "k"} | SEAL_HEADERS[mode] | LAYOUT_HEADERS[layout]
    assert set(headers) == {f"x-amz-meta-x-gw-{name}" for name in names}
    assert headers["x-amz-meta-x-gw-m"] == mode
    decoded = metadata.decode(headers)
    assert decoded == info
    assert type(decoded.seal) is type(info.seal) and type(decoded.layout) is type(info.layout)
    assert (decoded.mode, decoded.version, decoded.kms_key_arn) == (SseMode(mode), 1, info.kms_key_arn)
    assert metadata.encode(decoded) == headers


def test_info_reports_the_mode_and_kms_key_of_its_seal() -> None:
    assert (KMS_INFO.mode, KMS_INFO.kms_key_arn) == (SseMode.KMS, KMS_SEAL.kms_key_arn)
    s3_info = EncryptionInfo(S3_SEAL, Multipart(TAG))
    assert (s3_info.mode, s3_info.kms_key_arn) == (SseMode.S3, "arn:aws:kms:r:1:key/d")
    assert (SSEC_INFO.mode, SSEC_INFO.kms_key_arn) == (SseMode.CUSTOMER, None)


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


@pytest.mark.parametrize("missing", ["v", "m", "p", "k", "a", "d", "s"])
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


@pytest.mark.parametrize("info", [KMS_INFO, SSEC_INFO])
def test_a_single_stream_object_without_its_plaintext_size_is_refused_at_decode(info: EncryptionInfo) -> None:
    with pytest.raises(IntegrityError):
        metadata.decode(_without(metadata.encode(info), "x-amz-meta-x-gw-s"))


@pytest.mark.parametrize("extra", [{"x-amz-meta-x-gw-p": metadata.b64u(PARAMS.encode())}, {"x-amz-meta-x-gw-s": "5"}])
def test_multipart_metadata_with_single_stream_fields_is_refused(extra: dict[str, str]) -> None:
    headers = metadata.encode(EncryptionInfo(KMS_SEAL, Multipart(TAG)))
    with pytest.raises(IntegrityError):
        metadata.decode({**headers, **extra})


@pytest.mark.parametrize("tag", ["", "abc", metadata.b64u(bytes(15)), metadata.b64u(bytes(17)), "!" * 22])
def test_multipart_metadata_with_a_malformed_upload_tag_is_refused(tag: str) -> None:
    headers = metadata.encode(EncryptionInfo(SSEC_SEAL, Multipart(TAG)))
    headers["x-amz-meta-x-gw-u"] = tag
    with pytest.raises(IntegrityError):
        metadata.decode(headers)


def test_a_lone_reserved_header_is_refused_not_treated_as_plaintext() -> None:
    with pytest.raises(IntegrityError):
        metadata.decode({"x-amz-meta-x-gw-s": "10"})
