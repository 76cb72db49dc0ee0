"""Grants: what a grant allows, its constraints, and the validation of CreateGrant parameters."""

import base64
import hashlib
import json
from typing import Any

from .errors import KMSError, validation
from .params import shown

GRANT_OPERATIONS = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "Sign", "Verify", "GetPublicKey", "CreateGrant", "RetireGrant", "DescribeKey",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateMac", "VerifyMac",
    "DeriveSharedSecret",
})
# Operations a grant may only carry when the key can do them (AWS rejects the others).
_CONTEXT_OPERATIONS = frozenset({
    "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "ReEncryptFrom",
    "ReEncryptTo", "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
})


def validate_create(params: dict[str, Any]) -> None:
    """AWS's CreateGrant parameter rules (the key checks are the service's)."""
    grantee = params.get("GranteePrincipal")
    if not isinstance(grantee, str) or not 1 <= len(grantee) <= 256:
        raise validation("GranteePrincipal is required (1-256 characters).")
    operations = params.get("Operations")
    if not isinstance(operations, list) or not operations:
        raise validation("Operations is required and must be a non-empty list.")
    bad = [op for op in operations if not isinstance(op, str) or op not in GRANT_OPERATIONS]
    if bad:
        raise validation(f"Value {[shown(op) for op in bad]} at 'operations' failed to satisfy constraint: "
                         f"Member must satisfy enum value set: {sorted(GRANT_OPERATIONS)}")
    constraints = params.get("Constraints") or {}
    if not isinstance(constraints, dict) or set(constraints) - {"EncryptionContextEquals", "EncryptionContextSubset"}:
        raise validation("Constraints may hold EncryptionContextEquals and EncryptionContextSubset maps.")
    for value in constraints.values():
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise validation("Grant constraints must be string-to-string maps.")
    if constraints and set(operations) - _CONTEXT_OPERATIONS:
        raise validation("Encryption context constraints are only allowed on cryptographic operations "
                         "that take an encryption context.")
    for field in ("Name", "RetiringPrincipal"):
        value = params.get(field)
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 256):
            raise validation(f"{field} must be 1-256 characters.")


def same_request(grant: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether a named CreateGrant repeats an existing grant (AWS then returns the same grant)."""
    return all(grant.get(field) == params.get(field) for field in
               ("Name", "GranteePrincipal", "RetiringPrincipal")) and \
        sorted(grant["Operations"]) == sorted(params["Operations"]) and \
        (grant.get("Constraints") or {}) == (params.get("Constraints") or {})


def idempotency_id(key_id: str, params: dict[str, Any], foreign_issuer: str | None = None) -> str:
    """A stable grant id for a named grant, so repeating CreateGrant returns the same id. A grant issued
    by another account than the key's is a different grant (the owner's ids are unchanged)."""
    fields: list[Any] = [key_id, params.get("Name"), params["GranteePrincipal"], params.get("RetiringPrincipal"),
                         sorted(params["Operations"]), params.get("Constraints") or {}]
    if foreign_issuer is not None:
        fields.append(foreign_issuer)
    material = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def make_token(grant_id: str, secret: bytes) -> str:
    """An opaque grant token naming its grant."""
    return base64.urlsafe_b64encode(grant_id.encode() + b"." + secret).decode().rstrip("=")


def token_grant_id(token: Any) -> str | None:
    """The grant id inside a token we issued, or None for garbage."""
    if not isinstance(token, str) or not 1 <= len(token) <= 8192:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except ValueError:
        return None
    grant_id, dot, _ = raw.partition(b".")
    return grant_id.decode("ascii", "replace") if dot else None


def allows(grant: dict[str, Any], principal_arn: str, operation: str, context: dict[str, str] | None) -> bool:
    """Whether this grant lets `principal_arn` run `operation` with this encryption context."""
    if grant["GranteePrincipal"] != principal_arn or operation not in grant["Operations"]:
        return False
    constraints = grant.get("Constraints") or {}
    context = context or {}
    equals = constraints.get("EncryptionContextEquals")
    if equals is not None and context != equals:
        return False
    subset = constraints.get("EncryptionContextSubset")
    return subset is None or all(context.get(k) == v for k, v in subset.items())


def check_grant_tokens(tokens: Any) -> None:
    """GrantTokens must be a list (<= 10) of tokens this service issued."""
    if tokens is None:
        return
    if not isinstance(tokens, list) or len(tokens) > 10:
        raise validation("GrantTokens must be a list of at most 10 tokens.")
    for token in tokens:
        if token_grant_id(token) is None:
            raise KMSError("InvalidGrantTokenException", "The grant token is not valid.")
