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
    api.audit.close()
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
