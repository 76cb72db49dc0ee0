"""Key lifecycle in-process: create, describe, aliases, rotation, enable/disable, deletion."""


import pytest

from keyservice.errors import KMSError
from keyservice.service import CallContext
from tests.keyservice.inprocess import ACCOUNT, DAY, ROOT_ARN, call, fails, new_key

ROOT = CallContext(ROOT_ARN, ACCOUNT, "req-1")



async def test_create_key_returns_full_symmetric_metadata(svc):
    meta = (await call(svc, "CreateKey", Description="orders"))["KeyMetadata"]
    assert meta == {
        "AWSAccountId": ACCOUNT, "KeyId": meta["KeyId"], "Arn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{meta['KeyId']}",
        "CreationDate": 1_700_000_000.0, "Enabled": True, "Description": "orders", "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": "Enabled", "Origin": "AWS_KMS", "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT", "KeySpec": "SYMMETRIC_DEFAULT", "MultiRegion": False,
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
    }
    assert (await call(svc, "DescribeKey", KeyId=meta["Arn"]))["KeyMetadata"] == meta


@pytest.mark.parametrize("params, error", [
    ({"KeySpec": "AES_999"}, "ValidationException"),
    ({"KeySpec": "ECC_NIST_P256"}, "ValidationException"),            # default usage ENCRYPT_DECRYPT
    ({"KeySpec": "HMAC_256", "KeyUsage": "SIGN_VERIFY"}, "ValidationException"),
    ({"Origin": "AWS_CLOUDHSM"}, "ValidationException"),               # needs a CustomKeyStoreId
    ({"Origin": "EXTERNAL_KEY_STORE"}, "UnsupportedOperationException"),
    ({"Policy": "{not json"}, "MalformedPolicyDocumentException"),
    ({"Tags": [{"TagKey": "aws:x", "TagValue": "v"}]}, "TagException"),
    ({"Description": 5}, "ValidationException"),
])
async def test_create_key_rejects_invalid_parameters(svc, params, error):
    await fails(svc, "CreateKey", error, **params)


async def test_unknown_operation_is_a_protocol_error(svc):
    with pytest.raises(KMSError) as info:
        await call(svc, "FlyToTheMoon")
    assert (info.value.type, info.value.status) == ("UnknownOperationException", 400)


