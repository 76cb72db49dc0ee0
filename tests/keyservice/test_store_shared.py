"""Several key service nodes on one PostgreSQL key store: each sees the others' changes within the bound,
due deletions and rotations run once, and a row changed in SQL behind the service's back is refused."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keyservice.clock import FakeClock
from keyservice.embedded import EmbeddedKeyService, KeyServiceError
from keyservice.service import KeyService
from tests.keyservice.inprocess import DAY, START, call, new_key
from tests.support.postgres import PostgresServer

ROOT_KEY = base64.b64encode(bytes(range(32))).decode()
# README: a change is applied on the other nodes within milliseconds while their listening connection is
# up; the tests allow this much (a loaded CI machine).
BOUND = 2.0
GRANTEE = "arn:aws:iam::111122223333:user/grantee"


class Node:
    """One embedded key service (as in a gateway) on the shared store, recording what it announced."""

    def __init__(self, keys: EmbeddedKeyService) -> None:
        self.keys = keys
        self.announced: list[tuple[str, str | None]] = []
        keys.on_change(lambda operation, arn: self.announced.append((operation, arn)))

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await self.keys._call(operation, params)

    async def error(self, operation: str, **params: Any) -> str | None:
        """The AWS error type the call fails with; None if it succeeds."""
        try:
            await self.call(operation, **params)
        except KeyServiceError as exc:
            return exc.error_type
        return None


async def open_node(tmp_path: Path, name: str, url: str, resync_interval: float | None = None) -> Node:
    config = tmp_path / f"{name}.toml"
    config.write_text("[keyservice]\npurge_interval = 0.2\n")
    env = {"KEYSERVICE_ROOT_KEY": ROOT_KEY, "KEYSERVICE_STORE_URL": url,
           "KEYSERVICE_CLOCK_FILE": str(tmp_path / "clock")}
    keys = await EmbeddedKeyService.open(config, env, tmp_path / name, source=name)
    if resync_interval is not None:
        keys._api.service.store.resync_interval = resync_interval
    keys.start_maintenance()
    return Node(keys)


@pytest.fixture
async def nodes(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[tuple[Node, Node]]:
    url = postgres.create_database()
    a = await open_node(tmp_path, "a", url)
    b = await open_node(tmp_path, "b", url)
    await asyncio.sleep(0.3)  # both listening (a change before that is caught by the reload LISTEN starts with)
    yield a, b
    await a.keys.close()
    await b.keys.close()


async def within_bound(check: Any) -> float:
    """Seconds until ``check()`` (a coroutine function) returns truthy; fails after BOUND."""
    started = time.monotonic()
    while True:
        try:
            if await check():
                return time.monotonic() - started
        except KeyServiceError:
            pass
        if time.monotonic() - started > BOUND:
            pytest.fail(f"not seen on the other node within {BOUND} s")
        await asyncio.sleep(0.02)


async def test_create_disable_policy_alias_grant_and_deletion_on_one_node_are_seen_on_the_other(nodes) -> None:
    """Seen through what the other node serves from memory -- cryptographic calls (a management call would
    read the key's row afresh anyway), grants and tags -- so only the notifications can have told it."""
    a, b = nodes
    arn = (await a.call("CreateKey", Description="shared"))["KeyMetadata"]["Arn"]
    await within_bound(lambda: _usable(b, arn, None))

    await a.call("DisableKey", KeyId=arn)
    await within_bound(lambda: _usable(b, arn, "DisabledException"))
    assert ("KeyStoreChange", arn) in b.announced  # the host's data-key cache is told
    await a.call("EnableKey", KeyId=arn)
    await within_bound(lambda: _usable(b, arn, None))

    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:GenerateDataKey", "Resource": "*"}]})
    await a.call("PutKeyPolicy", KeyId=arn, PolicyName="default", Policy=policy)
    await within_bound(lambda: _usable(b, arn, "AccessDeniedException"))
    await a.call("PutKeyPolicy", KeyId=arn, PolicyName="default", Policy=policy.replace('"Deny"', '"Allow"'))
    await within_bound(lambda: _usable(b, arn, None))

    await a.call("CreateAlias", AliasName="alias/shared", TargetKeyId=arn)
    await within_bound(lambda: _usable(b, "alias/shared", None))

    grant = await a.call("CreateGrant", KeyId=arn, GranteePrincipal=GRANTEE, Operations=["Decrypt"])

    async def grant_seen() -> bool:
        return [g["GrantId"] for g in (await b.call("ListGrants", KeyId=arn))["Grants"]] == [grant["GrantId"]]
    await within_bound(grant_seen)

    await a.call("TagResource", KeyId=arn, Tags=[{"TagKey": "team", "TagValue": "blue"}])

    async def tag_seen() -> bool:
        return (await b.call("ListResourceTags", KeyId=arn))["Tags"] == [{"TagKey": "team", "TagValue": "blue"}]
    await within_bound(tag_seen)

    await a.call("ScheduleKeyDeletion", KeyId=arn, PendingWindowInDays=7)
    await within_bound(lambda: _usable(b, arn, "KMSInvalidStateException"))
    await b.call("CancelKeyDeletion", KeyId=arn)  # and the other way round
    await within_bound(lambda: _usable(a, arn, "DisabledException"))


async def _usable(node: Node, key: str, error: str | None) -> bool:
    """Whether GenerateDataKey under ``key`` through ``node`` fails with ``error`` (None: succeeds)."""
    return await node.error("GenerateDataKey", KeyId=key, KeySpec="AES_256") == error


async def test_a_rotation_on_one_node_decrypts_and_encrypts_on_the_other(nodes) -> None:
    a, b = nodes
    arn = (await a.call("CreateKey"))["KeyMetadata"]["Arn"]
    await within_bound(lambda: _usable(b, arn, None))
    await b.keys.generate_data_key(arn, {})  # b has the first version's material cached
    await a.call("RotateKeyOnDemand", KeyId=arn)
    new = await a.keys.generate_data_key(arn, {"v": "2"})

    async def decrypts() -> bool:
        return (await b.keys.decrypt(new.ciphertext_blob, {"v": "2"})).plaintext == new.plaintext
    await within_bound(decrypts)
    later = await b.keys.generate_data_key(arn, {})
    assert (await a.keys.decrypt(later.ciphertext_blob, {})).plaintext == later.plaintext


async def test_a_deletion_due_is_made_once_by_the_nodes_and_the_key_is_gone_on_both(nodes, tmp_path: Path) -> None:
    a, b = nodes
    key_id = (await a.call("CreateKey"))["KeyMetadata"]["KeyId"]
    await a.call("ScheduleKeyDeletion", KeyId=key_id, PendingWindowInDays=7)
    await within_bound(lambda: _usable(b, key_id, "KMSInvalidStateException"))
    (tmp_path / "clock").write_text(str(8 * DAY))  # both nodes' clock (KEYSERVICE_CLOCK_FILE)

    async def gone_on_both() -> bool:
        return all([await _not_found(n, key_id) for n in (a, b)])
    await within_bound(gone_on_both)
    await asyncio.sleep(0.5)  # a few more maintenance rounds on both
    deletions = [e for n in (a, b) for e in n.announced if e[0] == "DeleteKey"]
    assert len(deletions) == 1


async def _not_found(node: Node, key_id: str) -> bool:
    return await node.error("DescribeKey", KeyId=key_id) == "NotFoundException"


async def test_a_meta_row_changed_in_sql_is_refused_by_the_nodes(nodes, postgres: PostgresServer, caplog) -> None:
    """Whoever can write the database cannot re-enable a disabled key: the row fails its MAC; a node told
    of it (here the forger even notifies) stops using the key, and says why."""
    a, b = nodes
    arn = (await a.call("CreateKey"))["KeyMetadata"]["Arn"]
    key_id = arn.rsplit("/", 1)[1]
    await a.call("DisableKey", KeyId=arn)
    await within_bound(lambda: _usable(b, arn, "DisabledException"))
    database = a.keys._api.service.store._url.rsplit("/", 1)[1]
    postgres.psql(f"UPDATE keys SET meta = replace(meta, '\"Disabled\"', '\"Enabled\"') WHERE key_id = '{key_id}'; "
                  f"SELECT pg_notify('keyservice_changes', 'forger keys {key_id}')", database)

    async def refused() -> bool:
        return await b.error("GenerateDataKey", KeyId=arn, KeySpec="AES_256") == "KMSInternalException"
    with caplog.at_level(logging.ERROR):
        await within_bound(refused)
    assert f"keys row {key_id} fails its integrity check (MAC)" in caplog.text
    assert await a.error("GenerateDataKey", KeyId=arn, KeySpec="AES_256") == "KMSInternalException"


async def test_a_node_started_on_a_tampered_row_refuses_that_key_and_serves_the_others(
        tmp_path: Path, postgres: PostgresServer, caplog) -> None:
    url = postgres.create_database()
    a = await open_node(tmp_path, "a", url)
    bad = (await a.call("CreateKey", Description="bad"))["KeyMetadata"]["KeyId"]
    good = (await a.call("CreateKey", Description="good"))["KeyMetadata"]["KeyId"]
    await a.call("DisableKey", KeyId=bad)
    await a.keys.close()
    postgres.psql(f"UPDATE keys SET meta = replace(meta, '\"Disabled\"', '\"Enabled\"') WHERE key_id = '{bad}'",
                  url.rsplit("/", 1)[1])
    with caplog.at_level(logging.ERROR):
        b = await open_node(tmp_path, "b", url)
    try:
        assert f"keys row {bad} fails its integrity check (MAC)" in caplog.text
        assert await b.error("GenerateDataKey", KeyId=bad, KeySpec="AES_256") == "KMSInternalException"
        await b.keys.generate_data_key(good, {})
    finally:
        await b.keys.close()


@pytest.mark.parametrize("change", ["deletion", "rotation"])
async def test_a_due_deletion_or_rotation_runs_once_with_two_nodes(postgres: PostgresServer, tmp_path: Path,
                                                                     change: str) -> None:
    url, root = postgres.create_database(), os.urandom(32)
    clock_a, clock_b = FakeClock(START), FakeClock(START)
    svc_a = KeyService.open(tmp_path / "a", root, clock=clock_a, store_url=url)
    svc_b = KeyService.open(tmp_path / "b", root, clock=clock_b, store_url=url)
    try:
        key = await new_key(svc_a)
        if change == "deletion":
            await call(svc_a, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
        else:
            await call(svc_a, "EnableKeyRotation", KeyId=key, RotationPeriodInDays=90)
        svc_b.apply_store_changes([None])  # b knows the key as a knows it
        for clock in (clock_a, clock_b):
            clock.advance(100 * DAY)
        await asyncio.gather(asyncio.to_thread(svc_a.purge_due_keys), asyncio.to_thread(svc_b.purge_due_keys))
        events = list(svc_a.maintenance_events) + list(svc_b.maintenance_events)
        if change == "deletion":
            assert [e[0] for e in events] == ["DeleteKey"]
            assert key not in svc_a.keys and key not in svc_b.keys
        else:
            assert [e[0] for e in events] == ["RotateKey"]
            assert len(svc_a.store.backing_keys(key)) == 2
            assert svc_a.keys[key].to_meta() == svc_b.keys[key].to_meta()
    finally:
        await svc_a.close()
        await svc_b.close()


async def test_a_change_made_while_a_node_was_not_listening_is_caught_when_it_listens_again(
        nodes, postgres: PostgresServer, caplog) -> None:
    a, b = nodes
    arn = (await a.call("CreateKey"))["KeyMetadata"]["Arn"]
    await within_bound(lambda: _usable(b, arn, None))
    database = a.keys._api.service.store._url.rsplit("/", 1)[1]
    # Every node's listening connection is cut; a's change is made while b is not listening.
    postgres.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE application_name = 'keyservice-listener'", database)
    await a.call("DisableKey", KeyId=arn)
    # b reconnects (about a second), reloads everything, and so sees it.
    started = time.monotonic()
    while not await _usable(b, arn, "DisabledException"):
        assert time.monotonic() - started < BOUND + 5, "not caught up after the listener reconnected"
        await asyncio.sleep(0.05)
    assert "key store change listener reconnected: reloading every key" in caplog.text


async def test_a_row_forged_without_a_notification_is_refused_at_the_periodic_reload(
        tmp_path: Path, postgres: PostgresServer) -> None:
    url = postgres.create_database()
    a = await open_node(tmp_path, "a", url, resync_interval=0.5)
    try:
        arn = (await a.call("CreateKey"))["KeyMetadata"]["Arn"]
        await a.call("DisableKey", KeyId=arn)
        postgres.psql(f"UPDATE keys SET meta = replace(meta, '\"Disabled\"', '\"Enabled\"')", url.rsplit("/", 1)[1])

        await within_bound(lambda: _usable(a, arn, "KMSInternalException"))
        assert ("KeyStoreChange", arn) in a.announced
    finally:
        await a.keys.close()


async def test_a_node_that_has_not_heard_of_a_change_yet_builds_on_it_rather_than_overwriting_it(
        postgres: PostgresServer, tmp_path: Path) -> None:
    """B changes a key A disabled a moment ago, before A's notification reached it (here: B follows no
    notifications at all): B's write starts from the row as stored, so the key stays disabled."""
    url, root = postgres.create_database(), os.urandom(32)
    svc_a = KeyService.open(tmp_path / "a", root, clock=FakeClock(START), store_url=url)
    svc_b = KeyService.open(tmp_path / "b", root, clock=FakeClock(START), store_url=url)
    try:
        key = await new_key(svc_a)
        await call(svc_b, "DescribeKey", KeyId=key)
        await call(svc_a, "DisableKey", KeyId=key)
        await call(svc_b, "UpdateKeyDescription", KeyId=key, Description="from b")
        stored = svc_a.store.get_key(key)
        assert (stored["state"], stored["description"]) == ("Disabled", "from b")
    finally:
        await svc_a.close()
        await svc_b.close()

