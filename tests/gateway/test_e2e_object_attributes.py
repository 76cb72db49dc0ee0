"""GetObjectAttributes through the gateway: plaintext size, the client's ETag and plaintext part sizes for
encrypted objects (never the ciphertext's), the upstream's own answer for a legacy object, S3's errors."""
from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from botocore.exceptions import ClientError

from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)


MIB = 1024 * 1024
ALL = ["ETag", "ObjectParts", "StorageClass", "ObjectSize", "Checksum"]


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["ResponseMetadata"]["HTTPStatusCode"], error.value.response["Error"]["Code"]


def test_a_single_part_encrypted_object_is_described_in_plaintext_terms(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 70_000)["ETag"]
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=ALL)
    assert (got["ObjectSize"], got["ETag"], got["StorageClass"]) == (70_000, etag.strip('"'), "STANDARD")
    assert "ObjectParts" not in got
    # botocore sent the body's CRC32 in a header: stored sealed, shown as the object's checksum
    assert got["Checksum"] == {"ChecksumCRC32": base64.b64encode(zlib.crc32(b"x" * 70_000).to_bytes(4, "big")).decode(),
                               "ChecksumType": "FULL_OBJECT"}
    assert got["LastModified"] == s3.head_object(Bucket=bucket, Key="k")["LastModified"]


def test_a_multipart_objects_parts_are_its_plaintext_parts_paged_as_asked(s3, bucket):
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=data)["ETag"]
             for n, data in enumerate(parts, 1)]
    etag = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})["ETag"]
    got = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts", "ObjectSize", "ETag"])
    assert (got["ObjectSize"], got["ETag"]) == (sum(map(len, parts)), etag.strip('"'))
    assert got["ObjectParts"]["TotalPartsCount"] == 3 and got["ObjectParts"]["IsTruncated"] is False
    assert [(p["PartNumber"], p["Size"]) for p in got["ObjectParts"]["Parts"]] == [(1, 5 * MIB), (2, 5 * MIB), (3, 4)]
    page = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1,
                                    PartNumberMarker=1)["ObjectParts"]
    assert ([p["PartNumber"] for p in page["Parts"]], page["IsTruncated"], page["NextPartNumberMarker"]) == (
        [2], True, 2)


def test_an_sse_c_multipart_object_needs_its_key_to_list_parts(s3, bucket):
    key = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": os.urandom(32)}
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mpc", **key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mpc", UploadId=upload, PartNumber=1, Body=b"only", **key)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mpc", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part}]}, **key)
    assert _error(lambda: s3.get_object_attributes(Bucket=bucket, Key="mpc", ObjectAttributes=["ObjectParts"])) == (
        400, "InvalidRequest")
    raw = key["SSECustomerKey"]  # botocore base64-encodes the key for GetObject, not for GetObjectAttributes
    encoded = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(raw).decode(),
               "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(raw).digest()).decode()}
    got = s3.get_object_attributes(Bucket=bucket, Key="mpc", ObjectAttributes=["ObjectParts", "ObjectSize"], **encoded)
    assert (got["ObjectSize"], got["ObjectParts"]["Parts"][0]["Size"]) == (4, 4)


def test_a_legacy_objects_size_and_etag_are_its_own(s3, legacy_bucket, upstream_s3):
    """From its HEAD (Ceph RGW 16 answers GetObjectAttributes 500, moto answers it)."""
    upstream_s3.put_object(Bucket=legacy_bucket, Key="plain", Body=b"12345")
    got = s3.get_object_attributes(Bucket=legacy_bucket, Key="plain", ObjectAttributes=["ObjectSize", "ETag"])
    head = upstream_s3.head_object(Bucket=legacy_bucket, Key="plain")
    assert (got["ObjectSize"], got["ETag"]) == (5, head["ETag"].strip('"'))


def test_errors_are_s3s(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert _error(lambda: s3.get_object_attributes(Bucket=bucket, Key="absent", ObjectAttributes=["ETag"])) == (
        404, "NoSuchKey")
    assert _error(lambda: s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["Colour"])) == (
        400, "InvalidArgument")
