"""ListMultipartUploads through the gateway lists the UploadIds it issued, so a client can find an upload it
lost track of and resume it (parts accepted, encrypted) or abort it; records go with the upload."""
from __future__ import annotations

import pytest

import json
from pathlib import Path

from tests.support.clients import aws
from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)


def test_a_listed_upload_is_resumed_with_the_listed_id_and_completes(s3, bucket, upstream_s3):
    started = s3.create_multipart_upload(Bucket=bucket, Key="resume/me")["UploadId"]
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in listed] == [("resume/me", started)]
    part = s3.upload_part(Bucket=bucket, Key="resume/me", UploadId=listed[0]["UploadId"], PartNumber=1,
                          Body=b"resumed")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="resume/me", UploadId=listed[0]["UploadId"],
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    assert s3.get_object(Bucket=bucket, Key="resume/me")["Body"].read() == b"resumed"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [o["Key"] for o in upstream_s3.list_objects_v2(Bucket=bucket, Prefix=".s3gw/uploads/").get(
        "Contents", [])] == []


def test_uploads_are_paged_with_the_issued_ids_as_markers_and_aborted_with_them(s3, bucket, upstream_s3):
    issued = {s3.create_multipart_upload(Bucket=bucket, Key=f"k{i}")["UploadId"] for i in range(3)}
    seen, key_marker, id_marker = [], "", ""
    while True:
        page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=1, KeyMarker=key_marker,
                                         UploadIdMarker=id_marker)
        seen += [u["UploadId"] for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        key_marker, id_marker = page["NextKeyMarker"], page["NextUploadIdMarker"]
        assert id_marker in issued
    assert sorted(seen) == sorted(issued)
    for upload in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]:
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert upstream_s3.list_objects_v2(Bucket=bucket, Prefix=".s3gw/uploads/").get("KeyCount", 0) == 0


def test_an_upload_started_upstream_keeps_its_upstream_id_and_a_planted_record_renames_nothing(
        s3, legacy_bucket, upstream_s3):
    direct = upstream_s3.create_multipart_upload(Bucket=legacy_bucket, Key="direct")["UploadId"]
    ours = s3.create_multipart_upload(Bucket=legacy_bucket, Key="ours")["UploadId"]
    from gateway.objects.upload_records import record_key
    upstream_s3.put_object(Bucket=legacy_bucket, Key=record_key(direct), Body=ours.encode())  # someone upstream
    listed = {u["Key"]: u["UploadId"] for u in s3.list_multipart_uploads(Bucket=legacy_bucket)["Uploads"]}
    assert listed == {"direct": direct, "ours": ours}


def test_the_aws_cli_lists_and_aborts_uploads_through_the_gateway(gateway, s3, bucket, tmp_path: Path):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="cli")["UploadId"]
    endpoint = gateway.endpoint(tmp_path)
    code, out, err = aws(endpoint, "s3api", "list-multipart-uploads", "--bucket", bucket)
    assert code == 0, err
    assert [u["UploadId"] for u in json.loads(out)["Uploads"]] == [upload]
    code, _, err = aws(endpoint, "s3api", "abort-multipart-upload", "--bucket", bucket, "--key", "cli",
                       "--upload-id", upload)
    assert code == 0, err
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
