"""Key management operations: keys, aliases, rotation, key policies and tags."""

import logging
import re
from typing import TYPE_CHECKING, Any

from . import customkeystores, multiregion
from . import params as p
from .errors import KMSError, validation
from .keys import DAY, KEY_SPECS, RSA_BITS, KeyRecord, new_backing_id, new_material, usages_for
from .policy import compile_policy, default_policy

if TYPE_CHECKING:
    from .service import CallContext, KeyService

_ALIAS_RE = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")
MAX_TAGS = 50
MAX_ON_DEMAND_ROTATIONS = 10

log = logging.getLogger(__name__)


# --- keys ------------------------------------------------------------------------------------
async def create_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    svc.require_own_account("CreateKey", ctx)
    spec = p.enum(params, "KeySpec", KEY_SPECS) or p.enum(params, "CustomerMasterKeySpec", KEY_SPECS) \
        or "SYMMETRIC_DEFAULT"
    usage = p.enum(params, "KeyUsage", {"ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC", "KEY_AGREEMENT"},
                   "ENCRYPT_DECRYPT")
    if usage not in usages_for(spec):
        raise validation(f"KeyUsage {usage} is not compatible with KeySpec {spec}.")
    origin = p.enum(params, "Origin", {"AWS_KMS", "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"}, "AWS_KMS")
    assert origin is not None
    store_id = customkeystores.check_create_key(params, origin, spec, usage)
    if origin == "EXTERNAL_KEY_STORE":
        raise KMSError("UnsupportedOperationException", "External key stores are not supported.")
    multi_region = p.boolean(params, "MultiRegion")
    if multi_region:
        multiregion.check_create(origin, store_id)
    if origin == "EXTERNAL" and spec != "SYMMETRIC_DEFAULT":
        raise KMSError("UnsupportedOperationException", "Only symmetric keys can have imported key material.")
    description = p.optional_str(params, "Description", 0, 8192) or ""
    policy_text = p.optional_str(params, "Policy", 1, 32768)
    tags = tags_param(params, "Tags", required=False)
    if len(tags) > MAX_TAGS:
        raise KMSError("TagException", f"A KMS key can have at most {MAX_TAGS} tags.")
    if policy_text is not None:
        check_lockout(svc, policy_text, params, ctx)
    key_id = multiregion.new_key_id() if multi_region else KeyRecord.new_id()
    rec = KeyRecord(key_id=key_id, arn=svc.key_arn(key_id), account_id=svc.account_id, created=svc.now(),
                    key_spec=spec, key_usage=usage, origin=origin,
                    state="PendingImport" if origin == "EXTERNAL" else "Enabled",
                    policy=policy_text or default_policy(svc.account_id), description=description,
                    expiration_model=None, custom_key_store_id=store_id,
                    multi_region={"primary": svc.region, "replicas": []} if multi_region else None)
    ctx.key_arn = rec.arn
    if store_id is not None:
        _create_in_token(svc, rec, store_id)
    elif origin == "EXTERNAL":
        svc.save(rec)
    else:
        material = await svc.in_thread(new_material, spec) if spec in RSA_BITS else new_material(spec)
        svc.add_backing_key(rec, material, None)
    if tags:
        store_tags(svc, rec, tags)
    return {"KeyMetadata": svc.key_metadata(rec)}


def _create_in_token(svc: "KeyService", rec: KeyRecord, store_id: str) -> None:
    """A key of a custom key store: its one backing key generated in the token, only the record stored."""
    rec.current_backing = new_backing_id()
    svc.custom_key_stores.generate_key(store_id, rec, rec.current_backing)
    try:
        svc.save(rec)
    except BaseException:
        svc.custom_key_stores.forget_key(rec)  # no record names it: do not leave it in the token
        raise


def check_lockout(svc: "KeyService", policy_text: str, params: dict[str, Any], ctx: "CallContext") -> None:
    """AWS refuses a policy that would lock the caller out of PutKeyPolicy, unless told to bypass."""
    policy = compile_policy(policy_text)
    if not p.boolean(params, "BypassPolicyLockoutSafetyCheck") and not svc.policy_allows(policy, "PutKeyPolicy", ctx):
        raise KMSError("MalformedPolicyDocumentException",
                       "The new key policy will not allow you to update the key policy in the future.")


def describe_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=True)
    svc.authorize(rec, "DescribeKey", ctx, grant_tokens=params.get("GrantTokens"))
    return {"KeyMetadata": svc.key_metadata(rec)}


