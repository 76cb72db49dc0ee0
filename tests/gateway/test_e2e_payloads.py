"""Payload checksums through the gateway: trailers round-trip, a wrong digest stores nothing."""
from __future__ import annotations

import base64
import hashlib
import os

import pytest
from awscrt import checksums
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from common.sigv4 import STREAMING_SIGNED, ChunkSignatureVerifier, signing_key
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import signed_request, upstream_keys

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
    assert upstream_keys(upstream_s3, bucket) == []


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


class _StreamingSigner(S3SigV4Auth):
    """botocore's S3 signer declaring a signed-chunk payload (botocore itself never sends one)."""

    def payload(self, request: AWSRequest) -> str:
        return STREAMING_SIGNED


def _signed_chunked_put(url: str, body: bytes, chunk_size: int, forge_chunk: int | None = None) -> requests.Response:
    """PUT ``body`` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD, every chunk signed in the chain from the
    seed signature; ``forge_chunk`` names a chunk whose signature is replaced by a wrong one."""
    pieces = [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)] + [b""]
    encoded_length = sum(len(f"{len(p):x};chunk-signature=") + 64 + 2 + len(p) + 2 for p in pieces)
    request = AWSRequest(method="PUT", url=url, headers={
        "Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(body)),
        "Content-Length": str(encoded_length)})
    _StreamingSigner(Credentials(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), "s3", "us-east-1").add_auth(request)
    amz_date = request.headers["X-Amz-Date"]
    seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    key = signing_key(GATEWAY_SECRET_KEY, amz_date[:8], "us-east-1", "s3")
    chain = ChunkSignatureVerifier(key, amz_date, f"{amz_date[:8]}/us-east-1/s3/aws4_request", seed)
    wire = bytearray()
    for index, piece in enumerate(pieces):
        signature = chain.sign_chunk(hashlib.sha256(piece).hexdigest())
        chain.verify_chunk(hashlib.sha256(piece).hexdigest(), signature)  # advance the chain
        if index == forge_chunk:
            signature = "0" * 64
        wire += f"{len(piece):x};chunk-signature={signature}\r\n".encode() + piece + b"\r\n"
    assert len(wire) == encoded_length
    return requests.put(url, data=bytes(wire), headers=dict(request.headers), timeout=30)


def test_signed_chunk_upload_round_trips(gateway, s3, bucket):
    body = os.urandom(200_000)
    response = _signed_chunked_put(f"{gateway.url}/{bucket}/signed-chunks", body, chunk_size=65_536)
    assert response.status_code == 200, response.text
    assert s3.get_object(Bucket=bucket, Key="signed-chunks")["Body"].read() == body


def test_forged_chunk_signature_is_refused_and_nothing_is_stored(gateway, bucket, upstream_s3):
    response = _signed_chunked_put(f"{gateway.url}/{bucket}/forged", os.urandom(200_000), chunk_size=65_536,
                                   forge_chunk=2)
    assert response.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in response.text
    with pytest.raises(ClientError) as error:
        upstream_s3.head_object(Bucket=bucket, Key="forged")
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
