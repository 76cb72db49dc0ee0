"""Payload checksums through the gateway: trailers round-trip, a wrong digest stores nothing."""
from __future__ import annotations

import base64
import hashlib

import pytest
from awscrt import checksums
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import signed_request

BODY = b"payload-mode test body " * 3000


def _plaintext_checksum(algorithm: str) -> str:
    digest = (hashlib.sha1(BODY).digest() if algorithm == "SHA1"
              else checksums.crc32c(BODY).to_bytes(4, "big"))
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize("algorithm", ["SHA1", "CRC32C"])
def test_put_with_checksum_algorithm_round_trips_and_echoes_checksum(s3, bucket, algorithm):
    response = s3.put_object(Bucket=bucket, Key="k", Body=BODY, ChecksumAlgorithm=algorithm)
    assert response[f"Checksum{algorithm}"] == _plaintext_checksum(algorithm)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == BODY


def test_wrong_sha256_checksum_header_is_bad_digest_and_stores_nothing(gateway, bucket, upstream_s3):
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    response = signed_request("PUT", f"{gateway.url}/{bucket}/k", GATEWAY_ACCESS_KEY,
                              GATEWAY_SECRET_KEY, body=BODY,
                              headers={"x-amz-checksum-sha256": wrong})
    assert response.status_code == 400
    assert "<Code>BadDigest</Code>" in response.text
    assert "Contents" not in upstream_s3.list_objects_v2(Bucket=bucket)


class _UnsignedPayloadAuth(S3SigV4Auth):
    """botocore signs the payload hash over http; this signs the literal UNSIGNED-PAYLOAD instead."""

    def payload(self, request) -> str:
        return "UNSIGNED-PAYLOAD"


def test_put_with_unsigned_payload_round_trips(gateway, s3, bucket):
    url = f"{gateway.url}/{bucket}/k"
    request = AWSRequest(method="PUT", url=url, data=BODY)
    _UnsignedPayloadAuth(Credentials(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), "s3",
                         "us-east-1").add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    response = requests.put(url, data=BODY, headers=dict(request.headers), timeout=30)
    assert response.status_code == 200
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == BODY
