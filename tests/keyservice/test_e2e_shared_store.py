"""Two ``keyservice serve`` processes on one PostgreSQL key store, driven by boto3: what one does, the
other serves, within the bound the README states."""
from __future__ import annotations

from pathlib import Path


from tests.keyservice.conftest import kms_client, launch
from tests.keyservice.softhsm import CLUSTER_ID, TRUST_ANCHOR, USER_PIN, SoftHsm, requires_softhsm
from tests.support.clients import refused_code
from tests.support.postgres import PostgresServer
from tests.support.workers import wait_for

BOUND = 2.0  # README: milliseconds while the nodes' listening connections are up; allowance for a loaded machine


def eventually(check, what: str) -> float:
    """Seconds until ``check()`` is true; fails after BOUND."""
    return wait_for(check, f"{what}, seen on the other node", BOUND)


def test_a_key_created_and_disabled_through_one_node_is_served_and_refused_by_the_other(
        tmp_path: Path, postgres: PostgresServer) -> None:
    env = {"KEYSERVICE_STORE_URL": postgres.create_database()}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = launch(tmp_path / "one", env=env), launch(tmp_path / "two", env=env)
    try:
        kms_one, kms_two = kms_client(one.url), kms_client(two.url)
        key_id = kms_one.create_key(Description="on one")["KeyMetadata"]["KeyId"]
        kms_one.create_alias(AliasName="alias/both", TargetKeyId=key_id)
        # Cryptographic calls are answered from memory (a management call would read the row afresh):
        # only the notification can have told the other node.
        eventually(lambda: refused_code(lambda: kms_two.encrypt(KeyId="alias/both", Plaintext=b"x")) is None, "create")
        blob = kms_two.encrypt(KeyId="alias/both", Plaintext=b"two")["CiphertextBlob"]
        assert kms_one.decrypt(CiphertextBlob=blob)["Plaintext"] == b"two"

        kms_one.disable_key(KeyId=key_id)
        eventually(lambda: refused_code(lambda: kms_two.encrypt(KeyId=key_id, Plaintext=b"x")) == "DisabledException",
                   "disable")
        assert kms_two.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
        assert refused_code(lambda: kms_two.decrypt(CiphertextBlob=blob)) == "DisabledException"

        kms_two.enable_key(KeyId=key_id)
        eventually(lambda: refused_code(lambda: kms_one.encrypt(KeyId=key_id, Plaintext=b"x")) is None, "enable")
    finally:
        assert one.server.stop() == 0, one.server.log()
        assert two.server.stop() == 0, two.server.log()


@requires_softhsm
def test_a_custom_key_store_connected_through_one_node_serves_its_keys_through_the_other(
        tmp_path: Path, postgres: PostgresServer) -> None:
    """Token sessions are each node's own: a store connected through one node is connected by the other when
    it hears of it (its keys' material never leaves the token both nodes use); disconnected there, here too."""
    hsm = SoftHsm(tmp_path / "softhsm")
    hsm.init_token("shared")
    env = {"KEYSERVICE_STORE_URL": postgres.create_database(), **hsm.env("shared")}
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = launch(tmp_path / "one", env=env), launch(tmp_path / "two", env=env)
    try:
        kms_one, kms_two = kms_client(one.url), kms_client(two.url)
        store_id = kms_one.create_custom_key_store(CustomKeyStoreName="shared", CloudHsmClusterId=CLUSTER_ID,
                                                   TrustAnchorCertificate=TRUST_ANCHOR,
                                                   KeyStorePassword=USER_PIN)["CustomKeyStoreId"]
        kms_one.connect_custom_key_store(CustomKeyStoreId=store_id)
        key_id = kms_one.create_key(Origin="AWS_CLOUDHSM", CustomKeyStoreId=store_id)["KeyMetadata"]["KeyId"]
        blob = kms_one.encrypt(KeyId=key_id, Plaintext=b"in the token")["CiphertextBlob"]

        eventually(lambda: refused_code(lambda: kms_two.decrypt(CiphertextBlob=blob)) is None, "connect")
        assert kms_two.decrypt(CiphertextBlob=blob)["Plaintext"] == b"in the token"
        assert store_state(kms_two, store_id) == "CONNECTED"

        kms_one.disconnect_custom_key_store(CustomKeyStoreId=store_id)
        eventually(lambda: refused_code(lambda: kms_two.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException",
                   "disconnect")
        assert store_state(kms_two, store_id) == "DISCONNECTED"
    finally:
        assert one.server.stop() == 0, one.server.log()
        assert two.server.stop() == 0, two.server.log()


def store_state(kms, store_id: str) -> str:
    return kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"][0]["ConnectionState"]
