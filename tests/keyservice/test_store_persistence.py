"""The key store survives a reopen and never holds plaintext key material."""

import os
import sqlite3

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyservice.clock import FakeClock
from keyservice.errors import KMSError
from keyservice.service import CallContext, KeyService
from keyservice.store import RootKeyMismatch, StoreCorruption

ACCOUNT = "111122223333"
CTX = CallContext(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, "req")


async def test_keys_aliases_grants_and_tags_survive_reopen_without_plaintext_in_the_db(tmp_path):
    root = os.urandom(32)
    svc = KeyService.open(tmp_path, root, clock=FakeClock(1_700_000_000.0))
    key = (await svc.handle("CreateKey", {"Tags": [{"TagKey": "t", "TagValue": "v"}]}, CTX))["KeyMetadata"]["KeyId"]
    hmac_key = (await svc.handle("CreateKey", {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
                                 CTX))["KeyMetadata"]["KeyId"]
    await svc.handle("CreateAlias", {"AliasName": "alias/kept", "TargetKeyId": key}, CTX)
    grant = await svc.handle("CreateGrant", {"KeyId": key, "GranteePrincipal": "arn:aws:iam::1:user/x",
                                             "Operations": ["Decrypt"]}, CTX)
    blob = (await svc.handle("Encrypt", {"KeyId": "alias/kept", "Plaintext": b"durable"}, CTX))["CiphertextBlob"]
    mac = (await svc.handle("GenerateMac", {"KeyId": hmac_key, "Message": b"m", "MacAlgorithm": "HMAC_SHA_256"},
                            CTX))["Mac"]
    secrets = [svc.material(svc.keys[key]), svc.material(svc.keys[hmac_key])]
    await svc.close()

    reopened = KeyService.open(tmp_path, root, clock=FakeClock(1_700_000_000.0))
    assert (await reopened.handle("Decrypt", {"CiphertextBlob": blob}, CTX))["Plaintext"] == b"durable"
    assert (await reopened.handle("VerifyMac", {"KeyId": hmac_key, "Message": b"m", "Mac": mac,
                                                "MacAlgorithm": "HMAC_SHA_256"}, CTX))["MacValid"] is True
    grants = (await reopened.handle("ListGrants", {"KeyId": key}, CTX))["Grants"]
    assert [g["GrantId"] for g in grants] == [grant["GrantId"]]
    assert (await reopened.handle("ListResourceTags", {"KeyId": key}, CTX))["Tags"] == [{"TagKey": "t", "TagValue": "v"}]
    raw_keys = [row.material for k in (key, hmac_key) for row in reopened.store.backing_keys(k)]
    await reopened.close()

    assert raw_keys[1] == secrets[1]
    database = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("keys.db"))
    for material in raw_keys:
        assert material not in database
    assert root not in database


async def test_a_wrong_root_key_is_refused_at_open_and_the_store_stays_usable_with_the_right_one(tmp_path):
    root = os.urandom(32)
    svc = KeyService.open(tmp_path, root)
    key = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    await svc.close()
    with pytest.raises(RootKeyMismatch) as refused:
        KeyService.open(tmp_path, os.urandom(32))
    assert str(refused.value) == (
        f"the root key does not open the key store in {tmp_path}: it is not the key the store was created with "
        "(check root_key_file / KEYSERVICE_ROOT_KEY_FILE, KEYSERVICE_ROOT_KEY or KEYSERVICE_ROOT_PASSPHRASE)")
    reopened = KeyService.open(tmp_path, root)  # the refused open released the store's lock
    assert len(reopened.store.backing_keys(key)) == 1
    await reopened.close()


