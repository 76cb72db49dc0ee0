"""Unsigned (anonymous) requests: reads and listings go to the upstream unsigned, so its own public-access
rules decide; the gateway never re-signs them with its credential. Everything else unsigned stays 403.
(Serving public objects needs an upstream that serves anonymous reads: moto answers them 500, Ceph RGW
serves them; see the RGW tests.)"""
from __future__ import annotations

import pytest
import requests


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
