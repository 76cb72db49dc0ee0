"""An object's plaintext checksum end to end: stored sealed when the object is written, read back with
``x-amz-checksum-mode: ENABLED`` (GET, HEAD, GetObjectAttributes), made from the parts at Complete (COMPOSITE
or FULL_OBJECT, as S3 makes them), and a Complete's own checksum checked against the object, never against
its XML body. The upstream's checksums (of the ciphertext) never reach a client; a legacy object's (of its
plaintext) do."""
from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from awscrt import checksums as crt
from botocore.exceptions import ClientError

from tests.gateway.both_upstreams import gateway, gateway_tls, upstream_s3  # noqa: F401 (moto and RGW)
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import s3_client, signed_request

MIB = 1024 * 1024
PARTS = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"the last part"]
WHOLE = b"".join(PARTS)


DIGESTS = {
    "crc32": lambda data: zlib.crc32(data).to_bytes(4, "big"),
    "crc32c": lambda data: crt.crc32c(data).to_bytes(4, "big"),
    "crc64nvme": lambda data: crt.crc64nvme(data).to_bytes(8, "big"),
    "sha1": lambda data: hashlib.sha1(data).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
}


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _full(algorithm: str, data: bytes) -> str:
    return _b64(DIGESTS[algorithm](data))


def _composite(algorithm: str, parts: list[bytes]) -> str:
    return f"{_b64(DIGESTS[algorithm](b''.join(DIGESTS[algorithm](p) for p in parts)))}-{len(parts)}"


def _checksum_headers(response: dict) -> dict[str, str]:
    return {name: value for name, value in response["ResponseMetadata"]["HTTPHeaders"].items()
            if name.startswith("x-amz-checksum-")}


def _error(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as error:
        call()
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def _upload_parts(s3, bucket: str, key: str, algorithm: str | None = None, kind: str | None = None,
                  parts: list[bytes] = PARTS) -> tuple[str, list[dict]]:
    extra = {"ChecksumAlgorithm": algorithm.upper()} if algorithm else {}
    if kind:
        extra["ChecksumType"] = kind
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    named = []
    for number, data in enumerate(parts, 1):
        part_extra = {"ChecksumAlgorithm": algorithm.upper()} if algorithm else {}
        answer = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=data, **part_extra)
        entry = {"PartNumber": number, "ETag": answer["ETag"]}
        if algorithm:
            entry[f"Checksum{algorithm.upper()}"] = answer[f"Checksum{algorithm.upper()}"]
        named.append(entry)
    return upload, named


# ---- single objects ----

