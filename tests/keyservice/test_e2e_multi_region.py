"""Multi-region keys between two real ``keyservice serve`` processes of different regions on loopback,
each configured with the other as its peer, driven by the aws CLI and boto3."""
from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from keyservice.peers import binding, seal
from tests.keyservice.conftest import ACCOUNT, ALICE, ROOT, aws_kms, raw_post
from tests.keyservice.regions import AWAY, HOME, Region, regions, start_regions, stop_regions  # noqa: F401


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return excinfo.value.response["Error"]["Code"]


def replicated_key(home: Region) -> str:
    """A multi-region key made in ``home`` and replicated to AWAY: its id."""
    key_id = home.kms().create_key(MultiRegion=True, Description="mrk")["KeyMetadata"]["KeyId"]
    home.kms().replicate_key(KeyId=key_id, ReplicaRegion=AWAY)
    return key_id


def test_aws_cli_drives_create_replicate_describe_update_primary_and_rotate(regions, tmp_path: Path) -> None:
    home, away = regions
    created = home.cli("create-key", "--multi-region", "--description", "shared")["KeyMetadata"]
    key_id = created["KeyId"]
    assert key_id.startswith("mrk-") and len(key_id) == 36 and int(key_id[4:], 16) >= 0
    assert created["MultiRegion"] is True
    assert created["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY", "PrimaryKey": {"Arn": created["Arn"], "Region": HOME}, "ReplicaKeys": []}

    replica = home.cli("replicate-key", "--key-id", key_id, "--replica-region", AWAY)
    away_arn = f"arn:aws:kms:{AWAY}:{ACCOUNT}:key/{key_id}"
    assert replica["ReplicaKeyMetadata"]["Arn"] == away_arn
    assert replica["ReplicaKeyMetadata"]["Description"] == "shared"
    assert json.loads(replica["ReplicaPolicy"])["Statement"]
    expected = {"PrimaryKey": {"Arn": created["Arn"], "Region": HOME},
                "ReplicaKeys": [{"Arn": away_arn, "Region": AWAY}]}
    assert away.cli("describe-key", "--key-id", key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "REPLICA", **expected}
    assert home.cli("describe-key", "--key-id", key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY", **expected}

    (tmp_path / "plain").write_bytes(b"made at home")
    encrypted = home.cli("encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plain'}",
                         "--encryption-context", "purpose=mrk")
    (tmp_path / "ct").write_bytes(base64.b64decode(encrypted["CiphertextBlob"]))
    decrypted = away.cli("decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ct'}",
                         "--encryption-context", "purpose=mrk")
    assert (base64.b64decode(decrypted["Plaintext"]), decrypted["KeyId"]) == (b"made at home", away_arn)

    assert home.cli("update-primary-region", "--key-id", key_id, "--primary-region", AWAY) == {}
    moved = {"PrimaryKey": {"Arn": away_arn, "Region": AWAY},
             "ReplicaKeys": [{"Arn": created["Arn"], "Region": HOME}]}
    assert away.cli("describe-key", "--key-id", key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "PRIMARY", **moved}
    assert home.cli("describe-key", "--key-id", key_id)["KeyMetadata"]["MultiRegionConfiguration"] == {
        "MultiRegionKeyType": "REPLICA", **moved}

    away.cli("rotate-key-on-demand", "--key-id", key_id)  # on the new primary: reaches the replica at home
    (tmp_path / "plain2").write_bytes(b"made away after rotation")
    rotated = away.cli("encrypt", "--key-id", key_id, "--plaintext", f"fileb://{tmp_path / 'plain2'}")
    (tmp_path / "ct2").write_bytes(base64.b64decode(rotated["CiphertextBlob"]))
    back = home.cli("decrypt", "--ciphertext-blob", f"fileb://{tmp_path / 'ct2'}")
    assert base64.b64decode(back["Plaintext"]) == b"made away after rotation"
    refused = aws_kms(home.url, "rotate-key-on-demand", "--key-id", key_id, "--region", HOME)
    assert refused.returncode != 0 and "UnsupportedOperationException" in refused.stderr


def test_ciphertexts_of_every_version_decrypt_in_the_replica_region_with_the_home_region_stopped(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    kms = home.kms()
    before = kms.encrypt(KeyId=key_id, Plaintext=b"version 1", EncryptionContext={"a": "b"})["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=key_id)
    after = kms.encrypt(KeyId=key_id, Plaintext=b"version 2")["CiphertextBlob"]
    data_key = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert before[0] == after[0] == 3 and bytes.fromhex(key_id[4:]) == before[1:17]
    home.stop()  # no call home from here on

    replica = away.kms()
    assert replica.decrypt(CiphertextBlob=before, EncryptionContext={"a": "b"})["Plaintext"] == b"version 1"
    assert replica.decrypt(CiphertextBlob=after)["Plaintext"] == b"version 2"
    assert replica.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    assert [r["RotationType"] for r in replica.list_key_rotations(KeyId=key_id)["Rotations"]] == ["ON_DEMAND"]
    with pytest.raises(ClientError) as wrong_context:
        replica.decrypt(CiphertextBlob=before)
    assert error_code(wrong_context) == "InvalidCiphertextException"


def test_the_replica_refuses_once_disabled_in_its_region_and_the_primary_still_works(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    blob = home.kms().encrypt(KeyId=key_id, Plaintext=b"still readable at home")["CiphertextBlob"]
    away.kms().disable_key(KeyId=key_id)
    with pytest.raises(ClientError) as disabled:
        away.kms().decrypt(CiphertextBlob=blob)
    assert error_code(disabled) == "DisabledException"
    assert home.kms().decrypt(CiphertextBlob=blob)["Plaintext"] == b"still readable at home"
    assert home.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_aliases_and_policies_stay_in_their_region(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    home.kms().create_alias(AliasName="alias/shared", TargetKeyId=key_id)
    assert away.kms().list_aliases()["Aliases"] == []
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
         "Resource": "*"}, {"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"}]})
    away.kms().put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    blob = home.kms().encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    with pytest.raises(ClientError) as denied:
        away.kms().decrypt(CiphertextBlob=blob)
    assert error_code(denied) == "AccessDeniedException"
    assert home.kms().decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_replicate_key_errors_are_awss(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    cases = [
        (home, dict(KeyId=key_id, ReplicaRegion=AWAY), "AlreadyExistsException"),
        (home, dict(KeyId=home.kms().create_key()["KeyMetadata"]["KeyId"], ReplicaRegion=AWAY),
         "UnsupportedOperationException"),
        (away, dict(KeyId=key_id, ReplicaRegion=HOME), "UnsupportedOperationException"),  # on the replica
        (home, dict(KeyId=home.kms().create_key(MultiRegion=True)["KeyMetadata"]["KeyId"],
                    ReplicaRegion="ap-south-1"), "ValidationException"),  # no peer there
        (home, dict(KeyId="mrk-00000000000000000000000000000000", ReplicaRegion=AWAY), "NotFoundException"),
        (home, dict(KeyId=home.kms().create_key(MultiRegion=True)["KeyMetadata"]["KeyId"], ReplicaRegion=AWAY,
                    Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}]), "TagException"),
        (home, dict(KeyId=home.kms().create_key(MultiRegion=True)["KeyMetadata"]["KeyId"], ReplicaRegion=AWAY,
                    Policy=json.dumps({"Version": "2012-10-17", "Statement": []})),
         "MalformedPolicyDocumentException"),  # it would lock the caller out of the replica
    ]
    for region, params, code in cases:
        with pytest.raises(ClientError) as refused:
            region.kms().replicate_key(**params)
        assert error_code(refused) == code, params
    with pytest.raises(ClientError) as no_replica:
        home.kms().update_primary_region(KeyId=home.kms().create_key(MultiRegion=True)["KeyMetadata"]["KeyId"],
                                         PrimaryRegion=AWAY)
    assert error_code(no_replica) == "NotFoundException"
    with pytest.raises(ClientError) as single:
        home.kms().update_primary_region(KeyId=home.kms().create_key()["KeyMetadata"]["KeyId"], PrimaryRegion=AWAY)
    assert error_code(single) == "UnsupportedOperationException"
    assert single.value.response["Error"]["Message"].endswith(" is not a multi-Region key.")
    with pytest.raises(ClientError) as replicated_from_a_replica:
        away.kms().replicate_key(KeyId=key_id, ReplicaRegion=HOME)
    assert replicated_from_a_replica.value.response["Error"]["Message"].endswith(
        f" is a replica key: replicate its primary key in {HOME}.")
    with pytest.raises(ClientError) as updated_on_a_replica:
        away.kms().update_primary_region(KeyId=key_id, PrimaryRegion=AWAY)
    assert error_code(updated_on_a_replica) == "UnsupportedOperationException"
    assert updated_on_a_replica.value.response["Error"]["Message"].endswith(
        f" is a replica key: call UpdatePrimaryRegion in the primary's region {HOME}.")
    with pytest.raises(ClientError) as on_replica:
        away.kms().enable_key_rotation(KeyId=key_id)
    assert error_code(on_replica) == "UnsupportedOperationException"
    pending = home.kms().create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    home.kms().schedule_key_deletion(KeyId=pending, PendingWindowInDays=7)
    with pytest.raises(ClientError) as pending_deletion:
        home.kms().replicate_key(KeyId=pending, ReplicaRegion=AWAY)
    assert error_code(pending_deletion) == "KMSInvalidStateException"
    with pytest.raises(ClientError) as imported:
        home.kms().create_key(MultiRegion=True, Origin="EXTERNAL")
    assert error_code(imported) == "UnsupportedOperationException"


