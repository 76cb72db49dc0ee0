"""Custom key stores end to end: a ``keyservice serve`` process whose token is a SoftHSM2 token initialised in
a temporary directory, driven by the aws CLI and boto3 over HTTP."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.keyservice.conftest import KeyServiceProcess, aws_kms, kms_client, launch
from tests.keyservice.test_e2e_lifecycle import wait_until_gone
from tests.keyservice.softhsm import (CLUSTER_ID, TRUST_ANCHOR, USER_PIN, SoftHsm, requires_softhsm,
                                      token_key_attributes)

pytestmark = requires_softhsm
LABEL = "kms-e2e"


@pytest.fixture
def hsm(tmp_path: Path) -> SoftHsm:
    hsm = SoftHsm(tmp_path / "softhsm")
    hsm.init_token(LABEL)
    return hsm


@pytest.fixture
def server(tmp_path: Path, hsm: SoftHsm):
    ks = launch(tmp_path, env=hsm.env(LABEL))
    yield ks
    assert ks.server.stop() == 0, ks.server.log()


def code_of(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def store_entry(kms, store_id: str) -> dict:
    return kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]


def test_aws_cli_creates_a_store_and_a_key_and_encrypts_in_the_token(server: KeyServiceProcess, hsm: SoftHsm,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "anchor.pem").write_text(TRUST_ANCHOR)
    created = aws_kms(server.url, "create-custom-key-store", "--custom-key-store-name", "cli-store",
                      "--cloud-hsm-cluster-id", CLUSTER_ID, "--trust-anchor-certificate",
                      f"file://{tmp_path / 'anchor.pem'}", "--key-store-password", USER_PIN)
    assert created.returncode == 0, created.stderr
    store_id = json.loads(created.stdout)["CustomKeyStoreId"]
    connected = aws_kms(server.url, "connect-custom-key-store", "--custom-key-store-id", store_id)
    assert connected.returncode == 0, connected.stderr
    described = aws_kms(server.url, "describe-custom-key-stores", "--custom-key-store-name", "cli-store")
    [entry] = json.loads(described.stdout)["CustomKeyStores"]
    assert (entry["ConnectionState"], entry["TrustAnchorCertificate"]) == ("CONNECTED", TRUST_ANCHOR)
    assert "KeyStorePassword" not in described.stdout and USER_PIN not in described.stdout

    key = aws_kms(server.url, "create-key", "--origin", "AWS_CLOUDHSM", "--custom-key-store-id", store_id)
    assert key.returncode == 0, key.stderr
    meta = json.loads(key.stdout)["KeyMetadata"]
    assert (meta["Origin"], meta["CustomKeyStoreId"], meta["CloudHsmClusterId"]) == ("AWS_CLOUDHSM", store_id,
                                                                                     CLUSTER_ID)
    (tmp_path / "plain").write_bytes(b"sealed by the token")
    encrypted = aws_kms(server.url, "encrypt", "--key-id", meta["KeyId"], "--plaintext",
                        f"fileb://{tmp_path / 'plain'}", "--encryption-context", "app=cli")
    assert encrypted.returncode == 0, encrypted.stderr
    (tmp_path / "ct").write_bytes(base64.b64decode(json.loads(encrypted.stdout)["CiphertextBlob"]))
    decrypted = aws_kms(server.url, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ct'}",
                        "--encryption-context", "app=cli")
    assert decrypted.returncode == 0, decrypted.stderr
    assert base64.b64decode(json.loads(decrypted.stdout)["Plaintext"]) == b"sealed by the token"
    wrong = aws_kms(server.url, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ct'}")
    assert wrong.returncode != 0 and "InvalidCiphertextException" in wrong.stderr

    assert token_key_attributes(hsm, LABEL, meta["KeyId"]) == {
        "count": 1, "sensitive": True, "extractable": False, "never_extractable": True, "token": True,
        "value_len": 32, "value": "AttributeSensitive"}
    audit = server.audit_log.read_text()
    assert "CreateCustomKeyStore" in audit and USER_PIN not in audit


def test_boto3_lifecycle_wrong_pin_disconnect_reconnect_restart_delete(tmp_path: Path, hsm: SoftHsm) -> None:
    server = launch(tmp_path, env=hsm.env(LABEL))
    kms = kms_client(server.url)
    try:
        assert code_of(lambda: kms.create_custom_key_store(
            CustomKeyStoreName="s", CloudHsmClusterId="cluster-notconfigured", TrustAnchorCertificate=TRUST_ANCHOR,
            KeyStorePassword=USER_PIN)) == "CloudHsmClusterNotFoundException"
        store_id = kms.create_custom_key_store(CustomKeyStoreName="s", CloudHsmClusterId=CLUSTER_ID,
                                               TrustAnchorCertificate=TRUST_ANCHOR,
                                               KeyStorePassword="wrong-pin-1")["CustomKeyStoreId"]
        assert code_of(lambda: kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)) \
            == "CustomKeyStoreInvalidStateException"
        assert code_of(lambda: kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId="cks-00000000000000000")) \
            == "CustomKeyStoreNotFoundException"
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        entry = store_entry(kms, store_id)
        assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == ("FAILED", "INVALID_CREDENTIALS")
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        kms.update_custom_key_store(CustomKeyStoreId=store_id, KeyStorePassword=USER_PIN)
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert store_entry(kms, store_id)["ConnectionState"] == "CONNECTED"

        key_id = kms.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["KeyMetadata"]["KeyId"]
        data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256", EncryptionContext={"k": "v"})
        assert code_of(lambda: kms.enable_key_rotation(KeyId=key_id)) == "UnsupportedOperationException"

        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"
        assert code_of(lambda: kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext={"k": "v"})) \
            == "KMSInvalidStateException"
        assert code_of(lambda: kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")) == "KMSInvalidStateException"
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"],
                           EncryptionContext={"k": "v"})["Plaintext"] == data_key["Plaintext"]

        assert server.server.stop() == 0, server.server.log()
        server = launch(tmp_path, env=hsm.env(LABEL))  # same data dir: the connected store reconnects
        kms = kms_client(server.url)
        assert store_entry(kms, store_id)["ConnectionState"] == "CONNECTED"
        assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"],
                           EncryptionContext={"k": "v"})["Plaintext"] == data_key["Plaintext"]

        assert code_of(lambda: kms.delete_custom_key_store(CustomKeyStoreId=store_id)) \
            == "CustomKeyStoreInvalidStateException"
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        assert code_of(lambda: kms.delete_custom_key_store(CustomKeyStoreId=store_id)) \
            == "CustomKeyStoreHasCMKsException"
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
        server.advance_clock(8 * 86400)
        assert wait_until_gone(kms, key_id)
        assert token_key_attributes(hsm, LABEL, key_id) == {"count": 0}
        kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)
        assert code_of(lambda: kms.describe_custom_key_stores(CustomKeyStoreId=store_id)) \
            == "CustomKeyStoreNotFoundException"
        log = server.server.log()
        assert USER_PIN not in log and "wrong-pin-1" not in log
    finally:
        server.server.stop()

