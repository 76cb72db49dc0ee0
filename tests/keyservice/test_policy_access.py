"""Key policies and grants decide every call on a key (in-process)."""

import json

import pytest

from keyservice.errors import KMSError
from keyservice.service import CallContext, KeyService

ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
ADMIN = f"arn:aws:iam::{ACCOUNT}:user/admin"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
STRANGER = "arn:aws:iam::999999999999:user/mallory"


async def call(svc: KeyService, who: str, op: str, **params):
    account = who.split(":")[4]
    return await svc.handle(op, params, CallContext(who, account, "req"))


async def denied(svc: KeyService, who: str, op: str, **params) -> str:
    with pytest.raises(KMSError) as info:
        await call(svc, who, op, **params)
    assert (info.value.type, info.value.status) == ("AccessDeniedException", 400), info.value.message
    return info.value.message


def key_arn(key_id: str) -> str:
    return f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key_id}"


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal, actions, **extra) -> dict:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*", **extra}


def deny(principal, actions, **extra) -> dict:
    return {"Effect": "Deny", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*", **extra}


ADMIN_ACTIONS = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                 "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource", "kms:UntagResource",
                 "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion", "kms:RotateKeyOnDemand"]
USER_ACTIONS = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


async def key_with(svc: KeyService, text: str, creator: str = ADMIN) -> str:
    meta = await call(svc, creator, "CreateKey", Policy=text, BypassPolicyLockoutSafetyCheck=True)
    return meta["KeyMetadata"]["KeyId"]


async def test_default_policy_lets_every_principal_of_the_account_and_nobody_else(svc):
    key = (await call(svc, ALICE, "CreateKey"))["KeyMetadata"]["KeyId"]
    assert (await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x"))["KeyId"].endswith(key)
    message = await denied(svc, STRANGER, "Encrypt", KeyId=key_arn(key), Plaintext=b"x")
    assert message == (f"User: {STRANGER} is not authorized to perform: kms:Encrypt on resource: "
                       f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key} because no resource-based policy allows "
                       "the kms:Encrypt action")
    default = json.loads((await call(svc, ALICE, "GetKeyPolicy", KeyId=key))["Policy"])
    assert default["Statement"] == [{"Sid": "Enable IAM User Permissions", "Effect": "Allow",
                                     "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
                                     "Resource": "*"}]
    assert (await call(svc, ALICE, "ListKeyPolicies", KeyId=key))["PolicyNames"] == ["default"]