async def test_a_store_from_before_the_canary_is_checked_by_its_first_secret_and_then_gets_one(tmp_path):
    root = os.urandom(32)
    svc = KeyService.open(tmp_path, root)
    await svc.handle("CreateKey", {}, CTX)
    await svc.close()
    db = sqlite3.connect(tmp_path / "keys.db")
    db.execute("DROP TABLE canary")
    db.commit()
    db.close()
    with pytest.raises(RootKeyMismatch):
        KeyService.open(tmp_path, os.urandom(32))
    await KeyService.open(tmp_path, root).close()
    db = sqlite3.connect(tmp_path / "keys.db")
    assert db.execute("SELECT name FROM canary").fetchall() == [("root-key",)]
    db.close()
    with pytest.raises(RootKeyMismatch):  # from now on the canary proves the key
        KeyService.open(tmp_path, os.urandom(32))


async def test_database_uses_wal_and_full_sync(tmp_path):
    svc = KeyService.open(tmp_path, os.urandom(32))
    await svc.handle("CreateKey", {}, CTX)
    db = sqlite3.connect(tmp_path / "keys.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert svc.store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    await svc.close()


async def test_swapped_secret_rows_fail_to_unwrap(tmp_path):
    svc = KeyService.open(tmp_path, os.urandom(32))
    a = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    b = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    db = sqlite3.connect(tmp_path / "keys.db")
    wrapped_a = db.execute("SELECT wrapped FROM backing_keys WHERE key_id = ?", (a,)).fetchone()[0]
    db.execute("UPDATE backing_keys SET wrapped = ? WHERE key_id = ?", (wrapped_a, b))
    db.commit()
    db.close()
    with pytest.raises(StoreCorruption):
        svc.store.backing_keys(b)
    with pytest.raises(KMSError) as info:
        await svc.handle("Encrypt", {"KeyId": b, "Plaintext": b"x"}, CTX)
    assert (info.value.type, info.value.status) == ("KMSInternalException", 500)
    await svc.close()


def documented_wrap(root: bytes, aad: bytes, secret: bytes) -> bytes:
    """A secret column as the store has always written it: nonce(12) || AES-256-GCM(root, nonce, secret, aad)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(root).encrypt(nonce, secret, aad)


async def test_rows_wrapped_in_the_documented_layout_unwrap_and_new_rows_keep_it(tmp_path):
    root = os.urandom(32)
    svc = KeyService.open(tmp_path, root)
    key = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    [row] = svc.store.backing_keys(key)
    db = sqlite3.connect(tmp_path / "keys.db")
    [stored] = db.execute("SELECT wrapped FROM backing_keys WHERE key_id = ?", (key,)).fetchone()
    aad = f"backing_keys|{key}|{row.backing_id}".encode()
    assert AESGCM(root).decrypt(stored[:12], stored[12:], aad) == row.material
    older = bytes(range(32))
    db.execute("UPDATE backing_keys SET wrapped = ? WHERE key_id = ?", (documented_wrap(root, aad, older), key))
    db.commit()
    db.close()
    assert [r.material for r in svc.store.backing_keys(key)] == [older]
    await svc.close()


async def test_a_truncated_secret_row_is_store_corruption(tmp_path):
    svc = KeyService.open(tmp_path, os.urandom(32))
    key = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    db = sqlite3.connect(tmp_path / "keys.db")
    db.execute("UPDATE backing_keys SET wrapped = ? WHERE key_id = ?", (b"\x00" * 5, key))
    db.commit()
    db.close()
    with pytest.raises(StoreCorruption):
        svc.store.backing_keys(key)
    await svc.close()


def test_a_second_process_on_an_open_key_store_is_refused_and_may_open_it_once_it_is_closed(tmp_path):
    """Each process keeps the keys in memory: two on one store would not see each other's changes (a key
    disabled in one still encrypting in the other). The second is refused, clearly, until the first closes."""
    import subprocess
    import sys

    from keyservice.store import KeyStore
    first = KeyStore(tmp_path, bytes(32))
    other = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from keyservice.store import "
                            "KeyStore, StoreInUse\ntry:\n    KeyStore(Path(sys.argv[1]), bytes(32))\n"
                            "except StoreInUse as e:\n    print(e); sys.exit(3)", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 3, other.stderr
    assert other.stdout.startswith(f"the key store in {tmp_path} is in use by another process")
    first.close()
    KeyStore(tmp_path, bytes(32)).close()
