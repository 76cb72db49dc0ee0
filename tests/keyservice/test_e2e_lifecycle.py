"""A key's whole life over HTTP, driven by the real aws CLI and boto3 against a real server."""
import base64
import json
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.keyservice.conftest import KeyServiceProcess, aws_kms, kms_client


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_aws_cli_create_alias_encrypt_decrypt(keyservice: KeyServiceProcess, tmp_path: Path) -> None:
    created = aws_kms(keyservice.url, "create-key", "--description", "cli key")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["KeyMetadata"]["KeyId"]
    alias = aws_kms(keyservice.url, "create-alias", "--alias-name", "alias/cli", "--target-key-id", key_id)
    assert alias.returncode == 0, alias.stderr
    (tmp_path / "plain").write_bytes(b"hello from the aws cli")
    encrypted = aws_kms(keyservice.url, "encrypt", "--key-id", "alias/cli", "--plaintext",
                        f"fileb://{tmp_path / 'plain'}", "--encryption-context", "purpose=test")
    assert encrypted.returncode == 0, encrypted.stderr
    (tmp_path / "ct").write_bytes(base64.b64decode(json.loads(encrypted.stdout)["CiphertextBlob"]))
    decrypted = aws_kms(keyservice.url, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ct'}",
                        "--encryption-context", "purpose=test")
    assert decrypted.returncode == 0, decrypted.stderr
    result = json.loads(decrypted.stdout)
    assert base64.b64decode(result["Plaintext"]) == b"hello from the aws cli"
    assert result["KeyId"].endswith(key_id)
    wrong_context = aws_kms(keyservice.url, "decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ct'}")
    assert wrong_context.returncode != 0 and "InvalidCiphertextException" in wrong_context.stderr


def test_boto3_rotate_disable_delete_lifecycle(keyservice: KeyServiceProcess) -> None:
    kms = kms_client(keyservice.url)
    key_id = kms.create_key(Description="life")["KeyMetadata"]["KeyId"]
    old = kms.encrypt(KeyId=key_id, Plaintext=b"before rotation")["CiphertextBlob"]

    kms.rotate_key_on_demand(KeyId=key_id)
    new = kms.encrypt(KeyId=key_id, Plaintext=b"after rotation")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"before rotation"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"after rotation"

    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as disabled:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_code(disabled) == "DisabledException"
    kms.enable_key(KeyId=key_id)

    deletion = kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert deletion["KeyState"] == "PendingDeletion"
    with pytest.raises(ClientError) as pending:
        kms.decrypt(CiphertextBlob=old)
    assert error_code(pending) == "KMSInvalidStateException"
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    kms.enable_key(KeyId=key_id)
    assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"before rotation"

    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    keyservice.advance_clock(8 * 86400)
    assert wait_until_gone(kms, key_id)
    with pytest.raises(ClientError) as gone:
        kms.decrypt(CiphertextBlob=old)
    assert error_code(gone) in ("NotFoundException", "InvalidCiphertextException")


def wait_until_gone(kms, key_id: str, timeout: float = 10.0) -> bool:
    """The server purges due keys every 0.2 s (purge_interval in the test config)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kms.describe_key(KeyId=key_id)
        except ClientError as e:
            return e.response["Error"]["Code"] == "NotFoundException"
        time.sleep(0.1)
    return False
