"""Presigned URLs through a running gateway: they do what was signed, and nothing unsigned acts.

A presigned URL is a bearer token for exactly one request. S3 refuses any x-amz-* header the URL
did not sign (403 AccessDenied, HeadersNotSigned), so its holder cannot add `x-amz-copy-source`
(turning the upload into a copy of any object the gateway's upstream credential can read), user
metadata, SSE or ACL headers. Every refusal is checked against the moto upstream directly:
nothing may have been written.
"""
from __future__ import annotations

import base64
import hashlib

import pytest
import requests
import xmltodict
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import aws, s3_client

BODY = b"presigned upload body"


def _presign(gateway, method: str, params: dict, signature_version: str) -> str:
    client = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, signature_version=signature_version)
    return client.generate_presigned_url(method, Params=params, ExpiresIn=600)


def _error(response: requests.Response) -> dict:
    return xmltodict.parse(response.content)["Error"]


def _absent_upstream(upstream_s3, bucket: str, key: str) -> bool:
    try:
        upstream_s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        return err.response["Error"]["Code"] == "404"
    return False


@pytest.fixture
def source(s3, bucket) -> str:
    """An object the attacker would like to copy: readable by the gateway's upstream credential."""
    s3.put_object(Bucket=bucket, Key="secret", Body=b"top secret")
    return f"{bucket}/secret"


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
@pytest.mark.parametrize("extra, not_signed", [
    ({"x-amz-meta-x": "injected"}, "x-amz-meta-x"),
    ({"x-amz-server-side-encryption": "AES256"}, "x-amz-server-side-encryption"),
    ({"x-amz-website-redirect-location": "/evil", "x-amz-acl": "public-read"},
     "x-amz-acl, x-amz-website-redirect-location"),
])
def test_presigned_put_with_an_added_amz_header_is_refused_and_nothing_is_stored(
        gateway, bucket, upstream_s3, signature_version, extra, not_signed):
    url = _presign(gateway, "put_object", {"Bucket": bucket, "Key": "up"}, signature_version)
    response = requests.put(url, data=BODY, headers=extra, timeout=30)
    error = _error(response)
    if signature_version == "s3v4":
        assert (response.status_code, error["Code"], error["HeadersNotSigned"]) == (403, "AccessDenied", not_signed)
        assert error["Message"] == "There were headers present in the request which were not signed"
    else:  # SigV2 signs every x-amz-* header sent: an added one changes the string to sign
        assert (response.status_code, error["Code"]) == (403, "SignatureDoesNotMatch")
    assert _absent_upstream(upstream_s3, bucket, "up")


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_put_with_an_added_copy_source_does_not_copy(gateway, bucket, upstream_s3, source,
                                                               signature_version):
    url = _presign(gateway, "put_object", {"Bucket": bucket, "Key": "stolen"}, signature_version)
    response = requests.put(url, headers={"x-amz-copy-source": source}, timeout=30)
    error = _error(response)
    expected = ((403, "AccessDenied", "x-amz-copy-source") if signature_version == "s3v4"
                else (403, "SignatureDoesNotMatch", None))
    assert (response.status_code, error["Code"], error.get("HeadersNotSigned")) == expected
    assert _absent_upstream(upstream_s3, bucket, "stolen")


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_put_without_extra_headers_stores_the_object(gateway, s3, bucket, signature_version):
    url = _presign(gateway, "put_object", {"Bucket": bucket, "Key": "up"}, signature_version)
    response = requests.put(url, data=BODY, timeout=30)
    assert response.status_code == 200, response.content
    assert s3.get_object(Bucket=bucket, Key="up")["Body"].read() == BODY


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_put_that_signed_metadata_content_type_and_sse_stores_them(gateway, s3, bucket,
                                                                            signature_version):
    key = "dir/a b+c~é%"  # the path survives the query being rewritten
    params = {"Bucket": bucket, "Key": key, "Metadata": {"x": "signed"}, "ContentType": "text/plain",
              "ServerSideEncryption": "aws:kms"}
    url = _presign(gateway, "put_object", params, signature_version)
    # SigV4 URLs sign the headers, which the client must then send; SigV2 URLs carry them in the query
    headers = ({"x-amz-meta-x": "signed", "Content-Type": "text/plain", "x-amz-server-side-encryption": "aws:kms"}
               if signature_version == "s3v4" else {"Content-Type": "text/plain"})
    response = requests.put(url, data=BODY, headers=headers, timeout=30)
    assert response.status_code == 200, response.content
    head = s3.head_object(Bucket=bucket, Key=key)
    assert (head["Metadata"], head["ContentType"], head["ServerSideEncryption"]) == (
        {"x": "signed"}, "text/plain", "aws:kms")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == BODY


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_get_with_an_added_amz_header_is_refused(gateway, s3, bucket, signature_version):
    s3.put_object(Bucket=bucket, Key="k", Body=BODY)
    url = _presign(gateway, "get_object", {"Bucket": bucket, "Key": "k"}, signature_version)
    assert requests.get(url, timeout=30).content == BODY
    response = requests.get(url, headers={"x-amz-checksum-mode": "ENABLED"}, timeout=30)
    expected = ((403, "AccessDenied") if signature_version == "s3v4" else (403, "SignatureDoesNotMatch"))
    assert (response.status_code, _error(response)["Code"]) == expected