def list_keys(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """The keys of the caller's account: none for a principal of another account (AWS lists only
    the caller's own account, even when a key policy here names it)."""
    svc.purge_due_keys()
    records = [] if svc.is_foreign(ctx) else sorted(svc.keys.values(), key=lambda r: r.key_id)
    page, extra = p.paginate(records, lambda r: r.key_id, params)
    return {"Keys": [{"KeyId": r.key_id, "KeyArn": r.arn} for r in page], **extra}


def _managed_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str) -> KeyRecord:
    """Resolve a KeyId that must be a key id or key ARN (no alias) and check the caller may act on it."""
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=False)
    svc.authorize(rec, operation, ctx)
    return rec


def enable_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    return _set_enabled(svc, _managed_key(svc, params, ctx, "EnableKey"), "Enabled")


def disable_key(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    return _set_enabled(svc, _managed_key(svc, params, ctx, "DisableKey"), "Disabled")


def _set_enabled(svc: "KeyService", rec: KeyRecord, state: str) -> dict[str, Any]:
    if svc.custom_key_stores.unavailable(rec):
        svc.require_usable(rec)  # KMSInvalidStateException: its custom key store is not connected
    if rec.state not in ("Enabled", "Disabled"):
        svc.raise_invalid_state(rec)
    rec.state = state
    svc.save(rec)
    return {}


def update_key_description(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    description = params.get("Description")
    p.checked_str(description, "Description", 0, 8192)
    rec = _managed_key(svc, params, ctx, "UpdateKeyDescription")
    svc.require_not_pending_deletion(rec)
    rec.description = description
    svc.save(rec)
    return {}


def schedule_key_deletion(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    window = p.integer(params, "PendingWindowInDays", 7, 30, 30)
    assert window is not None
    rec = _managed_key(svc, params, ctx, "ScheduleKeyDeletion")
    svc.require_not_pending_deletion(rec)
    rec.pending_window = window
    if multiregion.has_replicas(rec):  # AWS: the waiting period starts once every replica is deleted
        rec.state = multiregion.PENDING_REPLICA_DELETION
        svc.save(rec)
        return {"KeyId": rec.arn, "KeyState": rec.state, "PendingWindowInDays": window}
    rec.state = "PendingDeletion"
    rec.deletion_date = svc.now() + window * DAY
    svc.save(rec)
    _warn_of_known_usage(svc, rec, ctx)
    return {"KeyId": rec.arn, "DeletionDate": rec.deletion_date, "KeyState": rec.state,
            "PendingWindowInDays": window}


USAGE_TAG = "s3gw:usage"  # written by `gateway keys usage --record`: the objects only this key reads


def _warn_of_known_usage(svc: "KeyService", rec: KeyRecord, ctx: "CallContext") -> None:
    """A key whose usage a gateway recorded (its USAGE_TAG) and that still protects objects: the deletion
    goes ahead, as in AWS, but its audit record and the log say what it will make unreadable."""
    usage = svc.tags.get(rec.key_id, {}).get(USAGE_TAG, "")
    if usage and not usage.startswith("0 objects"):
        ctx.warning = f"scheduled for deletion while objects need it: {usage}"
        log.warning("key %s %s", rec.arn, ctx.warning)


def cancel_key_deletion(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _managed_key(svc, params, ctx, "CancelKeyDeletion")
    if rec.state not in ("PendingDeletion", multiregion.PENDING_REPLICA_DELETION):
        raise KMSError("KMSInvalidStateException", f"{rec.arn} is not pending deletion.")
    rec.state = "PendingImport" if svc.material(rec) is None else "Disabled"
    rec.deletion_date = rec.pending_window = None
    svc.save(rec)
    return {"KeyId": rec.arn}


# --- aliases ---------------------------------------------------------------------------------
def _alias_name(params: dict[str, Any]) -> str:
    name = p.required_str(params, "AliasName", 256)
    if not _ALIAS_RE.match(name):
        raise validation(f"1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy "
                         "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
    if name.startswith("alias/aws/"):
        raise KMSError("NotAuthorizedException", "Aliases beginning with alias/aws/ are reserved for AWS managed keys.")
    return name


def _alias_target(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str) -> KeyRecord:
    rec = svc.resolve(params.get("TargetKeyId"), ctx, alias_ok=False, name="TargetKeyId")
    svc.authorize(rec, operation, ctx)
    svc.require_not_pending_deletion(rec)
    return rec


def create_alias(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    name = _alias_name(params)
    rec = _alias_target(svc, params, ctx, "CreateAlias")
    if name in svc.aliases:
        raise KMSError("AlreadyExistsException", f"An alias with the name {svc.alias_arn(name)} already exists")
    _save_alias(svc, name, {"key_id": rec.key_id, "created": svc.now(), "updated": svc.now()})
    return {}


def update_alias(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    name = _alias_name(params)
    alias = svc.aliases.get(name)
    if alias is None:
        raise KMSError("NotFoundException", f"Alias {svc.alias_arn(name)} is not found.")
    rec = _alias_target(svc, params, ctx, "UpdateAlias")
    current = svc.keys.get(alias["key_id"])
    if current is not None and (current.key_usage != rec.key_usage or current.symmetric != rec.symmetric):
        raise validation("The current and new KMS key must be the same type and have the same key usage.")
    _save_alias(svc, name, {**alias, "key_id": rec.key_id, "updated": svc.now()})
    return {}


def _save_alias(svc: "KeyService", name: str, alias: dict[str, Any]) -> None:
    svc.store.put_alias(name, alias)
    svc.aliases[name] = alias


def delete_alias(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    name = _alias_name(params)
    alias = None if svc.is_foreign(ctx) else svc.aliases.get(name)  # the name is in the caller's account
    if alias is None:
        raise KMSError("NotFoundException", f"Alias {svc.alias_arn(name)} is not found.")
    rec = svc.keys.get(alias["key_id"])
    if rec is not None:
        ctx.key_arn = rec.arn
        svc.authorize(rec, "DeleteAlias", ctx)
    svc.store.delete_alias(name)
    del svc.aliases[name]
    return {}


def list_aliases(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """The aliases of the caller's account: none for a principal of another account."""
    svc.purge_due_keys()
    names = [] if svc.is_foreign(ctx) else sorted(svc.aliases)
    if names and params.get("KeyId") is not None:
        key_id = svc.resolve(params["KeyId"], ctx, alias_ok=False).key_id
        names = [n for n in names if svc.aliases[n]["key_id"] == key_id]
    page, extra = p.paginate(names, lambda n: n, params, default_limit=50, max_limit=100)
    return {"Aliases": [_alias_entry(svc, n) for n in page], **extra}


def _alias_entry(svc: "KeyService", name: str) -> dict[str, Any]:
    alias = svc.aliases[name]
    return {"AliasName": name, "AliasArn": svc.alias_arn(name), "TargetKeyId": alias["key_id"],
            "CreationDate": alias["created"], "LastUpdatedDate": alias["updated"]}


# --- rotation --------------------------------------------------------------------------------
def _rotatable(svc: "KeyService", params: dict[str, Any], ctx: "CallContext", operation: str) -> KeyRecord:
    rec = _managed_key(svc, params, ctx, operation)
    multiregion.refuse_on_replica(rec, operation)
    if not rec.symmetric or rec.origin != "AWS_KMS":
        raise KMSError("UnsupportedOperationException", f"{rec.arn} key rotation is not supported for asymmetric, "
                                                        "HMAC or imported keys, or keys in custom key stores.")
    return rec


def enable_key_rotation(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    period = p.integer(params, "RotationPeriodInDays", 90, 2560, 365)
    assert period is not None
    rec = _rotatable(svc, params, ctx, "EnableKeyRotation")
    svc.require_usable(rec)
    rec.rotation_period = period
    rec.next_rotation = svc.now() + period * DAY
    svc.save(rec)
    return {}


def disable_key_rotation(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _rotatable(svc, params, ctx, "DisableKeyRotation")
    svc.require_usable(rec)
    rec.rotation_period = rec.next_rotation = None
    svc.save(rec)
    return {}


def get_key_rotation_status(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _managed_key(svc, params, ctx, "GetKeyRotationStatus")
    result: dict[str, Any] = {"KeyId": rec.arn, "KeyRotationEnabled": rec.rotation_period is not None}
    if rec.rotation_period is not None:
        result["RotationPeriodInDays"] = rec.rotation_period
        result["NextRotationDate"] = rec.next_rotation
    if rec.on_demand_started is not None:
        result["OnDemandRotationStartDate"] = rec.on_demand_started
    return result


async def rotate_key_on_demand(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _rotatable(svc, params, ctx, "RotateKeyOnDemand")
    svc.require_usable(rec)
    if sum(r["RotationType"] == "ON_DEMAND" for r in rec.rotations) >= MAX_ON_DEMAND_ROTATIONS:
        raise KMSError("LimitExceededException", f"{rec.arn} has reached the limit of on-demand rotations.")
    rec.on_demand_started = svc.now()
    svc.add_backing_key(rec, new_material("SYMMETRIC_DEFAULT"), "ON_DEMAND")
    await multiregion.push_to_replicas(svc, rec)
    return {"KeyId": rec.arn}


def list_key_rotations(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _managed_key(svc, params, ctx, "ListKeyRotations")
    if not rec.symmetric or rec.origin != "AWS_KMS":
        raise KMSError("UnsupportedOperationException", f"{rec.arn} does not support key rotation.")
    indexed = [(f"{i:08d}", r) for i, r in enumerate(rec.rotations)]
    page, extra = p.paginate(indexed, lambda item: item[0], params, default_limit=100, max_limit=1000)
    return {"Rotations": [{"KeyId": rec.arn, **r} for _, r in page], **extra}


# --- key policies ----------------------------------------------------------------------------
def _policy_name(params: dict[str, Any]) -> None:
    name = params.get("PolicyName") or "default"
    p.checked_str(name, "PolicyName", 1, 128)
    if name != "default":
        raise KMSError("NotFoundException", f"No such policy: {name}. The only key policy name is \"default\".")


def get_key_policy(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    _policy_name(params)
    rec = _managed_key(svc, params, ctx, "GetKeyPolicy")
    return {"Policy": rec.policy, "PolicyName": "default"}


def put_key_policy(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    _policy_name(params)
    text = p.required_str(params, "Policy", 32768)
    rec = _managed_key(svc, params, ctx, "PutKeyPolicy")
    svc.require_not_pending_deletion(rec)
    check_lockout(svc, text, params, ctx)
    rec.policy = text
    svc.save(rec)
    return {}


def list_key_policies(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    p.integer(params, "Limit", 1, 1000)
    _managed_key(svc, params, ctx, "ListKeyPolicies")
    return {"PolicyNames": ["default"], "Truncated": False}


# --- tags ------------------------------------------------------------------------------------
def tags_param(params: dict[str, Any], name: str, required: bool = True) -> dict[str, str]:
    tags = params.get(name)
    if tags is None and not required:
        return {}
    if not isinstance(tags, list) or (required and not tags):
        raise validation(f"{name} must be a list of {{TagKey, TagValue}}.")
    result: dict[str, str] = {}
    for tag in tags:
        if not isinstance(tag, dict):
            raise validation(f"{name} must be a list of {{TagKey, TagValue}}.")
        key = p.checked_str(tag.get("TagKey"), "TagKey", 1, 128)
        value = p.checked_str(tag.get("TagValue"), "TagValue", 0, 256)
        if key.lower().startswith("aws:"):
            raise KMSError("TagException", "Tags beginning with aws: are reserved.")
        result[key] = value
    return result


def store_tags(svc: "KeyService", rec: KeyRecord, new: dict[str, str]) -> None:
    merged = {**svc.tags.get(rec.key_id, {}), **new}
    if len(merged) > MAX_TAGS:
        raise KMSError("TagException", f"A KMS key can have at most {MAX_TAGS} tags.")
    svc.store.set_tags(rec.key_id, new)
    svc.tags[rec.key_id] = merged


def tag_resource(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    tags = tags_param(params, "Tags")
    rec = _managed_key(svc, params, ctx, "TagResource")
    svc.require_not_pending_deletion(rec)
    store_tags(svc, rec, tags)
    return {}


def untag_resource(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    keys = params.get("TagKeys")
    if not isinstance(keys, list) or not keys:
        raise validation("TagKeys must be a non-empty list.")
    for key in keys:
        p.checked_str(key, "TagKey", 1, 128)
    rec = _managed_key(svc, params, ctx, "UntagResource")
    svc.require_not_pending_deletion(rec)
    svc.store.delete_tags(rec.key_id, keys)
    current = svc.tags.get(rec.key_id, {})
    svc.tags[rec.key_id] = {k: v for k, v in current.items() if k not in keys}
    return {}


def list_resource_tags(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = _managed_key(svc, params, ctx, "ListResourceTags")
    tags = sorted(svc.tags.get(rec.key_id, {}).items())
    page, extra = p.paginate(tags, lambda kv: kv[0], params, default_limit=50, max_limit=50)
    return {"Tags": [{"TagKey": k, "TagValue": v} for k, v in page], **extra}


HANDLERS = {
    "CreateKey": create_key, "DescribeKey": describe_key, "ListKeys": list_keys,
    "EnableKey": enable_key, "DisableKey": disable_key, "UpdateKeyDescription": update_key_description,
    "ScheduleKeyDeletion": schedule_key_deletion, "CancelKeyDeletion": cancel_key_deletion,
    "CreateAlias": create_alias, "UpdateAlias": update_alias, "DeleteAlias": delete_alias,
    "ListAliases": list_aliases,
    "EnableKeyRotation": enable_key_rotation, "DisableKeyRotation": disable_key_rotation,
    "GetKeyRotationStatus": get_key_rotation_status, "RotateKeyOnDemand": rotate_key_on_demand,
    "ListKeyRotations": list_key_rotations,
    "GetKeyPolicy": get_key_policy, "PutKeyPolicy": put_key_policy, "ListKeyPolicies": list_key_policies,
    "TagResource": tag_resource, "UntagResource": untag_resource, "ListResourceTags": list_resource_tags,
}
