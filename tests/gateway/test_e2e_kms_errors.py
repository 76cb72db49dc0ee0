"""SSE-KMS through the gateway: the encryption context, and key service errors as S3 reports them."""
from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import (DEFAULT_KMS_ALIAS, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                                    _start_gateway, start_gateway_with_remote_kms)
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client, upstream_keys


def _context(pairs: dict[str, str]) -> str:
    return base64.b64encode(json.dumps(pairs).encode()).decode()


def test_encryption_context_round_trips(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"ctx body", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=DEFAULT_KMS_ALIAS, SSEKMSEncryptionContext=_context({"team": "a"}))
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"ctx body"


def test_context_setting_s3_arn_is_invalid_argument_and_stores_nothing(s3, bucket, upstream_s3):
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSEncryptionContext=_context({"aws:s3:arn": "arn:aws:s3:::other/k"}))
    assert error.value.response["Error"]["Code"] == "InvalidArgument"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert upstream_keys(upstream_s3, bucket) == []


@pytest.fixture
def remote_kms_gateway(moto, tmp_path):
    """A standalone key service, and a gateway using it over the KMS API."""
    keyservice = launch(tmp_path)
    kms = kms_client(keyservice.url)
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_arn)
    s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    bucket = f"kms-errors-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    yield s3, kms, key_arn, bucket
    assert gateway.stop() == 0, gateway.log()
    assert keyservice.server.stop() == 0


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["ResponseMetadata"]["HTTPStatusCode"], error.value.response["Error"]["Code"]


def test_disabled_and_pending_deletion_keys_give_s3_kms_errors(remote_kms_gateway, upstream_s3):
    s3, kms, key_arn, bucket = remote_kms_gateway
    s3.put_object(Bucket=bucket, Key="before", Body=b"written while enabled")
    kms.disable_key(KeyId=key_arn)
    assert _error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x")) == (400, "KMS.DisabledException")
    assert _error(lambda: s3.get_object(Bucket=bucket, Key="before")) == (400, "KMS.DisabledException")
    kms.schedule_key_deletion(KeyId=key_arn, PendingWindowInDays=7)
    assert _error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x")) == (400, "KMS.KMSInvalidStateException")
    assert _error(lambda: upstream_s3.head_object(Bucket=bucket, Key="k")) == (404, "404")


def test_key_service_throttling_is_503_slow_down(moto, tmp_path):
    """An embedded key service with a 3/s symmetric quota and 30 concurrent PUTs: the over-quota ones
    get S3's 503 SlowDown, never a 500, and are not stored."""
    gateway = _start_gateway(moto, tmp_path, tls=None, tables="[keyservice.quotas]\nsymmetric = 3\n")
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"throttle-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        time.sleep(1.1)  # the alias lookup at start drew on the quota

        def put(index: int):
            try:
                s3.put_object(Bucket=bucket, Key=f"burst-{index}", Body=b"x")
                return "ok"
            except ClientError as error:
                return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]

        with ThreadPoolExecutor(max_workers=10) as pool:
            outcomes = list(pool.map(put, range(30)))
        assert outcomes.count("ok") >= 1
        assert (503, "SlowDown") in outcomes
        assert set(outcomes) <= {"ok", (503, "SlowDown")}
        stored = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
        assert stored == outcomes.count("ok")
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_a_throttled_burst_is_waited_out_within_the_retry_budget(moto, tmp_path):
    """A 3/s symmetric quota and 6 concurrent PUTs: the key service throttles half of them, the gateway
    backs off and retries within its 2 s budget ([kms] throttle_budget), and every PUT succeeds."""
    gateway = _start_gateway(moto, tmp_path, tls=None, tables="[keyservice.quotas]\nsymmetric = 3\n")
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"throttle-wait-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        time.sleep(1.1)  # the alias lookup at start drew on the quota
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"burst-{i}", Body=b"x"), range(6)))
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 6
        records = [json.loads(line) for line in (tmp_path / "data" / "keyservice" / "audit.log").read_text().splitlines()]
        outcomes = [r["outcome"] for r in records if r["operation"] == "GenerateDataKey"]
        assert outcomes.count("ok") == 6 and "ThrottlingException" in outcomes
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_a_disabled_cmk_takes_effect_within_the_data_key_cache_age(moto, tmp_path):
    """A remote key service cannot tell the gateway that a key changed: a cached data key serves reads
    for at most [kms] data_key_max_age seconds (1 here), then the disabled CMK refuses them."""
    keyservice = launch(tmp_path)
    kms = kms_client(keyservice.url)
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_arn,
                                            {"GATEWAY_KMS_DATA_KEY_MAX_AGE": "1"})
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"cache-age-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"cached")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"cached"
        kms.disable_key(KeyId=key_arn)
        disabled_at = time.monotonic()
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"cached"  # within the stated bound
        time.sleep(max(0.0, disabled_at + 1.05 - time.monotonic()))
        assert _error(lambda: s3.get_object(Bucket=bucket, Key="k")) == (400, "KMS.DisabledException")
    finally:
        assert gateway.stop() == 0, gateway.log()
        assert keyservice.server.stop() == 0


def test_a_bucket_configuration_naming_a_disabled_cmk_is_refused(remote_kms_gateway):
    s3, kms, key_arn, bucket = remote_kms_gateway
    kms.disable_key(KeyId=key_arn)
    rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}}]}
    assert _error(lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rule)) == (
        400, "KMS.DisabledException")
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