async def test_separation_of_duties_admins_manage_users_use(svc):
    key = await key_with(svc, policy(allow(ADMIN, ADMIN_ACTIONS), allow(ALICE, USER_ACTIONS)))
    # the administrator manages but cannot use the key
    await call(svc, ADMIN, "DisableKey", KeyId=key)
    await call(svc, ADMIN, "EnableKey", KeyId=key)
    await call(svc, ADMIN, "TagResource", KeyId=key, Tags=[{"TagKey": "t", "TagValue": "v"}])
    await call(svc, ADMIN, "CreateAlias", AliasName="alias/sod", TargetKeyId=key)
    for op, params in (("Encrypt", {"Plaintext": b"x"}), ("GenerateDataKey", {"KeySpec": "AES_256"})):
        await denied(svc, ADMIN, op, KeyId=key, **params)
    # the user uses but cannot manage the key
    blob = (await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x"))["CiphertextBlob"]
    assert (await call(svc, ALICE, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"x"
    await call(svc, ALICE, "GenerateDataKey", KeyId="alias/sod", KeySpec="AES_256")
    await denied(svc, ADMIN, "Decrypt", CiphertextBlob=blob)
    for op, params in (("DisableKey", {}), ("ScheduleKeyDeletion", {}), ("PutKeyPolicy", {"Policy": policy(
            allow(ALICE, "kms:*"))}), ("CreateGrant", {"GranteePrincipal": ALICE, "Operations": ["Decrypt"]})):
        await denied(svc, ALICE, op, KeyId=key, **params)
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x")


async def test_explicit_deny_wins_over_allow(svc):
    key = await key_with(svc, policy(allow(ROOT, "kms:*"), deny(BOB, "kms:Decrypt")))
    blob = (await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x"))["CiphertextBlob"]
    message = await denied(svc, BOB, "Decrypt", CiphertextBlob=blob)
    assert message.endswith("with an explicit deny in a resource-based policy")
    assert (await call(svc, ALICE, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"x"


async def test_encryption_context_conditions(svc):
    key = await key_with(svc, policy(
        allow(ADMIN, "kms:*"),
        allow(ALICE, ["kms:Encrypt", "kms:Decrypt"],
              Condition={"StringEquals": {"kms:EncryptionContext:tenant": "alice"}}),
        allow(BOB, "kms:Encrypt", Condition={"StringLike": {"kms:EncryptionContext:path": "bob/*"},
                                             "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["path"]}})))
    await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"tenant": "alice"})
    await denied(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"tenant": "bob"})
    await denied(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x")
    await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"path": "bob/docs"})
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"path": "alice/docs"})
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"path": "bob/x", "extra": "1"})


async def test_caller_account_condition_and_wildcard_principal(svc):
    key = await key_with(svc, policy(allow(ADMIN, "kms:*"), allow("*", "kms:Encrypt",
                                     Condition={"StringEquals": {"kms:CallerAccount": "999999999999"}})))
    await call(svc, STRANGER, "Encrypt", KeyId=key_arn(key), Plaintext=b"x")
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x")


async def test_not_action_allows_everything_else(svc):
    key = await key_with(svc, policy(allow(ADMIN, "kms:*"),
                                     {"Effect": "Allow", "Principal": {"AWS": BOB}, "NotAction": "kms:Decrypt"}))
    blob = (await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x"))["CiphertextBlob"]
    await denied(svc, BOB, "Decrypt", CiphertextBlob=blob)


@pytest.mark.parametrize("text", [
    "{", "[]", json.dumps({"Statement": []}), json.dumps({"Statement": [{"Effect": "Maybe", "Principal": "*",
                                                                         "Action": "kms:*"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}),
    json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*",
                               "Condition": {"NumericMagic": {"a": "1"}}}]}),
])
async def test_malformed_policies_are_refused(svc, text):
    key = (await call(svc, ADMIN, "CreateKey"))["KeyMetadata"]["KeyId"]
    with pytest.raises(KMSError) as info:
        await call(svc, ADMIN, "PutKeyPolicy", KeyId=key, Policy=text, PolicyName="default")
    assert info.value.type == "MalformedPolicyDocumentException"


async def test_policy_lockout_safety_check(svc):
    key = (await call(svc, ADMIN, "CreateKey"))["KeyMetadata"]["KeyId"]
    lockout = policy(allow(ALICE, "kms:Encrypt"))
    with pytest.raises(KMSError) as info:
        await call(svc, ADMIN, "PutKeyPolicy", KeyId=key, Policy=lockout)
    assert info.value.type == "MalformedPolicyDocumentException"
    await call(svc, ADMIN, "PutKeyPolicy", KeyId=key, Policy=lockout, BypassPolicyLockoutSafetyCheck=True)
    await denied(svc, ADMIN, "DescribeKey", KeyId=key)
    assert (await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x"))["KeyId"].endswith(key)


async def test_grant_allows_its_operations_only(svc):
    key = await key_with(svc, policy(allow(ADMIN, ADMIN_ACTIONS)))
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x")
    grant = await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt"])
    assert len(grant["GrantId"]) == 64 and grant["GrantToken"]
    await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", GrantTokens=[grant["GrantToken"]])
    blob = (await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x"))["CiphertextBlob"]
    await denied(svc, BOB, "Decrypt", CiphertextBlob=blob)
    with pytest.raises(KMSError) as info:
        await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", GrantTokens=["garbage!"])
    assert info.value.type == "InvalidGrantTokenException"


async def test_grant_constraints_bind_the_encryption_context(svc):
    key = await key_with(svc, policy(allow(ADMIN, ADMIN_ACTIONS)))
    await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt"],
               Constraints={"EncryptionContextSubset": {"dept": "it"}})
    await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=ALICE, Operations=["Encrypt"],
               Constraints={"EncryptionContextEquals": {"dept": "it"}})
    await call(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"dept": "it", "more": "1"})
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"dept": "hr"})
    await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"dept": "it"})
    await denied(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"dept": "it", "more": "1"})


