"""A gateway whose remote key service is down (a closed port on 127.0.0.1) answers within its
stated bound (GATEWAY_KMS_TIMEOUT) with S3's 503 ServiceUnavailable, stores nothing, and serves
again as soon as the key service is back on that port."""
from __future__ import annotations

import time
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, start_gateway_with_remote_kms
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import upstream_keys
from tests.support.process import free_port

BOUND = 2.0  # GATEWAY_KMS_TIMEOUT for this test: every KMS call, retries included, within 2 s


def single_try_client(url: str):
    """An S3 client that never retries a 503, so the time measured is one gateway answer."""
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=GATEWAY_ACCESS_KEY,
                        aws_secret_access_key=GATEWAY_SECRET_KEY,
                        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))


def test_put_is_503_within_the_bound_while_the_key_service_is_down_and_works_once_it_is_back(
        moto, upstream_s3, tmp_path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    (tmp_path / "ks").mkdir()
    keyservice = launch(tmp_path / "ks", listen=listen)
    key_arn = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]
    # started while the key service is up (its start-up check needs it), which then goes down
    gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_arn,
                                            env={"GATEWAY_KMS_TIMEOUT": str(BOUND)})
    assert keyservice.server.stop() == 0
    try:
        s3 = single_try_client(gateway.url)
        bucket = f"kms-down-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(ClientError) as error:
                s3.put_object(Bucket=bucket, Key="k", Body=b"while the key service is down")
            elapsed = time.monotonic() - started
            assert (error.value.response["Error"]["Code"],
                    error.value.response["ResponseMetadata"]["HTTPStatusCode"]) == ("ServiceUnavailable", 503)
            assert elapsed < BOUND + 1.0, elapsed
        assert upstream_keys(upstream_s3, bucket) == []

        back = launch(tmp_path / "ks", data_dir=keyservice.data_dir, listen=listen)
        try:
            s3.put_object(Bucket=bucket, Key="k", Body=b"after the key service came back")
            assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"after the key service came back"
        finally:
            assert back.server.stop() == 0
    finally:
        assert gateway.stop() == 0, gateway.log()
    log = gateway.log()
    assert log.count("gave no answer within 2.0 s") == 1 and "answers again" in log
