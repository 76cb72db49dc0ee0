"""Deeply nested JSON and parameters are client errors, never a RecursionError turned into a 500:
over HTTP (the body, a key policy inside it) and in-process (the embedded gateway's path)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyservice.api import KmsApi
from keyservice.audit import AuditLog
from keyservice.errors import KMSError
from keyservice.quota import QuotaLimiter
from keyservice.server import parse_params
from keyservice.service import CallContext, KeyService
from tests.keyservice.conftest import KeyServiceProcess, signed_call
from tests.keyservice.inprocess import call, new_key

DEEP = 100_000


def nested(depth: int) -> list | str:
    value: list | str = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("body", [b"[" * DEEP, b'{"a":' * DEEP, b'{"KeyId":' + b"[" * DEEP])
def test_deeply_nested_request_body_is_a_serialization_exception(keyservice: KeyServiceProcess, body: bytes):
    status, _, answer = signed_call(keyservice.url, "Encrypt", body)
    assert (status, answer["__type"]) == (400, "SerializationException")


def test_nested_values_near_the_parsers_limit_are_client_errors():
    """Depths around Python's recursion limit fail in the JSON parser or in the validator's report:
    either way a 400, never an escaping RecursionError."""
    for depth in range(850, 1100, 5):
        body = '{"KeyId":"k","Plaintext":"AA==","EncryptionContext":{"a":' + "[" * depth + "]" * depth + "}}"
        with pytest.raises(KMSError) as info:
            parse_params("Encrypt", body.encode())
        assert (info.value.type, info.value.status) in {("SerializationException", 400),
                                                        ("ValidationException", 400)}, depth


@pytest.mark.parametrize("policy", ["[" * 30_000, '{"a":' * 6_000,
                                    '{"Statement":' + "[" * 10_000 + "]" * 10_000 + "}"])
def test_deeply_nested_key_policy_is_malformed(keyservice: KeyServiceProcess, policy: str):
    status, _, created = signed_call(keyservice.url, "CreateKey", {})
    key_id = created["KeyMetadata"]["KeyId"]
    for operation, params in (("PutKeyPolicy", {"KeyId": key_id, "PolicyName": "default", "Policy": policy}),
                              ("CreateKey", {"Policy": policy})):
        status, _, answer = signed_call(keyservice.url, operation, params)
        assert (status, answer["__type"]) == (400, "MalformedPolicyDocumentException"), operation


@pytest.mark.parametrize("operation, params", [
    ("CreateGrant", {"GranteePrincipal": "arn:aws:iam::111122223333:root", "Operations": [nested(DEEP)]}),
    ("CreateGrant", {"GranteePrincipal": "arn:aws:iam::111122223333:root", "Operations": ["Decrypt"],
                     "Constraints": {"EncryptionContextSubset": {"a": nested(DEEP)}}}),
    ("Encrypt", {"Plaintext": b"x", "EncryptionContext": {"a": nested(DEEP)}}),
    ("GenerateDataKey", {"KeySpec": nested(DEEP)}),
    ("EnableKeyRotation", {"RotationPeriodInDays": nested(DEEP)}),
    ("TagResource", {"Tags": [{"TagKey": "a", "TagValue": nested(DEEP)}]}),
    ("UntagResource", {"TagKeys": [nested(DEEP)]}),
])
async def test_nested_parameters_in_process_are_validation_errors(svc, operation, params):
    key_id = await new_key(svc)
    with pytest.raises(KMSError) as info:
        await call(svc, operation, KeyId=key_id, **params)
    assert (info.value.type, info.value.status) == ("ValidationException", 400)


async def test_a_refused_calls_nested_context_is_audited_by_type(tmp_path: Path):
    api = KmsApi(KeyService.open(tmp_path, bytes(32)), QuotaLimiter({}), AuditLog(tmp_path / "audit.log"))
    ctx = CallContext("arn:aws:iam::111122223333:root", "111122223333", "req")
    key_id = (await api.call("CreateKey", {}, ctx))["KeyMetadata"]["KeyId"]
    with pytest.raises(KMSError) as info:
        await api.call("Encrypt", {"KeyId": key_id, "Plaintext": b"x", "EncryptionContext": {"a": nested(DEEP)}},
                       CallContext("arn:aws:iam::111122223333:root", "111122223333", "req"))
    assert (info.value.type, info.value.status) == ("ValidationException", 400)
    await api.close()
    last = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert (last["operation"], last["outcome"], last["encryption_context"]) == \
        ("Encrypt", "ValidationException", {"a": "<list>"})
