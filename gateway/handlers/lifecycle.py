"""PutBucketLifecycleConfiguration: no rule may expire or transition the gateway's reserved keys.

A lifecycle rule acting on the whole bucket, or on a prefix of ``.s3gw/``, would have the upstream expire
the multipart manifests (making multipart objects unreadable) and the bucket state record, or move them to
an archive storage class the gateway cannot read synchronously. S3 filters cannot say "every key but
these", so a rule cannot be rewritten to spare the reserved prefix without changing what it does to the
client's own keys; such a rule is refused with 400 InvalidRequest naming the rule, before anything is sent
upstream.

The gateway and the upstream must read the same rules, so the document is parsed whole into a model
(`parse_lifecycle`) that follows S3's schema: an unknown element, a repeated singleton (two ``Prefix``,
two ``Filter``, two ``Expiration`` ...), a ``Filter`` with more than one condition, a rule with both a
``Filter`` and the older rule-level ``Prefix``, or text where elements belong is 400 MalformedXML, as on
S3. What is forwarded is XML rebuilt from the checked model (`render_lifecycle`), never the client's bytes.

Rules that cannot touch a reserved key pass:

- a prefix that neither is a prefix of ``.s3gw/`` nor starts with it (``logs/``), read both as sent and
  with surrounding white space stripped (an upstream may strip it: `` `` is then the whole bucket);
- a filter requiring a tag: the gateway's keys carry no tags and clients cannot tag them (reserved keys
  are refused on every path);
- rules with no action on current objects: AbortIncompleteMultipartUpload, the NoncurrentVersion* actions,
  and an Expiration that only removes expired delete markers (reserved keys are never overwritten, so they
  have no noncurrent versions worth keeping).

Object-size filters are not counted as protection (manifests are small and the record smaller).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Union

from aiohttp import web

from gateway.checksums import STRIPPED_HEADERS
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import relay, send_checked_body
from gateway.handlers.request_body import read_body
from gateway.sseheaders import SSE_HEADERS
from gateway.reserved import RESERVED_KEY_PREFIX
from gateway.s3errors import invalid_request, malformed_xml
from gateway.s3xml import S3_NS, local, parse_request, xml_text
from gateway.upstream import forwardable_headers

MAX_LIFECYCLE_BODY = 1024 * 1024  # S3 allows 1,000 rules; their XML stays far below this
MAX_RULES = 1000

# S3's LifecycleConfiguration schema: for each container element, its children as name -> (schema of
# that child, None for a text element; whether it may repeat).
Schema = dict[str, tuple[Union["Schema", None], bool]]
_TAG: Schema = {"Key": (None, False), "Value": (None, False)}
_AND: Schema = {"Prefix": (None, False), "Tag": (_TAG, True), "ObjectSizeGreaterThan": (None, False),
                "ObjectSizeLessThan": (None, False)}
_FILTER: Schema = {"Prefix": (None, False), "Tag": (_TAG, False), "ObjectSizeGreaterThan": (None, False),
                   "ObjectSizeLessThan": (None, False), "And": (_AND, False)}
_RULE: Schema = {
    "ID": (None, False),
    "Prefix": (None, False),
    "Filter": (_FILTER, False),
    "Status": (None, False),
    "Transition": ({"Date": (None, False), "Days": (None, False), "StorageClass": (None, False)}, True),
    "NoncurrentVersionTransition": ({"NoncurrentDays": (None, False), "StorageClass": (None, False),
                                     "NewerNoncurrentVersions": (None, False)}, True),
    "Expiration": ({"Date": (None, False), "Days": (None, False), "ExpiredObjectDeleteMarker": (None, False)},
                   False),
    "NoncurrentVersionExpiration": ({"NoncurrentDays": (None, False), "NewerNoncurrentVersions": (None, False)},
                                    False),
    "AbortIncompleteMultipartUpload": ({"DaysAfterInitiation": (None, False)}, False),
}
_CONFIGURATION: Schema = {"Rule": (_RULE, True)}


@dataclass(frozen=True)
class Node:
    """One checked element: its name and either its text or its children (in document order)."""

    name: str
    text: str | None = None
    children: tuple["Node", ...] = ()

    def get(self, name: str) -> "Node | None":
        return next((item for item in self.children if item.name == name), None)

    def all(self, name: str) -> list["Node"]:
        return [item for item in self.children if item.name == name]

    def has(self, name: str) -> bool:
        return self.get(name) is not None


def _node(element: ET.Element, schema: Schema | None) -> Node:
    """``element`` checked against ``schema``; MalformedXML for anything S3's schema does not allow."""
    name = local(element.tag)
    if schema is None:  # a text element
        if len(element):
            raise malformed_xml()
        return Node(name, text=element.text or "")
    if (element.text or "").strip() or any((item.tail or "").strip() for item in element):
        raise malformed_xml()
    children: list[Node] = []
    seen: set[str] = set()
    for item in element:
        if not isinstance(item.tag, str):  # comments and processing instructions
            continue
        child_name = local(item.tag)
        if child_name not in schema or (child_name in seen and not schema[child_name][1]):
            raise malformed_xml()
        seen.add(child_name)
        children.append(_node(item, schema[child_name][0]))
    return Node(name, children=tuple(children))


