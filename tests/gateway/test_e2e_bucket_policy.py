"""Per-bucket encryption policy and allow_unencrypted_reads, through a dedicated gateway."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _start_gateway
from tests.support.clients import s3_client

PASSTHROUGH = f"passthrough-{uuid.uuid4().hex[:12]}"
BODY = b"bucket policy body " * 500


def _policy_gateway(moto, workdir, allow_unencrypted_reads: bool) -> Iterator:
    tables = f'[buckets.{PASSTHROUGH}]\nencryption = "passthrough"\n'
    server = _start_gateway(moto, workdir, tls=None, allow_unencrypted_reads=allow_unencrypted_reads,
                            tables=tables)
    yield s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    server.stop()


@pytest.fixture(scope="module")
def policy_s3(moto, tmp_path_factory) -> Iterator:
    """A gateway with one passthrough bucket, serving unencrypted reads."""
    yield from _policy_gateway(moto, tmp_path_factory.mktemp("gateway-policy"), True)


@pytest.fixture(scope="module")
def strict_s3(moto, tmp_path_factory) -> Iterator:
    """A gateway refusing unencrypted reads."""
    yield from _policy_gateway(moto, tmp_path_factory.mktemp("gateway-strict"), False)


@pytest.fixture
def passthrough_bucket(policy_s3) -> str:
    if PASSTHROUGH not in [b["Name"] for b in policy_s3.list_buckets()["Buckets"]]:
        policy_s3.create_bucket(Bucket=PASSTHROUGH)
    return PASSTHROUGH


def test_passthrough_bucket_stores_plaintext_upstream(policy_s3, passthrough_bucket, upstream_s3):
    key = f"plain-{uuid.uuid4().hex}"
    policy_s3.put_object(Bucket=passthrough_bucket, Key=key, Body=BODY)
    assert upstream_s3.get_object(Bucket=passthrough_bucket, Key=key)["Body"].read() == BODY
    assert policy_s3.get_object(Bucket=passthrough_bucket, Key=key)["Body"].read() == BODY


def test_explicit_sse_kms_in_passthrough_bucket_is_encrypted(policy_s3, passthrough_bucket,
                                                             upstream_s3):
    key = f"kms-{uuid.uuid4().hex}"
    response = policy_s3.put_object(Bucket=passthrough_bucket, Key=key, Body=BODY,
                                    ServerSideEncryption="aws:kms")
    assert response["ServerSideEncryption"] == "aws:kms"
    assert upstream_s3.get_object(Bucket=passthrough_bucket, Key=key)["Body"].read() != BODY
    assert policy_s3.get_object(Bucket=passthrough_bucket, Key=key)["Body"].read() == BODY


def test_legacy_object_is_denied_when_unencrypted_reads_are_off(strict_s3, upstream_s3):
    bucket = f"e2e-{uuid.uuid4().hex[:16]}"
    strict_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="legacy", Body=BODY)
    with pytest.raises(ClientError) as error:
        strict_s3.get_object(Bucket=bucket, Key="legacy")
    assert error.value.response["Error"]["Code"] == "AccessDenied"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_passthrough_bucket_stays_readable_when_unencrypted_reads_are_off(strict_s3, upstream_s3):
    if PASSTHROUGH not in [b["Name"] for b in strict_s3.list_buckets()["Buckets"]]:
        strict_s3.create_bucket(Bucket=PASSTHROUGH)
    key = f"strict-plain-{uuid.uuid4().hex}"
    strict_s3.put_object(Bucket=PASSTHROUGH, Key=key, Body=BODY)
    assert upstream_s3.get_object(Bucket=PASSTHROUGH, Key=key)["Body"].read() == BODY
    assert strict_s3.get_object(Bucket=PASSTHROUGH, Key=key)["Body"].read() == BODY
