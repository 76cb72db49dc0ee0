"""The gateway's reserved objects (manifests, the bucket state record) in unversioned, versioning-Enabled and
versioning-Suspended buckets: emptying a bucket through the gateway and deleting it works in all three, as on S3.

In a Suspended bucket a manifest is stored with version id ``null``; deleting it without a version id only
writes a delete marker, so the clean-up before DeleteBucket must name ``null`` (and every other version)."""
from __future__ import annotations

import os
import uuid

import pytest

from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)


MIB = 1024 * 1024


def _all_versions(s3, bucket: str) -> list[dict]:
    listed = s3.list_object_versions(Bucket=bucket)
    return [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]


@pytest.mark.parametrize("versioning", [None, "Enabled", "Suspended"])
def test_a_bucket_emptied_through_the_gateway_is_deleted_whatever_its_versioning(s3, upstream_s3, versioning):
    bucket = f"versioned-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    if versioning == "Suspended":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if versioning:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": versioning})
    rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}, "BucketKeyEnabled": True}]}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rule)
    s3.delete_bucket_encryption(Bucket=bucket)  # in a versioned bucket: a delete marker over the record
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "BucketKeyEnabled"] is False
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rule)
    parts = [os.urandom(5 * MIB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=data)["ETag"]
             for n, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]})
    assert s3.put_object(Bucket=bucket, Key="single", Body=b"x")["BucketKeyEnabled"] is True
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"".join(parts)
    for version in _all_versions(s3, bucket):  # what `aws s3 rb --force` on a versioned bucket does
        s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
    assert _all_versions(s3, bucket) == []
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in upstream_s3.list_buckets()["Buckets"]]
