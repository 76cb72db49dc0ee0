"""Classify an S3 request: bucket, key and the operation name, from method, path and query.

The gateway must know the operation before touching the body, because only a few operations carry
object data that has to be encrypted (or decrypted); everything else passes through unchanged, and
the data-carrying operations it does not handle yet must be refused rather than leak plaintext.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote

from gateway.s3errors import invalid_uri

# Bucket sub-resources whose presence names a bucket operation that is not listing.
_BUCKET_SUBRESOURCES = (
    "acl", "analytics", "cors", "encryption", "intelligent-tiering", "inventory", "lifecycle",
    "location", "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy",
    "policyStatus", "publicAccessBlock", "replication", "requestPayment", "tagging", "versioning",
    "website", "accelerate",
)
_OBJECT_SUBRESOURCES = ("acl", "tagging", "retention", "legal-hold", "torrent", "restore")
# Every query parameter whose presence changes the operation: a signature scheme that does not sign
# the whole query (SigV2) must sign these (common/sigv4.py V2_SUBRESOURCES).
OPERATION_SUBRESOURCES = frozenset(
    _BUCKET_SUBRESOURCES + _OBJECT_SUBRESOURCES
    + ("uploads", "uploadId", "versions", "delete", "select", "restore", "attributes")
)


@dataclass(frozen=True)
class S3Request:
    """What a request is about; ``key`` is the decoded object key ("" for bucket/service calls)."""

    operation: str
    bucket: str
    key: str


def split_path(raw_path: str) -> tuple[str, str]:
    """Path-style ``/bucket/key`` -> (bucket, decoded key)."""
    path = raw_path.split("?", 1)[0]
    trimmed = path[1:] if path.startswith("/") else path
    bucket, _, key = trimmed.partition("/")
    return decode_uri_part(bucket), decode_uri_part(key)


def decode_uri_part(value: str) -> str:
    """A percent-encoded path part as text. Bytes that are not UTF-8 are S3's 400 InvalidURI: decoded
    leniently (each as U+FFFD) two different keys would name one upstream object, and one would
    overwrite the other."""
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise invalid_uri() from None


def _service_operation(method: str) -> str:
    return "ListBuckets" if method in ("GET", "HEAD") else "Unknown"


def _bucket_operation(method: str, query: Mapping[str, str]) -> str:
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if "uploads" in query:
        return "ListMultipartUploads" if method == "GET" else "Unknown"
    if "versions" in query:
        return "ListObjectVersions" if method == "GET" else "Unknown"
    for sub in _BUCKET_SUBRESOURCES:
        if sub in query:
            verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method.title())
            return f"{verb}Bucket:{sub}"
    if method == "POST":
        return "PostObject"
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == "2" else "ListObjects"
    return {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method, "Unknown")


def _object_operation(method: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    if "uploads" in query:
        return "CreateMultipartUpload" if method == "POST" else "Unknown"
    if "uploadId" in query:
        if method == "PUT":
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        return {"POST": "CompleteMultipartUpload", "GET": "ListParts",
                "DELETE": "AbortMultipartUpload"}.get(method, "Unknown")
    if method == "POST" and "select" in query:
        return "SelectObjectContent"
    if method == "POST" and "restore" in query:
        return "RestoreObject"
    if "attributes" in query:
        return "GetObjectAttributes"
    for sub in _OBJECT_SUBRESOURCES:
        if sub in query:
            verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method.title())
            return f"{verb}Object:{sub}"
    if method == "PUT":
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject",
            "POST": "PostObject"}.get(method, "Unknown")


def classify(method: str, raw_path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> S3Request:
    """The operation for a path-style request; ``headers`` must be case-insensitive (lower-case keys)."""
    bucket, key = split_path(raw_path)
    if not bucket:
        return S3Request(_service_operation(method), "", "")
    if not key:
        return S3Request(_bucket_operation(method, query), bucket, "")
    return S3Request(_object_operation(method, query, headers), bucket, key)
