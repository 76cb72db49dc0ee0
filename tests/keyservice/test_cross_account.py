"""Principals of another account get exactly AWS's cross-account rights (in-process).

Every key here belongs to the service's account; a caller's account is the one in its principal
ARN. The default key policy (own account root) lets no other account in, keys are named by ARN
only, management operations are refused whatever the policy says, and account-wide listings show
the caller's own (empty) account.
"""
import gzip
import json
import re
from pathlib import Path

import botocore
import pytest

from keyservice.config import ConfigError, Credential, KeyServiceConfig, principal_account
from keyservice.errors import KMSError
from keyservice.multiregion import PEER_OPERATIONS
from keyservice.service import CROSS_ACCOUNT_ACTIONS, CallContext, KeyService

ACCOUNT = "111122223333"
OTHER = "444455556666"
OWNER = f"arn:aws:iam::{ACCOUNT}:root"
OTHER_ROOT = f"arn:aws:iam::{OTHER}:root"
OTHER_ROLE = f"arn:aws:sts::{OTHER}:assumed-role/app/session-1"


async def call(svc: KeyService, who: str, op: str, **params):
    return await svc.handle(op, params, CallContext(who, principal_account(who) or "", "req"))


async def fails(svc: KeyService, who: str, op: str, **params) -> str:
    with pytest.raises(KMSError) as info:
        await call(svc, who, op, **params)
    assert info.value.status == 400, info.value.message
    return info.value.type


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: str, actions) -> dict:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"}


async def new_key(svc: KeyService, text: str | None = None) -> dict:
    params = {"Policy": text} if text else {}
    return (await call(svc, OWNER, "CreateKey", **params))["KeyMetadata"]


async def test_default_policy_does_not_let_another_account_decrypt(svc):
    key = await new_key(svc)
    blob = (await call(svc, OWNER, "Encrypt", KeyId=key["KeyId"], Plaintext=b"secret"))["CiphertextBlob"]
    assert await fails(svc, OTHER_ROOT, "Decrypt", CiphertextBlob=blob) == "AccessDeniedException"
    assert await fails(svc, OTHER_ROOT, "GenerateDataKey", KeyId=key["Arn"], KeySpec="AES_256") == \
        "AccessDeniedException"


@pytest.mark.parametrize("op, extra", [
    ("PutKeyPolicy", {"PolicyName": "default", "Policy": policy(allow(OTHER_ROOT, "kms:*")),
                      "BypassPolicyLockoutSafetyCheck": True}),
    ("GetKeyPolicy", {"PolicyName": "default"}), ("ScheduleKeyDeletion", {"PendingWindowInDays": 7}),
    ("CancelKeyDeletion", {}), ("DisableKey", {}), ("EnableKey", {}), ("EnableKeyRotation", {}),
    ("ListKeyRotations", {}), ("RotateKeyOnDemand", {}), ("TagResource", {"Tags": [{"TagKey": "a", "TagValue": "b"}]}),
    ("ListResourceTags", {}), ("UpdateKeyDescription", {"Description": "mine now"}),
])
async def test_management_operations_are_refused_to_another_account_whatever_the_policy(svc, op, extra):
    generous = policy(allow(OWNER, "kms:*"), allow(OTHER_ROOT, "kms:*"))
    key = await new_key(svc, generous)
    assert await fails(svc, OTHER_ROOT, op, KeyId=key["Arn"], **extra) == "AccessDeniedException"
    assert await fails(svc, OTHER_ROOT, op, KeyId=key["KeyId"], **extra) == "NotFoundException"
    assert (await call(svc, OWNER, "GetKeyPolicy", KeyId=key["KeyId"]))["Policy"] == generous
    assert (await call(svc, OWNER, "DescribeKey", KeyId=key["KeyId"]))["KeyMetadata"]["KeyState"] == "Enabled"


