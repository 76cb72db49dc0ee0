"""The harness itself: moto really enforces SigV4, so the gateway must really re-sign."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.support.clients import s3_client


def test_moto_rejects_a_request_signed_with_a_wrong_secret(moto, upstream_s3):
    upstream_s3.create_bucket(Bucket="harness-direct")
    forged = s3_client(moto.url, moto.access_key, "not-the-secret")
    with pytest.raises(ClientError) as err:
        forged.list_objects_v2(Bucket="harness-direct")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_moto_accepts_the_iam_users_key(upstream_s3):
    upstream_s3.create_bucket(Bucket="harness-iam")
    upstream_s3.put_object(Bucket="harness-iam", Key="k", Body=b"direct")
    assert upstream_s3.get_object(Bucket="harness-iam", Key="k")["Body"].read() == b"direct"


def test_gateway_reaches_the_authenticated_moto_with_its_configured_key(s3, upstream_s3, bucket):
    s3.put_object(Bucket=bucket, Key="through-gateway", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="through-gateway")["Body"].read() == b"hello"
    assert upstream_s3.head_object(Bucket=bucket, Key="through-gateway")["ResponseMetadata"][
        "HTTPStatusCode"] == 200
