"""Unsigned (anonymous) requests: reads and listings go to the upstream unsigned, so its own public-access
rules decide; the gateway never re-signs them with its credential. Everything else unsigned stays 403.
(Serving public objects needs an upstream that serves anonymous reads: moto answers them 500, Ceph RGW
serves them; see the RGW tests.)"""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)
from tests.support.clients import s3_client
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY


def test_an_anonymous_read_of_a_private_object_is_refused_by_the_upstream_not_served(gateway, s3, bucket):
    s3.put_object(Bucket=bucket, Key="private", Body=b"private data", ServerSideEncryption="AES256")
    answer = requests.get(f"{gateway.url}/{bucket}/private", timeout=10)
    assert (answer.status_code, b"<Code>AccessDenied</Code>" in answer.content) == (403, True)
    assert b"private data" not in answer.content
    assert requests.head(f"{gateway.url}/{bucket}/private", timeout=10).status_code == 403


@pytest.mark.parametrize("method, path", [("PUT", "/{bucket}/new"), ("DELETE", "/{bucket}/private"),
                                          ("POST", "/{bucket}/new?uploads"), ("GET", "/"),
                                          ("GET", "/{bucket}?acl"), ("PUT", "/{bucket}?cors")])
def test_other_anonymous_requests_are_403_access_denied(gateway, s3, bucket, method, path):
    s3.put_object(Bucket=bucket, Key="private", Body=b"x")
    answer = requests.request(method, gateway.url + path.format(bucket=bucket), data=b"body", timeout=10)
    assert (answer.status_code, b"<Code>AccessDenied</Code>" in answer.content) == (403, True)
    assert s3.get_object(Bucket=bucket, Key="private")["Body"].read() == b"x"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["private"]


@pytest.mark.rgw
def test_a_public_sse_s3_object_is_served_to_an_anonymous_reader_and_sse_kms_refused(rgw_gateway):
    """On Ceph RGW, which serves anonymous reads of public-read objects (moto answers them 500)."""
    s3 = s3_client(rgw_gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    bucket = f"public-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="sse-s3", Body=b"public and SSE-S3", ServerSideEncryption="AES256",
                  ACL="public-read")
    s3.put_object(Bucket=bucket, Key="sse-kms", Body=b"public but SSE-KMS", ServerSideEncryption="aws:kms",
                  ACL="public-read")
    served = requests.get(f"{rgw_gateway.url}/{bucket}/sse-s3", timeout=10)
    assert (served.status_code, served.content) == (200, b"public and SSE-S3")
    refused = requests.get(f"{rgw_gateway.url}/{bucket}/sse-kms", timeout=10)
    assert (refused.status_code, b"<Code>AccessDenied</Code>" in refused.content) == (403, True)
    assert b"SSE-KMS" not in refused.content