async def test_another_account_cannot_move_or_delete_this_accounts_aliases(svc):
    key = await new_key(svc, policy(allow(OWNER, "kms:*"), allow(OTHER_ROOT, "kms:*")))
    await call(svc, OWNER, "CreateAlias", AliasName="alias/payroll", TargetKeyId=key["KeyId"])
    assert await fails(svc, OTHER_ROOT, "DeleteAlias", AliasName="alias/payroll") == "NotFoundException"
    assert await fails(svc, OTHER_ROOT, "UpdateAlias", AliasName="alias/payroll",
                       TargetKeyId=key["Arn"]) == "AccessDeniedException"
    assert await fails(svc, OTHER_ROOT, "CreateAlias", AliasName="alias/theirs",
                       TargetKeyId=key["Arn"]) == "AccessDeniedException"
    assert [a["AliasName"] for a in (await call(svc, OWNER, "ListAliases"))["Aliases"]] == ["alias/payroll"]


async def test_policy_naming_the_other_account_lets_it_use_the_key_by_arn_only(svc):
    key = await new_key(svc, policy(allow(OWNER, "kms:*"),
                                    allow(OTHER_ROOT, ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey",
                                                       "kms:GenerateDataKey"])))
    await call(svc, OWNER, "CreateAlias", AliasName="alias/shared", TargetKeyId=key["KeyId"])
    alias_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/shared"
    blob = (await call(svc, OTHER_ROLE, "Encrypt", KeyId=alias_arn, Plaintext=b"x"))["CiphertextBlob"]
    assert (await call(svc, OTHER_ROLE, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"x"
    assert (await call(svc, OTHER_ROOT, "DescribeKey", KeyId=key["Arn"]))["KeyMetadata"]["Arn"] == key["Arn"]
    assert (await call(svc, OTHER_ROOT, "GenerateDataKey", KeyId=key["Arn"], KeySpec="AES_256"))["KeyId"] == \
        key["Arn"]
    for name in (key["KeyId"], "alias/shared"):
        assert await fails(svc, OTHER_ROOT, "Encrypt", KeyId=name, Plaintext=b"x") == "NotFoundException"
        assert await fails(svc, OTHER_ROOT, "DescribeKey", KeyId=name) == "NotFoundException"


async def test_grant_to_another_accounts_principal_works_by_key_arn(svc):
    key = await new_key(svc)
    blob = (await call(svc, OWNER, "Encrypt", KeyId=key["KeyId"], Plaintext=b"lent"))["CiphertextBlob"]
    assert await fails(svc, OTHER_ROLE, "Decrypt", CiphertextBlob=blob) == "AccessDeniedException"
    grant = await call(svc, OWNER, "CreateGrant", KeyId=key["KeyId"], GranteePrincipal=OTHER_ROLE,
                       Operations=["Decrypt", "GenerateDataKey"])
    assert (await call(svc, OTHER_ROLE, "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"lent"
    assert (await call(svc, OTHER_ROLE, "GenerateDataKey", KeyId=key["Arn"], KeySpec="AES_256"))["KeyId"] == \
        key["Arn"]
    assert await fails(svc, OTHER_ROLE, "GenerateDataKey", KeyId=key["KeyId"], KeySpec="AES_256") == \
        "NotFoundException"
    assert await fails(svc, OTHER_ROOT, "Decrypt", CiphertextBlob=blob) == "AccessDeniedException"
    await call(svc, OWNER, "RevokeGrant", KeyId=key["KeyId"], GrantId=grant["GrantId"])
    assert await fails(svc, OTHER_ROLE, "Decrypt", CiphertextBlob=blob) == "AccessDeniedException"


async def test_caller_account_condition_sees_the_callers_own_account(svc):
    only_ours = {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
                 "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT}}}
    key = await new_key(svc, policy(allow(OWNER, ["kms:Encrypt", "kms:PutKeyPolicy"]), only_ours))
    blob = (await call(svc, OWNER, "Encrypt", KeyId=key["KeyId"], Plaintext=b"x"))["CiphertextBlob"]
    assert (await call(svc, f"arn:aws:iam::{ACCOUNT}:user/alice", "Decrypt", CiphertextBlob=blob))["Plaintext"] == b"x"
    assert await fails(svc, OTHER_ROOT, "Decrypt", CiphertextBlob=blob) == "AccessDeniedException"


async def test_account_listings_show_another_account_nothing(svc):
    key = await new_key(svc, policy(allow(OWNER, "kms:*"), allow(OTHER_ROOT, "kms:*")))
    await call(svc, OWNER, "CreateAlias", AliasName="alias/ours", TargetKeyId=key["KeyId"])
    assert await call(svc, OTHER_ROOT, "ListKeys") == {"Keys": [], "Truncated": False}
    assert await call(svc, OTHER_ROOT, "ListAliases") == {"Aliases": [], "Truncated": False}
    assert await call(svc, OTHER_ROOT, "ListAliases", KeyId=key["Arn"]) == {"Aliases": [], "Truncated": False}
    assert await fails(svc, OTHER_ROOT, "CreateKey") == "AccessDeniedException"
    assert [k["KeyId"] for k in (await call(svc, OWNER, "ListKeys"))["Keys"]] == [key["KeyId"]]


def test_a_credentials_account_comes_from_its_principal_arn():
    assert principal_account(OTHER_ROOT) == OTHER
    assert principal_account(OTHER_ROLE) == OTHER
    assert principal_account(f"arn:aws-us-gov:iam::{OTHER}:user/a") == OTHER
    assert principal_account("alice") is None
    assert Credential("AK", "SK", OTHER_ROLE).account_id == OTHER
    with pytest.raises(ConfigError):
        _ = Credential("AK", "SK", "arn:aws:iam::12:root").account_id


def test_unprincipaled_credentials_act_as_root_of_the_final_account(tmp_path):
    path = tmp_path / "ks.toml"
    path.write_text('[keyservice]\naccount_id = "111122223333"\n'
                    '[[keyservice.credentials]]\naccess_key = "AK"\nsecret_key = "SK"\n')
    config = KeyServiceConfig.load(path, {"KEYSERVICE_ACCOUNT_ID": OTHER})
    assert [(c.principal, c.account_id) for c in config.credentials] == [(OTHER_ROOT, OTHER)]
    path.write_text(path.read_text() + 'principal = "bob"\n')
    with pytest.raises(ConfigError, match="not an IAM or STS principal ARN"):
        KeyServiceConfig.load(path, {})


def test_cross_account_actions_are_exactly_those_the_aws_api_reference_says_yes_to():
    """Each operation's documentation in the KMS service model (the text of the API Reference) has a
    "Cross-account use" line; the set allowed here is exactly the operations it says "Yes" for."""
    model = Path(botocore.__file__).parent / "data" / "kms" / "2014-11-01" / "service-2.json.gz"
    operations = json.loads(gzip.decompress(model.read_bytes()))["operations"]
    answers = {}
    for name, operation in operations.items():
        text = re.sub(r"<[^>]+>", "", operation.get("documentation", ""))
        line = re.search(r"Cross-account use:\s*(\S+)", text)
        assert line, f"{name} has no cross-account line"
        answers[name] = line.group(1).rstrip(".")
    yes = {name for name, answer in answers.items() if answer == "Yes"}
    assert "GetKeyRotationStatus" in yes and "ListKeyRotations" not in yes
    expected = (yes - {"ReEncrypt"}) | {"ReEncryptFrom", "ReEncryptTo"}  # ReEncrypt's two permissions
    assert CROSS_ACCOUNT_ACTIONS == expected
    # every operation served has a line, but the peer key services' own (multi-region replication)
    assert set(KeyService.OPERATIONS) - set(operations) == PEER_OPERATIONS


async def test_another_account_reads_the_rotation_status_when_the_policy_lets_it(svc):
    key = await new_key(svc, policy(allow(OWNER, "kms:*"), allow(OTHER_ROOT, "kms:GetKeyRotationStatus")))
    await call(svc, OWNER, "EnableKeyRotation", KeyId=key["KeyId"], RotationPeriodInDays=90)
    status = await call(svc, OTHER_ROOT, "GetKeyRotationStatus", KeyId=key["Arn"])
    assert (status["KeyId"], status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (key["Arn"], True, 90)
    assert await fails(svc, OTHER_ROOT, "GetKeyRotationStatus", KeyId=key["KeyId"]) == "NotFoundException"
    assert await fails(svc, OTHER_ROOT, "EnableKeyRotation", KeyId=key["Arn"]) == "AccessDeniedException"
    default = await new_key(svc)
    assert await fails(svc, OTHER_ROOT, "GetKeyRotationStatus", KeyId=default["Arn"]) == "AccessDeniedException"


async def test_a_grant_another_account_creates_is_issued_by_that_account(svc):
    key = await new_key(svc, policy(allow(OWNER, "kms:*"),
                                    allow(OTHER_ROOT, ["kms:CreateGrant", "kms:ListGrants"])))
    ours = await call(svc, OWNER, "CreateGrant", KeyId=key["KeyId"], GranteePrincipal=OTHER_ROLE,
                      Operations=["Decrypt"], RetiringPrincipal=OWNER)
    theirs = await call(svc, OTHER_ROLE, "CreateGrant", KeyId=key["Arn"], GranteePrincipal=OTHER_ROLE,
                        Operations=["Decrypt"], RetiringPrincipal=OTHER_ROLE, Name="theirs")
    for who in (OWNER, OTHER_ROOT):
        listed = (await call(svc, who, "ListGrants", KeyId=key["Arn"]))["Grants"]
        assert {g["GrantId"]: g["IssuingAccount"] for g in listed} == {ours["GrantId"]: OWNER,
                                                                       theirs["GrantId"]: OTHER_ROOT}
    retirable = (await call(svc, OTHER_ROLE, "ListRetirableGrants", RetiringPrincipal=OTHER_ROLE))["Grants"]
    assert [(g["GrantId"], g["IssuingAccount"], g["KeyId"]) for g in retirable] == \
        [(theirs["GrantId"], OTHER_ROOT, key["Arn"])]
    # the issuing account (as root) may retire the grant it created
    await call(svc, OTHER_ROOT, "RetireGrant", KeyId=key["Arn"], GrantId=theirs["GrantId"])
    assert [g["GrantId"] for g in (await call(svc, OWNER, "ListGrants", KeyId=key["KeyId"]))["Grants"]] == \
        [ours["GrantId"]]


async def test_list_retirable_grants_answers_for_a_principal_of_the_callers_own_account_only(svc):
    key = await new_key(svc)
    grant = await call(svc, OWNER, "CreateGrant", KeyId=key["KeyId"], GranteePrincipal=OTHER_ROLE,
                       Operations=["Decrypt"], RetiringPrincipal=OTHER_ROLE)
    for who in (OTHER_ROLE, OTHER_ROOT):  # any principal of the other account, needing nothing from the key
        listed = (await call(svc, who, "ListRetirableGrants", RetiringPrincipal=OTHER_ROLE))["Grants"]
        assert [(g["GrantId"], g["IssuingAccount"]) for g in listed] == [(grant["GrantId"], OWNER)]
    assert (await call(svc, OTHER_ROOT, "ListRetirableGrants", RetiringPrincipal=OTHER_ROOT))["Grants"] == []
    # a principal of another account than the caller's is refused, both ways
    assert await fails(svc, OWNER, "ListRetirableGrants", RetiringPrincipal=OTHER_ROLE) == "AccessDeniedException"
    assert await fails(svc, OTHER_ROOT, "ListRetirableGrants", RetiringPrincipal=OWNER) == "AccessDeniedException"
    await call(svc, OTHER_ROLE, "RetireGrant", KeyId=key["Arn"], GrantId=grant["GrantId"])
    assert (await call(svc, OTHER_ROLE, "ListRetirableGrants", RetiringPrincipal=OTHER_ROLE))["Grants"] == []
