"""Metadata authenticated under the root key, on both stores; the versioned schema: a store from before
the MACs is upgraded and reads, a newer schema is refused at start."""
from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from keyservice.clock import FakeClock
from keyservice.service import KeyService
from keyservice.store import KeyStore, RootKeyMismatch
from keyservice.storeapi import TABLES, BackingKeyRow, open_store
from tests.keyservice.conftest import ROOT_KEY_B64, write_config
from tests.keyservice.inprocess import DAY, START, call, fails, new_key
from tests.support.postgres import PostgresServer

GRANTEE = "arn:aws:iam::111122223333:user/grantee"


def run_sql(tmp_path: Path, store_url: str | None, postgres: PostgresServer | None, sql: str) -> None:
    """``sql`` run on the test's store behind the key service's back (as whoever can write the database)."""
    if store_url is None:
        db = sqlite3.connect(tmp_path / "keys.db")
        db.executescript(sql)
        db.close()
    else:
        assert postgres is not None
        postgres.psql(sql, store_url.rsplit("/", 1)[1])


@pytest.fixture
def pg(request: pytest.FixtureRequest, store_url: str | None) -> PostgresServer | None:
    return request.getfixturevalue("postgres") if store_url else None


def reopen(tmp_path: Path, root: bytes, store_url: str | None) -> KeyService:
    return KeyService.open(tmp_path, root, clock=FakeClock(START), store_url=store_url)


async def test_a_key_re_enabled_in_sql_is_refused_and_the_other_keys_serve(tmp_path, store_url, pg, caplog) -> None:
    root = os.urandom(32)
    svc = reopen(tmp_path, root, store_url)
    bad, good = await new_key(svc), await new_key(svc)
    await call(svc, "DisableKey", KeyId=bad)
    await svc.close()
    run_sql(tmp_path, store_url, pg,
            f"UPDATE keys SET meta = replace(meta, '\"Disabled\"', '\"Enabled\"') WHERE key_id = '{bad}'")
    svc = reopen(tmp_path, root, store_url)
    try:
        assert f"keys row {bad} fails its integrity check (MAC)" in caplog.text
        with pytest.raises(Exception) as info:
            await call(svc, "Encrypt", KeyId=bad, Plaintext=b"x")
        assert (info.value.type, info.value.status) == ("KMSInternalException", 500)
        await call(svc, "Encrypt", KeyId=good, Plaintext=b"x")
    finally:
        await svc.close()


async def test_a_policy_loosened_an_alias_retargeted_and_a_grant_changed_in_sql_are_refused(
        tmp_path, store_url, pg) -> None:
    root = os.urandom(32)
    svc = reopen(tmp_path, root, store_url)
    key, other = await new_key(svc), await new_key(svc)
    await call(svc, "CreateAlias", AliasName="alias/app", TargetKeyId=key)
    await call(svc, "CreateGrant", KeyId=key, GranteePrincipal=GRANTEE, Operations=["Decrypt"])
    forged = svc.keys[other].to_meta()
    policy = json.loads(forged["policy"])
    forged["policy"] = json.dumps({**policy, "Statement": policy["Statement"] + [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "kms:*", "Resource": "*"}]})
    await svc.close()
    forged_text = json.dumps(forged).replace("'", "''")
    run_sql(tmp_path, store_url, pg,
            f"UPDATE aliases SET meta = replace(meta, '{key}', '{other}'), key_id = '{other}';"
            f"UPDATE grants SET meta = replace(meta, '\"Decrypt\"', '\"Encrypt\"');"
            f"UPDATE keys SET meta = '{forged_text}' WHERE key_id = '{other}';")
    svc = reopen(tmp_path, root, store_url)
    try:
        await fails(svc, "DescribeKey", "NotFoundException", KeyId="alias/app")  # the forged alias is refused
        assert (await call(svc, "ListGrants", KeyId=key))["Grants"] == []     # so is the forged grant
        with pytest.raises(Exception) as info:                                 # and the loosened key
            await call(svc, "DescribeKey", KeyId=other)
        assert (info.value.type, info.value.status) == ("KMSInternalException", 500)
        assert {("aliases", "alias/app"), ("keys", other)} <= svc.store.refused
        await call(svc, "DescribeKey", KeyId=key)  # its own row untouched: it serves
    finally:
        await svc.close()


def downgrade_to_schema_1(path: Path) -> None:
    """The store as the key service wrote it before MACs: no mac columns, no schema_version table (and no
    root-key canary, which came at about the same time)."""
    db = sqlite3.connect(path)
    for table in TABLES:
        db.execute(f"ALTER TABLE {table} DROP COLUMN mac")
    db.execute("DROP TABLE schema_version")
    db.execute("DROP TABLE canary")
    db.commit()
    db.close()


