"""Multi-region keys: ReplicateKey, UpdatePrimaryRegion, and the peer operations behind them.

A multi-region key has an ``mrk-`` id (mrk- + 32 hex digits) and the same id, key material and every
backing key (rotation version) in each region it is replicated to, so a ciphertext blob made in one region
(it names the key id, not the region: keyservice/blob.py) decrypts in another with no call between them.
Aliases, policies, grants, tags and enabled state are each region's own, as in AWS.

``KeyRecord.multi_region`` holds {"primary": region, "replicas": [regions]}. The primary's deployment
pushes material to a replica's through peer operations (not AWS operations; their names start with
``Peer``), signed with the peer credential (keyservice/peers.py) and accepted only from this account's
root principal, the material sealed under a key derived from that credential's secret:

- ``PeerReplicateKey``: the replica's record and every backing key, written in one transaction (a
  replica is there whole or not at all). Sent again (rotation), it adds the versions the replica lacks.
- ``PeerUpdatePrimaryRegion``: the new multi-region configuration, from the primary's region only.
- ``PeerReplicaDeleted``: a replica's region destroyed its replica (the primary may be waiting for that).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import management  # (imports this module too: its names are looked up at call time)
from . import params as p
from .blob import MRK_PREFIX
from .errors import KMSError, validation
from .keys import DAY, KEY_SPECS, KeyRecord, usages_for
from .peers import Peer, binding, call_peer, seal, unseal
from .policy import default_policy
from .store import BackingKeyRow

if TYPE_CHECKING:
    from .api import ChangeListener, KmsApi
    from .service import CallContext, KeyService

log = logging.getLogger(__name__)
REPLICABLE_STATES = ("Enabled", "Disabled")
# A primary key scheduled for deletion while it has replicas: its waiting period starts once they are gone.
PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
# The maintenance event (with the primary's ARN) of a replica destroyed at the end of its waiting period.
REPLICA_DELETED = "ReplicaDeleted"
_BACKING_ID = re.compile(r"[0-9a-f]{32}")
_MRK_ID = re.compile(MRK_PREFIX + r"[0-9a-f]{32}")
_ROTATION_TYPES = (None, "AUTOMATIC", "ON_DEMAND")


def new_key_id() -> str:
    """AWS's multi-region key id: mrk- and 32 lower-case hex digits."""
    return MRK_PREFIX + os.urandom(16).hex()


def check_create(origin: str, custom_key_store_id: str | None) -> None:
    """CreateKey MultiRegion=true: not in a custom key store (as AWS), nor with imported material (here)."""
    if custom_key_store_id is not None or origin == "AWS_CLOUDHSM":
        raise KMSError("UnsupportedOperationException", "Multi-Region keys cannot be created in a custom key store.")
    if origin != "AWS_KMS":
        raise KMSError("UnsupportedOperationException",
                       "This key service creates multi-Region keys with Origin AWS_KMS only.")


def has_replicas(rec: KeyRecord) -> bool:
    """A multi-region primary key with replicas in other regions."""
    return rec.multi_region is not None and not rec.is_replica and bool(rec.multi_region["replicas"])


def refuse_on_replica(rec: KeyRecord, operation: str) -> None:
    """Rotation is managed on the primary key (its new versions reach the replicas): AWS refuses it on one."""
    if rec.is_replica:
        raise KMSError("UnsupportedOperationException",
                       f"{rec.arn} is a replica key: {operation} is performed on its primary key "
                       f"({rec.arn_in(rec.multi_region['primary'])}).")


def _primary_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str,
                 on_a_replica: str) -> KeyRecord:
    """The multi-Region primary key ``KeyId`` names, ``operation`` authorized on it; a single-Region key or a
    replica is UnsupportedOperationException (``on_a_replica`` tells where to go instead; ``{primary}`` is the
    primary key's region)."""
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=False)
    svc.authorize(rec, operation, ctx)
    if rec.multi_region is None:
        raise KMSError("UnsupportedOperationException", f"{rec.arn} is not a multi-Region key.")
    if rec.is_replica:
        raise KMSError("UnsupportedOperationException",
                       f"{rec.arn} is a replica key: {on_a_replica.format(primary=rec.multi_region['primary'])}")
    return rec


