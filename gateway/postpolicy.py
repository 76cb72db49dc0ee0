"""POST object (browser form upload) authentication: the form's signature over its policy document, and
the policy's expiry and conditions checked against the form's fields.

A form upload carries no Authorization header: the page that made the form signed a base64 JSON *policy*
with the uploader's secret, and S3 checks that signature, then that the policy has not expired and that
every form field satisfies it (and is named by it: a field no condition covers is refused, so a page
cannot add metadata or change the encryption its policy did not allow). Two signature forms exist:

    SigV4:  x-amz-algorithm=AWS4-HMAC-SHA256, x-amz-credential=AKID/DATE/REGION/s3/aws4_request, x-amz-date,
            x-amz-signature = hex HMAC-SHA256(signing key of the credential scope, policy as sent)
    SigV2:  AWSAccessKeyId, signature = base64 HMAC-SHA1(secret, policy as sent)

Field names are case-insensitive (S3 treats them so): this module sees them lower-case. Every failure is
the S3 error S3 answers (code, status and message), raised as :class:`S3Error`.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

from common.digits import parse_decimal
from common.sigv4 import ALGORITHM, SIGNATURE_MISMATCH, signing_key
from common.sigv4 import _same_signature as same_signature  # one constant-time comparison for all schemes
from gateway.s3errors import S3Error, access_denied, entity_too_large, invalid_argument

# Fields no condition has to cover (S3's list), and the prefix of fields S3 ignores altogether.
EXEMPT_FIELDS = frozenset({"policy", "x-amz-signature", "signature", "file", "awsaccesskeyid"})
IGNORED_PREFIX = "x-ignore-"
V4_FIELDS = ("x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-signature")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_LENGTH_LIMIT = 2**63  # content-length-range bounds beyond any object size are read as "no bound"


@dataclass(frozen=True)
class Condition:
    """One policy condition: ``operator`` "eq" or "starts-with" on a form field (lower-case, no ``$``)."""

    operator: str
    field: str
    value: str
    shown: str  # as S3 quotes it in "Policy Condition failed: ..."


@dataclass(frozen=True)
class PostPolicy:
    """A decoded policy document."""

    expiration: float  # seconds since the epoch
    conditions: tuple[Condition, ...]
    length_range: tuple[int, int] | None  # content-length-range [min, max], inclusive


@dataclass(frozen=True)
class FormAuth:
    """Who signed the form (a configured gateway credential) and the policy the signature covers."""

    access_key: str
    scheme: str  # "v4-post" | "v2-post"
    policy: PostPolicy


def field_missing(name: str) -> S3Error:
    """S3's answer to a form without a field it needs (or with the field after the file, which S3 ignores)."""
    return invalid_argument(f"Bucket POST must contain a field named '{name}'.  If it is specified, please check "
                            "the order of the fields.", name, "")


def invalid_policy(detail: str) -> S3Error:
    return S3Error("InvalidPolicyDocument", f"Invalid Policy: {detail}", 400)


def policy_denied(detail: str) -> S3Error:
    return access_denied(f"Invalid according to Policy: {detail}")


# ---------------------------------------------------------------------------- signature


def authenticate_form(fields: Mapping[str, str], lookup_secret: Callable[[str], str | None], *,
                      region: str | None, now: float) -> FormAuth:
    """The form's signer, its signature over ``policy`` verified, and the decoded policy (not yet checked:
    :func:`check_policy`). ``fields``: the form's fields before the file, lower-case names.

    A form with neither a policy nor any signature field is anonymous: S3 accepts it only into a bucket
    that grants anonymous writes, which the gateway never writes on anyone's behalf, so 403 AccessDenied."""
    if "x-amz-signature" in fields or "x-amz-algorithm" in fields or "x-amz-credential" in fields:
        access_key = _verify_v4(fields, lookup_secret, region)
        scheme = "v4-post"
    elif "awsaccesskeyid" in fields or "signature" in fields:
        access_key = _verify_v2(fields, lookup_secret)
        scheme = "v2-post"
    elif "policy" in fields:
        raise field_missing("x-amz-signature")
    else:
        raise access_denied()
    return FormAuth(access_key, scheme, parse_policy(fields["policy"], now=now))


