"""Any malformed parameter of any operation is a 400 protocol error (KMSError), never a crash."""


import pytest

from keyservice.errors import KMSError
from keyservice.service import CallContext, KeyService
from tests.keyservice.inprocess import ACCOUNT, ROOT_ARN

CTX = CallContext(ROOT_ARN, ACCOUNT, "req")
JUNK = [None, 1, True, "", "x" * 3000, [], [1], [{}], {}, {"a": 1}, {"a": ["b"]}, b"", b"x", [None], 1.5, -5]
# Validation is the service's, not the store's: on PostgreSQL (where each accepted write is a transaction) the
# sweep takes fewer junk values, keeping the scalars a dynamically typed SQLite would take and PostgreSQL might not.
JUNK_ON_POSTGRESQL = [None, True, "", 1.5, -5, "x" * 3000, [{}], b"x"]
# Slow key generation (covered by their own tests) is left out to keep the sweep fast.
_SLOW = {"GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GetParametersForImport"}
# These make the key unusable, so they are swept last.
_LAST = ("DisableKey", "ScheduleKeyDeletion")



async def valid_params(svc: KeyService) -> dict:
    key = (await svc.handle("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    blob = (await svc.handle("Encrypt", {"KeyId": key, "Plaintext": b"x"}, CTX))["CiphertextBlob"]
    grant = await svc.handle("CreateGrant", {"KeyId": key, "GranteePrincipal": CTX.principal_arn,
                                             "Operations": ["Encrypt"]}, CTX)
    return {"KeyId": key, "Plaintext": b"x", "CiphertextBlob": blob, "AliasName": "alias/z", "TargetKeyId": key,
            "GranteePrincipal": "arn:aws:iam::1:user/x", "Operations": ["Encrypt"], "Message": b"m",
            "KeySpec": "AES_256", "GrantId": grant["GrantId"], "GrantToken": grant["GrantToken"],
            "RetiringPrincipal": "p", "Tags": [{"TagKey": "a", "TagValue": "b"}], "TagKeys": ["a"],
            "DestinationKeyId": key, "NumberOfBytes": 4, "EncryptionContext": {"a": "b"}, "GrantTokens": [],
            "Limit": 5, "Marker": "", "Policy": "{}", "SigningAlgorithm": "ECDSA_SHA_256",
            "MacAlgorithm": "HMAC_SHA_256", "Signature": b"s", "Mac": b"m", "KeyPairSpec": "ECC_NIST_P256",
            "PendingWindowInDays": 7, "RotationPeriodInDays": 100, "ImportToken": b"t",
            "EncryptedKeyMaterial": b"k", "ValidTo": 1e12, "WrappingAlgorithm": "RSAES_OAEP_SHA_256"}


async def test_every_operation_answers_junk_parameters_with_a_protocol_error(svc, store_url):
    base = await valid_params(svc)
    crashes = []
    for operation in sorted(svc.OPERATIONS - _SLOW - {"CreateKey"}, key=lambda op: (op in _LAST, op)):
        for field in base:
            for junk in JUNK_ON_POSTGRESQL if store_url else JUNK:
                params = {**base, field: junk}
                try:
                    await svc.handle(operation, params, CTX)
                except KMSError as exc:
                    if exc.status != 400:
                        crashes.append((operation, field, junk, exc.type))
                except Exception as exc:  # noqa: BLE001 - the point is to catch anything that is not a KMSError
                    crashes.append((operation, field, junk, repr(exc)))
    assert crashes == []


@pytest.mark.parametrize("params", [{"KeySpec": j} for j in JUNK[1:]] + [{"Tags": j} for j in JUNK[1:] if j != []]
                         + [{"Policy": j} for j in JUNK[1:]] + [{"Origin": j} for j in JUNK[1:]])
async def test_create_key_answers_junk_with_a_protocol_error(svc, params):
    with pytest.raises(KMSError) as info:
        await svc.handle("CreateKey", params, CTX)
    assert info.value.status == 400


async def test_params_that_are_not_a_map_are_a_validation_error(svc):
    with pytest.raises(KMSError) as info:
        await svc.handle("ListKeys", ["not", "a", "map"], CTX)  # type: ignore[arg-type]
    assert (info.value.type, info.value.status) == ("ValidationException", 400)
