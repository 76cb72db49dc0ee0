"""CopyObject and UploadPartCopy re-encrypt: the destination gets its own key, the source's secrets stay put."""
from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _start_gateway
from tests.support.clients import s3_client, upstream_keys

MiB = 1024 * 1024
RESERVED = "x-gw-"


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as err:
        call()
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _ssec(key: bytes, prefix: str = "SSECustomer") -> dict[str, str]:
    return {f"{prefix}Algorithm": "AES256", f"{prefix}Key": base64.b64encode(key).decode(),
            f"{prefix}KeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}


def _upload(s3, bucket: str, key: str, parts: list[bytes]) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n,
                                                     Body=data)["ETag"]} for n, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done})


def test_copy_re_encrypts_under_a_new_data_key_and_keeps_metadata(s3, upstream_s3, bucket):
    data = os.urandom(200_000)
    s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"color": "blue"}, ContentType="text/x-test")
    result = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert result["CopyObjectResult"]["ETag"].endswith('-1"')
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == data
    assert (got["Metadata"], got["ContentType"]) == ({"color": "blue"}, "text/x-test")
    source_meta = upstream_s3.head_object(Bucket=bucket, Key="src")["Metadata"]
    dest_meta = upstream_s3.head_object(Bucket=bucket, Key="dst")["Metadata"]
    assert dest_meta["x-gw-d"] != source_meta["x-gw-d"] and dest_meta["x-gw-k"] != source_meta["x-gw-k"]
    assert result["CopyObjectResult"]["ETag"] == s3.head_object(Bucket=bucket, Key="dst")["ETag"]


def test_metadata_directive_replace_takes_the_requests_metadata(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x", Metadata={"old": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"new": "2"}, ContentType="application/x-new")
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert (head["Metadata"], head["ContentType"]) == ({"new": "2"}, "application/x-new")
    assert not any(name.startswith(RESERVED) for name in head["Metadata"])


def test_copying_a_legacy_plaintext_object_onto_itself_encrypts_it(s3, upstream_s3, legacy_bucket):
    data = os.urandom(70_000)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="legacy", Body=data, Metadata={"owner": "app"})
    s3.copy_object(Bucket=legacy_bucket, Key="legacy", CopySource={"Bucket": legacy_bucket, "Key": "legacy"},
                   ServerSideEncryption="aws:kms")
    stored = upstream_s3.get_object(Bucket=legacy_bucket, Key="legacy")
    assert stored["Metadata"]["x-gw-m"] == "aws:kms" and stored["Metadata"]["owner"] == "app"
    assert data[:4096] not in stored["Body"].read()
    assert s3.get_object(Bucket=legacy_bucket, Key="legacy")["Body"].read() == data


def test_copy_of_a_multipart_object_reads_back(s3, bucket):
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    _upload(s3, bucket, "mp-src", parts)
    s3.copy_object(Bucket=bucket, Key="mp-dst", CopySource={"Bucket": bucket, "Key": "mp-src"})
    assert s3.get_object(Bucket=bucket, Key="mp-dst")["Body"].read() == b"".join(parts)


def test_copy_between_two_customer_keys(s3, bucket):
    key_a, key_b = os.urandom(32), os.urandom(32)
    s3.put_object(Bucket=bucket, Key="c-src", Body=b"secret", **_ssec(key_a))
    s3.copy_object(Bucket=bucket, Key="c-dst", CopySource={"Bucket": bucket, "Key": "c-src"},
                   **_ssec(key_a, "CopySourceSSECustomer"), **_ssec(key_b))
    assert s3.get_object(Bucket=bucket, Key="c-dst", **_ssec(key_b))["Body"].read() == b"secret"
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="c-dst", **_ssec(key_a))) == (403, "AccessDenied")


def test_copy_of_a_customer_key_object_without_or_with_a_wrong_source_key_is_refused(s3, upstream_s3, bucket):
    s3.put_object(Bucket=bucket, Key="c-src", Body=b"secret", **_ssec(os.urandom(32)))
    source = {"Bucket": bucket, "Key": "c-src"}
    assert _error(lambda: s3.copy_object(Bucket=bucket, Key="c-dst", CopySource=source)) == (400, "InvalidRequest")
    assert _error(lambda: s3.copy_object(Bucket=bucket, Key="c-dst", CopySource=source,
                                         **_ssec(os.urandom(32), "CopySourceSSECustomer"))) == (403, "AccessDenied")
    assert "Contents" not in upstream_s3.list_objects_v2(Bucket=bucket, Prefix="c-dst")


