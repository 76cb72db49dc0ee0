"""ETags agree across PUT/HEAD/GET/List, and conditional requests are evaluated as S3 does."""
from __future__ import annotations

import datetime

import pytest
from botocore.exceptions import ClientError

from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)


HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def stored(s3, bucket) -> tuple[str, str, datetime.datetime]:
    """An object's bucket, its PUT ETag and its Last-Modified."""
    etag = s3.put_object(Bucket=bucket, Key="cond", Body=b"conditional body")["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="cond")["LastModified"]
    return bucket, etag, modified


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as err:
        call()
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_etag_is_the_same_on_put_head_get_and_list(s3, stored):
    bucket, etag, _ = stored
    assert s3.head_object(Bucket=bucket, Key="cond")["ETag"] == etag
    assert s3.get_object(Bucket=bucket, Key="cond")["ETag"] == etag
    assert [o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [etag]


def test_if_match_with_the_etag_returns_the_object(s3, stored):
    bucket, etag, _ = stored
    got = s3.get_object(Bucket=bucket, Key="cond", IfMatch=etag)
    assert got["Body"].read() == b"conditional body"


def test_if_match_with_another_etag_is_412(s3, stored):
    bucket, _, _ = stored
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="cond",
                                        IfMatch='"0123456789abcdef0123456789abcdef"')) == (
        412, "PreconditionFailed")


def test_if_none_match_with_the_etag_is_304(s3, stored):
    bucket, etag, _ = stored
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="cond", IfNoneMatch=etag))[0] == 304


def test_if_none_match_with_another_etag_returns_the_object(s3, stored):
    bucket, _, _ = stored
    got = s3.get_object(Bucket=bucket, Key="cond", IfNoneMatch='"0123456789abcdef0123456789abcdef"')
    assert got["Body"].read() == b"conditional body"


def test_if_modified_since_a_later_time_is_304(s3, stored):
    bucket, _, modified = stored
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="cond",
                                        IfModifiedSince=modified + HOUR))[0] == 304


def test_if_modified_since_an_earlier_time_returns_the_object(s3, stored):
    bucket, _, modified = stored
    got = s3.get_object(Bucket=bucket, Key="cond", IfModifiedSince=modified - HOUR)
    assert got["Body"].read() == b"conditional body"


def test_if_unmodified_since_an_earlier_time_is_412(s3, stored):
    bucket, _, modified = stored
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="cond",
                                        IfUnmodifiedSince=modified - HOUR)) == (
        412, "PreconditionFailed")


def test_if_unmodified_since_a_later_time_returns_the_object(s3, stored):
    bucket, _, modified = stored
    got = s3.get_object(Bucket=bucket, Key="cond", IfUnmodifiedSince=modified + HOUR)
    assert got["Body"].read() == b"conditional body"


def test_if_match_wins_over_a_failing_if_unmodified_since(s3, stored):
    """S3 (RFC 7232 6): when If-Match holds, If-Unmodified-Since is not evaluated."""
    bucket, etag, modified = stored
    got = s3.get_object(Bucket=bucket, Key="cond", IfMatch=etag, IfUnmodifiedSince=modified - HOUR)
    assert got["Body"].read() == b"conditional body"


def test_head_with_if_none_match_the_etag_is_304(s3, stored):
    bucket, etag, _ = stored
    assert _error(lambda: s3.head_object(Bucket=bucket, Key="cond", IfNoneMatch=etag))[0] == 304


def test_head_with_if_match_another_etag_is_412(s3, stored):
    bucket, _, _ = stored
    assert _error(lambda: s3.head_object(Bucket=bucket, Key="cond",
                                         IfMatch='"0123456789abcdef0123456789abcdef"'))[0] == 412


def _put_refused(s3, **kwargs) -> tuple[int, str]:
    with pytest.raises(ClientError) as error:
        s3.put_object(**kwargs)
    return error.value.response["ResponseMetadata"]["HTTPStatusCode"], error.value.response["Error"]["Code"]


def test_conditional_put_if_match_takes_the_etag_the_gateway_handed_out(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["ETag"]
    assert _put_refused(s3, Bucket=bucket, Key="k", Body=b"x", IfMatch='"0123456789abcdef0123456789abcdef-1"') == (
        412, "PreconditionFailed")
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfMatch=first)["ETag"]
    assert _put_refused(s3, Bucket=bucket, Key="k", Body=b"x", IfMatch=first) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"third", IfMatch=second)["ETag"] != second
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"third"


def test_conditional_put_if_match_on_a_missing_key_is_404_and_if_none_match_on_an_existing_one_412(s3, bucket):
    assert _put_refused(s3, Bucket=bucket, Key="absent", Body=b"x", IfMatch='"abc-1"') == (404, "NoSuchKey")
    s3.put_object(Bucket=bucket, Key="new", Body=b"created", IfNoneMatch="*")
    assert _put_refused(s3, Bucket=bucket, Key="new", Body=b"x", IfNoneMatch="*") == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"created"
    assert "absent" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_conditional_put_if_match_names_a_multipart_or_legacy_objects_etag_as_listed(s3, bucket, legacy_bucket,
                                                                                    upstream_s3):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"one part")["ETag"]
    etag = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})["ETag"]
    s3.put_object(Bucket=bucket, Key="mp", Body=b"replaced", IfMatch=etag)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="legacy", Body=b"plain")
    listed = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=legacy_bucket)["Contents"]}
    s3.put_object(Bucket=legacy_bucket, Key="legacy", Body=b"encrypted now", IfMatch=listed["legacy"])
    assert s3.head_object(Bucket=legacy_bucket, Key="legacy")["ServerSideEncryption"] == "aws:kms"


def _upload(s3, bucket: str, key: str, body: bytes) -> tuple[str, list[dict]]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)["ETag"]
    return upload, [{"PartNumber": 1, "ETag": etag}]


def test_a_complete_with_if_none_match_never_overwrites_and_its_retry_succeeds(s3, bucket):
    s3.put_object(Bucket=bucket, Key="precious", Body=b"precious")
    upload, parts = _upload(s3, bucket, "precious", b"overwrite")
    assert _error(lambda: s3.complete_multipart_upload(Bucket=bucket, Key="precious", UploadId=upload, IfNoneMatch="*",
                                                       MultipartUpload={"Parts": parts})) == (412, "PreconditionFailed")
    assert s3.get_object(Bucket=bucket, Key="precious")["Body"].read() == b"precious"
    upload, parts = _upload(s3, bucket, "fresh", b"first writer")
    first = s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=upload, IfNoneMatch="*",
                                         MultipartUpload={"Parts": parts})["ETag"]
    again = s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=upload, IfNoneMatch="*",
                                         MultipartUpload={"Parts": parts})["ETag"]  # a retry after a lost answer
    assert first == again and s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"first writer"


def test_a_complete_with_if_match_takes_the_gateways_etag(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")["ETag"]
    upload, parts = _upload(s3, bucket, "k", b"v2")
    assert _error(lambda: s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, IfMatch='"ab-1"',
                                                       MultipartUpload={"Parts": parts})) == (412, "PreconditionFailed")
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, IfMatch=etag, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v2"
