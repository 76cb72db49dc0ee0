"""Custom key stores on a PKCS#11 token (SoftHSM2), in process: the AWS CloudHSM key store API, keys whose
material is generated and used inside the token, and the connection states, with AWS's error codes."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from keyservice import blob, customkeystores
from keyservice.clock import FakeClock
from keyservice.errors import KMSError
from keyservice.pkcs11backend import TokenConfig
from keyservice.service import CallContext, KeyService
from tests.keyservice.inprocess import START
from tests.keyservice.softhsm import (CLUSTER_ID, TRUST_ANCHOR, USER_PIN, SoftHsm, softhsm,  # noqa: F401
                                      token, token_key_attributes)

ACCOUNT = "111122223333"
CTX = CallContext(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, "req")
OTHER_CTX = CallContext("arn:aws:iam::444455556666:root", "444455556666", "req")


class Harness:
    """A key service on a fake clock whose configuration names the test's token as CLUSTER_ID."""

    def __init__(self, data_dir: Path, hsm: SoftHsm, label: str) -> None:
        self.data_dir = data_dir
        self.root_key = os.urandom(32)
        self.clock = FakeClock(START)
        self.tokens = {CLUSTER_ID: TokenConfig(CLUSTER_ID, hsm.module, label)}
        self.svc = self.open()

    def open(self) -> KeyService:
        return KeyService.open(self.data_dir, self.root_key, clock=self.clock, tokens=self.tokens)

    async def restart(self) -> None:
        await self.svc.close()
        self.svc = self.open()

    async def call(self, operation: str, params: dict | None = None, ctx: CallContext = CTX) -> dict:
        return await self.svc.handle(operation, params or {}, ctx)

    async def error(self, operation: str, params: dict | None = None, ctx: CallContext = CTX) -> str:
        with pytest.raises(KMSError) as info:
            await self.call(operation, params, ctx)
        return info.value.type

    async def create_store(self, name: str = "hsm store", password: str = USER_PIN) -> str:
        out = await self.call("CreateCustomKeyStore", {"CustomKeyStoreName": name, "CloudHsmClusterId": CLUSTER_ID,
                                                       "TrustAnchorCertificate": TRUST_ANCHOR,
                                                       "KeyStorePassword": password})
        return out["CustomKeyStoreId"]

    async def store(self, store_id: str) -> dict:
        [entry] = (await self.call("DescribeCustomKeyStores", {"CustomKeyStoreId": store_id}))["CustomKeyStores"]
        return entry

    async def connected_key(self) -> tuple[str, str]:
        store_id = await self.create_store()
        await self.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
        meta = (await self.call("CreateKey", {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": store_id}))["KeyMetadata"]
        return store_id, meta["KeyId"]


@pytest.fixture
async def hsm(tmp_path: Path, softhsm: SoftHsm, token: str):  # noqa: F811
    harness = Harness(tmp_path / "ks", softhsm, token)
    yield harness
    await harness.svc.close()


# --- the store API -------------------------------------------------------------------------------
async def test_create_describes_a_disconnected_cloudhsm_store_without_its_password(hsm: Harness) -> None:
    store_id = await hsm.create_store()
    assert store_id.startswith("cks-") and len(store_id) == 21
    assert await hsm.store(store_id) == {
        "CustomKeyStoreId": store_id, "CustomKeyStoreName": "hsm store", "CloudHsmClusterId": CLUSTER_ID,
        "TrustAnchorCertificate": TRUST_ANCHOR, "ConnectionState": "DISCONNECTED", "CreationDate": START,
        "CustomKeyStoreType": "AWS_CLOUDHSM"}
    by_name = await hsm.call("DescribeCustomKeyStores", {"CustomKeyStoreName": "hsm store"})
    assert [s["CustomKeyStoreId"] for s in by_name["CustomKeyStores"]] == [store_id]


async def test_the_password_is_stored_wrapped_and_bound_to_its_row(hsm: Harness) -> None:
    store_id = await hsm.create_store()
    db = sqlite3.connect(hsm.data_dir / "keys.db")
    [(wrapped,)] = db.execute("SELECT wrapped FROM custom_key_stores").fetchall()
    db.close()
    assert USER_PIN.encode() not in wrapped and USER_PIN.encode() not in (hsm.data_dir / "keys.db").read_bytes()
    assert hsm.svc.store.custom_key_store_password(store_id) == USER_PIN
    other = "cks-" + "0" * 17
    hsm.svc.store._db.execute("INSERT INTO custom_key_stores (store_id, meta, wrapped) VALUES (?, '{}', ?)",
                              (other, wrapped))
    with pytest.raises(Exception, match="cannot unwrap custom_key_stores row"):
        hsm.svc.store.custom_key_store_password(other)


async def test_create_refuses_unknown_clusters_taken_names_and_taken_clusters(hsm: Harness) -> None:
    base = {"CustomKeyStoreName": "a", "TrustAnchorCertificate": TRUST_ANCHOR, "KeyStorePassword": USER_PIN}
    assert await hsm.error("CreateCustomKeyStore", {**base, "CloudHsmClusterId": "cluster-notconfigured"}) \
        == "CloudHsmClusterNotFoundException"
    await hsm.create_store("a")
    assert await hsm.error("CreateCustomKeyStore", {**base, "CloudHsmClusterId": CLUSTER_ID}) \
        == "CustomKeyStoreNameInUseException"
    assert await hsm.error("CreateCustomKeyStore", {**base, "CustomKeyStoreName": "b",
                                                    "CloudHsmClusterId": CLUSTER_ID}) == "CloudHsmClusterInUseException"


@pytest.mark.parametrize("change, code", [
    ({"KeyStorePassword": "short"}, "ValidationException"),
    ({"KeyStorePassword": None}, "ValidationException"),
    ({"TrustAnchorCertificate": None}, "ValidationException"),
    ({"CloudHsmClusterId": None}, "ValidationException"),
    ({"CustomKeyStoreType": "EXTERNAL_KEY_STORE"}, "UnsupportedOperationException"),
    ({"CustomKeyStoreType": "OTHER"}, "ValidationException"),
])
async def test_create_validates_its_parameters(hsm: Harness, change: dict, code: str) -> None:
    params = {"CustomKeyStoreName": "v", "CloudHsmClusterId": CLUSTER_ID, "TrustAnchorCertificate": TRUST_ANCHOR,
              "KeyStorePassword": USER_PIN, **change}
    assert await hsm.error("CreateCustomKeyStore", {k: v for k, v in params.items() if v is not None}) == code


async def test_unknown_stores_are_not_found_by_every_operation(hsm: Harness) -> None:
    unknown = {"CustomKeyStoreId": "cks-1234567890abcdef0"}
    for operation in ("DescribeCustomKeyStores", "ConnectCustomKeyStore", "DisconnectCustomKeyStore",
                      "UpdateCustomKeyStore", "DeleteCustomKeyStore"):
        assert await hsm.error(operation, unknown) == "CustomKeyStoreNotFoundException", operation
    assert await hsm.error("DescribeCustomKeyStores", {"CustomKeyStoreName": "nope"}) \
        == "CustomKeyStoreNotFoundException"
    assert await hsm.error("CreateKey", {"Origin": "AWS_CLOUDHSM", **unknown}) == "CustomKeyStoreNotFoundException"


async def test_describe_pages_and_other_accounts_see_nothing(hsm: Harness, softhsm: SoftHsm) -> None:  # noqa: F811
    second = softhsm.init_token(f"t-{uuid.uuid4().hex[:12]}")
    hsm.svc.custom_key_stores.tokens["cluster-secondtoken"] = TokenConfig("cluster-secondtoken", softhsm.module, second)
    first = await hsm.create_store("one")
    other = (await hsm.call("CreateCustomKeyStore", {
        "CustomKeyStoreName": "two", "CloudHsmClusterId": "cluster-secondtoken",
        "TrustAnchorCertificate": TRUST_ANCHOR, "KeyStorePassword": USER_PIN}))["CustomKeyStoreId"]
    page = await hsm.call("DescribeCustomKeyStores", {"Limit": 1})
    assert page["Truncated"] is True and len(page["CustomKeyStores"]) == 1
    rest = await hsm.call("DescribeCustomKeyStores", {"Limit": 1, "Marker": page["NextMarker"]})
    assert rest["Truncated"] is False
    assert {page["CustomKeyStores"][0]["CustomKeyStoreId"], rest["CustomKeyStores"][0]["CustomKeyStoreId"]} \
        == {first, other}
    assert (await hsm.call("DescribeCustomKeyStores", {}, OTHER_CTX))["CustomKeyStores"] == []
    assert await hsm.error("CreateCustomKeyStore", {"CustomKeyStoreName": "x"}, OTHER_CTX) == "AccessDeniedException"


# --- keys in the token -----------------------------------------------------------------------------
async def test_a_key_in_the_store_runs_every_symmetric_operation_in_the_token(
        hsm: Harness, softhsm: SoftHsm, token: str) -> None:  # noqa: F811
    store_id, key_id = await hsm.connected_key()
    meta = (await hsm.call("DescribeKey", {"KeyId": key_id}))["KeyMetadata"]
    assert (meta["Origin"], meta["CustomKeyStoreId"], meta["CloudHsmClusterId"], meta["KeyState"]) \
        == ("AWS_CLOUDHSM", store_id, CLUSTER_ID, "Enabled")
    assert hsm.svc.store.backing_keys(key_id) == []  # no material in the key store

    context = {"purpose": "hsm"}
    ciphertext = (await hsm.call("Encrypt", {"KeyId": key_id, "Plaintext": b"secret",
                                             "EncryptionContext": context}))["CiphertextBlob"]
    header = blob.parse_header(ciphertext)
    assert (ciphertext[0], header.key_id, header.backing_id) == (blob.TOKEN_VERSION, key_id,
                                                                 hsm.svc.keys[key_id].current_backing)
    assert (await hsm.call("Decrypt", {"CiphertextBlob": ciphertext, "EncryptionContext": context}))["Plaintext"] \
        == b"secret"
    assert await hsm.error("Decrypt", {"CiphertextBlob": ciphertext}) == "InvalidCiphertextException"
    relabelled = bytes([blob.VERSION]) + ciphertext[1:]
    assert await hsm.error("Decrypt", {"CiphertextBlob": relabelled, "EncryptionContext": context}) \
        == "InvalidCiphertextException"

    data_key = await hsm.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": context})
    assert len(data_key["Plaintext"]) == 32
    assert (await hsm.call("Decrypt", {"CiphertextBlob": data_key["CiphertextBlob"],
                                       "EncryptionContext": context}))["Plaintext"] == data_key["Plaintext"]
    without = await hsm.call("GenerateDataKeyWithoutPlaintext", {"KeyId": key_id, "NumberOfBytes": 16})
    assert "Plaintext" not in without
    assert len((await hsm.call("Decrypt", {"CiphertextBlob": without["CiphertextBlob"]}))["Plaintext"]) == 16

    store_key = (await hsm.call("CreateKey"))["KeyMetadata"]["KeyId"]
    moved = await hsm.call("ReEncrypt", {"CiphertextBlob": ciphertext, "SourceEncryptionContext": context,
                                         "DestinationKeyId": store_key})
    assert moved["CiphertextBlob"][0] == blob.VERSION
    back = await hsm.call("ReEncrypt", {"CiphertextBlob": moved["CiphertextBlob"], "DestinationKeyId": key_id})
    assert (await hsm.call("Decrypt", {"CiphertextBlob": back["CiphertextBlob"]}))["Plaintext"] == b"secret"

    attributes = token_key_attributes(softhsm, token, key_id)
    assert attributes == {"count": 1, "sensitive": True, "extractable": False, "never_extractable": True,
                          "token": True, "value_len": 32, "value": "AttributeSensitive"}


async def test_data_key_pairs_are_unsupported_under_a_key_in_a_store(hsm: Harness) -> None:
    _, key_id = await hsm.connected_key()
    for operation in ("GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"):
        assert await hsm.error(operation, {"KeyId": key_id, "KeyPairSpec": "ECC_NIST_P256"}) \
            == "UnsupportedOperationException", operation


async def test_random_bytes_come_from_the_stores_token(hsm: Harness) -> None:
    store_id = await hsm.create_store()
    assert await hsm.error("GenerateRandom", {"NumberOfBytes": 8, "CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreInvalidStateException"
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    random = await hsm.call("GenerateRandom", {"NumberOfBytes": 24, "CustomKeyStoreId": store_id})
    assert len(random["Plaintext"]) == 24


@pytest.mark.parametrize("params, code", [
    ({"KeySpec": "RSA_2048"}, "UnsupportedOperationException"),
    ({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}, "UnsupportedOperationException"),
    ({"MultiRegion": True}, "UnsupportedOperationException"),
    ({"Origin": "AWS_KMS"}, "ValidationException"),
])
async def test_create_key_in_a_store_is_symmetric_encryption_only(hsm: Harness, params: dict, code: str) -> None:
    store_id = await hsm.create_store()
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert await hsm.error("CreateKey", {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": store_id, **params}) == code


async def test_cloudhsm_origin_needs_a_store(hsm: Harness) -> None:
    assert await hsm.error("CreateKey", {"Origin": "AWS_CLOUDHSM"}) == "ValidationException"


async def test_rotation_is_unsupported_for_keys_in_a_store(hsm: Harness) -> None:
    _, key_id = await hsm.connected_key()
    for operation in ("EnableKeyRotation", "RotateKeyOnDemand", "ListKeyRotations"):
        assert await hsm.error(operation, {"KeyId": key_id}) == "UnsupportedOperationException", operation
    assert (await hsm.call("GetKeyRotationStatus", {"KeyId": key_id}))["KeyRotationEnabled"] is False


# --- connection states ------------------------------------------------------------------------------
async def test_a_wrong_password_fails_with_invalid_credentials_until_fixed(hsm: Harness) -> None:
    store_id = await hsm.create_store(password="not-the-pin")
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    entry = await hsm.store(store_id)
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "INVALID_CREDENTIALS")
    assert await hsm.error("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreInvalidStateException"
    assert await hsm.error("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, "KeyStorePassword": USER_PIN}) \
        == "CustomKeyStoreInvalidStateException"
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert "ConnectionErrorCode" not in await hsm.store(store_id)
    await hsm.call("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, "KeyStorePassword": USER_PIN})
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert (await hsm.store(store_id))["ConnectionState"] == "CONNECTED"


def slow_login(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make logging in to a token take ``seconds`` (a network HSM), on the thread it runs on."""
    login = customkeystores._login

    def slow(*args):
        time.sleep(seconds)
        return login(*args)
    monkeypatch.setattr(customkeystores, "_login", slow)


async def test_a_store_is_connecting_while_the_token_logs_in_and_other_calls_go_on(
        hsm: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    store_id = await hsm.create_store()
    store_key = (await hsm.call("CreateKey"))["KeyMetadata"]["KeyId"]
    slow_login(monkeypatch, 0.5)
    connecting = asyncio.ensure_future(hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id}))
    await asyncio.sleep(0.1)
    assert (await hsm.store(store_id))["ConnectionState"] == "CONNECTING"
    assert (await hsm.call("Encrypt", {"KeyId": store_key, "Plaintext": b"meanwhile"}))["KeyId"].endswith(store_key)
    assert await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id}) == {}  # connecting already
    assert await hsm.error("DeleteCustomKeyStore", {"CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreInvalidStateException"
    await connecting
    assert (await hsm.store(store_id))["ConnectionState"] == "CONNECTED"


async def test_a_disconnect_while_connecting_wins(hsm: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    store_id = await hsm.create_store()
    slow_login(monkeypatch, 0.5)
    connecting = asyncio.ensure_future(hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id}))
    await asyncio.sleep(0.1)
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    await connecting
    assert (await hsm.store(store_id))["ConnectionState"] == "DISCONNECTED"
    await hsm.restart()
    assert (await hsm.store(store_id))["ConnectionState"] == "DISCONNECTED"


async def test_a_token_gone_from_the_configuration_fails_with_cluster_not_found(hsm: Harness) -> None:
    store_id = await hsm.create_store()
    hsm.tokens[CLUSTER_ID] = TokenConfig(CLUSTER_ID, hsm.tokens[CLUSTER_ID].module, "no-such-token")
    await hsm.restart()
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    entry = await hsm.store(store_id)
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "CLUSTER_NOT_FOUND")


async def test_disconnecting_makes_keys_unavailable_and_connecting_again_restores_them(hsm: Harness) -> None:
    store_id, key_id = await hsm.connected_key()
    ciphertext = (await hsm.call("Encrypt", {"KeyId": key_id, "Plaintext": b"kept"}))["CiphertextBlob"]
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert (await hsm.store(store_id))["ConnectionState"] == "DISCONNECTED"
    meta = (await hsm.call("DescribeKey", {"KeyId": key_id}))["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Unavailable", False)
    for operation, params in (("Encrypt", {"KeyId": key_id, "Plaintext": b"x"}),
                              ("Decrypt", {"CiphertextBlob": ciphertext}),
                              ("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"}),
                              ("DisableKey", {"KeyId": key_id})):
        assert await hsm.error(operation, params) == "KMSInvalidStateException", operation
    assert await hsm.error("CreateKey", {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreInvalidStateException"
    assert await hsm.error("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreInvalidStateException"
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})  # connected already: no change
    assert (await hsm.call("Decrypt", {"CiphertextBlob": ciphertext}))["Plaintext"] == b"kept"
    assert (await hsm.call("DescribeKey", {"KeyId": key_id}))["KeyMetadata"]["KeyState"] == "Enabled"


async def test_connection_state_survives_a_restart(hsm: Harness) -> None:
    store_id, key_id = await hsm.connected_key()
    ciphertext = (await hsm.call("Encrypt", {"KeyId": key_id, "Plaintext": b"across restarts"}))["CiphertextBlob"]
    await hsm.restart()
    assert (await hsm.store(store_id))["ConnectionState"] == "CONNECTED"
    assert (await hsm.call("Decrypt", {"CiphertextBlob": ciphertext}))["Plaintext"] == b"across restarts"
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    await hsm.restart()
    assert (await hsm.store(store_id))["ConnectionState"] == "DISCONNECTED"
    assert await hsm.error("Decrypt", {"CiphertextBlob": ciphertext}) == "KMSInvalidStateException"


async def test_a_password_row_that_does_not_unwrap_fails_its_store_at_start_not_the_service(hsm: Harness) -> None:
    store_id, _ = await hsm.connected_key()
    db = hsm.svc.store._db
    [(wrapped,)] = db.execute("SELECT wrapped FROM custom_key_stores").fetchall()
    db.execute("UPDATE custom_key_stores SET wrapped = ?", (wrapped[:-1] + bytes([wrapped[-1] ^ 1]),))
    await hsm.restart()
    entry = await hsm.store(store_id)
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "INTERNAL_ERROR")


async def test_update_renames_any_time_but_changes_password_and_cluster_only_disconnected(hsm: Harness) -> None:
    store_id = await hsm.create_store("first")
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    await hsm.call("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, "NewCustomKeyStoreName": "renamed"})
    assert (await hsm.store(store_id))["CustomKeyStoreName"] == "renamed"
    for change in ({"KeyStorePassword": USER_PIN}, {"CloudHsmClusterId": CLUSTER_ID}):
        assert await hsm.error("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, **change}) \
            == "CustomKeyStoreInvalidStateException"
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert await hsm.error("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id,
                                                    "CloudHsmClusterId": "cluster-notconfigured"}) \
        == "CloudHsmClusterNotFoundException"


async def test_a_store_with_keys_moves_only_to_a_token_holding_them(hsm: Harness, softhsm: SoftHsm,  # noqa: F811
                                                                    token: str) -> None:  # noqa: F811
    import pkcs11
    store_id, key_id = await hsm.connected_key()
    ciphertext = (await hsm.call("Encrypt", {"KeyId": key_id, "Plaintext": b"moves"}))["CiphertextBlob"]
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    tokens = hsm.svc.custom_key_stores.tokens
    tokens["cluster-emptytokenxx"] = TokenConfig("cluster-emptytokenxx", softhsm.module,
                                                 softhsm.init_token(f"t-{uuid.uuid4().hex[:12]}"))
    tokens["cluster-sametokenxxx"] = TokenConfig("cluster-sametokenxxx", softhsm.module, token)
    pkcs11.lib(softhsm.module).reinitialize()  # to see the new token (no session is open: disconnected)
    assert await hsm.error("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, "NewCustomKeyStoreName": "moved",
                                                    "CloudHsmClusterId": "cluster-emptytokenxx"}) \
        == "CloudHsmClusterNotRelatedException"
    entry = await hsm.store(store_id)
    assert (entry["CloudHsmClusterId"], entry["CustomKeyStoreName"]) == (CLUSTER_ID, "hsm store")
    assert await hsm.error("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, "KeyStorePassword": "wrong-pin",
                                                    "CloudHsmClusterId": "cluster-emptytokenxx"}) \
        == "CloudHsmClusterInvalidConfigurationException"
    await hsm.call("UpdateCustomKeyStore", {"CustomKeyStoreId": store_id, "CloudHsmClusterId": "cluster-sametokenxxx"})
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert (await hsm.call("DescribeKey", {"KeyId": key_id}))["KeyMetadata"]["CloudHsmClusterId"] \
        == "cluster-sametokenxxx"
    assert (await hsm.call("Decrypt", {"CiphertextBlob": ciphertext}))["Plaintext"] == b"moves"


async def test_delete_needs_a_disconnected_store_without_keys_and_deleting_keys_empties_the_token(
        hsm: Harness, softhsm: SoftHsm, token: str) -> None:  # noqa: F811
    store_id, key_id = await hsm.connected_key()
    assert await hsm.error("DeleteCustomKeyStore", {"CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreInvalidStateException"
    await hsm.call("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7})
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert await hsm.error("DeleteCustomKeyStore", {"CustomKeyStoreId": store_id}) == "CustomKeyStoreHasCMKsException"
    await hsm.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    hsm.clock.advance(8 * 86400)
    assert hsm.svc.purge_due_keys() == 1
    assert token_key_attributes(softhsm, token, key_id) == {"count": 0}
    await hsm.call("DisconnectCustomKeyStore", {"CustomKeyStoreId": store_id})
    await hsm.call("DeleteCustomKeyStore", {"CustomKeyStoreId": store_id})
    assert await hsm.error("DescribeCustomKeyStores", {"CustomKeyStoreId": store_id}) \
        == "CustomKeyStoreNotFoundException"
    await hsm.restart()
    assert hsm.svc.custom_key_stores.records == {}
