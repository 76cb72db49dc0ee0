"""The peer operations of multi-region keys, as a replica's key service receives them, in process: every
malformed or unauthorised call is refused with its KMS error and leaves no key behind."""
from __future__ import annotations

import base64
import copy
import os
from pathlib import Path

import pytest

from keyservice.clock import FakeClock
from keyservice.errors import KMSError
from keyservice.peers import binding, seal
from keyservice.service import CallContext, KeyService
from keyservice.storeapi import BackingKeyRow, open_store
from tests.keyservice.inprocess import ACCOUNT, ROOT_ARN, START

HOME, AWAY = "us-east-1", "eu-west-1"
PEER_KEY, PEER_SECRET = "AKIAPEER", "peer-secret"
KEY_ID = "mrk-" + "cd" * 16
BACKING = "11" * 16


@pytest.fixture
async def away(tmp_path: Path):
    """The replica region's key service, which knows the peer credential's secret."""
    service = KeyService.open(tmp_path, os.urandom(32), region=AWAY, clock=FakeClock(START))
    service.peer_secrets = {PEER_KEY: PEER_SECRET}
    yield service
    await service.close()


MATERIAL = [{"BackingId": BACKING, "Created": START, "RotationType": None,
             "Material": base64.b64encode(b"m" * 32).decode()}]


def replica_params(**changes) -> dict:
    params = {"KeyId": KEY_ID, "SourceRegion": HOME, "MultiRegion": {"primary": HOME, "replicas": [AWAY]},
              "Key": {"created": START, "key_spec": "SYMMETRIC_DEFAULT", "key_usage": "ENCRYPT_DECRYPT",
                      "origin": "AWS_KMS", "current_backing": BACKING, "rotations": []},
              "Material": seal(PEER_SECRET, binding(ACCOUNT, KEY_ID, HOME, AWAY), MATERIAL), "Create": {}}
    params.update(changes)
    return params


async def peer(svc: KeyService, op: str, params: dict, *, principal: str = ROOT_ARN, access_key: str = PEER_KEY):
    return await svc.handle(op, copy.deepcopy(params), CallContext(principal, ACCOUNT, "req", access_key=access_key))


async def refused(svc: KeyService, op: str, params: dict, error: str, **ctx) -> None:
    with pytest.raises(KMSError) as info:
        await peer(svc, op, params, **ctx)
    assert info.value.type == error, info.value.message
    assert KEY_ID not in svc.keys or op != "PeerReplicateKey" or error == "AlreadyExistsException"