async def test_missing_key_is_not_found_for_every_spelling(svc):
    for key in ("1234abcd-12ab-34cd-56ef-1234567890ab", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/nope",
                f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/nope", "alias/none"):
        await fails(svc, "DescribeKey", "NotFoundException", KeyId=key)
    await fails(svc, "DescribeKey", "ValidationException", KeyId="")


async def test_list_keys_pages_with_limit_and_marker(svc):
    ids = sorted([await new_key(svc) for _ in range(3)])
    first = await call(svc, "ListKeys", Limit=2)
    assert [k["KeyId"] for k in first["Keys"]] == ids[:2] and first["Truncated"] is True
    rest = await call(svc, "ListKeys", Limit=2, Marker=first["NextMarker"])
    assert [k["KeyId"] for k in rest["Keys"]] == ids[2:] and rest["Truncated"] is False
    await fails(svc, "ListKeys", "ValidationException", Limit=0)
    await fails(svc, "ListKeys", "InvalidMarkerException", Marker="@@@")


async def test_aliases_resolve_update_and_delete(svc):
    a, b = await new_key(svc), await new_key(svc)
    await call(svc, "CreateAlias", AliasName="alias/app", TargetKeyId=a)
    assert (await call(svc, "Encrypt", KeyId="alias/app", Plaintext=b"x"))["KeyId"].endswith(a)
    alias_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/app"
    assert (await call(svc, "DescribeKey", KeyId=alias_arn))["KeyMetadata"]["KeyId"] == a
    await fails(svc, "CreateAlias", "AlreadyExistsException", AliasName="alias/app", TargetKeyId=b)
    await call(svc, "UpdateAlias", AliasName="alias/app", TargetKeyId=b)
    listed = await call(svc, "ListAliases", KeyId=b)
    assert [(x["AliasName"], x["AliasArn"], x["TargetKeyId"]) for x in listed["Aliases"]] == [("alias/app", alias_arn, b)]
    await call(svc, "DeleteAlias", AliasName="alias/app")
    await fails(svc, "DescribeKey", "NotFoundException", KeyId="alias/app")
    await fails(svc, "DeleteAlias", "NotFoundException", AliasName="alias/app")


@pytest.mark.parametrize("name, error", [
    ("app", "ValidationException"), ("alias/has space", "ValidationException"),
    ("alias/" + "a" * 251, "ValidationException"), ("alias/aws/s3", "NotAuthorizedException"),
])
async def test_alias_names_follow_aws_rules(svc, name, error):
    await fails(svc, "CreateAlias", error, AliasName=name, TargetKeyId=await new_key(svc))


async def test_management_operations_refuse_aliases(svc):
    key = await new_key(svc)
    await call(svc, "CreateAlias", AliasName="alias/x", TargetKeyId=key)
    await fails(svc, "DisableKey", "NotFoundException", KeyId="alias/x")
    await fails(svc, "CreateAlias", "NotFoundException", AliasName="alias/y", TargetKeyId="alias/x")


async def test_update_alias_refuses_a_key_of_another_type(svc):
    sym = await new_key(svc)
    hmac_key = await new_key(svc, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    await call(svc, "CreateAlias", AliasName="alias/x", TargetKeyId=sym)
    await fails(svc, "UpdateAlias", "ValidationException", AliasName="alias/x", TargetKeyId=hmac_key)


async def test_disabled_key_refuses_crypto_until_enabled(svc):
    key = await new_key(svc)
    blob = (await call(svc, "Encrypt", KeyId=key, Plaintext=b"secret"))["CiphertextBlob"]
    await call(svc, "DisableKey", KeyId=key)
    assert (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]["KeyState"] == "Disabled"
    await fails(svc, "Encrypt", "DisabledException", KeyId=key, Plaintext=b"x")
    await fails(svc, "Decrypt", "DisabledException", CiphertextBlob=blob)
    await call(svc, "EnableKey", KeyId=key)
    assert (await call(svc, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"secret"


async def test_rotation_keeps_old_ciphertexts_decryptable(svc):
    key = await new_key(svc)
    old = (await call(svc, "Encrypt", KeyId=key, Plaintext=b"before"))["CiphertextBlob"]
    await call(svc, "EnableKeyRotation", KeyId=key, RotationPeriodInDays=90)
    status = await call(svc, "GetKeyRotationStatus", KeyId=key)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    assert status["NextRotationDate"] == 1_700_000_000.0 + 90 * DAY
    svc.clock.advance(91 * DAY)
    new = (await call(svc, "Encrypt", KeyId=key, Plaintext=b"after"))["CiphertextBlob"]
    assert new[17:33] != old[17:33]  # a different backing key encrypted it
    await call(svc, "RotateKeyOnDemand", KeyId=key)
    rotations = (await call(svc, "ListKeyRotations", KeyId=key))["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["AUTOMATIC", "ON_DEMAND"]
    assert rotations[0]["RotationDate"] == 1_700_000_000.0 + 90 * DAY
    for blob, text in ((old, b"before"), (new, b"after")):
        assert (await call(svc, "Decrypt", CiphertextBlob=blob))["Plaintext"] == text
    await call(svc, "DisableKeyRotation", KeyId=key)
    assert (await call(svc, "GetKeyRotationStatus", KeyId=key))["KeyRotationEnabled"] is False


async def test_rotation_is_refused_for_asymmetric_hmac_and_imported_keys(svc):
    for params in ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
                   {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}, {"Origin": "EXTERNAL"}):
        key = await new_key(svc, **params)
        await fails(svc, "EnableKeyRotation", "UnsupportedOperationException", KeyId=key)
        await fails(svc, "RotateKeyOnDemand", "UnsupportedOperationException", KeyId=key)
    await fails(svc, "EnableKeyRotation", "ValidationException", KeyId=await new_key(svc), RotationPeriodInDays=89)


async def test_scheduled_deletion_can_be_cancelled_to_disabled(svc):
    key = await new_key(svc)
    result = await call(svc, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
    assert result["KeyState"] == "PendingDeletion" and result["DeletionDate"] == 1_700_000_000.0 + 7 * DAY
    await fails(svc, "Encrypt", "KMSInvalidStateException", KeyId=key, Plaintext=b"x")
    await fails(svc, "ScheduleKeyDeletion", "KMSInvalidStateException", KeyId=key)
    await call(svc, "CancelKeyDeletion", KeyId=key)
    meta = (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]
    assert meta["KeyState"] == "Disabled" and "DeletionDate" not in meta
    await fails(svc, "CancelKeyDeletion", "KMSInvalidStateException", KeyId=key)


@pytest.mark.parametrize("window", [6, 31])
async def test_deletion_window_outside_7_to_30_days_is_invalid(svc, window):
    await fails(svc, "ScheduleKeyDeletion", "ValidationException", KeyId=await new_key(svc), PendingWindowInDays=window)


async def test_key_material_is_destroyed_when_the_window_passes(svc):
    key = await new_key(svc)
    blob = (await call(svc, "Encrypt", KeyId=key, Plaintext=b"gone"))["CiphertextBlob"]
    await call(svc, "CreateAlias", AliasName="alias/doomed", TargetKeyId=key)
    await call(svc, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=7)
    svc.clock.advance(7 * DAY - 1)
    assert svc.purge_due_keys() == 0
    svc.clock.advance(1)
    assert svc.purge_due_keys() == 1
    await fails(svc, "DescribeKey", "NotFoundException", KeyId=key)
    await fails(svc, "Decrypt", "InvalidCiphertextException", CiphertextBlob=blob)
    assert (await call(svc, "ListAliases"))["Aliases"] == []
    assert svc.store.backing_keys(key) == []


async def test_deletion_is_applied_lazily_on_access(svc):
    key = await new_key(svc)
    await call(svc, "ScheduleKeyDeletion", KeyId=key, PendingWindowInDays=30)
    svc.clock.advance(30 * DAY)
    await fails(svc, "DescribeKey", "NotFoundException", KeyId=key)
    assert key not in {k["KeyId"] for k in (await call(svc, "ListKeys"))["Keys"]}


async def test_tags_are_added_listed_and_removed(svc):
    key = await new_key(svc, Tags=[{"TagKey": "team", "TagValue": "a"}])
    await call(svc, "TagResource", KeyId=key, Tags=[{"TagKey": "env", "TagValue": ""}, {"TagKey": "team", "TagValue": "b"}])
    assert (await call(svc, "ListResourceTags", KeyId=key))["Tags"] == [
        {"TagKey": "env", "TagValue": ""}, {"TagKey": "team", "TagValue": "b"}]
    await call(svc, "UntagResource", KeyId=key, TagKeys=["team"])
    assert (await call(svc, "ListResourceTags", KeyId=key))["Tags"] == [{"TagKey": "env", "TagValue": ""}]


@pytest.mark.parametrize("tags, error", [
    ([{"TagKey": "aws:owner", "TagValue": "x"}], "TagException"),
    ([{"TagKey": "k" * 129, "TagValue": "x"}], "ValidationException"),
    ([{"TagKey": "k", "TagValue": "v" * 257}], "ValidationException"),
    ([{"TagKey": f"k{i}", "TagValue": "v"} for i in range(51)], "TagException"),
])
async def test_invalid_tags_are_refused(svc, tags, error):
    await fails(svc, "TagResource", error, KeyId=await new_key(svc), Tags=tags)


async def test_description_and_policy_names(svc):
    key = await new_key(svc)
    await call(svc, "UpdateKeyDescription", KeyId=key, Description="renamed")
    assert (await call(svc, "DescribeKey", KeyId=key))["KeyMetadata"]["Description"] == "renamed"
    await fails(svc, "GetKeyPolicy", "NotFoundException", KeyId=key, PolicyName="other")
    assert (await call(svc, "GetKeyPolicy", KeyId=key))["PolicyName"] == "default"


async def test_list_aliases_pages(svc):
    key = await new_key(svc)
    for name in ("alias/a", "alias/b", "alias/c"):
        await call(svc, "CreateAlias", AliasName=name, TargetKeyId=key)
    first = await call(svc, "ListAliases", Limit=2)
    rest = await call(svc, "ListAliases", Limit=2, Marker=first["NextMarker"])
    assert [a["AliasName"] for a in first["Aliases"] + rest["Aliases"]] == ["alias/a", "alias/b", "alias/c"]
    assert (first["Truncated"], rest["Truncated"]) == (True, False)


async def test_automatic_rotation_waits_while_the_key_is_disabled(svc):
    key = await new_key(svc)
    await call(svc, "EnableKeyRotation", KeyId=key, RotationPeriodInDays=90)
    await call(svc, "DisableKey", KeyId=key)
    svc.clock.advance(100 * DAY)
    svc.purge_due_keys()
    await call(svc, "EnableKey", KeyId=key)
    assert [r["RotationType"] for r in (await call(svc, "ListKeyRotations", KeyId=key))["Rotations"]] == ["AUTOMATIC"]
