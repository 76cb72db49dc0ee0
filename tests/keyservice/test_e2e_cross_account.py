"""A credential of another account (principal arn:aws:iam::444455556666:root) against a real
``keyservice serve``, through boto3: AWS's cross-account rules, not the owner's rights."""
import json
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.keyservice.conftest import (ACCOUNT, OTHER, OTHER_ACCOUNT, OTHER_ARN, KeyServiceProcess,
                                       kms_client, launch)

OWNER_ROOT = f"arn:aws:iam::{ACCOUNT}:root"


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServiceProcess]:
    server = launch(tmp_path_factory.mktemp("ks-cross-account"), quotas={"CreateKey": 1000})
    yield server
    assert server.server.stop() == 0


def error_of(call, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as excinfo:
        call(**kwargs)
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: str, actions, **extra) -> dict:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": actions, "Resource": "*", **extra}


def test_other_account_cannot_decrypt_under_the_default_policy(ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    arn = owner.create_key()["KeyMetadata"]["Arn"]
    blob = owner.encrypt(KeyId=arn, Plaintext=b"payroll")["CiphertextBlob"]
    assert error_of(other.decrypt, CiphertextBlob=blob) == ("AccessDeniedException", 400)
    assert error_of(other.generate_data_key, KeyId=arn, KeySpec="AES_256") == ("AccessDeniedException", 400)


def test_other_account_cannot_replace_the_policy_or_delete_the_key(ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    meta = owner.create_key()["KeyMetadata"]
    takeover = policy(allow(OTHER_ARN, "kms:*"))
    assert error_of(other.put_key_policy, KeyId=meta["Arn"], PolicyName="default", Policy=takeover,
                    BypassPolicyLockoutSafetyCheck=True) == ("AccessDeniedException", 400)
    assert error_of(other.schedule_key_deletion, KeyId=meta["Arn"], PendingWindowInDays=7) == \
        ("AccessDeniedException", 400)
    assert error_of(other.schedule_key_deletion, KeyId=meta["KeyId"]) == ("NotFoundException", 400)
    assert owner.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert json.loads(owner.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"]) \
        ["Statement"][0]["Principal"] == {"AWS": OWNER_ROOT}


def test_caller_account_condition_is_the_callers_account(ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    ours_only = {"Effect": "Allow", "Principal": "*", "Action": "kms:Encrypt", "Resource": "*",
                 "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT}}}
    arn = owner.create_key(Policy=policy(allow(OWNER_ROOT, "kms:*"), ours_only))["KeyMetadata"]["Arn"]
    assert error_of(other.encrypt, KeyId=arn, Plaintext=b"x") == ("AccessDeniedException", 400)
    theirs = {**ours_only, "Condition": {"StringEquals": {"kms:CallerAccount": OTHER_ACCOUNT}}}
    owner.put_key_policy(KeyId=arn, PolicyName="default", Policy=policy(allow(OWNER_ROOT, "kms:*"), theirs))
    assert other.encrypt(KeyId=arn, Plaintext=b"x")["KeyId"] == arn


def test_other_account_lists_no_keys_or_aliases(ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    key_id = owner.create_key()["KeyMetadata"]["KeyId"]
    owner.create_alias(AliasName="alias/listed", TargetKeyId=key_id)
    assert other.list_keys()["Keys"] == []
    assert other.list_aliases()["Aliases"] == []
    assert key_id in [k["KeyId"] for k in owner.list_keys()["Keys"]]


def test_policy_naming_the_other_account_lets_it_use_the_key_by_arn(ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    shared = policy(allow(OWNER_ROOT, "kms:*"),
                    allow(OTHER_ACCOUNT, ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]))
    meta = owner.create_key(Policy=shared)["KeyMetadata"]
    data_key = other.generate_data_key(KeyId=meta["Arn"], KeySpec="AES_256")
    assert other.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    assert owner.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    assert other.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["KeyId"] == meta["KeyId"]
    assert error_of(other.encrypt, KeyId=meta["KeyId"], Plaintext=b"x") == ("NotFoundException", 400)


def test_grant_to_the_other_accounts_principal_works_by_key_arn(ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    meta = owner.create_key()["KeyMetadata"]
    blob = owner.encrypt(KeyId=meta["KeyId"], Plaintext=b"lent")["CiphertextBlob"]
    grant = owner.create_grant(KeyId=meta["KeyId"], GranteePrincipal=OTHER_ARN,
                               Operations=["Decrypt", "GenerateDataKey"])
    assert other.decrypt(CiphertextBlob=blob, GrantTokens=[grant["GrantToken"]])["Plaintext"] == b"lent"
    assert other.generate_data_key(KeyId=meta["Arn"], KeySpec="AES_256")["KeyId"] == meta["Arn"]
    assert error_of(other.generate_data_key, KeyId=meta["KeyId"], KeySpec="AES_256") == ("NotFoundException", 400)
    owner.revoke_grant(KeyId=meta["KeyId"], GrantId=grant["GrantId"])
    assert error_of(other.decrypt, CiphertextBlob=blob) == ("AccessDeniedException", 400)


def test_grants_the_other_account_creates_name_it_as_issuer_and_it_lists_its_retirable_ones(
        ks: KeyServiceProcess) -> None:
    owner, other = kms_client(ks.url), kms_client(ks.url, OTHER)
    shared = policy(allow(OWNER_ROOT, "kms:*"),
                    allow(OTHER_ACCOUNT, ["kms:CreateGrant", "kms:ListGrants", "kms:GetKeyRotationStatus"]))
    meta = owner.create_key(Policy=shared)["KeyMetadata"]
    assert other.get_key_rotation_status(KeyId=meta["Arn"])["KeyRotationEnabled"] is False
    grant = other.create_grant(KeyId=meta["Arn"], GranteePrincipal=OTHER_ARN, Operations=["Decrypt"],
                               RetiringPrincipal=OTHER_ARN)
    for client in (owner, other):
        listed = client.list_grants(KeyId=meta["Arn"])["Grants"]
        assert [(g["GrantId"], g["IssuingAccount"]) for g in listed] == [(grant["GrantId"], OTHER_ARN)]
    retirable = other.list_retirable_grants(RetiringPrincipal=OTHER_ARN)["Grants"]
    assert [(g["GrantId"], g["KeyId"], g["IssuingAccount"]) for g in retirable] == \
        [(grant["GrantId"], meta["Arn"], OTHER_ARN)]
    assert error_of(owner.list_retirable_grants, RetiringPrincipal=OTHER_ARN) == ("AccessDeniedException", 400)
    other.retire_grant(GrantToken=grant["GrantToken"])
    assert other.list_retirable_grants(RetiringPrincipal=OTHER_ARN)["Grants"] == []