@pytest.mark.parametrize("algorithm", sorted(DIGESTS))
def test_a_put_checksum_is_read_back_with_checksum_mode_on_get_and_head(s3, bucket, algorithm):
    body = os.urandom(200_000)
    put = s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm=algorithm.upper())
    expected = {f"x-amz-checksum-{algorithm}": _full(algorithm, body), "x-amz-checksum-type": "FULL_OBJECT"}
    assert _checksum_headers(put) == expected
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == body  # botocore validates the body against the checksum it was given
    assert _checksum_headers(got) == expected
    assert _checksum_headers(s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")) == expected


def test_without_checksum_mode_no_checksum_is_answered(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"data", ChecksumAlgorithm="SHA256")
    got = signed_request("GET", f"{gateway.url}/{bucket}/k", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    assert (got.status_code, got.content) == (200, b"data")
    assert [name for name in got.headers if name.lower().startswith("x-amz-checksum")] == []


def test_a_ranged_get_carries_no_whole_object_checksum(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789", ChecksumAlgorithm="CRC32")
    got = s3.get_object(Bucket=bucket, Key="k", Range="bytes=2-5", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"2345"
    assert _checksum_headers(got) == {}


def test_the_stored_checksum_is_sealed_not_in_the_clear_upstream(s3, upstream_s3, bucket):
    body = b"a document whose hash would confirm a guess"
    s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm="SHA256")
    stored = upstream_s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    plain_digest = _full("sha256", body)
    values = list(stored["ResponseMetadata"]["HTTPHeaders"].values()) + list(stored["Metadata"].values())
    assert all(plain_digest not in value and hashlib.sha256(body).hexdigest() not in value for value in values)
    assert "x-gw-h" in stored["Metadata"]


def test_an_object_put_without_a_header_checksum_answers_none_never_the_ciphertexts(gateway, s3, upstream_s3,
                                                                                    bucket):
    response = signed_request("PUT", f"{gateway.url}/{bucket}/k", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                              body=b"no checksum sent")
    assert response.status_code == 200
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"no checksum sent"
    assert _checksum_headers(got) == {}


def test_a_tampered_sealed_checksum_is_an_integrity_failure_not_a_wrong_checksum(gateway, s3, upstream_s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"data", ChecksumAlgorithm="CRC32")
    head = upstream_s3.head_object(Bucket=bucket, Key="k")
    metadata = dict(head["Metadata"])
    other = bytearray(base64.urlsafe_b64decode(metadata["x-gw-h"] + "=" * (-len(metadata["x-gw-h"]) % 4)))
    other[-1] ^= 1
    metadata["x-gw-h"] = base64.urlsafe_b64encode(bytes(other)).rstrip(b"=").decode()
    upstream_s3.copy_object(Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "k"}, Metadata=metadata,
                            MetadataDirective="REPLACE")
    status, code, _ = _error(lambda: s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED"))
    assert (status, code) == (500, "InternalError")
    plain = signed_request("GET", f"{gateway.url}/{bucket}/k", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    assert (plain.status_code, plain.content) == (200, b"data")  # read without asking for the checksum


def test_get_object_attributes_gives_the_plaintext_checksum(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"attributes", ChecksumAlgorithm="CRC32C")
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["Checksum", "ObjectSize"])
    assert got["Checksum"] == {"ChecksumCRC32C": _full("crc32c", b"attributes"), "ChecksumType": "FULL_OBJECT"}
    assert got["ObjectSize"] == len(b"attributes")


def test_an_ssec_objects_checksum_needs_its_key(s3, bucket):
    key = os.urandom(32)
    sse = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret", ChecksumAlgorithm="CRC32", **sse)
    got = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED", **sse)
    assert _checksum_headers(got)["x-amz-checksum-crc32"] == _full("crc32", b"secret")
    assert _error(lambda: s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED"))[0] == 400


def test_a_copy_carries_the_sources_full_object_checksum(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"copied", ChecksumAlgorithm="SHA1")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    got = s3.head_object(Bucket=bucket, Key="dst", ChecksumMode="ENABLED")
    assert _checksum_headers(got) == {"x-amz-checksum-sha1": _full("sha1", b"copied"),
                                      "x-amz-checksum-type": "FULL_OBJECT"}


def test_a_legacy_objects_own_plaintext_checksum_is_relayed(s3, upstream_s3, legacy_bucket):
    upstream_s3.put_object(Bucket=legacy_bucket, Key="old", Body=b"written before the gateway",
                           ChecksumAlgorithm="CRC32")
    direct = _checksum_headers(upstream_s3.head_object(Bucket=legacy_bucket, Key="old", ChecksumMode="ENABLED"))
    got = s3.get_object(Bucket=legacy_bucket, Key="old", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"written before the gateway"
    assert _checksum_headers(got).get("x-amz-checksum-crc32") == direct.get("x-amz-checksum-crc32")
    ranged = s3.get_object(Bucket=legacy_bucket, Key="old", Range="bytes=0-6", ChecksumMode="ENABLED")
    assert ranged["Body"].read() == b"written"
    assert _checksum_headers(ranged) == {}


# ---- multipart objects ----

@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "sha1", "sha256"])
def test_a_composite_checksum_is_made_from_the_parts(s3, bucket, algorithm):
    upload, named = _upload_parts(s3, bucket, "mp", algorithm)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named})
    expected = _composite(algorithm, PARTS)
    assert (done[f"Checksum{algorithm.upper()}"], done["ChecksumType"]) == (expected, "COMPOSITE")
    got = s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got["Body"].read() == WHOLE
    assert _checksum_headers(got) == {f"x-amz-checksum-{algorithm}": expected, "x-amz-checksum-type": "COMPOSITE"}
    attributes = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["Checksum"])
    assert attributes["Checksum"] == {f"Checksum{algorithm.upper()}": expected, "ChecksumType": "COMPOSITE"}


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "crc64nvme"])
def test_a_full_object_checksum_on_complete_is_checked_against_the_plaintext(s3, bucket, algorithm):
    upload, named = _upload_parts(s3, bucket, "mp", algorithm, "FULL_OBJECT")
    expected = _full(algorithm, WHOLE)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named},
                                        ChecksumType="FULL_OBJECT", **{f"Checksum{algorithm.upper()}": expected})
    assert (done[f"Checksum{algorithm.upper()}"], done["ChecksumType"]) == (expected, "FULL_OBJECT")
    got = s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got["Body"].read() == WHOLE  # botocore validates a FULL_OBJECT checksum over the body it read
    assert _checksum_headers(got)[f"x-amz-checksum-{algorithm}"] == expected


