"""boto3 through the gateway on both upstreams, moto and Ceph RGW (16.2): single-part and multipart objects
(the transfer manager too), ranges, copies, SSE-KMS, SSE-C, multipart Complete (its ETag, a retried one) and
the upstream's errors relayed with a message.

Where the two upstreams behave differently, ``test_what_the_upstreams_do_differently`` says how, straight on
the upstream; the tests through the gateway expect the same answers on both.
"""
from __future__ import annotations

import hashlib
import io
import os
import re

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.gateway.conftest import DEFAULT_KMS_ALIAS
from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)
from tests.support.clients import aws, s3cmd
from tests.support.secrets import CUSTOMER_KEY

MiB = 1024 * 1024
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY}
MULTIPART_ETAG = re.compile(r'"[0-9a-f]{32}-(\d+)"')


def _error(call, **kwargs) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    response = caught.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"].get("Code", ""),
            response["Error"].get("Message") or "")


def _multipart(s3, bucket: str, key: str, sizes: list[int], **extra) -> tuple[str, list[dict], bytes]:
    """An upload of random parts of ``sizes``, not completed: its UploadId, its part list and the bytes."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    parts, data = [], b""
    for number, size in enumerate(sizes, 1):
        body = os.urandom(size)
        data += body
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                              **{k: v for k, v in extra.items() if k.startswith("SSECustomer")})["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    return upload_id, parts, data


def _upstream_multipart_etag(upstream_s3, bucket: str, key: str) -> str:
    return upstream_s3.head_object(Bucket=bucket, Key=key)["ETag"]


# ---------------------------------------------------------------- what the upstreams do differently


def test_what_the_upstreams_do_differently(upstream, upstream_s3, legacy_bucket):
    """Straight on the upstream (no gateway): what the gateway has to cope with."""
    upload_id, parts, _ = _multipart(upstream_s3, legacy_bucket, "mp", [5 * MiB, 10])
    complete = upstream_s3.complete_multipart_upload(Bucket=legacy_bucket, Key="mp", UploadId=upload_id,
                                                     MultipartUpload={"Parts": parts})
    head_etag = upstream_s3.head_object(Bucket=legacy_bucket, Key="mp")["ETag"]
    assert MULTIPART_ETAG.fullmatch(head_etag)
    listed = _error(upstream_s3.list_parts, Bucket=legacy_bucket, Key="mp", UploadId=upload_id)
    missing = _error(upstream_s3.get_object, Bucket=legacy_bucket, Key="absent")
    if upstream == "moto":
        assert complete["ETag"] == head_etag  # moto (and S3): the Complete answer carries the ETag
        assert listed[:2] == (404, "NoSuchUpload")  # ListParts of a completed upload
        assert missing[1:] == ("NoSuchKey", "The specified key does not exist.")
    else:
        assert complete.get("ETag", "") == ""  # RGW 16: <ETag></ETag>; HEAD and listings have it
        assert listed == (404, "NoSuchKey", "")  # RGW: NoSuchKey, and no Message
        assert missing == (404, "NoSuchKey", "")  # RGW: every error's Message is empty


# ---------------------------------------------------------------- multipart Complete


def test_complete_answers_the_etag_head_and_listings_show(s3, bucket):
    upload_id, parts, data = _multipart(s3, bucket, "mp", [5 * MiB, 5 * MiB, 123])
    complete = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id,
                                            MultipartUpload={"Parts": parts})
    head = s3.head_object(Bucket=bucket, Key="mp")
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert MULTIPART_ETAG.fullmatch(complete["ETag"]).group(1) == "3"
    assert complete["ETag"] == head["ETag"] == listed["ETag"]
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == data


def test_a_retried_complete_answers_the_same_object(s3, upstream_s3, bucket):
    """A client whose Complete answer was lost sends it again: 200 and the same ETag, as S3 answers (the
    upstream itself says NoSuchUpload on moto, NoSuchKey on RGW, to the ListParts the gateway sends first)."""
    upload_id, parts, data = _multipart(s3, bucket, "mp", [5 * MiB, 77])
    first = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    again = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
    assert again["ETag"] == first["ETag"] == s3.head_object(Bucket=bucket, Key="mp")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == data


def test_a_retried_complete_with_other_parts_is_no_such_upload(s3, bucket):
    upload_id, parts, data = _multipart(s3, bucket, "mp", [5 * MiB, 77])
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts})
    status, code, message = _error(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=upload_id,
                                   MultipartUpload={"Parts": parts[:1]})
    assert (status, code) == (404, "NoSuchUpload") and message
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == data


def test_a_retried_complete_after_an_overwrite_is_no_such_upload(s3, bucket):
    upload_id, parts, _ = _multipart(s3, bucket, "mp", [5 * MiB, 77])
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts})
    s3.put_object(Bucket=bucket, Key="mp", Body=b"newer")
    status, code, _ = _error(s3.complete_multipart_upload, Bucket=bucket, Key="mp", UploadId=upload_id,
                             MultipartUpload={"Parts": parts})
    assert (status, code) == (404, "NoSuchUpload")
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"newer"


# ---------------------------------------------------------------- boto3's transfer manager, ranges, copies


def test_transfer_manager_multipart_upload_and_ranged_download(s3, upstream_s3, bucket):
    data = os.urandom(12 * MiB + 4321)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=3)
    s3.upload_fileobj(io.BytesIO(data), bucket, "tm", Config=config)
    assert MULTIPART_ETAG.fullmatch(_upstream_multipart_etag(upstream_s3, bucket, "tm")).group(1) == "3"
    out = io.BytesIO()
    s3.download_fileobj(bucket, "tm", out, Config=config)  # ranged GETs of 5 MiB
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(data).digest()
    assert s3.head_object(Bucket=bucket, Key="tm")["ContentLength"] == len(data)
    stored = upstream_s3.get_object(Bucket=bucket, Key="tm")["Body"].read()
    assert len(stored) > len(data) and data[MiB:MiB + 4096] not in stored


@pytest.mark.parametrize("multipart", [False, True], ids=["single", "multipart"])
def test_ranges(s3, bucket, multipart):
    if multipart:
        upload_id, parts, data = _multipart(s3, bucket, "obj", [5 * MiB, 70000])
        s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": parts})
    else:
        data = os.urandom(200_000)
        s3.put_object(Bucket=bucket, Key="obj", Body=data)
    size = len(data)
    for spec, expected in [("bytes=0-99", data[:100]), ("bytes=65530-65545", data[65530:65546]),
                           (f"bytes={size - 70005}-{size - 69990}", data[size - 70005:size - 69989]),
                           ("bytes=-100", data[-100:]), (f"bytes={size - 10}-", data[-10:])]:
        got = s3.get_object(Bucket=bucket, Key="obj", Range=spec)
        assert got["Body"].read() == expected, spec
        assert got["ContentRange"].endswith(f"/{size}"), spec
    assert _error(s3.get_object, Bucket=bucket, Key="obj", Range=f"bytes={size}-")[:2] == (416, "InvalidRange")


def test_copies_single_and_multipart_sources_into_sse_kms(s3, upstream_s3, bucket):
    small = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    upload_id, parts, big = _multipart(s3, bucket, "big", [5 * MiB, 99])
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload_id, MultipartUpload={"Parts": parts})
    for source, data in (("small", small), ("big", big)):
        s3.copy_object(Bucket=bucket, Key=f"{source}-copy", CopySource={"Bucket": bucket, "Key": source},
                       ServerSideEncryption="aws:kms", SSEKMSKeyId=DEFAULT_KMS_ALIAS)
        got = s3.get_object(Bucket=bucket, Key=f"{source}-copy")
        assert got["Body"].read() == data and got["ServerSideEncryption"] == "aws:kms"
    # UploadPartCopy: a range of the multipart source as part 1 of a new upload
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    part = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload_id, PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": "big"}, CopySourceRange="bytes=1000-5242900")
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == big[1000:5242901]


# ---------------------------------------------------------------- SSE-KMS and SSE-C


def test_sse_kms_single_and_multipart(s3, upstream_s3, bucket):
    """The gateway encrypts; the upstream never sees an SSE header (RGW refuses them over http)."""
    kms = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": DEFAULT_KMS_ALIAS}
    s3.put_object(Bucket=bucket, Key="one", Body=b"kms single", **kms)
    upload_id, parts, data = _multipart(s3, bucket, "mp", [5 * MiB, 5], **kms)
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts})
    for key, expected in (("one", b"kms single"), ("mp", data)):
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == expected and got["ServerSideEncryption"] == "aws:kms"
        assert "ServerSideEncryption" not in upstream_s3.head_object(Bucket=bucket, Key=key)
    assert b"kms single" not in upstream_s3.get_object(Bucket=bucket, Key="one")["Body"].read()


def test_sse_c_single_and_transfer_manager_multipart(s3, upstream_s3, bucket):
    s3.put_object(Bucket=bucket, Key="one", Body=b"customer keyed", **SSE_C)
    data = os.urandom(11 * MiB)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(data), bucket, "mp", ExtraArgs=SSE_C, Config=config)
    assert s3.get_object(Bucket=bucket, Key="one", **SSE_C)["Body"].read() == b"customer keyed"
    out = io.BytesIO()
    s3.download_fileobj(bucket, "mp", out, ExtraArgs=SSE_C, Config=config)
    assert out.getvalue() == data
    assert s3.get_object(Bucket=bucket, Key="mp", Range="bytes=5242870-5242889", **SSE_C)["Body"].read() == \
        data[5242870:5242890]
    assert _error(s3.get_object, Bucket=bucket, Key="one")[:2] == (400, "InvalidRequest")
    wrong = {**SSE_C, "SSECustomerKey": CUSTOMER_KEY[::-1]}
    assert _error(s3.get_object, Bucket=bucket, Key="mp", **wrong)[0] == 403
    assert "SSECustomerAlgorithm" not in upstream_s3.head_object(Bucket=bucket, Key="one")


# ---------------------------------------------------------------- errors


def test_upstream_errors_reach_clients_with_code_and_message(s3, gateway, bucket, tmp_path):
    """RGW's errors carry an empty Message: the gateway fills in S3's, so clients show what went wrong."""
    assert _error(s3.get_object, Bucket=bucket, Key="absent") == (404, "NoSuchKey", "The specified key does not exist.")
    status, code, message = _error(s3.list_objects_v2, Bucket=f"{bucket}-absent")
    assert (status, code) == (404, "NoSuchBucket") and message == "The specified bucket does not exist"
    returncode, _, stderr = aws(gateway.endpoint(tmp_path), "s3", "ls", f"s3://{bucket}-absent/")
    assert returncode != 0 and "NoSuchBucket" in stderr and "NoneType" not in stderr, stderr


# ---------------------------------------------------------------- GetBucketLocation


def test_get_bucket_location_names_the_gateways_region_whatever_the_upstream_calls_its_own(
        upstream, gateway, s3, bucket, upstream_s3, tmp_path):
    """Clients sign for the region this answer names, and the gateway checks signatures against its own: RGW's
    "default" (its zonegroup) would have s3cmd sign for a region the gateway refuses."""
    straight = upstream_s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert straight == (None if upstream == "moto" else "default")
    assert s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] is None  # the gateway's us-east-1
    assert _error(s3.get_bucket_location, Bucket="no-such-bucket-here")[:2] == (404, "NoSuchBucket")
    status, out, err = s3cmd(gateway.endpoint(tmp_path), "info", f"s3://{bucket}")
    assert status == 0 and re.search(r"Location:\s+us-east-1", out), (out, err)
