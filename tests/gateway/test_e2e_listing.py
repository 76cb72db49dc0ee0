"""Listings through the gateway report plaintext sizes and the ETags HEAD reports."""
from __future__ import annotations

from urllib.parse import unquote

BODIES = {"a.txt": b"alpha" * 100, "b.bin": b"\x00" * 70000}


def _put_all(s3, bucket: str) -> None:
    for key, body in BODIES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def _head_etag(s3, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def test_list_objects_v1_reports_plaintext_sizes_and_head_etags(s3, bucket):
    _put_all(s3, bucket)
    contents = s3.list_objects(Bucket=bucket)["Contents"]
    assert {c["Key"]: c["Size"] for c in contents} == {k: len(v) for k, v in BODIES.items()}
    assert all(c["ETag"] == _head_etag(s3, bucket, c["Key"]) for c in contents)


def test_list_object_versions_reports_plaintext_sizes_and_head_etags(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    _put_all(s3, bucket)
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert {v["Key"]: v["Size"] for v in versions} == {k: len(v) for k, v in BODIES.items()}
    assert all(v["ETag"] == _head_etag(s3, bucket, v["Key"]) for v in versions)


def test_list_objects_v2_url_encoding_round_trips_unusual_keys(s3, bucket):
    key = "dir with space/résumé ünï.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 10)
    response = s3.list_objects_v2(Bucket=bucket, EncodingType="url")
    assert [unquote(c["Key"]) for c in response["Contents"]] == [key]
    assert response["Contents"][0]["Size"] == 10


def test_put_on_unversioned_bucket_has_no_version_id_header(s3, bucket):
    response = s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    assert "x-amz-version-id" not in response["ResponseMetadata"]["HTTPHeaders"]
