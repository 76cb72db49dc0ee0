"""CORS through the gateway, as a browser uses it: the unsigned preflight is answered per the bucket's CORS
configuration (set with PutBucketCors through the gateway), and actual requests carry the CORS headers, so
a page can PUT to a presigned URL and read the object back."""
from __future__ import annotations

import uuid

import pytest
import requests

from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)


ORIGIN = "https://app.example"
RULES = {"CORSRules": [{"AllowedOrigins": [ORIGIN, "https://*.trusted.example"], "AllowedMethods": ["GET", "PUT"],
                        "AllowedHeaders": ["content-type", "x-amz-*"], "ExposeHeaders": ["ETag"],
                        "MaxAgeSeconds": 600}]}


@pytest.fixture
def cors_bucket(s3) -> str:
    name = f"cors-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_bucket_cors(Bucket=name, CORSConfiguration=RULES)
    return name


def _preflight(gateway, bucket: str, **headers: str) -> requests.Response:
    return requests.options(f"{gateway.url}/{bucket}/upload.txt", headers=headers, timeout=10)


def test_a_preflight_for_an_allowed_origin_method_and_headers_is_answered(gateway, cors_bucket):
    answer = _preflight(gateway, cors_bucket, Origin=ORIGIN, **{"Access-Control-Request-Method": "PUT",
                                                                "Access-Control-Request-Headers": "Content-Type, x-amz-meta-a"})
    assert answer.status_code == 200
    assert {name: answer.headers[name] for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                                                     "Access-Control-Allow-Headers", "Access-Control-Max-Age",
                                                     "Access-Control-Expose-Headers",
                                                     "Access-Control-Allow-Credentials")} == {
        "Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Methods": "GET, PUT",
        "Access-Control-Allow-Headers": "content-type, x-amz-meta-a", "Access-Control-Max-Age": "600",
        "Access-Control-Expose-Headers": "ETag", "Access-Control-Allow-Credentials": "true"}
    wildcard = _preflight(gateway, cors_bucket, Origin="https://eu.trusted.example",
                          **{"Access-Control-Request-Method": "GET"})
    assert wildcard.headers["Access-Control-Allow-Origin"] == "https://eu.trusted.example"


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
    {"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"},
    {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization-x"}])
def test_a_preflight_no_rule_allows_is_403_access_forbidden(gateway, cors_bucket, headers):
    answer = _preflight(gateway, cors_bucket, **headers)
    assert (answer.status_code, b"<Code>AccessForbidden</Code>" in answer.content) == (403, True)
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_a_preflight_without_origin_or_method_is_400_and_a_bucket_without_rules_403(gateway, s3, bucket):
    assert _preflight(gateway, bucket, **{"Access-Control-Request-Method": "GET"}).status_code == 400
    assert _preflight(gateway, bucket, Origin=ORIGIN).status_code == 400
    assert _preflight(gateway, bucket, Origin=ORIGIN, **{"Access-Control-Request-Method": "GET"}).status_code == 403


def test_a_browser_puts_to_a_presigned_url_and_reads_it_back_with_cors_headers(gateway, s3, cors_bucket):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": cors_bucket, "Key": "upload.txt"})
    put = requests.put(url, data=b"from the browser", headers={"Origin": ORIGIN}, timeout=10)
    assert (put.status_code, put.headers["Access-Control-Allow-Origin"]) == (200, ORIGIN)
    assert put.headers["Access-Control-Expose-Headers"] == "ETag"
    url = s3.generate_presigned_url("get_object", Params={"Bucket": cors_bucket, "Key": "upload.txt"})
    got = requests.get(url, headers={"Origin": ORIGIN}, timeout=10)
    assert (got.content, got.headers["Access-Control-Allow-Origin"]) == (b"from the browser", ORIGIN)
    other = requests.get(url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


def test_deleting_the_rules_through_the_gateway_takes_effect_at_once(gateway, s3, cors_bucket):
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    assert _preflight(gateway, cors_bucket, **headers).status_code == 200
    s3.delete_bucket_cors(Bucket=cors_bucket)
    assert _preflight(gateway, cors_bucket, **headers).status_code == 403
