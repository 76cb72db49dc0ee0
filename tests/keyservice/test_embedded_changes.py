"""``EmbeddedKeyService.on_change``: hosts caching what a key allows are told after every change to a key,
whoever made it (the host's own calls, the KMS API on the host's listener, the periodic maintenance),
and never after reads, cryptographic calls or failures."""
from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from keyservice.api import READ_ONLY_OPERATIONS
from keyservice.embedded import EmbeddedKeyService
from keyservice.service import KeyService

ROOT_KEY = base64.b64encode(bytes(range(32))).decode()
HOST = ("AKIDHOSTCLIENT", "host-client-secret")
DAY = 86400


async def open_keys(tmp_path: Path, table: str = "") -> EmbeddedKeyService:
    config = tmp_path / "host.toml"
    config.write_text(f"[keyservice]\n{table}")
    env = {"KEYSERVICE_ROOT_KEY": ROOT_KEY, "KEYSERVICE_CLOCK_FILE": str(tmp_path / "clock")}
    return await EmbeddedKeyService.open(config, env, tmp_path / "data", source="host")


class Front:
    """The facade's KMS front served over real HTTP, signed requests from a host client."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    async def call(self, operation: str, params: dict) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{self.client.port}/"
        body = json.dumps(params).encode()
        request = AWSRequest(method="POST", url=url, data=body, headers={
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{operation}"})
        SigV4Auth(Credentials(*HOST), "kms", "us-east-1").add_auth(request)
        async with self.client.session.post(url, data=body, headers=dict(request.headers)) as response:
            return response.status, json.loads(await response.read())


@pytest.fixture
async def keys(tmp_path: Path) -> AsyncIterator[EmbeddedKeyService]:
    opened = await open_keys(tmp_path)
    yield opened
    await opened.close()


@pytest.fixture
async def front(keys: EmbeddedKeyService) -> AsyncIterator[Front]:
    app = web.Application()
    frontend = keys.kms_frontend([(*HOST, "arn:aws:iam::111122223333:user/host")])
    app.router.add_route("*", "/{tail:.*}", frontend.handle)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Front(client)


def recorder(keys: EmbeddedKeyService) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []
    keys.on_change(lambda operation, arn: seen.append((operation, arn)))
    return seen


def test_every_operation_but_the_reads_and_the_cryptographic_ones_is_announced():
    announced = KeyService.OPERATIONS - READ_ONLY_OPERATIONS - KeyService.CRYPTOGRAPHIC_OPERATIONS
    assert announced == {
        "CancelKeyDeletion", "CreateAlias", "CreateGrant", "CreateKey", "DeleteAlias", "DeleteImportedKeyMaterial",
        "DisableKey", "DisableKeyRotation", "EnableKey", "EnableKeyRotation", "ImportKeyMaterial", "PutKeyPolicy",
        "RetireGrant", "RevokeGrant", "RotateKeyOnDemand", "ScheduleKeyDeletion", "TagResource", "UntagResource",
        "UpdateAlias", "UpdateKeyDescription",
        # custom key stores: connecting or disconnecting one changes whether its keys can be used
        "ConnectCustomKeyStore", "CreateCustomKeyStore", "DeleteCustomKeyStore", "DisconnectCustomKeyStore",
        "UpdateCustomKeyStore",
        # multi-region keys: a replica made, the primary moved, versions added by the primary's region
        "ReplicateKey", "UpdatePrimaryRegion", "PeerReplicateKey", "PeerUpdatePrimaryRegion",
        "PeerReplicaDeleted"}
    assert READ_ONLY_OPERATIONS < KeyService.OPERATIONS


async def test_changes_through_the_kms_front_are_announced_with_the_key_arn_and_reads_are_not(keys, front):
    seen = recorder(keys)
    arn = (await front.call("CreateKey", {}))[1]["KeyMetadata"]["Arn"]
    other = (await front.call("CreateKey", {}))[1]["KeyMetadata"]["Arn"]
    for operation, params in [("CreateAlias", {"AliasName": "alias/a", "TargetKeyId": arn}),
                              ("DescribeKey", {"KeyId": "alias/a"}), ("ListKeys", {}),
                              ("GenerateDataKey", {"KeyId": arn, "KeySpec": "AES_256"}),
                              ("UpdateAlias", {"AliasName": "alias/a", "TargetKeyId": other}),
                              ("DisableKey", {"KeyId": arn}), ("EnableKey", {"KeyId": arn}),
                              ("DeleteAlias", {"AliasName": "alias/a"}),
                              ("ScheduleKeyDeletion", {"KeyId": arn, "PendingWindowInDays": 7}),
                              ("CancelKeyDeletion", {"KeyId": arn})]:
        status, body = await front.call(operation, params)
        assert status == 200, body
    assert seen == [("CreateKey", arn), ("CreateKey", other), ("CreateAlias", arn), ("UpdateAlias", other),
                    ("DisableKey", arn), ("EnableKey", arn), ("DeleteAlias", other),
                    ("ScheduleKeyDeletion", arn), ("CancelKeyDeletion", arn)]


async def test_grant_and_policy_changes_are_announced(keys, front):
    arn = (await front.call("CreateKey", {}))[1]["KeyMetadata"]["Arn"]
    seen = recorder(keys)
    grant = (await front.call("CreateGrant", {"KeyId": arn, "GranteePrincipal": "arn:aws:iam::111122223333:user/b",
                                              "Operations": ["Decrypt"]}))[1]["GrantId"]
    policy = (await front.call("GetKeyPolicy", {"KeyId": arn, "PolicyName": "default"}))[1]["Policy"]
    assert (await front.call("PutKeyPolicy", {"KeyId": arn, "PolicyName": "default", "Policy": policy}))[0] == 200
    assert (await front.call("RevokeGrant", {"KeyId": arn, "GrantId": grant}))[0] == 200
    token = (await front.call("CreateGrant", {"KeyId": arn, "GranteePrincipal": "arn:aws:iam::111122223333:user/b",
                                              "RetiringPrincipal": "arn:aws:iam::111122223333:user/host",
                                              "Operations": ["Decrypt"]}))[1]["GrantToken"]
    assert (await front.call("RetireGrant", {"GrantToken": token}))[0] == 200
    assert seen == [("CreateGrant", arn), ("PutKeyPolicy", arn), ("RevokeGrant", arn), ("CreateGrant", arn),
                    ("RetireGrant", arn)]


async def test_a_refused_change_is_not_announced(keys, front):
    seen = recorder(keys)
    status, body = await front.call("DisableKey", {"KeyId": "alias/none"})
    assert (status, body["__type"], seen) == (400, "NotFoundException", [])


async def test_the_hosts_own_changes_are_announced(keys):
    seen = recorder(keys)
    arn = await keys.ensure_alias_key("alias/host", "the host's key")
    await keys.tag_key(arn, {"team": "a"})
    await keys.generate_data_key("alias/host", {})
    await keys.key_arn("alias/host")
    assert seen == [("CreateKey", arn), ("CreateAlias", arn), ("TagResource", arn)]


async def test_a_failing_listener_is_logged_and_neither_fails_the_call_nor_silences_the_others(keys, caplog):
    seen: list[tuple[str, str | None]] = []

    def broken(operation: str, arn: str | None) -> None:
        raise RuntimeError("listener bug")
    keys.on_change(broken)
    keys.on_change(lambda operation, arn: seen.append((operation, arn)))
    arn = await keys.ensure_alias_key("alias/host", "the host's key")
    assert seen == [("CreateKey", arn), ("CreateAlias", arn)]
    assert f"a key change listener failed on CreateKey of {arn}" in caplog.text


async def test_the_periodic_maintenance_announces_a_key_it_deletes_and_one_it_rotates(tmp_path: Path):
    keys = await open_keys(tmp_path, "purge_interval = 0.05\n")
    try:
        doomed = await keys.ensure_alias_key("alias/doomed", "deleted by the maintenance")
        rotated = await keys.ensure_alias_key("alias/rotated", "rotated by the maintenance")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", keys.kms_frontend([(*HOST, "arn:aws:iam::111122223333:root")]).handle)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            front = Front(client)
            assert (await front.call("ScheduleKeyDeletion", {"KeyId": doomed, "PendingWindowInDays": 7}))[0] == 200
            assert (await front.call("EnableKeyRotation", {"KeyId": rotated, "RotationPeriodInDays": 90}))[0] == 200
        seen = recorder(keys)
        (tmp_path / "clock").write_text(str(91 * DAY))
        keys.start_maintenance()
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await keys.close()
    assert sorted(seen) == [("DeleteKey", doomed), ("RotateKey", rotated)]


async def test_a_deletion_applied_lazily_by_a_call_is_announced_though_the_call_fails(keys, front, tmp_path: Path):
    arn = (await front.call("CreateKey", {}))[1]["KeyMetadata"]["Arn"]
    assert (await front.call("ScheduleKeyDeletion", {"KeyId": arn, "PendingWindowInDays": 7}))[0] == 200
    seen = recorder(keys)
    (tmp_path / "clock").write_text(str(8 * DAY))
    status, body = await front.call("DescribeKey", {"KeyId": arn})
    assert (status, body["__type"], seen) == (400, "NotFoundException", [("DeleteKey", arn)])