def peer_call(region: Region, creds: tuple[str, str], payload: dict) -> tuple[int, dict]:
    """A PeerReplicateKey call as a peer makes it, SigV4-signed for ``region`` with ``creds``."""
    body = json.dumps(payload).encode()
    request = AWSRequest(method="POST", url=region.url + "/", data=body,
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "TrentService.PeerReplicateKey"})
    SigV4Auth(Credentials(*creds), "kms", region.name).add_auth(request)
    status, _, answer = raw_post(region.url, body, dict(request.headers.items()))
    return status, answer


def forged_replica(key_id: str, secret: str, replica_region: str) -> dict:
    material = [{"BackingId": "00" * 16, "Created": 1.0, "RotationType": None,
                 "Material": base64.b64encode(b"k" * 32).decode()}]
    return {"KeyId": key_id, "SourceRegion": HOME, "MultiRegion": {"primary": HOME, "replicas": [AWAY]},
            "Key": {"created": 1.0, "key_spec": "SYMMETRIC_DEFAULT", "key_usage": "ENCRYPT_DECRYPT",
                    "origin": "AWS_KMS", "current_backing": "00" * 16, "rotations": []},
            "Material": seal(secret, binding(ACCOUNT, key_id, HOME, replica_region), material), "Create": {}}


def test_only_a_peer_with_material_sealed_for_this_key_and_region_creates_a_replica(regions) -> None:
    _, away = regions
    key_id = "mrk-" + "ab" * 16
    status, answer = peer_call(away, ALICE, forged_replica(key_id, ALICE[1], AWAY))
    assert (status, answer["__type"]) == (400, "AccessDeniedException")  # not the account root: not a peer
    status, answer = peer_call(away, ROOT, forged_replica(key_id, "another secret", AWAY))
    assert (status, answer["__type"]) == (400, "AccessDeniedException")  # sealed under another secret
    status, answer = peer_call(away, ROOT, forged_replica(key_id, ROOT[1], "ap-south-1"))
    assert (status, answer["__type"]) == (400, "AccessDeniedException")  # sealed for another region
    with pytest.raises(ClientError) as absent:
        away.kms().describe_key(KeyId=key_id)
    assert error_code(absent) == "NotFoundException"
    status, answer = peer_call(away, ROOT, forged_replica(key_id, ROOT[1], AWAY))  # what a peer sends
    assert status == 200 and answer["KeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"


def test_a_sigkill_of_the_replica_region_during_replicate_key_leaves_no_replica_or_a_whole_one(regions) -> None:
    home, away = regions
    outcomes = set()
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.05):
        kms = home.kms()
        key_id = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        blobs = [kms.encrypt(KeyId=key_id, Plaintext=b"v0")["CiphertextBlob"]]
        for version in range(1, 6):
            kms.rotate_key_on_demand(KeyId=key_id)
            blobs.append(kms.encrypt(KeyId=key_id, Plaintext=f"v{version}".encode())["CiphertextBlob"])
        answered: list[object] = []
        call = threading.Thread(target=_replicate, args=(home, key_id, answered))
        call.start()
        time.sleep(delay)
        away.kill()
        call.join(30)
        away.start()
        try:
            away.kms().describe_key(KeyId=key_id)
        except ClientError as absent:
            assert absent.response["Error"]["Code"] == "NotFoundException"
            outcomes.add("none")
        else:  # whole: every version decrypts there
            assert [away.kms().decrypt(CiphertextBlob=b)["Plaintext"] for b in blobs] == \
                [f"v{v}".encode() for v in range(6)]
            outcomes.add("whole")
        # Replicating again completes it either way (a replica already there is taken as it is).
        if not home.kms().describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]["ReplicaKeys"]:
            home.kms().replicate_key(KeyId=key_id, ReplicaRegion=AWAY)
        assert away.kms().decrypt(CiphertextBlob=blobs[-1])["Plaintext"] == b"v5"
    assert outcomes  # which of the two happened depends on timing; both are correct


