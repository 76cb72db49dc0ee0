"""S3 objects under a CMK whose material is in a PKCS#11 token (a custom key store on SoftHSM2): the gateway
encrypts and decrypts them unchanged, with its embedded key service (the token in its [keyservice.pkcs11]
table, the store made through the gateway's own KMS endpoint) and with a remote ``keyservice serve``."""
from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.gateway.conftest import _config_toml, start_gateway_with_remote_kms
from tests.keyservice.conftest import kms_client, launch
from tests.keyservice.softhsm import CLUSTER_ID, TRUST_ANCHOR, USER_PIN, SoftHsm, requires_softhsm
from tests.support.clients import s3_client, upstream_keys
from tests.support.process import VENV_BIN, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

pytestmark = requires_softhsm
LABEL = "gateway-cmk"
BODY = b"an object whose data key only the token can unwrap " * 1000


@pytest.fixture
def hsm(tmp_path: Path) -> SoftHsm:
    hsm = SoftHsm(tmp_path / "softhsm")
    hsm.init_token(LABEL)
    return hsm


def hsm_key(kms) -> str:
    """A connected custom key store and a key in it: the key's ARN."""
    store_id = kms.create_custom_key_store(CustomKeyStoreName="gateway", CloudHsmClusterId=CLUSTER_ID,
                                           TrustAnchorCertificate=TRUST_ANCHOR,
                                           KeyStorePassword=USER_PIN)["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    meta = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["KeyMetadata"]
    assert meta["Origin"] == "AWS_CLOUDHSM"
    return meta["Arn"]


def round_trip(s3, upstream_s3, key_arn: str, **put_args) -> str:
    """PUT then GET an object under ``key_arn`` through the gateway; the upstream holds no plaintext."""
    bucket = f"hsm-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    put = s3.put_object(Bucket=bucket, Key="obj", Body=BODY, ServerSideEncryption="aws:kms", **put_args)
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", key_arn)
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert (got["Body"].read(), got["SSEKMSKeyId"]) == (BODY, key_arn)
    [stored] = upstream_keys(upstream_s3, bucket)
    raw = upstream_s3.get_object(Bucket=bucket, Key=stored)["Body"].read()
    assert BODY[:64] not in raw
    return bucket


def error_of(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"], info.value.response["Error"]["Code"]


def test_embedded_key_service_with_a_token_serves_objects_until_the_store_is_disconnected(
        moto, upstream_s3, tmp_path: Path, hsm: SoftHsm) -> None:
    tables = f'\n[keyservice.pkcs11.{CLUSTER_ID}]\nmodule = "{hsm.module}"\ntoken_label = "{LABEL}"\n'
    config = tmp_path / "gateway.toml"
    config.write_text(_config_toml(moto, tmp_path / "data", None, tables=tables))
    gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                           {"SOFTHSM2_CONF": str(hsm.conf)}, cwd=tmp_path, timeout=60)
    try:
        kms = boto3.client("kms", endpoint_url=gateway.url, region_name="us-east-1",
                           aws_access_key_id=GATEWAY_ACCESS_KEY, aws_secret_access_key=GATEWAY_SECRET_KEY,
                           config=Config(retries={"total_max_attempts": 1}))
        key_arn = hsm_key(kms)
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = round_trip(s3, upstream_s3, key_arn, SSEKMSKeyId=key_arn)

        store_id = kms.describe_key(KeyId=key_arn)["KeyMetadata"]["CustomKeyStoreId"]
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        assert error_of(lambda: s3.get_object(Bucket=bucket, Key="obj")) == (400, "KMS.KMSInvalidStateException")
        assert error_of(lambda: s3.put_object(Bucket=bucket, Key="new", Body=b"x", ServerSideEncryption="aws:kms",
                                              SSEKMSKeyId=key_arn)) == (400, "KMS.KMSInvalidStateException")
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == BODY
        assert USER_PIN not in gateway.log()
    finally:
        assert gateway.stop() == 0, gateway.log()


def test_remote_key_service_with_a_token_is_the_gateways_default_key(moto, upstream_s3, tmp_path: Path,
                                                                     hsm: SoftHsm) -> None:
    keyservice = launch(tmp_path, env=hsm.env(LABEL))
    try:
        key_arn = hsm_key(kms_client(keyservice.url))
        gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_arn)
        try:
            round_trip(s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), upstream_s3, key_arn)
        finally:
            assert gateway.stop() == 0, gateway.log()
    finally:
        assert keyservice.server.stop() == 0, keyservice.server.log()
