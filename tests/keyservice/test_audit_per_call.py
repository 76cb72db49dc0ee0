"""KmsApi in-process: quota before work, then exactly one audit line per call, whatever happens."""
import json
from pathlib import Path

import pytest

from keyservice.api import KmsApi
from keyservice.audit import AuditLog
from keyservice.errors import KMSError
from keyservice.quota import QuotaLimiter
from keyservice.service import CallContext, KeyService

ACCOUNT = "111122223333"


@pytest.fixture
async def api(tmp_path: Path):
    """A real service; the quota clock stands still, so exactly 3 symmetric calls are admitted."""
    service = KeyService.open(tmp_path, bytes(32), account_id=ACCOUNT)
    kms_api = KmsApi(service, QuotaLimiter({"symmetric": 3}, monotonic=lambda: 0.0),
                     AuditLog(tmp_path / "audit.log"))
    yield kms_api
    await kms_api.close()


def ctx() -> CallContext:
    return CallContext(principal_arn=f"arn:aws:iam::{ACCOUNT}:root", account_id=ACCOUNT,
                       request_id="r", access_key="AKIA", source="test")


def audit_lines(api: KmsApi) -> list[dict]:
    """Every call's record is on disk once the call has answered."""
    return [json.loads(line) for line in api.audit.path.read_text().splitlines()]


async def test_success_failure_and_throttle_each_write_one_line(api: KmsApi) -> None:
    key = (await api.call("CreateKey", {}, ctx()))["KeyMetadata"]
    blob = (await api.call("Encrypt", {"KeyId": key["KeyId"], "Plaintext": b"p"}, ctx()))["CiphertextBlob"]
    with pytest.raises(KMSError) as bad:
        await api.call("Decrypt", {"CiphertextBlob": blob[:-1] + bytes([blob[-1] ^ 1])}, ctx())
    assert bad.value.type == "InvalidCiphertextException"
    with pytest.raises(KMSError) as throttled:  # the third symmetric token is the last one
        for _ in range(5):
            await api.call("GenerateRandom", {"NumberOfBytes": 8}, ctx())
    assert (throttled.value.type, throttled.value.status, throttled.value.message) == \
        ("ThrottlingException", 400, "Rate exceeded")
    records = audit_lines(api)
    assert [(r["operation"], r["outcome"]) for r in records] == [
        ("CreateKey", "ok"), ("Encrypt", "ok"), ("Decrypt", "InvalidCiphertextException"),
        ("GenerateRandom", "ok"), ("GenerateRandom", "ThrottlingException")]
    assert records[1]["key_arn"] == key["Arn"]


async def test_unknown_operation_is_rejected_and_audited(api: KmsApi) -> None:
    with pytest.raises(KMSError) as unknown:
        await api.call("LaunchRockets", {}, ctx())
    assert unknown.value.type == "UnknownOperationException"
    assert [r["outcome"] for r in audit_lines(api)] == ["UnknownOperationException"]


def api_on_full_disk(tmp_path: Path, policy: str) -> KmsApi:
    """/dev/full answers every write with ENOSPC: a real full disk under the audit log."""
    return KmsApi(KeyService.open(tmp_path, bytes(32), account_id=ACCOUNT), QuotaLimiter({}),
                  AuditLog(Path("/dev/full")), audit_on_failure=policy)


async def _key_and_blob(api: KmsApi) -> tuple[str, bytes]:
    """A key and a ciphertext made straight through the service (no audit involved)."""
    key = (await api.service.handle("CreateKey", {}, ctx()))["KeyMetadata"]["KeyId"]
    blob = (await api.service.handle("Encrypt", {"KeyId": key, "Plaintext": b"p"}, ctx()))["CiphertextBlob"]
    return key, blob


async def test_cryptographic_calls_are_refused_when_their_record_cannot_be_written(tmp_path: Path, caplog) -> None:
    api = api_on_full_disk(tmp_path, "refuse")
    key, blob = await _key_and_blob(api)
    calls = [("Encrypt", {"KeyId": key, "Plaintext": b"p"}), ("Decrypt", {"CiphertextBlob": blob}),
             ("GenerateDataKey", {"KeyId": key, "KeySpec": "AES_256"})]
    for operation, params in calls:
        with pytest.raises(KMSError) as refused:
            await api.call(operation, params, ctx())
        assert (refused.value.type, refused.value.status) == ("KMSInternalException", 500)
    assert sum("its audit record cannot be written" in r.message for r in caplog.records) == 3
    await api.close()


async def test_non_cryptographic_calls_answer_and_log_a_lost_record(tmp_path: Path, caplog) -> None:
    api = api_on_full_disk(tmp_path, "refuse")
    meta = (await api.call("CreateKey", {}, ctx()))["KeyMetadata"]
    assert (await api.call("DescribeKey", {"KeyId": meta["KeyId"]}, ctx()))["KeyMetadata"]["Arn"] == meta["Arn"]
    lost = [r for r in caplog.records if "audit record of" in r.message]
    assert [(r.levelname, r.message.split(" (")[0]) for r in lost] == \
        [("ERROR", "audit record of CreateKey"), ("ERROR", "audit record of DescribeKey")]
    await api.close()


async def test_warn_policy_answers_cryptographic_calls_and_logs_a_warning(tmp_path: Path, caplog) -> None:
    api = api_on_full_disk(tmp_path, "warn")
    key, blob = await _key_and_blob(api)
    assert (await api.call("Decrypt", {"CiphertextBlob": blob}, ctx()))["Plaintext"] == b"p"
    assert len((await api.call("GenerateDataKey", {"KeyId": key, "KeySpec": "AES_256"}, ctx()))["Plaintext"]) == 32
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "audit record of" in r.message]
    assert [r.message.split(" (")[0] for r in warnings] == ["audit record of Decrypt",
                                                          "audit record of GenerateDataKey"]
    await api.close()
