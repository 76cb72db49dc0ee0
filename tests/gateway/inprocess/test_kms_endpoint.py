"""The AWS KMS JSON API on the gateway's own listener (gateway/kmsendpoint.py), in-process: the real
embedded key service behind it, requests signed by botocore for service ``kms`` as SDKs sign them."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from common.serving import serve_until_signal
from gateway.app import create_app
from gateway.config import Credential, GatewayConfig
from keyservice.embedded import ConfigError
from tests.gateway.inprocess.harness import Gateway, gateway_config, inprocess, moto_upstream
from tests.gateway.inprocess.test_app import STALLING, _stall, guarded
from tests.support.moto import MotoServer
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, KEYSERVICE_ALICE

ACCOUNT = "111122223333"
REGION = "us-east-1"
GATEWAY_USER = f"arn:aws:iam::{ACCOUNT}:user/{GATEWAY_ACCESS_KEY}"
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
JSON = "application/x-amz-json-1.1"


async def kms(gw: Gateway, operation: str, params: dict | bytes, creds: tuple[str, str] | None = (
        GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), *, region: str = REGION) -> tuple[int, dict[str, str], dict]:
    """One KMS call to the gateway: status, headers and JSON body (``creds`` None: unsigned)."""
    body = params if isinstance(params, bytes) else json.dumps(params).encode()
    url = gw.url("/")
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={"Content-Type": JSON, "X-Amz-Target": f"TrentService.{operation}"})
    if creds is not None:
        SigV4Auth(Credentials(*creds), "kms", region).add_auth(request)
    async with gw.client.session.post(url, data=body, headers=dict(request.headers)) as response:
        return response.status, dict(response.headers), json.loads(await response.read())


async def test_a_gateway_credential_creates_a_key_as_its_own_principal_and_the_next_put_uses_it(gw, bucket):
    status, headers, created = await kms(gw, "CreateKey", {"Description": "made through the gateway"})
    assert (status, headers["Content-Type"], len(headers["x-amzn-RequestId"])) == (200, JSON, 36)
    arn = created["KeyMetadata"]["Arn"]
    assert (await kms(gw, "CreateAlias", {"AliasName": "alias/app", "TargetKeyId": arn}))[0] == 200
    await gw.put(bucket, "k", b"under the new key", {"x-amz-server-side-encryption": "aws:kms",
                                                     "x-amz-server-side-encryption-aws-kms-key-id": "alias/app"})
    head = await gw.send("HEAD", f"/{bucket}/k")
    assert head.headers["x-amz-server-side-encryption-aws-kms-key-id"] == arn
    _, _, listed = await kms(gw, "ListAliases", {"KeyId": arn})
    assert [a["AliasName"] for a in listed["Aliases"]] == ["alias/app"]


async def test_a_disabled_key_refuses_the_next_put_with_kms_disabled_exception(gw, bucket):
    arn = (await kms(gw, "CreateKey", {}))[2]["KeyMetadata"]["Arn"]
    assert (await kms(gw, "DisableKey", {"KeyId": arn}))[:1] == (200,)
    answer = await gw.send("PUT", f"/{bucket}/k", body=b"x", headers={
        "x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": arn})
    assert answer.error() == (400, "KMS.DisabledException")
    assert answer.xml()["Message"] == f"{arn} is disabled."


async def test_a_wrong_secret_is_invalid_signature_exception_json(gw):
    status, headers, body = await kms(gw, "ListKeys", {}, (GATEWAY_ACCESS_KEY, "not-the-secret"))
    assert (status, headers["Content-Type"]) == (400, JSON)
    assert body == {"__type": "InvalidSignatureException",
                    "message": "The request signature we calculated does not match the signature you provided. "
                               "Check your AWS Secret Access Key and signing method."}


async def test_an_unknown_access_key_is_unrecognized_client_exception(gw):
    assert (await kms(gw, "ListKeys", {}, ("AKIDNOBODY", "x")))[::2] == (
        400, {"__type": "UnrecognizedClientException", "message": "The security token included in the request is invalid."})


async def test_an_unsigned_kms_request_is_missing_authentication_token_exception(gw):
    assert (await kms(gw, "ListKeys", {}, None))[::2] == (
        400, {"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})


async def test_a_request_signed_for_another_region_than_the_key_services_is_incomplete_signature_exception(gw):
    assert (await kms(gw, "ListKeys", {}, region="eu-west-1"))[::2] == (400, {
        "__type": "IncompleteSignatureException",
        "message": "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting 'us-east-1'"})


async def test_a_body_that_is_no_json_is_serialization_exception_and_an_unknown_operation_is_named(gw):
    assert (await kms(gw, "ListKeys", b"{not json"))[::2] == (
        400, {"__type": "SerializationException", "message": "The request body is not valid JSON"})
    assert (await kms(gw, "NoSuchThing", {}))[::2] == (
        400, {"__type": "UnknownOperationException", "message": "Unknown operation NoSuchThing"})


async def test_a_body_over_the_limit_is_413_validation_exception(gw):
    status, _, body = await kms(gw, "ListKeys", b" " * ((1 << 20) + 1))
    assert (status, body) == (413, {"__type": "ValidationException", "message": "Request body exceeds 1048576 bytes"})


async def test_a_parameter_of_the_wrong_type_is_refused_against_botocores_model(gw):
    status, _, body = await kms(gw, "DescribeKey", {"KeyId": 5})
    assert (status, body["__type"]) == (400, "ValidationException")
    assert "Invalid type for parameter KeyId" in body["message"]


async def test_a_post_to_the_root_without_the_kms_target_is_still_an_s3_request(gw):
    answer = await gw.send("POST", "/", headers={"X-Amz-Target": "DynamoDB_20120810.ListTables"})
    assert answer.status != 200 and answer.headers["Content-Type"] == "application/xml"
    listing = await gw.send("GET", "/", headers={"X-Amz-Target": "TrentService.ListKeys"})
    assert (listing.status, listing.all("Buckets") != []) == (200, True)


def _with_keyservice_table(tmp_path: Path, config: GatewayConfig, table: str) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[keyservice]\n{table}")
    return GatewayConfig(**{**config.__dict__, "config_path": path})


ALICE_TABLE = f'''
[[keyservice.credentials]]
access_key = "{KEYSERVICE_ALICE[0]}"
secret_key = "{KEYSERVICE_ALICE[1]}"
principal = "{ALICE_ARN}"
'''


async def test_a_key_policy_that_denies_a_keyservice_principal_is_access_denied_for_it_only(
        moto: MotoServer, tmp_path: Path, clean_environment):
    config = _with_keyservice_table(tmp_path, gateway_config(moto_upstream(moto), tmp_path / "data"), ALICE_TABLE)
    async with inprocess(create_app(config)) as gw:
        arn = (await kms(gw, "CreateKey", {}, KEYSERVICE_ALICE))[2]["KeyMetadata"]["Arn"]
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
             "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": ALICE_ARN}, "Action": "kms:Encrypt", "Resource": "*"}]}
        put = await kms(gw, "PutKeyPolicy", {"KeyId": arn, "PolicyName": "default", "Policy": json.dumps(policy)})
        assert put[0] == 200
        denied = await kms(gw, "Encrypt", {"KeyId": arn, "Plaintext": "aGk="}, KEYSERVICE_ALICE)
        allowed = await kms(gw, "Encrypt", {"KeyId": arn, "Plaintext": "aGk="})
    assert denied[::2] == (400, {"__type": "AccessDeniedException",
                                 "message": f"User: {ALICE_ARN} is not authorized to perform: kms:Encrypt on "
                                            f"resource: {arn} with an explicit deny in a resource-based policy"})
    assert (allowed[0], allowed[2]["KeyId"]) == (200, arn)


async def test_kms_calls_on_the_gateway_are_audited_with_their_access_key_and_principal(gw, tmp_path):
    status, headers, _ = await kms(gw, "ListKeys", {})
    records = [json.loads(line) for line in (tmp_path / "data" / "keyservice" / "audit.log").read_text().splitlines()]
    mine = [r for r in records if r.get("request_id") == headers["x-amzn-RequestId"]]
    assert status == 200 and len(mine) == 1
    assert {k: mine[0][k] for k in ("operation", "principal", "access_key", "outcome")} == {
        "operation": "ListKeys", "principal": GATEWAY_USER, "access_key": GATEWAY_ACCESS_KEY, "outcome": "ok"}


async def test_the_development_credential_may_call_the_kms_api_when_no_credential_is_configured(
        moto: MotoServer, tmp_path: Path, clean_environment):
    config = GatewayConfig(**{**gateway_config(moto_upstream(moto), tmp_path / "data").__dict__, "credentials": ()})
    async with inprocess(create_app(config)) as gw:
        status, _, body = await kms(gw, "CreateKey", {}, ("test", "test"))
    assert (status, body["KeyMetadata"]["KeyState"]) == (200, "Enabled")


async def test_an_access_key_with_two_secrets_refuses_the_start_naming_it(moto: MotoServer, tmp_path: Path,
                                                                           clean_environment, monkeypatch):
    monkeypatch.setenv("KEYSERVICE_ACCESS_KEY", GATEWAY_ACCESS_KEY)
    monkeypatch.setenv("KEYSERVICE_SECRET_KEY", "another-secret")
    app = create_app(gateway_config(moto_upstream(moto), tmp_path / "data"))
    with pytest.raises(ConfigError) as refused:
        await serve_until_signal(web.AppRunner(app), "127.0.0.1", 0, None, logging.getLogger("test"))
    assert str(refused.value) == (f"access key {GATEWAY_ACCESS_KEY} is both a gateway credential and a [keyservice] "
                                  "credential, with different secret keys: give it one secret or rename one")


async def test_an_access_key_in_both_with_one_secret_acts_as_the_keyservice_principal(
        moto: MotoServer, tmp_path: Path, clean_environment, monkeypatch):
    monkeypatch.setenv("KEYSERVICE_ACCESS_KEY", GATEWAY_ACCESS_KEY)
    monkeypatch.setenv("KEYSERVICE_SECRET_KEY", GATEWAY_SECRET_KEY)
    async with inprocess(create_app(gateway_config(moto_upstream(moto), tmp_path / "data"))) as gw:
        _, headers, _ = await kms(gw, "ListKeys", {})
    records = [json.loads(line) for line in (tmp_path / "data" / "keyservice" / "audit.log").read_text().splitlines()]
    assert [r["principal"] for r in records if r.get("request_id") == headers["x-amzn-RequestId"]] == [
        f"arn:aws:iam::{ACCOUNT}:root"]


async def test_a_gateway_credential_with_a_principal_of_no_account_refuses_the_start(
        moto: MotoServer, tmp_path: Path, clean_environment):
    base = gateway_config(moto_upstream(moto), tmp_path / "data")
    config = GatewayConfig(**{**base.__dict__, "credentials": (Credential("AKIDODD", "s", "not-an-arn"),)})
    with pytest.raises(ConfigError, match="credential AKIDODD: principal 'not-an-arn' is not an IAM"):
        await serve_until_signal(web.AppRunner(create_app(config)), "127.0.0.1", 0, None, logging.getLogger("test"))


async def test_a_stalled_kms_body_is_request_timeout_exception_and_its_connection_closed(
        moto: MotoServer, tmp_path: Path, clean_environment):
    """Under the runner `serve()` uses, the gateway's body timeout holds for KMS requests too."""
    async with guarded(create_app(gateway_config(moto_upstream(moto), tmp_path / "data")), STALLING) as url:
        host = url.removeprefix("http://")
        head = (f"POST / HTTP/1.1\r\nHost: {host}\r\nX-Amz-Target: TrentService.ListKeys\r\n"
                "Content-Type: application/x-amz-json-1.1\r\nContent-Length: 100000\r\n\r\n").encode()
        status, body, closed = await asyncio.to_thread(_stall, url, head)
    assert (status, json.loads(body)) == (408, {
        "__type": "RequestTimeoutException",
        "message": "The request body was not received within the timeout period; idle connections are closed."})
    assert closed is not None and closed < 1
