"""Key policies and grants enforced over HTTP for two different principals."""
import json
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from tests.keyservice.conftest import (ACCOUNT, ADMIN, ADMIN_ARN, ALICE, ALICE_ARN, KeyServiceProcess,
                                       kms_client, launch)

POLICY = json.dumps({
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "admin", "Effect": "Allow", "Principal": {"AWS": ADMIN_ARN}, "Action": "kms:*",
         "Resource": "*"},
        {"Sid": "alice encrypts", "Effect": "Allow", "Principal": {"AWS": ALICE_ARN},
         "Action": ["kms:Encrypt", "kms:DescribeKey"], "Resource": "*"},
    ],
})


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServiceProcess]:
    server = launch(tmp_path_factory.mktemp("ks-policy"))
    yield server
    assert server.server.stop() == 0


def denied(call, **kwargs) -> str:
    with pytest.raises(ClientError) as excinfo:
        call(**kwargs)
    return excinfo.value.response["Error"]["Code"]


def test_default_policy_lets_every_principal_of_the_account_use_the_key(ks: KeyServiceProcess) -> None:
    root_kms, alice = kms_client(ks.url), kms_client(ks.url, ALICE)
    key_id = root_kms.create_key()["KeyMetadata"]["KeyId"]
    blob = alice.encrypt(KeyId=key_id, Plaintext=b"shared")["CiphertextBlob"]
    assert root_kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
    policy = json.loads(root_kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}


def test_policy_separates_duties_and_a_grant_lends_decrypt(ks: KeyServiceProcess) -> None:
    admin, alice = kms_client(ks.url, ADMIN), kms_client(ks.url, ALICE)
    key_id = admin.create_key(Policy=POLICY)["KeyMetadata"]["KeyId"]
    blob = alice.encrypt(KeyId=key_id, Plaintext=b"for admin eyes")["CiphertextBlob"]
    assert denied(alice.decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert denied(alice.put_key_policy, KeyId=key_id, PolicyName="default", Policy=POLICY) == \
        "AccessDeniedException"
    assert denied(alice.schedule_key_deletion, KeyId=key_id) == "AccessDeniedException"

    grant = admin.create_grant(KeyId=key_id, GranteePrincipal=ALICE_ARN, Operations=["Decrypt"])
    assert alice.decrypt(CiphertextBlob=blob, GrantTokens=[grant["GrantToken"]])["Plaintext"] == \
        b"for admin eyes"
    assert alice.decrypt(CiphertextBlob=blob)["Plaintext"] == b"for admin eyes"
    assert denied(alice.generate_data_key, KeyId=key_id, KeySpec="AES_256") == "AccessDeniedException"

    admin.revoke_grant(KeyId=key_id, GrantId=grant["GrantId"])
    assert denied(alice.decrypt, CiphertextBlob=blob) == "AccessDeniedException"
    assert admin.decrypt(CiphertextBlob=blob)["Plaintext"] == b"for admin eyes"