def parse_lifecycle(body: bytes) -> Node:
    """The configuration as a model of its rules; 400 MalformedXML for a document S3 would not accept."""
    root = _node(parse_request(body, "LifecycleConfiguration"), _CONFIGURATION)
    rules = root.all("Rule")
    if not rules or len(rules) > MAX_RULES:
        raise malformed_xml()
    for rule in rules:
        if not rule.has("Status") or (rule.has("Filter") and rule.has("Prefix")):
            raise malformed_xml()
        found = rule.get("Filter")
        if found is not None and len(found.children) > 1:  # Filter holds one condition (or And of several)
            raise malformed_xml()
    return root


def _render(node: Node) -> str:
    if node.text is not None:
        return f"<{node.name}>{xml_text(node.text)}</{node.name}>"
    return f"<{node.name}>{''.join(_render(item) for item in node.children)}</{node.name}>"


def render_lifecycle(root: Node) -> bytes:
    """The document the upstream gets: exactly the checked model, in the S3 namespace."""
    inner = "".join(_render(rule) for rule in root.children)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<LifecycleConfiguration xmlns="{S3_NS}">{inner}</LifecycleConfiguration>').encode()


def rule_scope(rule: Node) -> tuple[str, bool]:
    """The key prefix a rule applies to ("" = every key) and whether it also requires a tag."""
    found = rule.get("Filter")
    if found is None:  # the older form: <Rule><Prefix> (or neither: the whole bucket)
        prefix = rule.get("Prefix")
        return (prefix.text or "") if prefix else "", False
    conjunction = found.get("And")
    scope = conjunction if conjunction is not None else found
    prefix = scope.get("Prefix")
    return (prefix.text or "") if prefix else "", scope.has("Tag")


def acts_on_current_objects(rule: Node) -> bool:
    """Expiration after some days or at a date, or any Transition: what would remove or archive a manifest."""
    expiration = rule.get("Expiration")
    expires = expiration is not None and (expiration.has("Days") or expiration.has("Date"))
    return expires or rule.has("Transition")


def prefix_could_match_reserved(prefix: str) -> bool:
    """Whether a rule's prefix, as sent or stripped of surrounding white space, could cover a reserved key."""
    return any(RESERVED_KEY_PREFIX.startswith(form) or form.startswith(RESERVED_KEY_PREFIX)
               for form in {prefix, prefix.strip()})


def could_touch_reserved_keys(rule: Node) -> bool:
    prefix, needs_tag = rule_scope(rule)
    if needs_tag or not acts_on_current_objects(rule):
        return False
    return prefix_could_match_reserved(prefix)


def check_lifecycle(body: bytes) -> bytes:
    """The document to forward, rebuilt from the checked rules; 400 MalformedXML for one outside S3's
    schema, 400 InvalidRequest for the first rule that could expire or transition a reserved key."""
    root = parse_lifecycle(body)
    for number, rule in enumerate(root.all("Rule"), 1):
        if could_touch_reserved_keys(rule):
            found = rule.get("ID")
            name = found.text if found is not None and found.text else f"number {number}"
            raise invalid_request(
                f"Lifecycle rule {name} could expire or transition keys under {RESERVED_KEY_PREFIX}, which the "
                f"encrypting gateway reserves for its own data. Give the rule a prefix that cannot match "
                f"{RESERVED_KEY_PREFIX} (or a tag filter).")
    return render_lifecycle(root)


async def put_bucket_lifecycle(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Check the configuration, then forward the document rebuilt from what was checked."""
    body = check_lifecycle(await read_body(ctx, MAX_LIFECYCLE_BODY))
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *STRIPPED_HEADERS))
    upstream = await send_checked_body(gw, ctx, "PUT", ctx.query, body, headers)
    async with upstream:
        return await relay(ctx, upstream)
