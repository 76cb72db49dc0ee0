"""Quotas throttle over HTTP; the audit log has one line per call and no secret in it."""
import base64
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from botocore.exceptions import ClientError

from tests.keyservice.conftest import ALICE, ALICE_ARN, ROOT, launch, kms_client


def encrypt_outcome(kms, key_id: str) -> str:
    try:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
        return "ok"
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return e.response["Error"]["Code"]


def test_burst_over_the_symmetric_quota_is_throttled(tmp_path: Path) -> None:
    ks = launch(tmp_path, quotas={"symmetric": 20})
    try:
        kms = kms_client(ks.url)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(lambda _: encrypt_outcome(kms, key_id), range(120)))
        elapsed = time.monotonic() - started
        assert set(outcomes) == {"ok", "ThrottlingException"}
        assert 20 <= outcomes.count("ok") <= 20 + 20 * elapsed + 1
        assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Enabled"]  # other classes unaffected
    finally:
        assert ks.server.stop() == 0
    audited = [r["outcome"] for r in ks.audit_records() if r["operation"] == "Encrypt"]
    assert sorted(audited) == sorted(outcomes)


def test_audit_has_one_line_per_call_and_no_secrets(tmp_path: Path) -> None:
    ks = launch(tmp_path)
    root, alice = kms_client(ks.url), kms_client(ks.url, ALICE)
    key = root.create_key()["KeyMetadata"]
    context = {"bucket": "photos", "object": "cat.jpg"}
    data_key = alice.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", EncryptionContext=context)
    secret = b"the plaintext nobody may log"
    blob = alice.encrypt(KeyId=key["KeyId"], Plaintext=secret)["CiphertextBlob"]
    assert root.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=context)[
        "Plaintext"] == data_key["Plaintext"]
    try:
        root.decrypt(CiphertextBlob=blob, EncryptionContext={"wrong": "context"})
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidCiphertextException"
    assert ks.server.stop() == 0

    records = ks.audit_records()
    assert [r["operation"] for r in records] == ["CreateKey", "GenerateDataKey", "Encrypt", "Decrypt", "Decrypt"]
    assert [r["outcome"] for r in records] == ["ok", "ok", "ok", "ok", "InvalidCiphertextException"]
    generate = records[1]
    assert generate["principal"] == ALICE_ARN and generate["access_key"] == ALICE[0]
    assert generate["key_arn"] == key["Arn"] and generate["encryption_context"] == context
    assert generate["source"] == "127.0.0.1" and generate["time"].endswith("Z")
    assert records[3]["access_key"] == ROOT[0] and records[3]["key_arn"] == key["Arn"]
    assert len({r["request_id"] for r in records}) == 5

    text = ks.audit_log.read_text()
    for value in (secret, data_key["Plaintext"], data_key["CiphertextBlob"], blob):
        assert base64.b64encode(value).decode() not in text
        assert value.hex() not in text
    assert secret.decode() not in text

    out = subprocess.run([sys.executable, "-m", "keyservice", "audit", str(ks.audit_log),
                          "--key", key["KeyId"], "--operation", "Decrypt"],
                         capture_output=True, text=True, check=True).stdout
    assert [json.loads(line)["outcome"] for line in out.splitlines()] == ["ok", "InvalidCiphertextException"]