def _required(fields: Mapping[str, str], *names: str) -> None:
    for name in names:
        if not fields.get(name):
            raise field_missing(name)


def _secret(lookup_secret: Callable[[str], str | None], access_key: str) -> str:
    secret = lookup_secret(access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.",
                      403, AWSAccessKeyId=access_key)
    return secret


def _mismatch(access_key: str, policy: str, provided: str) -> S3Error:
    return S3Error("SignatureDoesNotMatch", SIGNATURE_MISMATCH, 403, AWSAccessKeyId=access_key,
                   StringToSign=policy, SignatureProvided=provided)


def _verify_v4(fields: Mapping[str, str], lookup_secret: Callable[[str], str | None], region: str | None) -> str:
    """The SigV4 form signature: scope checked as header authentication checks it (date, region, service)."""
    _required(fields, "policy", *V4_FIELDS)
    algorithm = fields["x-amz-algorithm"]
    if algorithm != ALGORITHM:
        raise invalid_argument(f'X-Amz-Algorithm only supports "{ALGORITHM}"', "x-amz-algorithm", algorithm)
    credential, amz_date = fields["x-amz-credential"], fields["x-amz-date"]
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise invalid_argument('Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; '
                               'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
                               "x-amz-credential", credential)
    access_key, date, scope_region, service = parts[:4]
    if not _AMZ_DATE.fullmatch(amz_date):
        raise invalid_argument("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
                               "x-amz-date", amz_date)
    if date != amz_date[:8]:
        raise _scope_error("Invalid credential date. Date is not the same as X-Amz-Date.", credential)
    if service != "s3":
        raise _scope_error(f'incorrect service "{service}". This endpoint belongs to "s3".', credential)
    if region is not None and scope_region != region:
        raise _scope_error(f"the region '{scope_region}' is wrong; expecting '{region}'", credential)
    secret = _secret(lookup_secret, access_key)
    policy, provided = fields["policy"], fields["x-amz-signature"]
    key = signing_key(secret, date, scope_region, service)
    expected = hmac.new(key, policy.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
    if not same_signature(expected, provided):
        raise _mismatch(access_key, policy, provided)
    return access_key


def _scope_error(detail: str, credential: str) -> S3Error:
    return invalid_argument(f"Error parsing the X-Amz-Credential parameter; {detail}", "x-amz-credential",
                            credential)


def _verify_v2(fields: Mapping[str, str], lookup_secret: Callable[[str], str | None]) -> str:
    """The SigV2 form signature: base64 HMAC-SHA1 of the policy with the secret itself."""
    _required(fields, "awsaccesskeyid", "policy", "signature")
    access_key, policy, provided = fields["awsaccesskeyid"], fields["policy"], fields["signature"]
    secret = _secret(lookup_secret, access_key)
    digest = hmac.new(secret.encode("utf-8", "surrogateescape"), policy.encode("utf-8", "surrogateescape"),
                      hashlib.sha1).digest()
    if not same_signature(base64.b64encode(digest).decode(), provided):
        raise _mismatch(access_key, policy, provided)
    return access_key


# ---------------------------------------------------------------------------- the policy document


def parse_policy(encoded: str, *, now: float) -> PostPolicy:
    """The base64 JSON policy: ``expiration`` (ISO 8601) and ``conditions``; anything else in it is ignored,
    as S3 does. Undecodable, or a condition S3 would not accept, is 400 InvalidPolicyDocument."""
    try:
        document = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError):
        raise invalid_policy("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise invalid_policy("Invalid JSON.")
    if "expiration" not in document:
        raise invalid_policy("Policy missing expiration.")
    expiration = _expiration(document["expiration"])
    conditions = document.get("conditions")
    if not isinstance(conditions, list):
        raise invalid_policy("Policy missing conditions." if conditions is None else "Invalid conditions.")
    parsed: list[Condition] = []
    length_range: tuple[int, int] | None = None
    for item in conditions:
        if isinstance(item, list) and item and isinstance(item[0], str) and item[0].lower() == "content-length-range":
            length_range = _length_range(item)
        else:
            parsed.append(_condition(item))
    return PostPolicy(expiration, tuple(parsed), length_range)


def _expiration(value: Any) -> float:
    if not isinstance(value, str):
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise invalid_policy(f"Invalid 'expiration' value: '{value}'")
    return moment.timestamp()


def _condition(item: Any) -> Condition:
    """``{"field": "value"}`` or ``["eq" | "starts-with", "$field", "value"]``."""
    if isinstance(item, dict):
        if len(item) != 1:
            raise invalid_policy("Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                                 "specified.")
        (name, value), = item.items()
        if not isinstance(value, str):
            raise invalid_policy(f"Invalid Simple-Condition: value must be a string: {json.dumps(item)}")
        return Condition("eq", name.lower().removeprefix("$"), value, json.dumps(["eq", f"${name}", value]))
    if not (isinstance(item, list) and len(item) == 3 and all(isinstance(part, str) for part in item)):
        raise invalid_policy(f"Invalid Condition: {json.dumps(item)}")
    operator, name, value = item
    if operator.lower() not in ("eq", "starts-with"):
        raise invalid_policy(f"Invalid Condition: unknown operation '{operator}'")
    if not name.startswith("$"):
        raise invalid_policy(f"Invalid Condition: field name must start with '$': {json.dumps(item)}")
    return Condition(operator.lower(), name[1:].lower(), value, json.dumps(item))


def _length_range(item: list[Any]) -> tuple[int, int]:
    """``["content-length-range", min, max]``: non-negative integers (numbers or decimal strings)."""
    bounds = [_bound(value) for value in item[1:]] if len(item) == 3 else []
    if len(bounds) != 2 or None in bounds:
        raise invalid_policy(f"Invalid content-length-range: {json.dumps(item)}")
    low, high = bounds
    assert low is not None and high is not None
    return low, high


def _bound(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return min(value, _LENGTH_LIMIT) if value >= 0 else None
    if isinstance(value, str):
        return parse_decimal(value.strip(), _LENGTH_LIMIT)
    return None


# ---------------------------------------------------------------------------- checking a form


def check_policy(policy: PostPolicy, fields: Mapping[str, str], *, now: float) -> None:
    """Expiry, every condition, and no field left uncovered: 403 AccessDenied "Invalid according to
    Policy: ..." as S3 answers. ``fields``: lower-case names, with ``bucket`` and the ``key`` as stored
    (``${filename}`` replaced)."""
    if now >= policy.expiration:
        raise policy_denied("Policy expired.")
    for condition in policy.conditions:
        if not _holds(condition, fields.get(condition.field, "")):
            raise policy_denied(f"Policy Condition failed: {condition.shown}")
    covered = {condition.field for condition in policy.conditions}
    extra = [name for name in fields
             if name not in covered and name not in EXEMPT_FIELDS and not name.startswith(IGNORED_PREFIX)
             and name != "bucket"]
    if extra:
        raise policy_denied(f"Extra input fields: {', '.join(extra)}")


def _holds(condition: Condition, value: str) -> bool:
    if condition.operator == "eq":
        return value == condition.value
    if condition.field == "content-type":  # S3: each of a comma-separated list of types must match
        return all(part.strip().startswith(condition.value) for part in value.split(","))
    return value.startswith(condition.value)


def check_length(policy: PostPolicy, length: int) -> None:
    """The file's size against ``content-length-range``: 400 EntityTooSmall / EntityTooLarge."""
    if policy.length_range is None:
        return
    low, high = policy.length_range
    if length > high:
        raise entity_too_large(high, length)
    if length < low:
        raise S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size", 400,
                      MinSizeAllowed=str(low), ProposedSize=str(length))
