"""Two gateway processes whose embedded key services share one PostgreSQL key store: a key made through
one serves objects through the other, and disabling it through one refuses its use through the other within
the bound, the other's data-key caches (Bucket Key, unwrapped data keys) emptied by the change."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from tests.gateway.conftest import _start_gateway
from tests.support.clients import refused_code, s3_client
from tests.support.workers import wait_for
from tests.support.moto import MotoServer
from tests.support.postgres import PostgresServer, postgres  # noqa: F401
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

BOUND = 2.0  # README ("The key store on PostgreSQL"): milliseconds; allowance for a loaded machine


def eventually(check, what: str) -> None:
    wait_for(check, f"{what}, seen through the other gateway", BOUND)


def test_a_key_disabled_through_one_gateway_is_refused_through_the_other(
        moto: MotoServer, postgres: PostgresServer, tmp_path: Path) -> None:  # noqa: F811
    root_key = tmp_path / "root.key"
    root_key.write_bytes(os.urandom(32))  # every node the same root key
    tables = f'[keyservice]\nstore_url = "{postgres.create_database()}"\nroot_key_file = "{root_key}"\n'
    one = _start_gateway(moto, tmp_path / "one", tls=None, tables=tables)
    two = _start_gateway(moto, tmp_path / "two", tls=None, tables=tables)
    try:
        s3_one, s3_two = (s3_client(g.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY) for g in (one, two))
        kms_one = boto3.client("kms", endpoint_url=one.url, region_name="us-east-1",
                               aws_access_key_id=GATEWAY_ACCESS_KEY, aws_secret_access_key=GATEWAY_SECRET_KEY,
                               config=Config(retries={"total_max_attempts": 1}))
        bucket = f"shared-{uuid.uuid4().hex[:12]}"
        s3_one.create_bucket(Bucket=bucket)
        arn = kms_one.create_key(Description="shared by both gateways")["KeyMetadata"]["Arn"]
        sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn, "BucketKeyEnabled": True}
        s3_one.put_object(Bucket=bucket, Key="from-one", Body=b"one", **sse)

        eventually(lambda: refused_code(lambda: s3_two.put_object(Bucket=bucket, Key="from-two", Body=b"two",
                                                                    **sse)) is None, "the new key")
        assert s3_two.get_object(Bucket=bucket, Key="from-one")["Body"].read() == b"one"
        assert s3_one.get_object(Bucket=bucket, Key="from-two")["Body"].read() == b"two"

        kms_one.disable_key(KeyId=arn)
        eventually(lambda: refused_code(lambda: s3_two.put_object(Bucket=bucket, Key="later", Body=b"x", **sse))
                   == "KMS.DisabledException", "the disable")
        assert refused_code(lambda: s3_two.get_object(Bucket=bucket, Key="from-two")) == "KMS.DisabledException"
    finally:
        assert one.stop() == 0, one.log()
        assert two.stop() == 0, two.log()
