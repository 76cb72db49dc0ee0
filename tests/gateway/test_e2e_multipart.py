"""Multipart uploads through the gateway: parts encrypted, objects read back whole, by range and by part."""
from __future__ import annotations

import os
import random

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from tests.support.clients import upstream_keys

MiB = 1024 * 1024


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as err:
        call()
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _upload(s3, bucket: str, key: str, parts: list[bytes], **extra) -> dict:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)
    done = []
    for number, data in enumerate(parts, 1):
        part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=data,
                              **extra)
        done.append({"PartNumber": number, "ETag": part["ETag"]})
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": done}, **extra)


def test_three_part_upload_reads_back_whole_with_plaintext_size_and_no_plaintext_upstream(s3, upstream_s3, bucket):
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 1), os.urandom(1234)]
    done = _upload(s3, bucket, "mp", parts)
    assert done["ETag"].endswith('-3"')
    data = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ContentLength"] == len(data)
    assert got["Body"].read() == data
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == len(data)
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("mp", len(data))]
    stored = upstream_s3.get_object(Bucket=bucket, Key="mp")["Body"].read()
    assert parts[0][:4096] not in stored and parts[2] not in stored


def test_random_ranges_across_part_boundaries_match_slicing(s3, bucket):
    parts = [os.urandom(5 * MiB + 7), os.urandom(100)]
    _upload(s3, bucket, "ranges", parts)
    data = b"".join(parts)
    rng = random.Random(4)
    spans = [(5 * MiB - 3, 5 * MiB + 10), (0, len(data) - 1), (5 * MiB + 7, 5 * MiB + 7), (70000, 5 * MiB + 50)]
    spans += [tuple(sorted(rng.sample(range(len(data)), 2))) for _ in range(20)]
    for start, end in spans:
        got = s3.get_object(Bucket=bucket, Key="ranges", Range=f"bytes={start}-{end}")
        assert got["Body"].read() == data[start:end + 1], (start, end)
        assert got["ContentRange"] == f"bytes {start}-{end}/{len(data)}"


def test_part_number_reads_return_each_part(s3, bucket):
    parts = [os.urandom(5 * MiB), os.urandom(3)]
    _upload(s3, bucket, "byparts", parts)
    for number, data in enumerate(parts, 1):
        got = s3.get_object(Bucket=bucket, Key="byparts", PartNumber=number)
        assert got["Body"].read() == data
        assert got["PartsCount"] == 2
        head = s3.head_object(Bucket=bucket, Key="byparts", PartNumber=number)
        assert head["ContentLength"] == len(data)
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="byparts", PartNumber=3)) == (416, "InvalidPartNumber")


def test_part_number_read_of_an_empty_last_part_is_empty(s3, bucket):
    _upload(s3, bucket, "empty-tail", [os.urandom(5 * MiB), b""])
    got = s3.get_object(Bucket=bucket, Key="empty-tail", PartNumber=2)
    assert (got["Body"].read(), got["ContentLength"], got["PartsCount"]) == (b"", 0, 2)
    assert s3.head_object(Bucket=bucket, Key="empty-tail", PartNumber=2)["ContentLength"] == 0


def test_transfer_manager_with_odd_part_sizes_round_trips(s3, bucket, tmp_path):
    source = tmp_path / "src"
    source.write_bytes(os.urandom(3 * (5 * MiB + 1) + 17))
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB + 1, max_concurrency=4)
    s3.upload_file(str(source), bucket, "odd", Config=config)
    target = tmp_path / "dst"
    s3.download_file(bucket, "odd", str(target), Config=config)
    assert target.read_bytes() == source.read_bytes()


def test_an_emptied_bucket_with_manifests_can_be_deleted(s3, upstream_s3, bucket):
    _upload(s3, bucket, "mp", [os.urandom(5 * MiB), b"end"])
    assert upstream_s3.list_objects_v2(Bucket=bucket, Prefix=".s3gw/manifests/")["KeyCount"] == 1
    s3.put_object(Bucket=bucket, Key="still-here", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="mp")
    assert _error(lambda: s3.delete_bucket(Bucket=bucket)) == (409, "BucketNotEmpty")
    assert upstream_s3.list_objects_v2(Bucket=bucket, Prefix=".s3gw/manifests/")["KeyCount"] == 1
    s3.delete_object(Bucket=bucket, Key="still-here")
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in upstream_s3.list_buckets()["Buckets"]]


def test_delete_objects_may_not_name_reserved_keys(s3, upstream_s3, bucket):
    _upload(s3, bucket, "mp", [os.urandom(5 * MiB), b"end"])
    manifest = upstream_s3.list_objects_v2(Bucket=bucket, Prefix=".s3gw/manifests/")["Contents"][0]["Key"]
    objects = {"Objects": [{"Key": "mp"}, {"Key": manifest}]}
    assert _error(lambda: s3.delete_objects(Bucket=bucket, Delete=objects)) == (403, "AccessDenied")
    assert upstream_keys(upstream_s3, bucket) == ["mp"]
    assert upstream_keys(upstream_s3, bucket, ".s3gw/manifests/", reserved=True) == [manifest]
