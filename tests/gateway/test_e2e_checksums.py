"""A PUT whose body contradicts its declared digests is refused and stores nothing."""
from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
import xmltodict
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import signed_request

BODY = b"the body the client really sent"
OTHER = b"a different body entirely"


def _crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _put_wrong_crc32(url: str):
    return signed_request("PUT", url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, body=BODY,
                          headers={"x-amz-checksum-crc32": _crc32_b64(OTHER)})


def _put_wrong_md5(url: str):
    return signed_request("PUT", url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, body=BODY,
                          headers={"Content-MD5": _md5_b64(OTHER)})


def _put_wrong_sha256(url: str):
    return signed_request("PUT", url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, body=OTHER,
                          body_on_wire=BODY)


BAD_PUTS = [
    pytest.param(_put_wrong_crc32, "BadDigest", id="x-amz-checksum-crc32"),
    pytest.param(_put_wrong_md5, "BadDigest", id="content-md5"),
    pytest.param(_put_wrong_sha256, "XAmzContentSHA256Mismatch", id="x-amz-content-sha256"),
]


def _assert_400(response, code: str) -> None:
    assert response.status_code == 400
    error = xmltodict.parse(response.content)["Error"]
    assert error["Code"] == code
    assert error["RequestId"]


@pytest.mark.parametrize(("bad_put", "code"), BAD_PUTS)
def test_mismatched_digest_is_rejected_and_nothing_is_stored(gateway, upstream_s3, bucket,
                                                             bad_put, code):
    _assert_400(bad_put(f"{gateway.url}/{bucket}/new"), code)
    with pytest.raises(ClientError) as err:
        upstream_s3.head_object(Bucket=bucket, Key="new")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


@pytest.mark.parametrize(("bad_put", "code"), BAD_PUTS)
def test_mismatched_digest_leaves_the_existing_object_unchanged(gateway, s3, upstream_s3, bucket,
                                                                bad_put, code):
    s3.put_object(Bucket=bucket, Key="kept", Body=b"original")
    stored_etag = upstream_s3.head_object(Bucket=bucket, Key="kept")["ETag"]
    _assert_400(bad_put(f"{gateway.url}/{bucket}/kept"), code)
    assert s3.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"original"
    assert upstream_s3.head_object(Bucket=bucket, Key="kept")["ETag"] == stored_etag


def test_matching_crc32_and_md5_are_accepted(gateway, s3, bucket):
    response = signed_request("PUT", f"{gateway.url}/{bucket}/good", GATEWAY_ACCESS_KEY,
                              GATEWAY_SECRET_KEY, body=BODY,
                              headers={"x-amz-checksum-crc32": _crc32_b64(BODY),
                                       "Content-MD5": _md5_b64(BODY)})
    assert response.status_code == 200
    assert s3.get_object(Bucket=bucket, Key="good")["Body"].read() == BODY