def test_crc64nvme_uploads_are_full_object_by_default(s3, bucket):
    created = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC64NVME")
    assert (created["ChecksumAlgorithm"], created["ChecksumType"]) == ("CRC64NVME", "FULL_OBJECT")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=created["UploadId"])


def test_a_wrong_full_object_checksum_on_complete_is_bad_digest_and_the_upload_stays(s3, upstream_s3, bucket):
    upload, named = _upload_parts(s3, bucket, "mp", "crc32", "FULL_OBJECT")
    wrong = _full("crc32", b"something else")
    status, code, message = _error(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named}, ChecksumCRC32=wrong,
        ChecksumType="FULL_OBJECT"))
    assert (status, code) == (400, "BadDigest")
    assert message == "The crc32 you specified did not match the calculated checksum."
    assert _error(lambda: upstream_s3.head_object(Bucket=bucket, Key="mp"))[0] == 404
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named},
                                 ChecksumCRC32=_full("crc32", WHOLE), ChecksumType="FULL_OBJECT")
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == WHOLE


def test_a_composite_value_on_complete_is_checked(gateway, s3, bucket):
    upload, named = _upload_parts(s3, bucket, "mp", "sha256")
    wrong = _composite("sha256", [b"x"] * 3)
    status, code, _ = _error(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named}, ChecksumSHA256=wrong))
    assert (status, code) == (400, "BadDigest")
    right = _composite("sha256", PARTS)
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named},
                                        ChecksumSHA256=right)
    assert done["ChecksumSHA256"] == right


def test_a_complete_checksum_of_another_algorithm_or_type_is_invalid_request(s3, bucket):
    upload, named = _upload_parts(s3, bucket, "mp", "crc32", "FULL_OBJECT")
    other_algorithm = _error(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named},
        ChecksumCRC32C=_full("crc32c", WHOLE)))
    assert other_algorithm[:2] == (400, "InvalidRequest")
    other_type = _error(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named},
        ChecksumCRC32=_composite("crc32", PARTS), ChecksumType="COMPOSITE"))
    assert other_type[:2] == (400, "InvalidRequest")


def test_an_upload_without_checksums_gets_s3s_default_crc64nvme(gateway, s3, bucket):
    plain_client = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                             request_checksum_calculation="when_required")
    upload, named = _upload_parts(plain_client, bucket, "mp")
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named})
    got = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert _checksum_headers(got) == {"x-amz-checksum-crc64nvme": _full("crc64nvme", WHOLE),
                                      "x-amz-checksum-type": "FULL_OBJECT"}