def _replicate(home: Region, key_id: str, answered: list[object]) -> None:
    try:
        answered.append(home.kms().replicate_key(KeyId=key_id, ReplicaRegion=AWAY))
    except ClientError as exc:
        answered.append(exc)


def test_an_automatic_rotation_of_the_primary_reaches_the_replica(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    home.kms().enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    assert home.process is not None
    home.process.advance_clock(91 * 86400)  # the home service's periodic upkeep rotates it
    deadline = time.monotonic() + 20
    while [r["RotationType"] for r in away.kms().list_key_rotations(KeyId=key_id)["Rotations"]] != ["AUTOMATIC"]:
        assert time.monotonic() < deadline, "the automatic rotation did not reach the replica"
        time.sleep(0.1)
    blob = home.kms().encrypt(KeyId=key_id, Plaintext=b"after the automatic rotation")["CiphertextBlob"]
    assert away.kms().decrypt(CiphertextBlob=blob)["Plaintext"] == b"after the automatic rotation"


def test_three_regions_know_every_replica_and_follow_the_primary_when_it_moves(tmp_path: Path) -> None:
    third = "ap-south-1"
    started = start_regions(tmp_path, [HOME, AWAY, third])
    try:
        home, away, south = started
        key_id = replicated_key(home)
        home.kms().replicate_key(KeyId=key_id, ReplicaRegion=third)
        replicas = [{"Arn": f"arn:aws:kms:{r}:{ACCOUNT}:key/{key_id}", "Region": r} for r in (AWAY, third)]
        for region in started:
            config = region.kms().describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
            assert (config["PrimaryKey"]["Region"], config["ReplicaKeys"]) == (HOME, replicas), region.name

        home.kms().update_primary_region(KeyId=key_id, PrimaryRegion=third)
        for region in started:
            config = region.kms().describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
            assert config["PrimaryKey"]["Region"] == third, region.name
            assert config["MultiRegionKeyType"] == ("PRIMARY" if region is south else "REPLICA")
        south.kms().rotate_key_on_demand(KeyId=key_id)
        blob = south.kms().encrypt(KeyId=key_id, Plaintext=b"rotated in the south")["CiphertextBlob"]
        for region in (home, away):
            assert region.kms().decrypt(CiphertextBlob=blob)["Plaintext"] == b"rotated in the south"
    finally:
        stop_regions(started)


def test_a_rotation_while_the_replica_region_is_down_stands_and_the_next_one_brings_every_version(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    away.stop()
    assert home.kms().rotate_key_on_demand(KeyId=key_id)["KeyId"].endswith(key_id)  # the replica follows later
    missed = home.kms().encrypt(KeyId=key_id, Plaintext=b"made while away was down")["CiphertextBlob"]
    away.start()
    with pytest.raises(ClientError) as unknown_version:
        away.kms().decrypt(CiphertextBlob=missed)
    assert error_code(unknown_version) == "InvalidCiphertextException"
    home.kms().rotate_key_on_demand(KeyId=key_id)
    latest = home.kms().encrypt(KeyId=key_id, Plaintext=b"latest")["CiphertextBlob"]
    assert away.kms().decrypt(CiphertextBlob=missed)["Plaintext"] == b"made while away was down"
    assert away.kms().decrypt(CiphertextBlob=latest)["Plaintext"] == b"latest"


def test_automatic_rotation_moves_with_the_primary(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    home.kms().enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    home.kms().update_primary_region(KeyId=key_id, PrimaryRegion=AWAY)
    status = away.kms().get_key_rotation_status(KeyId=key_id)
    assert (status["KeyRotationEnabled"], status["RotationPeriodInDays"]) == (True, 90)
    assert home.kms().get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is False
    assert home.process is not None and away.process is not None
    home.process.advance_clock(91 * 86400)  # the former primary does not rotate on its own
    away.process.advance_clock(91 * 86400)  # the new one does, and its version reaches home
    deadline = time.monotonic() + 20
    while [r["RotationType"] for r in home.kms().list_key_rotations(KeyId=key_id)["Rotations"]] != ["AUTOMATIC"]:
        assert time.monotonic() < deadline, "the new primary's automatic rotation did not reach the former one"
        time.sleep(0.1)
    time.sleep(0.5)  # a few more upkeep rounds of the former primary
    assert [r["RotationType"] for r in away.kms().list_key_rotations(KeyId=key_id)["Rotations"]] == ["AUTOMATIC"]
    blob = away.kms().encrypt(KeyId=key_id, Plaintext=b"rotated away")["CiphertextBlob"]
    assert home.kms().decrypt(CiphertextBlob=blob)["Plaintext"] == b"rotated away"


def test_a_primary_with_replicas_waits_for_them_to_be_deleted_before_its_own_waiting_period(regions) -> None:
    home, away = regions
    key_id = replicated_key(home)
    scheduled = home.kms().schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert (scheduled["KeyState"], scheduled["PendingWindowInDays"], "DeletionDate" in scheduled) == \
        ("PendingReplicaDeletion", 7, False)
    with pytest.raises(ClientError) as waiting:
        home.kms().encrypt(KeyId=key_id, Plaintext=b"x")
    assert error_code(waiting) == "KMSInvalidStateException"
    home.kms().cancel_key_deletion(KeyId=key_id)
    assert home.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    home.kms().schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    away.kms().schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert away.process is not None and home.process is not None
    away.process.advance_clock(8 * 86400)  # the replica is destroyed and its primary told
    deadline = time.monotonic() + 20
    while (meta := home.kms().describe_key(KeyId=key_id)["KeyMetadata"])["KeyState"] != "PendingDeletion":
        assert time.monotonic() < deadline, "the primary was not told its replica is gone"
        time.sleep(0.1)
    assert meta["MultiRegionConfiguration"]["ReplicaKeys"] == [] and "DeletionDate" in meta
    home.process.advance_clock(8 * 86400)
    while True:
        try:
            home.kms().describe_key(KeyId=key_id)
        except ClientError as gone:
            assert gone.response["Error"]["Code"] == "NotFoundException"
            break
        assert time.monotonic() < deadline + 20, "the primary was not destroyed after its own waiting period"
        time.sleep(0.1)