def test_copy_onto_itself_without_changes_is_400_invalid_request(s3, bucket):
    s3.put_object(Bucket=bucket, Key="same", Body=b"x")
    assert _error(lambda: s3.copy_object(Bucket=bucket, Key="same", CopySource={"Bucket": bucket, "Key": "same"})
                  ) == (400, "InvalidRequest")


def test_copy_source_conditions_and_missing_source(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    source = {"Bucket": bucket, "Key": "src"}
    assert _error(lambda: s3.copy_object(Bucket=bucket, Key="dst", CopySource=source,
                                         CopySourceIfMatch='"nope"')) == (412, "PreconditionFailed")
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    s3.copy_object(Bucket=bucket, Key="dst", CopySource=source, CopySourceIfMatch=etag)
    assert _error(lambda: s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "gone"})
                  ) == (404, "NoSuchKey")


def test_upload_part_copy_takes_plaintext_ranges_of_an_encrypted_source(s3, bucket):
    data = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    source = {"Bucket": bucket, "Key": "big"}
    spans = [(0, 5 * MiB - 1), (5 * MiB, 6 * MiB - 1)]
    parts = []
    for number, (first, last) in enumerate(spans, 1):
        copied = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=number,
                                     CopySource=source, CopySourceRange=f"bytes={first}-{last}")
        parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
    assert _error(lambda: s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=3,
                                              CopySource=source, CopySourceRange=f"bytes=0-{6 * MiB}")
                  ) == (400, "InvalidArgument")
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == data


def test_upload_part_copy_between_customer_keys(s3, bucket):
    key_a, key_b = os.urandom(32), os.urandom(32)
    data = os.urandom(5 * MiB + 10)
    s3.put_object(Bucket=bucket, Key="c-big", Body=data, **_ssec(key_a))
    upload = s3.create_multipart_upload(Bucket=bucket, Key="c-parts", **_ssec(key_b))["UploadId"]
    source = {"Bucket": bucket, "Key": "c-big"}
    assert _error(lambda: s3.upload_part_copy(Bucket=bucket, Key="c-parts", UploadId=upload, PartNumber=1,
                                              CopySource=source, **_ssec(key_b))) == (400, "InvalidRequest")
    copied = s3.upload_part_copy(Bucket=bucket, Key="c-parts", UploadId=upload, PartNumber=1, CopySource=source,
                                 **_ssec(key_a, "CopySourceSSECustomer"), **_ssec(key_b))
    parts = [{"PartNumber": 1, "ETag": copied["CopyPartResult"]["ETag"]}]
    s3.complete_multipart_upload(Bucket=bucket, Key="c-parts", UploadId=upload, MultipartUpload={"Parts": parts},
                                 **_ssec(key_b))
    assert s3.get_object(Bucket=bucket, Key="c-parts", **_ssec(key_b))["Body"].read() == data


def test_tags_are_copied_unless_the_request_replaces_them(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x", Tagging="team=blue&tier=1")
    source = {"Bucket": bucket, "Key": "src"}
    s3.copy_object(Bucket=bucket, Key="copied", CopySource=source)
    s3.copy_object(Bucket=bucket, Key="replaced", CopySource=source, TaggingDirective="REPLACE", Tagging="new=yes")
    tags = {key: sorted((t["Key"], t["Value"]) for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"])
            for key in ("copied", "replaced")}
    assert tags == {"copied": [("team", "blue"), ("tier", "1")], "replaced": [("new", "yes")]}


def test_a_source_key_containing_a_query_string_is_copied_as_named(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a?versionId=x", Body=b"literal")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "a?versionId=x"})
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"literal"


def test_copy_of_a_plaintext_object_obeys_a_ban_on_unencrypted_reads(moto, upstream_s3, tmp_path):
    """Otherwise bytes planted upstream would become a trusted encrypted object."""
    server = _start_gateway(moto, tmp_path / "strict", tls=None, allow_unencrypted_reads=False)
    try:
        client = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"strict-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        upstream_s3.put_object(Bucket=bucket, Key="planted", Body=b"attacker bytes")
        source = {"Bucket": bucket, "Key": "planted"}
        assert _error(lambda: client.copy_object(Bucket=bucket, Key="copied", CopySource=source)) == (
            403, "AccessDenied")
        assert upstream_keys(upstream_s3, bucket) == ["planted"]
    finally:
        server.stop()