# --- ReplicateKey ----------------------------------------------------------------------------
async def replicate_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    region = p.required_str(params, "ReplicaRegion", 32)
    policy_text = p.optional_str(params, "Policy", 1, 32768)
    description = p.optional_str(params, "Description", 0, 8192)
    tags = params.get("Tags") or []
    _replica_tags({"Tags": tags})  # checked here, before anything is sent
    rec = _primary_key(svc, params, ctx, "ReplicateKey", "replicate its primary key in {primary}.")
    if rec.state not in REPLICABLE_STATES:
        svc.raise_invalid_state(rec)
    if region == svc.region or region in rec.multi_region["replicas"]:
        raise KMSError("AlreadyExistsException", f"A key with the ARN {rec.arn_in(region)} already exists.")
    peer = _peer(svc, region)
    if policy_text is not None:
        management.check_lockout(svc, policy_text, params, ctx)  # nor may the replica's policy lock its caller out
    configuration = {"primary": svc.region, "replicas": [*rec.multi_region["replicas"], region]}
    answer = await _push(svc, rec, peer, configuration, create={
        "Policy": policy_text, "Description": rec.description if description is None else description,
        "Tags": tags})
    rec.multi_region = configuration
    svc.save(rec)
    await push_to_replicas(svc, rec, skip=region)  # the other replicas learn of the new one
    return {"ReplicaKeyMetadata": answer["KeyMetadata"], "ReplicaPolicy": answer["Policy"],
            "ReplicaTags": answer.get("Tags", [])}


def _peer(svc: "KeyService", region: str) -> Peer:
    peer = svc.peers.get(region)
    if peer is None:
        raise validation(f"Region {region} has no key service peer configured ([[keyservice.peers]]).")
    return peer


async def _push(svc: "KeyService", rec: KeyRecord, peer: Peer, configuration: dict[str, Any],
                create: dict[str, Any] | None = None) -> dict[str, Any]:
    """Send the key's record and every backing key, sealed, to one replica's deployment."""
    rows = svc.store.backing_keys(rec.key_id)
    payload = [{"BackingId": r.backing_id, "Created": r.created, "RotationType": r.rotation_type,
                "Material": base64.b64encode(r.material).decode()} for r in rows]
    params = {
        "KeyId": rec.key_id, "SourceRegion": svc.region, "MultiRegion": configuration,
        "Key": {"created": rec.created, "key_spec": rec.key_spec, "key_usage": rec.key_usage, "origin": rec.origin,
                "current_backing": rec.current_backing, "rotations": rec.rotations},
        "Material": seal(peer.secret_key, binding(svc.account_id, rec.key_id, svc.region, peer.region), payload),
        **({"Create": create} if create is not None else {}),
    }
    return await asyncio.to_thread(call_peer, peer, "PeerReplicateKey", params)


async def push_to_replicas(svc: "KeyService", rec: KeyRecord, skip: str | None = None) -> None:
    """After a rotation of a primary key (or a new replica): its versions and configuration to every
    replica (but ``skip``). A replica that cannot be reached is logged; the change stands (as in AWS,
    replicas follow asynchronously), and the next rotation or ReplicateKey sends everything again."""
    if rec.multi_region is None or rec.is_replica:
        return
    for region in rec.multi_region["replicas"]:
        if region != skip:
            await _quietly(rec, region, lambda r=region: _push(svc, rec, _peer(svc, r), rec.multi_region))


async def _quietly(rec: KeyRecord, region: str, send: Callable[[], Awaitable[Any]]) -> None:
    """Send a change to one replica's region; a failure (its peer unreachable, or no longer configured) is
    logged, not raised (see ``push_to_replicas``)."""
    try:
        await send()
    except KMSError as exc:
        log.error("the change of %s did not reach its replica in %s: %s", rec.arn, region, exc.message)
    except Exception:
        log.exception("the change of %s did not reach its replica in %s", rec.arn, region)