def test_the_transfer_managers_upload_reads_back_with_a_verified_checksum(s3, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig
    source = tmp_path / "big"
    source.write_bytes(WHOLE)
    s3.upload_file(str(source), bucket, "tm", Config=TransferConfig(multipart_threshold=5 * MIB,
                                                                      multipart_chunksize=5 * MIB))
    got = s3.get_object(Bucket=bucket, Key="tm", ChecksumMode="ENABLED")
    assert got["Body"].read() == WHOLE
    assert _checksum_headers(got)  # whichever algorithm botocore chose, the gateway kept one


@pytest.mark.parametrize(("headers", "message"), [
    ({"ChecksumType": "FULL_OBJECT"}, "The x-amz-checksum-type header can only be used with the "
                                      "x-amz-checksum-algorithm header."),
    ({"ChecksumAlgorithm": "SHA1", "ChecksumType": "FULL_OBJECT"},
     "The FULL_OBJECT checksum type cannot be used with the sha1 checksum algorithm."),
    ({"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "COMPOSITE"},
     "The COMPOSITE checksum type cannot be used with the crc64nvme checksum algorithm."),
], ids=["type-alone", "sha1-full-object", "crc64nvme-composite"])
def test_an_impossible_checksum_request_at_create_is_invalid_request(gateway, bucket, headers, message):
    names = {"ChecksumAlgorithm": "x-amz-checksum-algorithm", "ChecksumType": "x-amz-checksum-type"}
    response = signed_request("POST", f"{gateway.url}/{bucket}/mp?uploads", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                              headers={names[name]: value for name, value in headers.items()})
    assert response.status_code == 400
    assert b"<Code>InvalidRequest</Code>" in response.content
    assert message.encode() in response.content


def test_a_part_with_another_algorithm_than_the_uploads_is_invalid_request(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="SHA256")["UploadId"]
    status, code, message = _error(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                                                          Body=b"part", ChecksumAlgorithm="CRC32"))
    assert (status, code) == (400, "InvalidRequest")
    assert message == "Checksum Type mismatch occurred, expected checksum Type: sha256, actual checksum Type: crc32"


def test_a_copied_part_gets_the_uploads_checksum(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=PARTS[0])
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    copied = s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                                 CopySource={"Bucket": bucket, "Key": "src"})["CopyPartResult"]
    assert copied["ChecksumCRC32"] == _full("crc32", PARTS[0])
    last = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=2, Body=b"end", ChecksumAlgorithm="CRC32")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": copied["ETag"], "ChecksumCRC32": copied["ChecksumCRC32"]},
        {"PartNumber": 2, "ETag": last["ETag"], "ChecksumCRC32": last["ChecksumCRC32"]}]})
    assert done["ChecksumCRC32"] == _composite("crc32", [PARTS[0], b"end"])


def test_a_retried_complete_answers_the_same_checksum(s3, bucket):
    upload, named = _upload_parts(s3, bucket, "mp", "crc32")
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named})
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={"Parts": named})
    assert again["ChecksumCRC32"] == first["ChecksumCRC32"] == _composite("crc32", PARTS)


# ---- operations that require a checksum, sent as CRC64NVME or CRC32 without Content-MD5 ----

@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32"])
def test_operations_that_require_a_checksum_accept_crc64nvme_and_crc32_alone(s3, bucket, algorithm):
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "gone"}]}, ChecksumAlgorithm=algorithm)
    assert [entry["Key"] for entry in deleted["Deleted"]] == ["gone"]
    s3.put_bucket_cors(Bucket=bucket, ChecksumAlgorithm=algorithm, CORSConfiguration={"CORSRules": [
        {"AllowedMethods": ["GET"], "AllowedOrigins": ["https://app.example"]}]})
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]["AllowedOrigins"] == ["https://app.example"]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, ChecksumAlgorithm=algorithm, LifecycleConfiguration={
        "Rules": [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}}]})
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["ID"] == "r"
    s3.put_bucket_encryption(Bucket=bucket, ChecksumAlgorithm=algorithm, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x")
    s3.put_object_tagging(Bucket=bucket, Key="tagged", ChecksumAlgorithm=algorithm,
                          Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"] == [{"Key": "a", "Value": "b"}]


# ---- checksums sent in an aws-chunked trailer (SDKs streaming over https) ----

def _tls_client(gateway_tls, **config):
    return s3_client(gateway_tls.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, verify=str(gateway_tls.ca_file), **config)


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC64NVME", "SHA256"])
def test_a_trailer_checksum_of_a_small_put_is_kept(gateway_tls, upstream_s3, bucket, algorithm):
    client = _tls_client(gateway_tls)
    body = os.urandom(300_000)
    put = client.put_object(Bucket=bucket, Key="k", Body=body, ChecksumAlgorithm=algorithm)
    name = algorithm.lower()
    assert put[f"Checksum{algorithm}"] == _full(name, body)
    got = client.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert _checksum_headers(got) == {f"x-amz-checksum-{name}": _full(name, body), "x-amz-checksum-type": "FULL_OBJECT"}
    assert "x-gw-h" in upstream_s3.head_object(Bucket=bucket, Key="k")["Metadata"]


def test_a_trailer_checksum_of_a_put_over_8_mib_is_verified_but_not_kept(gateway_tls, bucket):
    client = _tls_client(gateway_tls)
    body = os.urandom(8 * MIB + 1)
    client.put_object(Bucket=bucket, Key="big", Body=body, ChecksumAlgorithm="CRC32")
    got = client.get_object(Bucket=bucket, Key="big", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert _checksum_headers(got) == {}
