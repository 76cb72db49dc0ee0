"""SSE-C request headers are validated as S3 validates them, and customer keys need TLS unless allowed."""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, Gateway, _start_gateway
from tests.support.clients import s3_client, signed_request, upstream_keys
from tests.support.secrets import CUSTOMER_KEY as KEY
ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
KEY_HEADER = "x-amz-server-side-encryption-customer-key"
MD5_HEADER = "x-amz-server-side-encryption-customer-key-MD5"


def _headers(key: bytes = KEY, *, algorithm: str = "AES256", encoded: str | None = None,
             md5: str | None = None) -> dict[str, str]:
    return {ALGORITHM: algorithm, KEY_HEADER: encoded or base64.b64encode(key).decode(),
            MD5_HEADER: md5 or base64.b64encode(hashlib.md5(key).digest()).decode()}


def _put(gateway: Gateway, bucket: str, headers: dict[str, str]):
    return signed_request("PUT", f"{gateway.url}/{bucket}/obj", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                          body=b"data", headers=headers)


def _code(response) -> str:
    return response.text.split("<Code>", 1)[1].split("</Code>", 1)[0]


@pytest.mark.parametrize("headers, status, code", [
    (_headers(bytes(16)), 400, "InvalidArgument"),
    (_headers(encoded="not*base64!"), 400, "InvalidArgument"),
    (_headers(md5=base64.b64encode(hashlib.md5(b"other").digest()).decode()), 400, "InvalidArgument"),
    ({ALGORITHM: "AES256", KEY_HEADER: base64.b64encode(KEY).decode()}, 400, "InvalidArgument"),
    ({ALGORITHM: "AES256"}, 400, "InvalidArgument"),
    (_headers(algorithm="AES128"), 400, "InvalidEncryptionAlgorithmError"),
], ids=["short-key", "bad-base64", "md5-mismatch", "missing-md5", "algorithm-only", "wrong-algorithm"])
def test_malformed_customer_key_headers_are_refused_and_nothing_is_stored(gateway, upstream_s3, bucket,
                                                                           headers, status, code):
    response = _put(gateway, bucket, headers)
    assert (response.status_code, _code(response)) == (status, code)
    assert upstream_keys(upstream_s3, bucket) == []


def test_head_of_a_customer_key_object_without_the_key_is_400_without_a_body(gateway, bucket):
    assert _put(gateway, bucket, _headers()).status_code == 200
    response = signed_request("HEAD", f"{gateway.url}/{bucket}/obj", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    assert (response.status_code, response.content) == (400, b"")


def test_the_customer_key_is_never_stored_upstream(gateway, upstream_s3, bucket):
    assert _put(gateway, bucket, _headers()).status_code == 200
    head = upstream_s3.head_object(Bucket=bucket, Key="obj")
    stored = repr(head["Metadata"]) + repr(head["ResponseMetadata"]["HTTPHeaders"])
    for form in (base64.b64encode(KEY).decode(), base64.b64encode(hashlib.md5(KEY).digest()).decode(), KEY.hex()):
        assert form not in stored
    assert head["Metadata"]["x-gw-m"] == "SSE-C"


@pytest.fixture(scope="module")
def strict_gateway(moto, tmp_path_factory) -> Iterator[Gateway]:
    """A gateway with the default setting: customer keys only over TLS."""
    server = _start_gateway(moto, tmp_path_factory.mktemp("gateway-strict"), tls=None, allow_ssec_over_http=False)
    yield Gateway(server=server, url=server.url)
    server.stop()


def test_customer_keys_over_plain_http_are_refused_by_default(strict_gateway, upstream_s3, s3):
    bucket = "ssec-http-refused"
    s3.create_bucket(Bucket=bucket)
    response = _put(strict_gateway, bucket, _headers())
    assert (response.status_code, _code(response)) == (400, "InvalidRequest")
    assert "secure connection" in response.text
    assert upstream_keys(upstream_s3, bucket) == []


def test_customer_keys_over_tls_round_trip(gateway_tls, bucket):
    client = s3_client(gateway_tls.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, verify=str(gateway_tls.ca_file))
    client.put_object(Bucket=bucket, Key="tls", Body=b"over tls", SSECustomerAlgorithm="AES256", SSECustomerKey=KEY)
    got = client.get_object(Bucket=bucket, Key="tls", SSECustomerAlgorithm="AES256", SSECustomerKey=KEY)
    assert got["Body"].read() == b"over tls"
    with pytest.raises(ClientError) as err:
        client.get_object(Bucket=bucket, Key="tls")
    assert err.value.response["Error"]["Code"] == "InvalidRequest"
