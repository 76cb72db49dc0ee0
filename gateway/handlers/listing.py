"""ListObjects, ListObjectsV2 and ListObjectVersions responses rewritten into plaintext terms.

The upstream lists ciphertext sizes and ETags; clients plan downloads and syncs from ``<Size>`` and
compare ``<ETag>``, so in an encrypting bucket each entry gets the plaintext size and the
client-visible ETag (gateway/etag.py), and ``<ChecksumAlgorithm>`` is dropped because upstream
checksums cover ciphertext. Everything else (prefixes, tokens, url-encoded keys) is kept.

Limitation: the listing alone cannot tell a legacy plaintext object inside an encrypting bucket
from an encrypted one. An entry is rewritten when its size is a possible ciphertext size, so a
legacy object whose size happens to be one is shown with a wrong size and ETag (HEAD/GET are right).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Callable

from aiohttp import web

from gateway.crypto.stream import plaintext_size
from gateway.etag import client_etag
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.passthrough import read_small, relay, response_headers
from gateway.policy import SSE_HEADERS
from gateway.upstream import forwardable_headers

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
ET.register_namespace("", S3_NS)
_ENTRY_TAGS = ("Contents", "Version")
_DROPPED_TAGS = ("ChecksumAlgorithm", "ChecksumType")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(entry: ET.Element, name: str) -> ET.Element | None:
    for child in entry:
        if _local(child.tag) == name:
            return child
    return None


def _rewrite_entry(entry: ET.Element, plaintext_size: Callable[[int], int]) -> None:
    for child in list(entry):
        if _local(child.tag) in _DROPPED_TAGS:
            entry.remove(child)
    size = _child(entry, "Size")
    if size is None or not (size.text or "").strip().isdigit():
        return
    try:
        plain = plaintext_size(int(size.text))
    except ValueError:
        return
    size.text = str(plain)
    etag = _child(entry, "ETag")
    if etag is not None and etag.text:
        etag.text = client_etag(etag.text)


def rewrite_listing(body: bytes, plaintext_size: Callable[[int], int]) -> bytes:
    """The list body with every object entry in plaintext terms; unparseable bodies are returned as is."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body
    for entry in root:
        if _local(entry.tag) in _ENTRY_TAGS:
            _rewrite_entry(entry, plaintext_size)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


async def list_objects(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Forward the listing; in an encrypting bucket rewrite a successful answer into plaintext terms."""
    request = ctx.request
    headers = forwardable_headers(request.headers, drop=SSE_HEADERS)
    upstream = await gw.upstream.request(request.method, ctx.raw_path, ctx.query, headers)
    async with upstream:
        if upstream.status != 200 or gw.config.bucket_policy(ctx.s3.bucket).encryption == "passthrough":
            return await relay(ctx, upstream)
        body = rewrite_listing(await read_small(upstream), plaintext_size)
        return web.Response(status=200, body=body, headers=response_headers(upstream.headers))
