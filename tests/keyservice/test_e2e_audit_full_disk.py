"""A real ``keyservice serve`` whose audit log is on a full disk (/dev/full: every write is ENOSPC):
cryptographic calls are refused unless ``audit_on_failure = "warn"``."""
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.keyservice.conftest import kms_client, launch


def prepared_store(tmp_path: Path) -> tuple[Path, str, bytes]:
    """A data dir holding a key and a ciphertext under it, made while the disk had room."""
    (tmp_path / "before").mkdir()
    ks = launch(tmp_path / "before")
    kms = kms_client(ks.url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"audited")["CiphertextBlob"]
    assert ks.server.stop() == 0
    return ks.data_dir, key_id, blob


def error_of(call, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as excinfo:
        call(**kwargs)
    return excinfo.value.response["Error"]["Code"], excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_cryptographic_calls_are_refused_when_the_audit_log_cannot_be_written(tmp_path: Path) -> None:
    data_dir, key_id, blob = prepared_store(tmp_path)
    ks = launch(tmp_path, data_dir=data_dir, env={"KEYSERVICE_AUDIT_LOG": "/dev/full"})
    try:
        kms = kms_client(ks.url)
        assert error_of(kms.encrypt, KeyId=key_id, Plaintext=b"x") == ("KMSInternalException", 500)
        assert error_of(kms.decrypt, CiphertextBlob=blob) == ("KMSInternalException", 500)
        assert error_of(kms.generate_data_key, KeyId=key_id, KeySpec="AES_256") == ("KMSInternalException", 500)
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Enabled"]  # answered, its lost record logged
    finally:
        assert ks.server.stop() == 0
    assert "refused Decrypt" in ks.server.log() and "No space left on device" in ks.server.log()


def test_warn_policy_answers_and_logs_a_warning(tmp_path: Path) -> None:
    data_dir, key_id, blob = prepared_store(tmp_path)
    ks = launch(tmp_path, data_dir=data_dir,
                env={"KEYSERVICE_AUDIT_LOG": "/dev/full", "KEYSERVICE_AUDIT_ON_FAILURE": "warn"})
    try:
        kms = kms_client(ks.url)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"audited"
        assert len(kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["Plaintext"]) == 32
        assert kms.encrypt(KeyId=key_id, Plaintext=b"x")["KeyId"].endswith(key_id)
    finally:
        assert ks.server.stop() == 0
    assert "WARNING" in ks.server.log() and "audit record of Decrypt" in ks.server.log()
