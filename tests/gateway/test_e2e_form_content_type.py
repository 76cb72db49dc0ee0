"""PUT bodies with a form Content-Type, and the other places where the development upstream (moto)
is made to behave as S3.

urllib, curl --data and many legacy applications label a PUT body ``application/x-www-form-urlencoded``.
moto used to parse such bodies as forms and store the object empty while the gateway answered 200: the
gateway's ciphertext was lost and every later read an integrity failure. S3 never parses a PUT body.
"""
from __future__ import annotations

import urllib.request

import pytest

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import s3_client, upstream_keys

FORM = "application/x-www-form-urlencoded"
MULTIPART_FORM = "multipart/form-data; boundary=xyz"
MiB = 1024 * 1024


@pytest.mark.parametrize("content_type", [FORM, MULTIPART_FORM])
def test_put_with_a_form_content_type_round_trips_bytes_and_type(s3, upstream_s3, bucket, content_type):
    body = b"key=value&file=" + bytes(range(256)) * 40
    s3.put_object(Bucket=bucket, Key="form", Body=body, ContentType=content_type)
    got = s3.get_object(Bucket=bucket, Key="form")
    assert (got["Body"].read(), got["ContentType"]) == (body, content_type)
    assert upstream_s3.head_object(Bucket=bucket, Key="form")["ContentLength"] > len(body)  # ciphertext, whole


def test_presigned_put_from_urllib_with_its_default_form_type_stores_the_body(gateway, s3, bucket):
    sigv4 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, signature_version="s3v4")
    url = sigv4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "urllib"})
    with urllib.request.urlopen(urllib.request.Request(url, data=b"hello", method="PUT")) as answer:
        assert answer.status == 200
    got = s3.get_object(Bucket=bucket, Key="urllib")
    assert (got["Body"].read(), got["ContentType"]) == (b"hello", FORM)


def test_multipart_upload_labelled_as_a_form_round_trips(s3, upstream_s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType=FORM)["UploadId"]
    parts = [bytes([n]) * (5 * MiB if n == 1 else 1000) for n in (1, 2)]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=n, Body=part)["ETag"]
             for n, part in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"".join(parts)
    assert upstream_keys(upstream_s3, bucket) == ["mp"]


def test_an_object_completed_from_parts_has_s3s_default_acl_on_the_development_upstream(s3, bucket):
    """moto leaves such objects without an ACL and fails GetObjectAcl (s3cmd info/cp) with a 500; the
    development upstream (and the suite's moto) give them S3's private default, as S3 does."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="parts", UploadId=upload, PartNumber=1, Body=b"only part")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="parts", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    grants = s3.get_object_acl(Bucket=bucket, Key="parts")["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]