def follow_maintenance(api: "KmsApi") -> "ChangeListener":
    """A change listener acting on two maintenance events, on the service's thread, with no call waiting
    for it: a primary key's automatically rotated version (``RotateKey``) is sent to its replicas; a
    replica destroyed at the end of its waiting period (``ReplicaDeleted``, the primary's ARN) is
    reported to its primary's region."""
    def heard(operation: str, key_arn: str | None) -> None:
        if key_arn is None:
            return
        if operation == REPLICA_DELETED:
            api.start_on_service(_report_deletion(api.service, key_arn))
        if operation != "RotateKey":
            return
        rec = api.service.keys.get(key_arn.rsplit("/", 1)[-1])
        if rec is not None and rec.multi_region is not None and not rec.is_replica and rec.multi_region["replicas"]:
            api.start_on_service(push_to_replicas(api.service, rec))
    return heard


# --- UpdatePrimaryRegion ---------------------------------------------------------------------
async def update_primary_region(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    region = p.required_str(params, "PrimaryRegion", 32)
    rec = _primary_key(svc, params, ctx, "UpdatePrimaryRegion",
                       "call UpdatePrimaryRegion in the primary's region {primary}.")
    svc.require_not_pending_deletion(rec)
    if region == svc.region:
        return {}
    if region not in rec.multi_region["replicas"]:
        raise KMSError("NotFoundException", f"Key '{rec.arn_in(region)}' does not exist")
    configuration = {"primary": region,
                     "replicas": [svc.region, *(r for r in rec.multi_region["replicas"] if r != region)]}
    # The new primary first; automatic rotation moves with the primary (a replica never rotates itself).
    sent = {**configuration, "rotation": {"period": rec.rotation_period, "next": rec.next_rotation}}
    await _send_configuration(svc, rec, _peer(svc, region), sent)
    rec.multi_region = configuration
    rec.rotation_period = rec.next_rotation = None
    svc.save(rec)
    for other in configuration["replicas"]:
        if other != svc.region:
            await _quietly(rec, other, lambda r=other: _send_configuration(svc, rec, _peer(svc, r), sent))
    return {}


async def _report_deletion(svc: "KeyService", primary_arn: str) -> None:
    """``PeerReplicaDeleted`` to the primary's region: this region's replica of the key is gone."""
    region, key_id = primary_arn.split(":")[3], primary_arn.rsplit("/", 1)[-1]
    try:
        peer = _peer(svc, region)
        aad = binding(svc.account_id, key_id, svc.region, region)
        await asyncio.to_thread(call_peer, peer, "PeerReplicaDeleted", {
            "KeyId": key_id, "SourceRegion": svc.region, "Proof": seal(peer.secret_key, aad, {"deleted": svc.region})})
    except Exception as exc:  # the primary then waits for this replica until told otherwise: say so
        log.error("the deletion of the replica of %s was not reported to %s: %s", primary_arn, region, exc)


async def _send_configuration(svc: "KeyService", rec: KeyRecord, peer: Peer, configuration: dict[str, Any]) -> None:
    """``PeerUpdatePrimaryRegion``: the key's new configuration, sealed (as a MAC) for that peer."""
    aad = binding(svc.account_id, rec.key_id, svc.region, peer.region)
    await asyncio.to_thread(call_peer, peer, "PeerUpdatePrimaryRegion", {
        "KeyId": rec.key_id, "SourceRegion": svc.region, "MultiRegion": configuration,
        "Proof": seal(peer.secret_key, aad, configuration)})


# --- the peer operations (the replica's side) ------------------------------------------------
def _from_peer(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> tuple[str, str, bytes]:
    """(key id, source region, AAD) of a peer call, which only this account's root principal may make
    (the peer credential), naming an mrk- key and a configured peer region."""
    if ctx.principal_arn != f"arn:aws:iam::{svc.account_id}:root" or ctx.access_key not in svc.peer_secrets:
        raise KMSError("AccessDeniedException", f"User: {ctx.principal_arn} is not authorized to perform: "
                                                "replication of multi-Region keys (peer key services only)")
    key_id = p.required_str(params, "KeyId", 36)
    source = p.required_str(params, "SourceRegion", 32)
    if not _MRK_ID.fullmatch(key_id) or source == svc.region:
        raise validation("KeyId must be a multi-Region key id and SourceRegion another region.")
    return key_id, source, binding(svc.account_id, key_id, source, svc.region)


def _configuration(params: dict[str, Any], source: str, region: str) -> dict[str, Any]:
    config = params.get("MultiRegion")
    if (not isinstance(config, dict) or config.get("primary") != source or not isinstance(config.get("replicas"), list)
            or region not in config["replicas"] or not all(isinstance(r, str) for r in config["replicas"])):
        raise validation("MultiRegion must name the sending region as primary and this region as a replica.")
    return {"primary": source, "replicas": list(config["replicas"])}


def peer_replicate_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """Create the replica (params ``Create``) or add the versions it lacks; one transaction either way."""
    key_id, source, aad = _from_peer(svc, params, ctx)
    configuration = _configuration(params, source, svc.region)
    rows = _rows(key_id, unseal(svc.peer_secrets[ctx.access_key], aad, params.get("Material")))
    key = params.get("Key") if isinstance(params.get("Key"), dict) else {}
    create = params.get("Create")
    tags = _replica_tags(create) if isinstance(create, dict) else {}
    rotations = _rotations(key.get("rotations"))
    if not any(r.backing_id == key.get("current_backing") for r in rows):
        raise validation("The current backing key of the replica was not sent.")
    rec = svc.keys.get(key_id)
    if rec is None:
        if not isinstance(create, dict):
            raise KMSError("NotFoundException", f"Key '{svc.key_arn(key_id)}' does not exist")
        rec = _new_replica(svc, key_id, key, create, configuration)
    elif rec.multi_region is None or rec.multi_region["primary"] != source:
        raise KMSError("AlreadyExistsException", f"A key with the ARN {rec.arn} already exists.")
    have = {r.backing_id for r in svc.store.backing_keys(key_id)} if key_id in svc.keys else set()
    missing = [r for r in rows if r.backing_id not in have]
    # Everything checked: the record changes only now.
    rec.multi_region, rec.current_backing, rec.rotations = configuration, key["current_backing"], rotations
    svc.store.add_backing_keys(key_id, missing, rec.to_meta())
    svc.keys[key_id] = rec
    svc.forget_material(key_id)
    ctx.key_arn = rec.arn
    if tags:
        management.store_tags(svc, rec, tags)
    return {"KeyMetadata": svc.key_metadata(rec), "Policy": rec.policy,
            "Tags": [{"TagKey": k, "TagValue": v} for k, v in sorted(svc.tags.get(key_id, {}).items())]}


def _replica_tags(create: dict[str, Any]) -> dict[str, str]:
    """ReplicateKey's Tags for the replica, checked as CreateKey checks them."""
    tags = management.tags_param(create, "Tags", required=False)
    if len(tags) > management.MAX_TAGS:
        raise KMSError("TagException", f"A KMS key can have at most {management.MAX_TAGS} tags.")
    return tags


def _rows(key_id: str, payload: Any) -> list[BackingKeyRow]:
    """The backing keys a peer sent; each id 32 hex digits (as blobs carry it), each type a rotation's."""
    try:
        rows = [BackingKeyRow(key_id, r["BackingId"], float(r["Created"]), r["RotationType"],
                              base64.b64decode(r["Material"], validate=True)) for r in payload]
    except (KeyError, TypeError, ValueError) as exc:
        raise validation("The replicated key material is malformed.") from exc
    if not all(_BACKING_ID.fullmatch(str(r.backing_id)) and r.rotation_type in _ROTATION_TYPES for r in rows) \
            or len({r.backing_id for r in rows}) != len(rows):
        raise validation("The replicated key material is malformed.")
    return rows


def _rotations(value: Any) -> list[dict[str, Any]]:
    """The primary's rotation history (ListKeyRotations shows it in each region)."""
    if not isinstance(value, list) or not all(
            isinstance(r, dict) and set(r) == {"RotationDate", "RotationType"} and r["RotationType"] in _ROTATION_TYPES
            and isinstance(r["RotationDate"], (int, float)) for r in value):
        raise validation("The replicated key's rotations are malformed.")
    return value


def _new_replica(svc: "KeyService", key_id: str, key: dict[str, Any], create: dict[str, Any],
                 configuration: dict[str, Any]) -> KeyRecord:
    spec, usage = key.get("key_spec"), key.get("key_usage")
    if spec not in KEY_SPECS or usage not in usages_for(spec) or not isinstance(key.get("created"), (int, float)):
        raise validation("The replicated key's record is malformed.")
    return KeyRecord(key_id=key_id, arn=svc.key_arn(key_id), account_id=svc.account_id, created=key["created"],
                     key_spec=spec, key_usage=usage, origin="AWS_KMS", state="Enabled",
                     policy=create.get("Policy") or default_policy(svc.account_id),
                     description=create.get("Description") or "", multi_region=configuration)


def peer_update_primary_region(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """The primary's region hands the primary over: to this region's replica, which becomes the primary,
    or to another replica's region, which this replica then takes its versions from."""
    key_id, source, aad = _from_peer(svc, params, ctx)
    proof = unseal(svc.peer_secrets[ctx.access_key], aad, params.get("Proof"))
    rec = svc.keys.get(key_id)
    if rec is None or rec.multi_region is None or rec.multi_region["primary"] != source:
        raise KMSError("NotFoundException", f"Key '{svc.key_arn(key_id)}' is not a replica of {source}'s key")
    replicas = proof.get("replicas") if isinstance(proof, dict) else None
    if proof != params.get("MultiRegion") or not isinstance(replicas, list) or source not in replicas \
            or not all(isinstance(r, str) for r in replicas) or svc.region not in [proof.get("primary"), *replicas]:
        raise validation("MultiRegion must name this region and the sending region as a replica.")
    if not isinstance(proof.get("primary"), str) or proof["primary"] in replicas:
        raise validation("MultiRegion must name one primary region, not among the replicas.")
    if proof["primary"] == svc.region:  # checked before the record changes
        rec.rotation_period, rec.next_rotation = _rotation_schedule(proof.get("rotation"))
    rec.multi_region = {"primary": proof["primary"], "replicas": list(replicas)}
    svc.save(rec)
    ctx.key_arn = rec.arn
    return {}


def _rotation_schedule(value: Any) -> tuple[int | None, float | None]:
    """The automatic rotation (period in days, next date) the former primary hands over, or none."""
    if not isinstance(value, dict):
        raise validation("The automatic rotation handed over is malformed.")
    period, due = value.get("period"), value.get("next")
    if period is None and due is None:
        return None, None
    if not isinstance(period, int) or isinstance(period, bool) or not 90 <= period <= 2560 \
            or not isinstance(due, (int, float)):
        raise validation("The automatic rotation handed over is malformed.")
    return period, float(due)


async def peer_replica_deleted(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """A replica's region destroyed its replica: the primary forgets it, and a primary waiting for its
    replicas to go (PendingReplicaDeletion) starts its own waiting period once none is left."""
    key_id, source, aad = _from_peer(svc, params, ctx)
    if unseal(svc.peer_secrets[ctx.access_key], aad, params.get("Proof")) != {"deleted": source}:
        raise validation("The proof must name the sending region's replica.")
    rec = svc.keys.get(key_id)
    if rec is None or rec.multi_region is None or rec.is_replica or source not in rec.multi_region["replicas"]:
        raise KMSError("NotFoundException", f"Key '{svc.key_arn(key_id)}' has no replica in {source}")
    rec.multi_region = {**rec.multi_region, "replicas": [r for r in rec.multi_region["replicas"] if r != source]}
    if rec.state == PENDING_REPLICA_DELETION and not rec.multi_region["replicas"]:
        rec.state = "PendingDeletion"
        rec.deletion_date = svc.now() + (rec.pending_window or 30) * DAY
    svc.save(rec)
    ctx.key_arn = rec.arn
    await push_to_replicas(svc, rec)  # the replicas left learn it too
    return {}


# The operations only peer key services call: this service's own, in no AWS model.
PEER_HANDLERS = {"PeerReplicateKey": peer_replicate_key, "PeerUpdatePrimaryRegion": peer_update_primary_region,
                 "PeerReplicaDeleted": peer_replica_deleted}
PEER_OPERATIONS = frozenset(PEER_HANDLERS)
HANDLERS = {"ReplicateKey": replicate_key, "UpdatePrimaryRegion": update_primary_region, **PEER_HANDLERS}