def test_presigned_url_may_carry_an_unsigned_content_sha256_header(gateway, s3, bucket):
    """S3 exempts x-amz-content-sha256 from signing: its value is the canonical payload hash."""
    s3.put_object(Bucket=bucket, Key="k", Body=BODY)
    url = _presign(gateway, "get_object", {"Bucket": bucket, "Key": "k"}, "s3v4")
    response = requests.get(url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, timeout=30)
    assert (response.status_code, response.content) == (200, BODY)


def test_aws_cli_presign_url_downloads_and_refuses_added_headers(gateway, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="k", Body=BODY)
    rc, out, err = aws(gateway.endpoint(tmp_path), "s3", "presign", f"s3://{bucket}/k")
    assert rc == 0, err
    response = requests.get(out.strip(), timeout=30)
    assert (response.status_code, response.content) == (200, BODY)
    refused = requests.get(out.strip(), headers={"x-amz-meta-x": "1"}, timeout=30)
    assert (refused.status_code, _error(refused)["Code"]) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_ssec_put_encrypts_under_the_customer_key(gateway, s3, bucket, upstream_s3, signature_version):
    """A SigV2 URL carries the SSE-C headers in its query: they act as headers and never reach
    the upstream as query parameters."""
    key = b"k" * 32
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    url = _presign(gateway, "put_object", {"Bucket": bucket, "Key": "c", **ssec}, signature_version)
    headers = {}
    if signature_version == "s3v4":  # the URL signed the SSE-C headers: the client sends them
        headers = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
                   "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
                   "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    response = requests.put(url, data=BODY, headers=headers, timeout=30)
    assert response.status_code == 200, response.content
    assert s3.get_object(Bucket=bucket, Key="c", **ssec)["Body"].read() == BODY
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=bucket, Key="c")
    assert info.value.response["Error"]["Code"] == "InvalidRequest"
    assert BODY not in upstream_s3.get_object(Bucket=bucket, Key="c")["Body"].read()


def test_sigv2_query_header_value_shadowed_by_a_sent_header_is_not_used(gateway, s3, bucket, upstream_s3):
    """SigV2 signs the header when one is sent under a query parameter's name, so the query value
    is unsigned: it must neither act nor be forwarded upstream."""
    url = _presign(gateway, "put_object", {"Bucket": bucket, "Key": "up", "Metadata": {"x": "signed"}}, "s3")
    assert "x-amz-meta-x=signed" in url
    response = requests.put(url.replace("x-amz-meta-x=signed", "x-amz-meta-x=forged"), data=BODY,
                            headers={"x-amz-meta-x": "signed"}, timeout=30)
    assert response.status_code == 200, response.content
    assert s3.head_object(Bucket=bucket, Key="up")["Metadata"] == {"x": "signed"}
    assert upstream_s3.head_object(Bucket=bucket, Key="up")["Metadata"]["x"] == "signed"


@pytest.mark.parametrize("subresource", ["retention", "legal-hold", "tagging"])
def test_sigv2_presigned_put_with_an_appended_subresource_is_refused(gateway, s3, bucket, subresource):
    """SigV2 signs only listed sub-resources: `?retention` appended to a presigned PutObject
    would have made it a PutObjectRetention."""
    s3.put_object(Bucket=bucket, Key="k", Body=BODY)
    url = _presign(gateway, "put_object", {"Bucket": bucket, "Key": "k"}, "s3")
    response = requests.put(f"{url}&{subresource}", data=b"<x/>", timeout=30)
    assert (response.status_code, _error(response)["Code"]) == (403, "SignatureDoesNotMatch")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == BODY
