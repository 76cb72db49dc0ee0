"""Operation classification from method, path, query and headers."""
import pytest

from gateway.s3errors import S3Error
from gateway.s3request import S3Request, classify, split_path


@pytest.mark.parametrize("method,path,query,headers,expected", [
    ("GET", "/", {}, {}, "ListBuckets"),
    ("PUT", "/bkt", {}, {}, "CreateBucket"),
    ("DELETE", "/bkt", {}, {}, "DeleteBucket"),
    ("HEAD", "/bkt", {}, {}, "HeadBucket"),
    ("GET", "/bkt", {}, {}, "ListObjects"),
    ("GET", "/bkt", {"list-type": "2"}, {}, "ListObjectsV2"),
    ("GET", "/bkt", {"versions": ""}, {}, "ListObjectVersions"),
    ("GET", "/bkt", {"uploads": "", "prefix": "a"}, {}, "ListMultipartUploads"),
    ("POST", "/bkt", {"delete": ""}, {}, "DeleteObjects"),
    ("PUT", "/bkt", {"versioning": ""}, {}, "PutBucket:versioning"),
    ("POST", "/bkt", {}, {}, "PostObject"),
    ("PUT", "/bkt/k", {}, {}, "PutObject"),
    ("PUT", "/bkt/k", {"x-id": "PutObject"}, {}, "PutObject"),
    ("PUT", "/bkt/k", {}, {"x-amz-copy-source": "/a/b"}, "CopyObject"),
    ("GET", "/bkt/k", {}, {}, "GetObject"),
    ("HEAD", "/bkt/k", {}, {}, "HeadObject"),
    ("DELETE", "/bkt/k", {}, {}, "DeleteObject"),
    ("POST", "/bkt/k", {"uploads": ""}, {}, "CreateMultipartUpload"),
    ("PUT", "/bkt/k", {"uploadId": "u", "partNumber": "1"}, {}, "UploadPart"),
    ("PUT", "/bkt/k", {"uploadId": "u", "partNumber": "1"}, {"x-amz-copy-source": "/a/b"}, "UploadPartCopy"),
    ("POST", "/bkt/k", {"uploadId": "u"}, {}, "CompleteMultipartUpload"),
    ("GET", "/bkt/k", {"uploadId": "u"}, {}, "ListParts"),
    ("DELETE", "/bkt/k", {"uploadId": "u"}, {}, "AbortMultipartUpload"),
    ("POST", "/bkt/k", {"select": "", "select-type": "2"}, {}, "SelectObjectContent"),
    ("GET", "/bkt/k", {"attributes": ""}, {}, "GetObjectAttributes"),
    ("PUT", "/bkt/k", {"tagging": ""}, {}, "PutObject:tagging"),
    ("GET", "/bkt/k", {"acl": ""}, {}, "GetObject:acl"),
    ("PATCH", "/bkt/k", {}, {}, "Unknown"),
])
def test_operation_is_classified(method, path, query, headers, expected):
    assert classify(method, path, query, headers).operation == expected


def test_bucket_and_key_are_decoded_and_keep_slashes():
    assert classify("GET", "/bkt/a%20b/c%2Fd.txt", {}, {}) == S3Request("GetObject", "bkt", "a b/c/d.txt")


def test_split_path_of_bucket_with_trailing_slash_has_empty_key():
    assert split_path("/bkt/") == ("bkt", "")


@pytest.mark.parametrize("raw_path", ["/b/x%FF", "/b/x%FE", "/b/%ED%A0%80", "/b%C3/k"])
def test_a_path_whose_percent_encoding_is_not_utf8_is_400_invalid_uri(raw_path):
    """Decoded leniently, /b/x%FF and /b/x%FE would both be the key "x\ufffd": one object would
    overwrite the other."""
    with pytest.raises(S3Error) as caught:
        split_path(raw_path)
    assert (caught.value.code, caught.value.status, caught.value.message) == (
        "InvalidURI", 400, "Couldn't parse the specified URI.")


def test_a_copy_source_whose_percent_encoding_is_not_utf8_is_400_invalid_uri():
    from gateway.handlers.copy import parse_copy_source
    with pytest.raises(S3Error) as caught:
        parse_copy_source("/b/x%FF")
    assert (caught.value.code, caught.value.status) == ("InvalidURI", 400)
    assert parse_copy_source("/b/caf%C3%A9?versionId=v1").key == "café"
