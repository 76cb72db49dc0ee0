"""ListObjects, ListObjectsV2 and ListObjectVersions answers, exact for every object in every bucket.

The upstream lists stored sizes and ETags. An object the gateway encrypted is shown with its plaintext
size and client-visible ETag (gateway/etag.py), without ``<ChecksumAlgorithm>``/``<ChecksumType>``
(upstream checksums cover ciphertext); any other object (a legacy one, or a plain one in a pass-through
bucket) exactly as stored. Which is which is the object layer's to find out
(gateway/objects/listing.py: from the listing alone where it can, else from the object's metadata,
cached). Everything else (prefixes, tokens, url-encoded keys) is kept, and keys under the gateway's
reserved prefix (manifests, the bucket state) are hidden in every bucket.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from urllib.parse import unquote_plus

from aiohttp import web

from common.digits import parse_upstream_decimal
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import read_small, relay, response_headers
from gateway.objects.listing import ListedObject, Shown
from gateway.reserved import is_reserved_key
from gateway.s3xml import child, local, serialize
from gateway.sseheaders import SSE_HEADERS
from gateway.upstream import forwardable_headers

_ENTRY_TAGS = ("Contents", "Version", "DeleteMarker")
_OBJECT_TAGS = ("Contents", "Version")
_CIPHERTEXT_TAGS = ("ChecksumAlgorithm", "ChecksumType")


class ListingPage:
    """An upstream listing page: its reserved entries hidden, its object entries to be shown."""

    def __init__(self, root: ET.Element, url_encoded: bool) -> None:
        self.root = root
        self._url_encoded = url_encoded
        self._hide_reserved()
        self._objects = [(element, listed) for element in root if local(element.tag) in _OBJECT_TAGS
                         if (listed := self._listed(element)) is not None]

    @classmethod
    def parse(cls, body: bytes, *, url_encoded: bool = False) -> "ListingPage | None":
        """The page, or None for a body that is no XML (relayed as it came)."""
        try:
            return cls(ET.fromstring(body), url_encoded)
        except ET.ParseError:
            return None

    @property
    def objects(self) -> list[ListedObject]:
        return [listed for _, listed in self._objects]

    def show(self, shown: Sequence[Shown | None]) -> None:
        """Rewrite each object entry whose terms are given (encrypted objects); keep the others as stored."""
        for (element, _), terms in zip(self._objects, shown, strict=True):
            if terms is None:
                continue
            for item in list(element):
                if local(item.tag) in _CIPHERTEXT_TAGS:
                    element.remove(item)
            size, etag = child(element, "Size"), child(element, "ETag")
            assert size is not None and etag is not None
            size.text, etag.text = str(terms.size), terms.etag

    def body(self) -> bytes:
        return serialize(self.root)

    def _key(self, element: ET.Element, name: str = "Key") -> str:
        found = child(element, name)
        value = (found.text or "") if found is not None else ""
        return unquote_plus(value) if self._url_encoded else value  # S3 writes a space as "+"

    def _listed(self, element: ET.Element) -> ListedObject | None:
        size, etag = child(element, "Size"), child(element, "ETag")
        stored = None if size is None else parse_upstream_decimal(size.text or "")
        if etag is None or stored is None:
            return None
        version = child(element, "VersionId")
        version_id = None if version is None or version.text in (None, "", "null") else version.text
        return ListedObject(self._key(element), version_id, stored, etag.text or "")

    def _hide_reserved(self) -> None:
        hidden = 0
        for element in list(self.root):
            tag = local(element.tag)
            if tag in (*_ENTRY_TAGS, "CommonPrefixes"):
                name = self._key(element, "Prefix" if tag == "CommonPrefixes" else "Key")
                if is_reserved_key(name):
                    self.root.remove(element)
                    hidden += 1
        count = child(self.root, "KeyCount")
        listed = None if count is None else parse_upstream_decimal(count.text or "")
        if hidden and count is not None and listed is not None:
            count.text = str(max(0, listed - hidden))


def rewrite_listing(body: bytes, shown: Callable[[Sequence[ListedObject]], Sequence[Shown | None]], *,
                    url_encoded: bool = False) -> bytes:
    """``body`` with reserved keys hidden and each object shown as ``shown`` says (tests, fuzzing); an
    unparseable body is returned as it is."""
    page = ListingPage.parse(body, url_encoded=url_encoded)
    if page is None:
        return body
    page.show(shown(page.objects))
    return page.body()


async def list_objects(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Forward the listing; hide reserved keys and show every object in the terms its reader sees."""
    request = ctx.request
    headers = forwardable_headers(request.headers, drop=SSE_HEADERS)
    upstream = await ctx.upstream(gw).request(request.method, ctx.raw_path, ctx.query, headers)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        body = await read_small(upstream)
        answer_headers = response_headers(upstream.headers)
    page = ListingPage.parse(body, url_encoded=request.rel_url.query.get("encoding-type") == "url")
    if page is not None:
        page.show(await ctx.objects(gw).listing.shown(ctx.s3.bucket, page.objects))
        body = page.body()
    return web.Response(status=200, body=body, headers=answer_headers)