async def test_a_sqlite_store_from_before_macs_is_upgraded_once_under_the_root_key_and_reads(tmp_path) -> None:
    root = os.urandom(32)
    svc = reopen(tmp_path, root, None)
    key = (await call(svc, "CreateKey", Tags=[{"TagKey": "t", "TagValue": "v"}]))["KeyMetadata"]["KeyId"]
    await call(svc, "CreateAlias", AliasName="alias/old", TargetKeyId=key)
    grant = (await call(svc, "CreateGrant", KeyId=key, GranteePrincipal=GRANTEE, Operations=["Decrypt"]))["GrantId"]
    await call(svc, "RotateKeyOnDemand", KeyId=key)
    blob = (await call(svc, "Encrypt", KeyId="alias/old", Plaintext=b"kept"))["CiphertextBlob"]
    await svc.close()
    downgrade_to_schema_1(tmp_path / "keys.db")

    svc = reopen(tmp_path, root, None)
    try:
        assert (await call(svc, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"kept"
        assert [g["GrantId"] for g in (await call(svc, "ListGrants", KeyId=key))["Grants"]] == [grant]
        assert (await call(svc, "ListResourceTags", KeyId=key))["Tags"] == [{"TagKey": "t", "TagValue": "v"}]
        assert (await call(svc, "DescribeKey", KeyId="alias/old"))["KeyMetadata"]["KeyId"] == key
        assert svc.store.refused == set()
    finally:
        await svc.close()
    db = sqlite3.connect(tmp_path / "keys.db")
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    for table in TABLES:
        assert db.execute(f"SELECT count(*) FROM {table} WHERE mac IS NULL").fetchone() == (0,)
    assert db.execute("SELECT name FROM canary").fetchall() == [("root-key",)]
    db.close()


def test_an_upgrade_under_another_root_key_is_refused_and_leaves_the_store_as_it_was(tmp_path) -> None:
    """MACs computed under a wrong key would make the right one refuse every row: no upgrade then."""
    root = os.urandom(32)
    store = KeyStore(tmp_path, root)
    store.add_backing_key(BackingKeyRow("k", "b", START, None, bytes(32)))
    store.close()
    downgrade_to_schema_1(tmp_path / "keys.db")
    with pytest.raises(RootKeyMismatch, match=re.escape(f"the root key does not open the key store in {tmp_path}")):
        KeyStore(tmp_path, os.urandom(32))
    db = sqlite3.connect(tmp_path / "keys.db")
    assert "mac" not in [c[1] for c in db.execute("PRAGMA table_info(keys)")]
    db.close()
    KeyStore(tmp_path, root).close()  # the right key upgrades it


def test_a_newer_schema_is_refused_at_start_with_a_one_line_error(tmp_path, store_url, pg) -> None:
    open_store(tmp_path, bytes(32), store_url).close()
    run_sql(tmp_path, store_url, pg, "INSERT INTO schema_version VALUES (99)")
    env = {**os.environ, "KEYSERVICE_DATA_DIR": str(tmp_path), "KEYSERVICE_ROOT_KEY": ROOT_KEY_B64}
    if store_url:
        env["KEYSERVICE_STORE_URL"] = store_url
    config = write_config(tmp_path / "keyservice.toml")
    result = subprocess.run([sys.executable, "-m", "keyservice", "serve", "--config", str(config), "--listen",
                             "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "keyservice: the key store's schema is version 99, newer than this key service knows (2): run the newer "
        "key service (or restore a backup from before it)")


def test_an_unreachable_postgresql_is_a_one_line_start_up_error_without_the_password(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    env = {**os.environ, "KEYSERVICE_DATA_DIR": str(tmp_path), "KEYSERVICE_ROOT_KEY": ROOT_KEY_B64,
           "KEYSERVICE_STORE_URL": f"postgresql://ks:hunter2pw@127.0.0.1:{port}/keys"}
    config = write_config(tmp_path / "keyservice.toml")
    result = subprocess.run([sys.executable, "-m", "keyservice", "serve", "--config", str(config), "--listen",
                             "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(
        f"keyservice: cannot open the key store on PostgreSQL at 127.0.0.1:{port}/keys: ")
    assert "hunter2pw" not in result.stderr + result.stdout


def test_a_wrong_root_key_is_refused_at_open_on_postgresql_too(tmp_path, postgres: PostgresServer) -> None:
    url = postgres.create_database()
    open_store(tmp_path, bytes(32), url).close()
    with pytest.raises(RootKeyMismatch, match=re.escape("the root key does not open the key store in PostgreSQL "
                                                        f"at 127.0.0.1:{postgres.port}/")):
        open_store(tmp_path, bytes(range(32)), url)
    open_store(tmp_path, bytes(32), url).close()


async def test_a_forged_row_of_a_key_due_for_rotation_is_refused_and_the_others_are_still_rotated(
        tmp_path, store_url, pg, caplog) -> None:
    root = os.urandom(32)
    clock = FakeClock(START)
    svc = KeyService.open(tmp_path, root, clock=clock, store_url=store_url)
    try:
        forged, kept = await new_key(svc), await new_key(svc)
        for key in (forged, kept):
            await call(svc, "EnableKeyRotation", KeyId=key, RotationPeriodInDays=90)
        run_sql(tmp_path, store_url, pg, f"UPDATE keys SET meta = replace(meta, '\"Enabled\"', '\"Enabled\" ') "
                                         f"WHERE key_id = '{forged}'")
        clock.advance(100 * DAY)
        svc.purge_due_keys()
        assert len(svc.store.backing_keys(kept)) == 2
        assert f"left out of maintenance: keys row {forged} fails its integrity check (MAC)" in caplog.text
        with pytest.raises(Exception) as info:
            await call(svc, "Encrypt", KeyId=forged, Plaintext=b"x")
        assert (info.value.type, info.value.status) == ("KMSInternalException", 500)
    finally:
        await svc.close()


async def test_the_postgresql_store_holds_no_plaintext_key_material_nor_the_root_key(tmp_path,
                                                                                     postgres: PostgresServer) -> None:
    url, root = postgres.create_database(), os.urandom(32)
    svc = reopen(tmp_path, root, url)
    try:
        key = await new_key(svc)
        hmac_key = await new_key(svc, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
        await call(svc, "RotateKeyOnDemand", KeyId=key)
        materials = [row.material for k in (key, hmac_key) for row in svc.store.backing_keys(k)]
    finally:
        await svc.close()
    dump = postgres.dump(url)
    assert b"COPY public.backing_keys" in dump and len(materials) == 3
    for secret in materials + [root]:
        assert secret.hex().encode() not in dump and secret not in dump
