"""Object round trips through the gateway with boto3, and what the upstream actually stores."""
from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError
from tests.support.clients import upstream_keys

SEGMENT = 64 * 1024
RESERVED_PREFIX = "x-gw-"


def _status(err: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 5 * 1024 * 1024])
def test_put_get_head_round_trip_plaintext_of_every_segment_boundary_size(s3, bucket, size):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == data
    assert got["ContentLength"] == size
    assert s3.head_object(Bucket=bucket, Key="obj")["ContentLength"] == size


@pytest.mark.parametrize("size", [0, 1, SEGMENT + 1])
def test_upstream_stores_ciphertext_with_reserved_metadata(s3, upstream_s3, bucket, size):
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    stored = upstream_s3.get_object(Bucket=bucket, Key="obj")
    body = stored["Body"].read()
    assert body != data
    if size >= 16:
        assert data[:16] not in body
    assert any(key.startswith(RESERVED_PREFIX) for key in stored["Metadata"])


def test_client_metadata_round_trips_and_reserved_keys_stay_hidden(s3, upstream_s3, bucket):
    metadata = {"colour": "blue", "s3cmd-attrs": "md5:0123456789abcdef"}
    s3.put_object(Bucket=bucket, Key="meta", Body=b"payload", Metadata=metadata)
    got = s3.get_object(Bucket=bucket, Key="meta")
    head = s3.head_object(Bucket=bucket, Key="meta")
    assert got["Metadata"] == metadata
    assert head["Metadata"] == metadata
    assert not any(h.lower().startswith("x-amz-meta-x-gw-")
                   for h in got["ResponseMetadata"]["HTTPHeaders"])
    stored = upstream_s3.head_object(Bucket=bucket, Key="meta")["Metadata"]
    assert {k: v for k, v in stored.items() if not k.startswith(RESERVED_PREFIX)} == metadata


def test_object_put_directly_upstream_reads_back_unchanged(s3, upstream_s3, legacy_bucket):
    data = os.urandom(SEGMENT + 5)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="legacy", Body=data, Metadata={"origin": "direct"})
    got = s3.get_object(Bucket=legacy_bucket, Key="legacy")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"origin": "direct"}
    assert s3.head_object(Bucket=legacy_bucket, Key="legacy")["ContentLength"] == len(data)


def test_create_and_delete_bucket_pass_through(s3, upstream_s3):
    s3.create_bucket(Bucket="e2e-passthrough-bucket")
    assert upstream_s3.head_bucket(Bucket="e2e-passthrough-bucket")[
        "ResponseMetadata"]["HTTPStatusCode"] == 200
    s3.delete_bucket(Bucket="e2e-passthrough-bucket")
    with pytest.raises(ClientError) as err:
        upstream_s3.head_bucket(Bucket="e2e-passthrough-bucket")
    assert _status(err)[0] == 404


def test_delete_objects_removes_every_listed_key(s3, upstream_s3, bucket):
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "b"]
    assert upstream_keys(upstream_s3, bucket) == ["c"]


def test_object_tagging_round_trips(s3, bucket):
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x")
    tags = [{"Key": "team", "Value": "storage"}, {"Key": "tier", "Value": "gold"}]
    s3.put_object_tagging(Bucket=bucket, Key="tagged", Tagging={"TagSet": tags})
    got = s3.get_object_tagging(Bucket=bucket, Key="tagged")["TagSet"]
    assert sorted(got, key=lambda t: t["Key"]) == tags


def test_missing_key_is_404_no_such_key(s3, bucket):
    with pytest.raises(ClientError) as err:
        s3.get_object(Bucket=bucket, Key="absent")
    assert _status(err) == (404, "NoSuchKey")


def test_missing_bucket_is_404_no_such_bucket(s3):
    with pytest.raises(ClientError) as err:
        s3.list_objects_v2(Bucket="e2e-no-such-bucket-here")
    assert _status(err) == (404, "NoSuchBucket")


def test_range_of_an_object_put_directly_upstream_is_served_as_stored(s3, upstream_s3, legacy_bucket):
    data = os.urandom(1000)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="legacy", Body=data)
    got = s3.get_object(Bucket=legacy_bucket, Key="legacy", Range="bytes=100-199")
    assert (got["ContentRange"], got["Body"].read()) == ("bytes 100-199/1000", data[100:200])


def test_listing_reports_plaintext_sizes(s3, bucket):
    sizes = {"zero": 0, "one": 1, "segment-plus-one": SEGMENT + 1}
    for key, size in sizes.items():
        s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(size))
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"]: o["Size"] for o in listed} == sizes
