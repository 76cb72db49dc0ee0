"""Crash safety: SIGKILL the server at a random moment; every acknowledged change survives."""
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import BotoCoreError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests.keyservice.conftest import kms_client, launch

HIGH_QUOTAS = {name: 10000 for name in
               ("CreateKey", "RotateKeyOnDemand", "GetParametersForImport", "ImportKeyMaterial")}


@dataclass
class Acknowledged:
    """What the server confirmed before it died: key ids and (plaintext, ciphertext) pairs."""

    keys: set[str] = field(default_factory=set)
    blobs: list[tuple[bytes, bytes]] = field(default_factory=list)


def encrypt_and_remember(kms, key_id: str, acked: Acknowledged) -> None:
    plaintext = os.urandom(24)
    acked.blobs.append((plaintext, kms.encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]))


def import_key(kms, acked: Acknowledged) -> None:
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    acked.keys.add(key_id)
    params = kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    public_key = serialization.load_der_public_key(params["PublicKey"])
    wrapped = public_key.encrypt(os.urandom(32), padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                               algorithm=hashes.SHA256(), label=None))
    kms.import_key_material(KeyId=key_id, ImportToken=params["ImportToken"], EncryptedKeyMaterial=wrapped,
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    encrypt_and_remember(kms, key_id, acked)


def create_and_rotate(kms, acked: Acknowledged) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    acked.keys.add(key_id)
    encrypt_and_remember(kms, key_id, acked)
    kms.rotate_key_on_demand(KeyId=key_id)
    encrypt_and_remember(kms, key_id, acked)


def work_until_killed(kms, acked: Acknowledged) -> None:
    try:
        for round_ in range(10_000):
            (import_key if round_ % 3 == 2 else create_and_rotate)(kms, acked)
    except BotoCoreError:
        return  # the connection died with the server


def test_acknowledged_keys_survive_sigkill(tmp_path: Path, store_url: str | None) -> None:
    """On either key store: SQLite in the data dir, or PostgreSQL (``store_url``)."""
    data_dir = tmp_path / "data"
    env = {"KEYSERVICE_STORE_URL": store_url} if store_url else None
    ks = launch(tmp_path, quotas=HIGH_QUOTAS, data_dir=data_dir, env=env)
    acked = Acknowledged()
    kms = kms_client(ks.url)
    create_and_rotate(kms, acked)  # the clock starts once the server demonstrably works
    killer = threading.Timer(random.uniform(0.3, 1.5), ks.server.kill)
    killer.start()
    try:
        work_until_killed(kms, acked)
    finally:
        killer.join()

    restarted = launch(tmp_path, quotas=HIGH_QUOTAS, data_dir=data_dir, env=env)
    try:
        kms = kms_client(restarted.url)
        listed = {k["KeyId"] for k in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"]}
        assert acked.keys <= listed
        for plaintext, blob in acked.blobs:
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
    finally:
        assert restarted.server.stop() == 0
