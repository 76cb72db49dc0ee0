"""The gateway's own upstream credential revoked while it runs: moto (IAM auth) then refuses every re-signed
request with InvalidAccessKeyId. Clients get the gateway's 503 ServiceUnavailable naming its upstream
credential -- never the upstream's InvalidAccessKeyId / SignatureDoesNotMatch, which would tell them their own
key is wrong -- on every path (a relayed answer, a parsed one, a listing), and the gateway logs it."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.support import start_moto
from tests.support import secrets
from tests.support.clients import s3_client
from tests.support.process import VENV_BIN, Server, registered, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

ALL_ACTIONS = json.dumps({"Version": "2012-10-17",
                          "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:*"], "Resource": "*"}]})
MESSAGE = ("The upstream store refused the gateway's own credential (InvalidAccessKeyId); the gateway's operator "
           "must correct its upstream credential.")


@dataclass
class Revocable:
    gateway: Server
    iam: object  # boto3 IAM client signed with the gateway's upstream key itself
    access_key: str


@pytest.fixture(scope="module")
def revocable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Revocable]:
    """A moto of its own (its key is revoked by the test) and a gateway in front of it, checked at start."""
    moto = registered(lambda: start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "3"}))
    workdir = tmp_path_factory.mktemp("revocable")
    try:
        bootstrap = boto3.client("iam", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="x",
                                 aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}))
        bootstrap.create_user(UserName="revocable")
        bootstrap.put_user_policy(UserName="revocable", PolicyName="all", PolicyDocument=ALL_ACTIONS)
        key = bootstrap.create_access_key(UserName="revocable")["AccessKey"]
        secrets.register("revocable moto secret key", key["SecretAccessKey"], signs=True)
        config = workdir / "gateway.toml"
        config.write_text(f'[gateway]\ndata_dir = "{workdir / "data"}"\n\n[[gateway.credentials]]\n'
                          f'access_key = "{GATEWAY_ACCESS_KEY}"\nsecret_key = "{GATEWAY_SECRET_KEY}"\n\n'
                          f'[upstream]\nurl = "{moto.url}"\naccess_key = "{key["AccessKeyId"]}"\n'
                          f'secret_key = "{key["SecretAccessKey"]}"\n')
        gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen",
                                "127.0.0.1:0"], env={"GATEWAY_LOG_LEVEL": "INFO"}, timeout=60)
        iam = boto3.client("iam", endpoint_url=moto.url, region_name="us-east-1",
                           aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"],
                           config=Config(retries={"max_attempts": 1}))
        try:
            yield Revocable(gateway, iam, key["AccessKeyId"])
        finally:
            assert gateway.stop() == 0, gateway.log()
        assert "Traceback" not in gateway.log(), gateway.log()
    finally:
        moto.stop()


def _refusal(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as refused:
        call()
    response = refused.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def test_a_revoked_upstream_credential_is_the_gateways_503_on_every_path_and_logged(revocable: Revocable):
    s3 = s3_client(revocable.gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, retries={"total_max_attempts": 1})
    bucket = f"revoked-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"before the revocation")
    revocable.iam.delete_access_key(UserName="revocable", AccessKeyId=revocable.access_key)

    expected = (503, "ServiceUnavailable", MESSAGE)
    assert _refusal(lambda: s3.put_object(Bucket=bucket, Key="k2", Body=b"after")) == expected  # encrypted write
    assert _refusal(lambda: s3.get_object(Bucket=bucket, Key="k")) == expected  # decrypting read
    assert _refusal(lambda: s3.list_objects_v2(Bucket=bucket)) == expected  # listing
    assert _refusal(lambda: s3.get_bucket_tagging(Bucket=bucket)) == expected  # forwarded, relayed as-is before
    assert _refusal(lambda: s3.list_buckets()) == expected
    log = revocable.gateway.log()
    assert ("the upstream refused the gateway's own credential (InvalidAccessKeyId: The AWS Access Key Id you "
            "provided does not exist in our records.); answering 503 ServiceUnavailable: check [upstream] "
            "access_key, secret_key and region (1 time(s) since the last report)") in log, log

