"""The KMS API on the gateway's own endpoint, with real clients against a gateway process: ``aws kms``
creates a key and an alias, ``aws s3api`` then stores an object under it through the same endpoint, and
disabling the key through the gateway refuses the next PUT; boto3's KMS client works there too."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.gateway.conftest import Gateway, _config_toml, _start_gateway
from tests.keyservice.conftest import raw_post
from tests.support.clients import aws
from tests.support.process import VENV_BIN
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, KEYSERVICE_ALICE


def _ok(result: tuple[int, str, str]) -> dict:
    returncode, stdout, stderr = result
    assert returncode == 0, stderr
    return json.loads(stdout) if stdout.strip() else {}


def gateway_kms(gateway: Gateway, secret: str = GATEWAY_SECRET_KEY):
    return boto3.client("kms", endpoint_url=gateway.url, region_name="us-east-1", aws_access_key_id=GATEWAY_ACCESS_KEY,
                        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))


def test_aws_kms_creates_a_key_and_alias_through_the_gateway_that_the_next_put_uses_until_it_is_disabled(
        gateway: Gateway, s3, bucket, tmp_path: Path):
    endpoint = gateway.endpoint(tmp_path)
    meta = _ok(aws(endpoint, "kms", "create-key", "--description", "made with aws kms"))["KeyMetadata"]
    alias = f"alias/cli-{meta['KeyId'][:8]}"
    _ok(aws(endpoint, "kms", "create-alias", "--alias-name", alias, "--target-key-id", meta["KeyId"]))
    (tmp_path / "body").write_bytes(b"stored under the CLI's key")
    put = _ok(aws(endpoint, "s3api", "put-object", "--bucket", bucket, "--key", "k", "--body", str(tmp_path / "body"),
                  "--server-side-encryption", "aws:kms", "--ssekms-key-id", alias))
    head = _ok(aws(endpoint, "s3api", "head-object", "--bucket", bucket, "--key", "k"))
    assert (put["SSEKMSKeyId"], head["SSEKMSKeyId"], head["ServerSideEncryption"]) == (meta["Arn"], meta["Arn"],
                                                                                       "aws:kms")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"stored under the CLI's key"

    _ok(aws(endpoint, "kms", "disable-key", "--key-id", meta["KeyId"]))  # as on AWS: no alias here
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="k2", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=alias)
    assert (refused.value.response["Error"]["Code"], refused.value.response["Error"]["Message"],
            refused.value.response["ResponseMetadata"]["HTTPStatusCode"]) == (
        "KMS.DisabledException", f"{meta['Arn']} is disabled.", 400)
    described = _ok(aws(endpoint, "kms", "describe-key", "--key-id", alias))["KeyMetadata"]
    assert (described["KeyState"], described["Enabled"]) == ("Disabled", False)


def test_boto3_kms_manages_keys_on_the_gateway_endpoint(gateway: Gateway):
    kms = gateway_kms(gateway)
    arn = kms.create_key(Description="boto3 on the gateway")["KeyMetadata"]["Arn"]
    kms.enable_key_rotation(KeyId=arn)
    assert kms.get_key_rotation_status(KeyId=arn)["KeyRotationEnabled"] is True
    assert arn in [k["KeyArn"] for k in kms.list_keys(Limit=1000)["Keys"]]
    deletion = kms.schedule_key_deletion(KeyId=arn, PendingWindowInDays=7)
    assert (deletion["KeyId"], deletion["KeyState"]) == (arn, "PendingDeletion")


def test_a_wrong_secret_on_the_gateways_kms_endpoint_is_invalid_signature_exception(gateway: Gateway):
    with pytest.raises(ClientError) as refused:
        gateway_kms(gateway, secret="not-the-secret").list_keys()
    error = refused.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == ("InvalidSignatureException", 400)


def test_an_unsigned_kms_request_to_the_gateway_is_missing_authentication_token_exception(gateway: Gateway):
    status, headers, body = raw_post(gateway.url, b"{}", {"Content-Type": "application/x-amz-json-1.1",
                                                          "X-Amz-Target": "TrentService.ListKeys"})
    assert (status, headers["content-type"], body) == (
        400, "application/x-amz-json-1.1",
        {"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})
    assert len(headers["x-amzn-requestid"]) == 36


def test_a_keyservice_credential_denied_by_a_key_policy_is_access_denied_on_the_gateways_endpoint(
        moto, tmp_path: Path):
    """A [keyservice] credential acting as a non-root principal of the account, on a gateway process."""
    alice_arn = "arn:aws:iam::111122223333:user/alice"
    table = (f'[[keyservice.credentials]]\naccess_key = "{KEYSERVICE_ALICE[0]}"\n'
             f'secret_key = "{KEYSERVICE_ALICE[1]}"\nprincipal = "{alice_arn}"\n')
    server = _start_gateway(moto, tmp_path / "gw", tls=None, tables=table)
    try:
        admin = gateway_kms(Gateway(server=server, url=server.url))
        alice = boto3.client("kms", endpoint_url=server.url, region_name="us-east-1",
                             aws_access_key_id=KEYSERVICE_ALICE[0], aws_secret_access_key=KEYSERVICE_ALICE[1],
                             config=Config(retries={"total_max_attempts": 1}))
        arn = alice.create_key()["KeyMetadata"]["Arn"]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*",
             "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": alice_arn}, "Action": "kms:DisableKey", "Resource": "*"}]}
        admin.put_key_policy(KeyId=arn, PolicyName="default", Policy=json.dumps(policy))
        with pytest.raises(ClientError) as refused:
            alice.disable_key(KeyId=arn)
        assert alice.describe_key(KeyId=arn)["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        assert server.stop() == 0, server.log()
    error = refused.value.response
    assert (error["Error"]["Code"], error["Error"]["Message"], error["ResponseMetadata"]["HTTPStatusCode"]) == (
        "AccessDeniedException", f"User: {alice_arn} is not authorized to perform: kms:DisableKey on resource: {arn} "
                                 "with an explicit deny in a resource-based policy", 400)


def test_an_access_key_with_another_secret_in_keyservice_refuses_the_start_in_one_line(moto, tmp_path: Path):
    config = tmp_path / "gateway.toml"
    config.write_text(_config_toml(moto, tmp_path / "data", tls=None))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KEYSERVICE_"))},
           "KEYSERVICE_ACCESS_KEY": GATEWAY_ACCESS_KEY, "KEYSERVICE_SECRET_KEY": "another-secret"}
    proc = subprocess.run([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert (proc.returncode, proc.stderr.strip().splitlines()[-1]) == (
        2, f"gateway: access key {GATEWAY_ACCESS_KEY} is both a gateway credential and a [keyservice] credential, "
           "with different secret keys: give it one secret or rename one")


def test_a_key_disabled_through_the_gateway_takes_effect_at_once_despite_the_data_key_caches(
        gateway: Gateway, s3, bucket):
    """The caches hold the bucket key and the unwrapped data key for a minute; a change made through the
    gateway's own key service empties them, so the very next PUT and GET are refused."""
    kms = gateway_kms(gateway)
    arn = kms.create_key(Description="cached")["KeyMetadata"]["Arn"]
    for key in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"cached", ServerSideEncryption="aws:kms", SSEKMSKeyId=arn,
                      BucketKeyEnabled=True)
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"cached"  # the bucket key, unwrapped
    kms.disable_key(KeyId=arn)
    for call in (lambda: s3.get_object(Bucket=bucket, Key="b"),
                 lambda: s3.put_object(Bucket=bucket, Key="c", Body=b"x", ServerSideEncryption="aws:kms",
                                       SSEKMSKeyId=arn, BucketKeyEnabled=True)):
        with pytest.raises(ClientError) as refused:
            call()
        assert (refused.value.response["ResponseMetadata"]["HTTPStatusCode"],
                refused.value.response["Error"]["Code"]) == (400, "KMS.DisabledException")
    kms.enable_key(KeyId=arn)
    assert s3.get_object(Bucket=bucket, Key="b")["Body"].read() == b"cached"
