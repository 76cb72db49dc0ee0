"""The gateway's embedded key service cannot write its audit log (/dev/full: a real full disk):
S3 requests needing a data key get 503 ServiceUnavailable and nothing is stored upstream."""
from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import (GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _start_gateway,
                                    start_gateway_with_remote_kms)
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client, upstream_keys

FULL_DISK_AUDIT = '\n[keyservice]\naudit_log = "/dev/full"\n'


def error_of(call, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as excinfo:
        call(**kwargs)
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_put_and_get_are_503_when_the_key_service_cannot_audit(moto, upstream_s3, tmp_path) -> None:
    bucket = f"audit-full-{uuid.uuid4().hex[:12]}"
    gateway = _start_gateway(moto, tmp_path, tls=None)
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="before", Body=b"written while the disk had room")
    finally:
        assert gateway.stop() == 0, gateway.log()

    gateway = _start_gateway(moto, tmp_path, tls=None, tables=FULL_DISK_AUDIT)
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        assert error_of(s3.put_object, Bucket=bucket, Key="after", Body=b"x" * 1000) == ("ServiceUnavailable", 503)
        assert error_of(s3.get_object, Bucket=bucket, Key="before") == ("ServiceUnavailable", 503)
    finally:
        assert gateway.stop() == 0, gateway.log()
    assert upstream_keys(upstream_s3, bucket) == ["before"]
    assert "its audit record cannot be written" in gateway.log()


def test_remote_key_service_that_cannot_audit_is_503_at_the_gateway(moto, upstream_s3, tmp_path) -> None:
    """The same through a standalone key service reached over the KMS API: its KMSInternalException
    (500) is S3's 503 ServiceUnavailable, and nothing is stored."""
    (tmp_path / "ks").mkdir()
    keyservice = launch(tmp_path / "ks", env={"KEYSERVICE_AUDIT_LOG": "/dev/full"})
    try:
        key_arn = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]  # not cryptographic: answered
        gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_arn)
        try:
            s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
            bucket = f"audit-full-remote-{uuid.uuid4().hex[:12]}"
            s3.create_bucket(Bucket=bucket)
            assert error_of(s3.put_object, Bucket=bucket, Key="k", Body=b"x") == ("ServiceUnavailable", 503)
            assert upstream_keys(upstream_s3, bucket) == []
        finally:
            assert gateway.stop() == 0, gateway.log()
    finally:
        assert keyservice.server.stop() == 0
