"""SSE request headers are honoured and reported the way S3 reports them.

The CMK is ``alias/s3-gateway-default``, which the gateway creates in its embedded key service at
start because the fixture leaves ``default_kms_key_id`` empty; no second process is needed.
"""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import DEFAULT_KMS_ALIAS
from tests.support.secrets import CUSTOMER_KEY, OTHER_CUSTOMER_KEY
from tests.support.clients import upstream_keys


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as err:
        call()
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _is_key_arn(value: str) -> bool:
    return value.startswith("arn:aws:kms:us-east-1:") and ":key/" in value


def test_sse_kms_with_an_alias_is_echoed_with_the_key_arn_on_put_get_and_head(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="kms", Body=b"sealed", ServerSideEncryption="aws:kms",
                        SSEKMSKeyId=DEFAULT_KMS_ALIAS)
    assert put["ServerSideEncryption"] == "aws:kms"
    assert _is_key_arn(put["SSEKMSKeyId"])
    got = s3.get_object(Bucket=bucket, Key="kms")
    head = s3.head_object(Bucket=bucket, Key="kms")
    assert got["Body"].read() == b"sealed"
    for response in (got, head):
        assert (response["ServerSideEncryption"], response["SSEKMSKeyId"]) == (
            "aws:kms", put["SSEKMSKeyId"])


def test_sse_kms_with_an_unknown_key_is_400_kms_not_found_and_stores_nothing(s3, upstream_s3,
                                                                               bucket):
    assert _error(lambda: s3.put_object(Bucket=bucket, Key="nokey", Body=b"x",
                                        ServerSideEncryption="aws:kms",
                                        SSEKMSKeyId="alias/does-not-exist")) == (
        400, "KMS.NotFoundException")
    assert upstream_keys(upstream_s3, bucket) == []


def test_sse_aes256_is_reported_as_aes256(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="aes", Body=b"aes body", ServerSideEncryption="AES256")
    assert put["ServerSideEncryption"] == "AES256"
    head = s3.head_object(Bucket=bucket, Key="aes")
    assert head["ServerSideEncryption"] == "AES256"
    assert s3.get_object(Bucket=bucket, Key="aes")["Body"].read() == b"aes body"


def test_client_metadata_in_the_reserved_namespace_is_400_invalid_argument(s3, upstream_s3,
                                                                            bucket):
    assert _error(lambda: s3.put_object(Bucket=bucket, Key="forged", Body=b"x",
                                        Metadata={"x-gw-anything": "forged"})) == (
        400, "InvalidArgument")
    assert upstream_keys(upstream_s3, bucket) == []




def test_sse_c_object_reads_back_only_with_its_customer_key(s3, upstream_s3, bucket):
    """allow_ssec_over_http is on in the fixture, so SSE-C works over plain http here."""
    s3.put_object(Bucket=bucket, Key="ssec", Body=b"customer sealed", SSECustomerAlgorithm="AES256",
                  SSECustomerKey=CUSTOMER_KEY)
    got = s3.get_object(Bucket=bucket, Key="ssec", SSECustomerAlgorithm="AES256",
                        SSECustomerKey=CUSTOMER_KEY)
    assert got["Body"].read() == b"customer sealed"
    assert got["SSECustomerAlgorithm"] == "AES256"
    assert b"customer sealed" not in upstream_s3.get_object(Bucket=bucket, Key="ssec")["Body"].read()


def test_sse_c_object_without_its_key_is_400_invalid_request(s3, bucket):
    s3.put_object(Bucket=bucket, Key="ssec", Body=b"x", SSECustomerAlgorithm="AES256",
                  SSECustomerKey=CUSTOMER_KEY)
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="ssec")) == (400, "InvalidRequest")


def test_sse_c_object_with_another_key_is_403_access_denied(s3, bucket):
    s3.put_object(Bucket=bucket, Key="ssec", Body=b"x", SSECustomerAlgorithm="AES256",
                  SSECustomerKey=CUSTOMER_KEY)
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="ssec", SSECustomerAlgorithm="AES256",
                                        SSECustomerKey=OTHER_CUSTOMER_KEY)) == (403, "AccessDenied")
