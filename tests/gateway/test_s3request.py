"""Operation classification from method, path, query and headers."""
import pytest

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
