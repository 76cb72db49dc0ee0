"""ListObjects, ListObjectsV2 and ListObjectVersions responses rewritten into plaintext terms.

The upstream lists ciphertext sizes and ETags; clients plan downloads and syncs from ``<Size>`` and
compare ``<ETag>``, so in an encrypting bucket each entry gets the plaintext size and the
client-visible ETag (gateway/etag.py), and ``<ChecksumAlgorithm>`` is dropped because upstream
checksums cover ciphertext. Everything else (prefixes, tokens, url-encoded keys) is kept.

Multipart objects (an ETag ending in ``-k``) lose k * PART_OVERHEAD (gateway/objects/plaintext.py).
Keys under the gateway's reserved prefix (multipart manifests) are hidden in every bucket.

Limitation: the listing alone cannot tell a legacy plaintext object inside an encrypting bucket
from an encrypted one. An entry is rewritten when its size is a possible ciphertext size, so a
legacy object whose size happens to be one is shown with a wrong size and ETag (HEAD/GET are right).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import unquote

from aiohttp import web

from common.digits import parse_upstream_decimal
from gateway.etag import client_etag
from gateway.handlers.context import Gateway, RequestContext
from gateway.objects.plaintext import listed_plaintext_size
from gateway.handlers.relaying import read_small, relay, response_headers
from gateway.sseheaders import SSE_HEADERS
from gateway.reserved import is_reserved_key
from gateway.s3xml import child, local, serialize
from gateway.upstream import forwardable_headers

_ENTRY_TAGS = ("Contents", "Version", "DeleteMarker")
_DROPPED_TAGS = ("ChecksumAlgorithm", "ChecksumType")


def _rewrite_entry(entry: ET.Element) -> None:
    for item in list(entry):
        if local(item.tag) in _DROPPED_TAGS:
            entry.remove(item)
    size, etag = child(entry, "Size"), child(entry, "ETag")
    stored = None if size is None else parse_upstream_decimal(size.text or "")
    if size is None or etag is None or stored is None:
        return
    try:
        size.text = str(listed_plaintext_size(stored, etag.text or ""))
    except ValueError:
        return
    etag.text = client_etag(etag.text or "")


def _is_reserved(element: ET.Element, url_encoded: bool) -> bool:
    """An entry or common prefix under the gateway's reserved prefix (manifests)."""
    name = child(element, "Key" if local(element.tag) != "CommonPrefixes" else "Prefix")
    value = (name.text or "") if name is not None else ""
    return is_reserved_key(unquote(value) if url_encoded else value)


def rewrite_listing(body: bytes, *, encrypting: bool, url_encoded: bool = False) -> bytes:
    """The list body without the gateway's reserved keys and, in an encrypting bucket, with every
    object entry in plaintext terms; unparseable bodies are returned as is."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return body
    hidden = 0
    for entry in list(root):
        tag = local(entry.tag)
        if tag in (*_ENTRY_TAGS, "CommonPrefixes") and _is_reserved(entry, url_encoded):
            root.remove(entry)
            hidden += 1
        elif encrypting and tag in _ENTRY_TAGS:
            _rewrite_entry(entry)
    count = child(root, "KeyCount")
    listed = None if count is None else parse_upstream_decimal(count.text or "")
    if hidden and count is not None and listed is not None:
        count.text = str(max(0, listed - hidden))
    return serialize(root)


async def list_objects(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Forward the listing; hide reserved keys, and in an encrypting bucket rewrite it into plaintext terms."""
    request = ctx.request
    headers = forwardable_headers(request.headers, drop=SSE_HEADERS)
    upstream = await gw.upstream.request(request.method, ctx.raw_path, ctx.query, headers)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        encrypting = gw.config.bucket_policy(ctx.s3.bucket).encryption != "passthrough"
        body = rewrite_listing(await read_small(upstream), encrypting=encrypting,
                               url_encoded=request.rel_url.query.get("encoding-type") == "url")
        return web.Response(status=200, body=body, headers=response_headers(upstream.headers))