async def test_named_grant_is_idempotent_and_listed(svc):
    key = await key_with(svc, policy(allow(ADMIN, ADMIN_ACTIONS)))
    params = dict(KeyId=key, GranteePrincipal=BOB, Operations=["Decrypt", "RetireGrant"], Name="app",
                  RetiringPrincipal=ALICE)
    first = await call(svc, ADMIN, "CreateGrant", **params)
    assert await call(svc, ADMIN, "CreateGrant", **params) == first
    listed = (await call(svc, ADMIN, "ListGrants", KeyId=key))["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"], g["Operations"], g["Name"], g["KeyId"]) for g in listed] == [
        (first["GrantId"], BOB, ["Decrypt", "RetireGrant"], "app", f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key}")]
    assert (await call(svc, ADMIN, "ListGrants", KeyId=key, GranteePrincipal=ALICE))["Grants"] == []
    retirable = (await call(svc, ALICE, "ListRetirableGrants", RetiringPrincipal=ALICE))["Grants"]
    assert [g["GrantId"] for g in retirable] == [first["GrantId"]]


@pytest.mark.parametrize("params", [
    {"Operations": ["Fly"]}, {"Operations": []}, {"Operations": ["Sign"]},
    {"Operations": ["DescribeKey"], "Constraints": {"EncryptionContextEquals": {"a": "b"}}},
])
async def test_invalid_grants_are_refused(svc, params):
    key = (await call(svc, ADMIN, "CreateKey"))["KeyMetadata"]["KeyId"]
    with pytest.raises(KMSError) as info:
        await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=BOB, **params)
    assert info.value.type == "ValidationException"


async def test_retire_grant_by_token_and_by_id(svc):
    key = await key_with(svc, policy(allow(ADMIN, ADMIN_ACTIONS)))
    g1 = await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt"],
                    RetiringPrincipal=ALICE)
    await denied(svc, BOB, "RetireGrant", GrantToken=g1["GrantToken"])
    await call(svc, ALICE, "RetireGrant", GrantToken=g1["GrantToken"])
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x")
    g2 = await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt", "RetireGrant"])
    await call(svc, BOB, "RetireGrant", KeyId=key, GrantId=g2["GrantId"])
    with pytest.raises(KMSError) as info:
        await call(svc, ROOT, "RetireGrant", KeyId=key, GrantId=g2["GrantId"])
    assert info.value.type == "NotFoundException"


async def test_revoke_grant_needs_policy_permission(svc):
    key = await key_with(svc, policy(allow(ADMIN, ADMIN_ACTIONS)))
    grant = await call(svc, ADMIN, "CreateGrant", KeyId=key, GranteePrincipal=BOB, Operations=["Encrypt"])
    await denied(svc, BOB, "RevokeGrant", KeyId=key, GrantId=grant["GrantId"])
    await call(svc, ADMIN, "RevokeGrant", KeyId=key, GrantId=grant["GrantId"])
    await denied(svc, BOB, "Encrypt", KeyId=key, Plaintext=b"x")
    assert (await call(svc, ADMIN, "ListGrants", KeyId=key))["Grants"] == []


async def test_account_operations_are_refused_to_other_accounts(svc):
    await denied(svc, STRANGER, "CreateKey")
    await call(svc, ALICE, "CreateKey")


async def test_list_retirable_grants_needs_a_principal_of_the_callers_account(svc):
    await denied(svc, ALICE, "ListRetirableGrants", RetiringPrincipal=STRANGER)
    await denied(svc, STRANGER, "ListRetirableGrants", RetiringPrincipal=ALICE)
    assert (await call(svc, STRANGER, "ListRetirableGrants", RetiringPrincipal=STRANGER))["Grants"] == []


async def test_negated_condition_deny_applies_when_the_context_key_is_absent(svc):
    billing_only = deny(ROOT, "kms:Decrypt", Condition={"StringNotEquals": {"kms:EncryptionContext:app": "billing"}})
    key = await key_with(svc, policy(allow(ROOT, "kms:*"), billing_only))
    billing = await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"app": "billing"})
    bare = await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x")
    assert (await call(svc, ALICE, "Decrypt", CiphertextBlob=billing["CiphertextBlob"],
                       EncryptionContext={"app": "billing"}))["Plaintext"] == b"x"
    await denied(svc, ALICE, "Decrypt", CiphertextBlob=bare["CiphertextBlob"])


async def test_like_patterns_treat_brackets_literally_as_iam_does(svc):
    condition = {"StringLike": {"kms:EncryptionContext:path": "reports/[a]*"}}
    key = await key_with(svc, policy(allow(ADMIN, "kms:*"), allow(ALICE, "kms:Encrypt", Condition=condition)))
    literal = await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x",
                         EncryptionContext={"path": "reports/[a]/q3"})
    assert literal["KeyId"].endswith(key)
    await denied(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"path": "reports/a/q3"})


async def test_context_keys_differing_only_in_case_are_refused(svc):
    key = await key_with(svc, policy(allow(ROOT, "kms:*")))
    with pytest.raises(KMSError) as info:
        await call(svc, ALICE, "Encrypt", KeyId=key, Plaintext=b"x", EncryptionContext={"dept": "a", "DEPT": "b"})
    assert (info.value.type, info.value.status) == ("ValidationException", 400)
