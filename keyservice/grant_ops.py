"""Grant operations: CreateGrant, ListGrants, RetireGrant, RevokeGrant, ListRetirableGrants."""

import os
import uuid
from typing import TYPE_CHECKING, Any

from . import grants
from . import params as p
from .errors import KMSError, validation
from .principals import principal_account

if TYPE_CHECKING:
    from .service import CallContext, KeyService

# Grant operations each kind of key can carry (AWS refuses the rest with ValidationException).
_OPERATIONS_BY_USAGE = {
    "ENCRYPT_DECRYPT": {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
                        "ReEncryptFrom", "ReEncryptTo", "GenerateDataKeyPair",
                        "GenerateDataKeyPairWithoutPlaintext", "GetPublicKey"},
    "SIGN_VERIFY": {"Sign", "Verify", "GetPublicKey"},
    "GENERATE_VERIFY_MAC": {"GenerateMac", "VerifyMac"},
}
_ALWAYS = {"CreateGrant", "RetireGrant", "DescribeKey"}


def create_grant(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    grants.validate_create(params)
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=False)
    svc.authorize(rec, "CreateGrant", ctx, grant_tokens=params.get("GrantTokens"))
    svc.require_not_pending_deletion(rec)
    unsupported = set(params["Operations"]) - _OPERATIONS_BY_USAGE[rec.key_usage] - _ALWAYS
    if unsupported:
        raise validation(f"Grant operations {sorted(unsupported)} are not valid for {rec.arn}.")
    name = params.get("Name")
    # AWS records the account of the principal that created the grant (GrantListEntry.IssuingAccount:
    # "the account under which the grant was issued"), which may be another account than the key's.
    issuing_account = f"arn:aws:iam::{ctx.account_id}:root"
    foreign = issuing_account if svc.is_foreign(ctx) else None
    grant_id = (grants.idempotency_id(rec.key_id, params, foreign) if name
                else uuid.uuid4().hex + uuid.uuid4().hex)
    existing = svc.grants.get(grant_id)
    if existing is not None and grants.same_request(existing, params):
        return {"GrantId": grant_id, "GrantToken": existing["Token"]}
    grant = {
        "KeyId": rec.key_id, "GrantId": grant_id, "Name": name, "CreationDate": svc.now(),
        "GranteePrincipal": params["GranteePrincipal"], "RetiringPrincipal": params.get("RetiringPrincipal"),
        "IssuingAccount": issuing_account, "Operations": list(params["Operations"]),
        "Constraints": params.get("Constraints") or None, "Token": grants.make_token(grant_id, os.urandom(24)),
    }
    svc.store.put_grant(grant_id, grant)
    svc.grants[grant_id] = grant
    return {"GrantId": grant_id, "GrantToken": grant["Token"]}


def _grant_entry(svc: "KeyService", grant: dict[str, Any]) -> dict[str, Any]:
    """A GrantListEntry: the stored grant without its token, KeyId as an ARN, no null fields."""
    entry = {k: v for k, v in grant.items() if k != "Token" and v is not None}
    entry["KeyId"] = svc.key_arn(grant["KeyId"])
    return entry


def _grant_page(svc: "KeyService", selected: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    ordered = sorted(selected, key=lambda g: g["GrantId"])
    page, extra = p.paginate(ordered, lambda g: g["GrantId"], params, default_limit=50, max_limit=100)
    return {"Grants": [_grant_entry(svc, g) for g in page], **extra}


def list_grants(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=False)
    svc.authorize(rec, "ListGrants", ctx)
    grant_id = p.optional_str(params, "GrantId", 1, 128)
    grantee = p.optional_str(params, "GranteePrincipal", 1, 256)
    selected = [g for g in svc.grants.values() if g["KeyId"] == rec.key_id
                and grant_id in (None, g["GrantId"]) and grantee in (None, g["GranteePrincipal"])]
    return _grant_page(svc, selected, params)


def list_retirable_grants(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """AWS: "You must specify a principal in your AWS account"; the answer holds every grant with that
    retiring principal, whichever account owns the key, and needs no permission in the key's account.
    So any caller may list for a principal of its own account, and none for another account's."""
    principal = p.required_str(params, "RetiringPrincipal", 256)
    if principal_account(principal) != ctx.account_id:
        raise KMSError("AccessDeniedException", f"User: {ctx.principal_arn} is not authorized to perform: "
                                                f"kms:ListRetirableGrants on resource: {principal}")
    selected = [g for g in svc.grants.values() if g.get("RetiringPrincipal") == principal]
    return _grant_page(svc, selected, params)


def _find_grant(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    """The grant named by GrantToken, or by KeyId + GrantId."""
    token = params.get("GrantToken")
    if token is not None:
        grant_id = grants.token_grant_id(token)
        if grant_id is None:
            raise KMSError("InvalidGrantTokenException", "The grant token is not valid.")
        grant = svc.grants.get(grant_id)
        if grant is None or grant["Token"] != token:
            raise KMSError("NotFoundException", "Grant not found.")
        ctx.key_arn = svc.key_arn(grant["KeyId"])
        return grant
    if params.get("KeyId") is None or params.get("GrantId") is None:
        raise validation("Specify GrantToken, or both KeyId and GrantId.")
    rec = svc.resolve(params["KeyId"], ctx, alias_ok=False)
    grant = svc.grants.get(p.checked_str(params["GrantId"], "GrantId", 1, 128))
    if grant is None or grant["KeyId"] != rec.key_id:
        raise KMSError("NotFoundException", f"Grant ID {params['GrantId']} not found.")
    return grant


def _delete_grant(svc: "KeyService", grant: dict[str, Any]) -> dict[str, Any]:
    svc.store.delete_grant(grant["GrantId"])
    del svc.grants[grant["GrantId"]]
    return {}


def retire_grant(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    grant = _find_grant(svc, params, ctx)
    # AWS: the retiring principal, the grantee if the grant allows RetireGrant, and the account in which
    # the grant was created (its IssuingAccount, as root).
    may_retire = (ctx.principal_arn == grant.get("RetiringPrincipal")
                  or (ctx.principal_arn == grant["GranteePrincipal"] and "RetireGrant" in grant["Operations"])
                  or ctx.principal_arn == grant["IssuingAccount"])
    if not may_retire:
        raise KMSError("AccessDeniedException", f"User: {ctx.principal_arn} is not authorized to perform: "
                                                f"kms:RetireGrant on grant {grant['GrantId']}")
    return _delete_grant(svc, grant)


def revoke_grant(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    p.required_str(params, "GrantId", 128)
    rec = svc.resolve(params.get("KeyId"), ctx, alias_ok=False)
    svc.authorize(rec, "RevokeGrant", ctx)
    return _delete_grant(svc, _find_grant(svc, {"KeyId": params["KeyId"], "GrantId": params["GrantId"]}, ctx))


HANDLERS = {
    "CreateGrant": create_grant, "ListGrants": list_grants, "ListRetirableGrants": list_retirable_grants,
    "RetireGrant": retire_grant, "RevokeGrant": revoke_grant,
}
