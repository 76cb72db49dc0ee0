"""Every client authentication failure is a 403 S3 XML error naming the exact code."""
from __future__ import annotations

import datetime
import urllib.error
import urllib.request

import pytest
import xmltodict

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import presigned_get_url, signed_request


def _assert_s3_error(status: int, body: bytes, expected_status: int, expected_code: str) -> None:
    error = xmltodict.parse(body)["Error"]
    assert (status, error["Code"]) == (expected_status, expected_code)
    assert error["RequestId"]


@pytest.fixture
def object_url(gateway, s3, bucket) -> str:
    s3.put_object(Bucket=bucket, Key="secret", Body=b"authenticated only")
    return f"{gateway.url}/{bucket}/secret"


def test_unknown_access_key_is_403_invalid_access_key_id(object_url):
    response = signed_request("GET", object_url, "AKIDUNKNOWN", GATEWAY_SECRET_KEY)
    _assert_s3_error(response.status_code, response.content, 403, "InvalidAccessKeyId")


def test_wrong_secret_is_403_signature_does_not_match(object_url):
    response = signed_request("GET", object_url, GATEWAY_ACCESS_KEY, "wrong-secret")
    _assert_s3_error(response.status_code, response.content, 403, "SignatureDoesNotMatch")


def test_correctly_signed_request_reads_the_object(object_url):
    response = signed_request("GET", object_url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    assert (response.status_code, response.content) == (200, b"authenticated only")


@pytest.mark.parametrize("minutes", [-20, 20])
def test_request_dated_20_minutes_off_is_403_request_time_too_skewed(object_url, minutes):
    response = signed_request("GET", object_url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                              clock_skew=datetime.timedelta(minutes=minutes))
    _assert_s3_error(response.status_code, response.content, 403, "RequestTimeTooSkewed")


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.parametrize("signature_version", ["s3", "s3v4"])
def test_presigned_url_fetches_the_plaintext(gateway, object_url, bucket, signature_version):
    url = presigned_get_url(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, bucket, "secret",
                            signature_version=signature_version)
    assert _fetch(url) == (200, b"authenticated only")


def test_expired_sigv2_presigned_url_is_403_access_denied(gateway, object_url, bucket):
    url = presigned_get_url(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, bucket, "secret",
                            expires_in=-60)
    _assert_s3_error(*_fetch(url), 403, "AccessDenied")


def test_expired_sigv4_presigned_url_is_403_access_denied(gateway, object_url, bucket):
    url = presigned_get_url(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, bucket, "secret",
                            signature_version="s3v4", expires_in=60,
                            clock_skew=datetime.timedelta(hours=-2))
    _assert_s3_error(*_fetch(url), 403, "AccessDenied")


def test_presigned_url_with_a_forged_signature_is_403_signature_does_not_match(
        gateway, object_url, bucket):
    url = presigned_get_url(gateway.url, GATEWAY_ACCESS_KEY, "wrong-secret", bucket, "secret",
                            signature_version="s3v4")
    _assert_s3_error(*_fetch(url), 403, "SignatureDoesNotMatch")


def test_anonymous_request_is_403_access_denied(object_url):
    _assert_s3_error(*_fetch(object_url), 403, "AccessDenied")