@pytest.mark.parametrize("changes, ctx, error", [
    ({}, {"principal": f"arn:aws:iam::{ACCOUNT}:user/alice"}, "AccessDeniedException"),
    ({}, {"access_key": "AKIAOTHER"}, "AccessDeniedException"),
    ({"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}, {}, "ValidationException"),
    ({"SourceRegion": AWAY}, {}, "ValidationException"),
    ({"MultiRegion": {"primary": "ap-south-1", "replicas": [AWAY]}}, {}, "ValidationException"),
    ({"MultiRegion": {"primary": HOME, "replicas": []}}, {}, "ValidationException"),
    ({"Material": {"Salt": "!!", "Sealed": ""}}, {}, "AccessDeniedException"),
    ({"Material": seal(PEER_SECRET, binding(ACCOUNT, KEY_ID, HOME, AWAY), [{"BackingId": BACKING}])}, {},
     "ValidationException"),
    ({"Key": {"created": START, "current_backing": "22" * 16}}, {}, "ValidationException"),
    ({"Key": {"current_backing": BACKING}}, {}, "ValidationException"),
    ({"Create": None}, {}, "NotFoundException"),
    ({"Key": {"created": START, "key_spec": "AES_512", "key_usage": "ENCRYPT_DECRYPT", "current_backing": BACKING,
              "rotations": []}}, {}, "ValidationException"),
    ({"Key": {"created": START, "key_spec": "SYMMETRIC_DEFAULT", "key_usage": "ENCRYPT_DECRYPT",
              "current_backing": BACKING, "rotations": "abc"}}, {}, "ValidationException"),
    ({"Material": seal(PEER_SECRET, binding(ACCOUNT, KEY_ID, HOME, AWAY), [
        {"BackingId": "not hex", "Created": START, "RotationType": None, "Material": ""}])}, {}, "ValidationException"),
    ({"Material": seal(PEER_SECRET, binding(ACCOUNT, KEY_ID, HOME, AWAY), MATERIAL * 2)}, {}, "ValidationException"),
])
async def test_a_bad_or_unauthorised_replica_is_refused(away: KeyService, changes: dict, ctx: dict,
                                                        error: str) -> None:
    await refused(away, "PeerReplicateKey", replica_params(**changes), error, **ctx)


async def test_a_replica_is_made_once_and_sent_again_only_adds_versions(away: KeyService) -> None:
    made = await peer(away, "PeerReplicateKey", replica_params())
    assert made["KeyMetadata"]["Arn"] == f"arn:aws:kms:{AWAY}:{ACCOUNT}:key/{KEY_ID}"
    again = await peer(away, "PeerReplicateKey", replica_params())  # an answer lost on the way: taken as it is
    assert again["KeyMetadata"] == made["KeyMetadata"]
    assert [r.backing_id for r in away.store.backing_keys(KEY_ID)] == [BACKING]


async def test_a_key_of_the_same_id_that_is_not_this_primarys_replica_is_not_overwritten(away: KeyService) -> None:
    await peer(away, "PeerReplicateKey", replica_params())
    other = replica_params(SourceRegion="ap-south-1", MultiRegion={"primary": "ap-south-1", "replicas": [AWAY]},
                           Material=seal(PEER_SECRET, binding(ACCOUNT, KEY_ID, "ap-south-1", AWAY), MATERIAL))
    await refused(away, "PeerReplicateKey", other, "AlreadyExistsException")


@pytest.mark.parametrize("configuration, error", [
    ({"primary": AWAY, "replicas": [HOME], "rotation": {"period": None, "next": None}}, None),
    ({"primary": AWAY, "replicas": [HOME], "rotation": {"period": 90, "next": START + 90 * 86400}}, None),
    ({"primary": AWAY, "replicas": [HOME], "rotation": {"period": 10, "next": START}}, "ValidationException"),
    ({"primary": AWAY, "replicas": [HOME], "rotation": "yearly"}, "ValidationException"),
    ({"primary": HOME, "replicas": [AWAY]}, "ValidationException"),
    ({"primary": AWAY, "replicas": []}, "ValidationException"),
    ({"primary": HOME, "replicas": [HOME, AWAY]}, "ValidationException"),
])
async def test_update_primary_region_from_the_primary_only_names_this_region(away: KeyService,
                                                                             configuration: dict,
                                                                             error: str | None) -> None:
    await peer(away, "PeerReplicateKey", replica_params())
    params = {"KeyId": KEY_ID, "SourceRegion": HOME, "MultiRegion": configuration,
              "Proof": seal(PEER_SECRET, binding(ACCOUNT, KEY_ID, HOME, AWAY), configuration)}
    if error:
        await refused(away, "PeerUpdatePrimaryRegion", params, error)
        assert away.keys[KEY_ID].is_replica
    else:
        assert await peer(away, "PeerUpdatePrimaryRegion", params) == {}
        assert not away.keys[KEY_ID].is_replica
        assert away.keys[KEY_ID].rotation_period == configuration["rotation"]["period"]
    forged = {**params, "Proof": seal("not the secret", binding(ACCOUNT, KEY_ID, HOME, AWAY), configuration)}
    await refused(away, "PeerUpdatePrimaryRegion", forged, "AccessDeniedException")
    unknown = {**params, "KeyId": "mrk-" + "00" * 16,
               "Proof": seal(PEER_SECRET, binding(ACCOUNT, "mrk-" + "00" * 16, HOME, AWAY), configuration)}
    await refused(away, "PeerUpdatePrimaryRegion", unknown, "NotFoundException")


async def test_a_replica_write_that_fails_midway_leaves_neither_record_nor_versions(tmp_path: Path,
                                                                                    store_url: str | None) -> None:
    store = open_store(tmp_path, os.urandom(32), store_url)  # SQLite, then PostgreSQL
    try:
        row = BackingKeyRow(KEY_ID, BACKING, START, None, b"m" * 32)
        with pytest.raises(Exception):
            store.add_backing_keys(KEY_ID, [row, row], {"key_id": KEY_ID})  # the second insert fails
        assert (store.get_key(KEY_ID), store.backing_keys(KEY_ID)) == (None, [])
    finally:
        store.close()


async def test_a_replica_deleted_is_reported_only_by_its_region_for_a_primary_here(away: KeyService) -> None:
    ctx = CallContext(ROOT_ARN, ACCOUNT, "req")
    key_id = (await away.handle("CreateKey", {"MultiRegion": True}, ctx))["KeyMetadata"]["KeyId"]
    rec = away.keys[key_id]
    rec.multi_region = {"primary": AWAY, "replicas": [HOME]}
    away.save(rec)

    def report(proof: dict, *, secret: str = PEER_SECRET, key: str = key_id) -> dict:
        return {"KeyId": key, "SourceRegion": HOME, "Proof": seal(secret, binding(ACCOUNT, key, HOME, AWAY), proof)}
    await refused(away, "PeerReplicaDeleted", report({"deleted": HOME}, secret="not the secret"),
                  "AccessDeniedException")
    await refused(away, "PeerReplicaDeleted", report({"deleted": "ap-south-1"}), "ValidationException")
    await refused(away, "PeerReplicaDeleted", report({"deleted": HOME}, key=KEY_ID), "NotFoundException")
    assert away.keys[key_id].multi_region["replicas"] == [HOME]
    assert await peer(away, "PeerReplicaDeleted", report({"deleted": HOME})) == {}
    assert away.keys[key_id].multi_region["replicas"] == []
    await refused(away, "PeerReplicaDeleted", report({"deleted": HOME}), "NotFoundException")  # told once
