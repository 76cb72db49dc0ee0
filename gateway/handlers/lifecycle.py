"""PutBucketLifecycleConfiguration: no rule may expire or transition the gateway's reserved keys.

A lifecycle rule acting on the whole bucket, or on a prefix of ``.s3gw/``, would have the upstream expire
the multipart manifests (making multipart objects unreadable) and the bucket state record, or move them to
an archive storage class the gateway cannot read synchronously. S3 filters cannot say "every key but
these", so a rule cannot be rewritten to spare the reserved prefix without changing what it does to the
client's own keys; such a rule is refused with 400 InvalidRequest naming the rule, before anything is sent
upstream. Rules that cannot touch a reserved key pass through unchanged:

- a prefix that neither is a prefix of ``.s3gw/`` nor starts with it (``logs/``);
- a filter requiring a tag: the gateway's keys carry no tags and clients cannot tag them (reserved keys
  are refused on every path);
- rules with no action on current objects: AbortIncompleteMultipartUpload, the NoncurrentVersion* actions,
  and an Expiration that only removes expired delete markers (reserved keys are never overwritten, so they
  have no noncurrent versions worth keeping).

Object-size filters are not counted as protection (manifests are small and the record smaller).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from aiohttp import web

from gateway.checksums import STRIPPED_HEADERS
from gateway.handlers.buckets import send_checked_body
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.passthrough import relay
from gateway.handlers.upload_body import read_body
from gateway.policy import SSE_HEADERS
from gateway.reserved import RESERVED_KEY_PREFIX
from gateway.s3errors import invalid_request
from gateway.s3xml import child, children, parse_request, text
from gateway.upstream import forwardable_headers

MAX_LIFECYCLE_BODY = 1024 * 1024  # S3 allows 1,000 rules; their XML stays far below this


def rule_scope(rule: ET.Element) -> tuple[str, bool]:
    """The key prefix a rule applies to ("" = every key) and whether it also requires a tag."""
    found = child(rule, "Filter")
    if found is None:  # the older form: <Rule><Prefix>
        return text(rule, "Prefix") or "", False
    conjunction = child(found, "And")
    scope = conjunction if conjunction is not None else found
    return text(scope, "Prefix") or "", any(True for _ in children(scope, "Tag"))


def acts_on_current_objects(rule: ET.Element) -> bool:
    """Expiration after some days or at a date, or any Transition: what would remove or archive a manifest."""
    expiration = child(rule, "Expiration")
    expires = expiration is not None and (child(expiration, "Days") is not None
                                          or child(expiration, "Date") is not None)
    return expires or child(rule, "Transition") is not None


def could_touch_reserved_keys(rule: ET.Element) -> bool:
    prefix, needs_tag = rule_scope(rule)
    if needs_tag or not acts_on_current_objects(rule):
        return False
    return RESERVED_KEY_PREFIX.startswith(prefix) or prefix.startswith(RESERVED_KEY_PREFIX)


def check_lifecycle(body: bytes) -> None:
    """400 InvalidRequest for the first rule that could expire or transition a reserved key."""
    root = parse_request(body, "LifecycleConfiguration")
    for number, rule in enumerate(children(root, "Rule"), 1):
        if could_touch_reserved_keys(rule):
            name = text(rule, "ID") or f"number {number}"
            raise invalid_request(
                f"Lifecycle rule {name} could expire or transition keys under {RESERVED_KEY_PREFIX}, which the "
                f"encrypting gateway reserves for its own data. Give the rule a prefix that cannot match "
                f"{RESERVED_KEY_PREFIX} (or a tag filter).")


async def put_bucket_lifecycle(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Check the configuration, then forward exactly the bytes checked."""
    body = await read_body(ctx, MAX_LIFECYCLE_BODY)
    check_lifecycle(body)
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *STRIPPED_HEADERS))
    upstream = await send_checked_body(gw, ctx, "PUT", ctx.query, body, headers)
    async with upstream:
        return await relay(ctx, upstream)
