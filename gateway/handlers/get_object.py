"""GetObject and HeadObject: the plaintext of any object (whole, a Range, a partNumber), as S3 answers.

The object layer (gateway/objects/reading.py) reads and decrypts; this module parses the request
(conditions, Range, partNumber, SSE-C key) and renders the answer. A plain GET reads metadata and body
in one upstream request; HEAD, ranged and part reads read the metadata first, since the plan needs
the plaintext size.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.crypto.metadata import Multipart, SingleStream
from gateway.crypto.multipart import Manifest
from gateway.crypto.sse import CustomerKey, KmsSeal, SseMode

from gateway.handlers.conditions import CONDITIONAL_HEADERS, evaluate_conditions
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import relay_object, response_headers, send_stream, stored_answer
from gateway.objects.reading import StoredObject
from gateway.objects.plaintext import Span
from gateway.ranges import requested_range
from gateway.s3errors import access_denied, invalid_request, precondition_failed
from gateway.sseheaders import SSE_HEADERS, mode_headers
from gateway.upstream import forwardable_headers

# Upstream answer headers that describe the stored bytes, not the plaintext answer; an encrypted
# object's also the upstream's own encryption (the gateway reports its own).
_STORED_HEADERS = ("content-length", "content-range", "etag", "content-md5", "x-amz-checksum-*",
                   "x-amz-mp-parts-count")
_CIPHERTEXT_HEADERS = (*_STORED_HEADERS, "x-amz-server-side-encryption*")
_LEGACY_WHOLE_DROPPED = tuple(name for name in _STORED_HEADERS if name != "x-amz-checksum-*")


async def get_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """GET and HEAD of one object."""
    query = ctx.request.rel_url.query
    by_part = "partNumber" in query
    if by_part and "range" in ctx.request.headers:
        raise invalid_request("Cannot specify both Range header and partNumber query parameter")
    whole = ctx.request.method == "GET" and "range" not in ctx.request.headers and not by_part
    reader = ctx.objects(gw).anonymous_reader if ctx.anonymous else ctx.objects(gw).reader
    async with reader.stat(ctx.object_ref(), with_body=whole, error_body=not ctx.is_head,
                           headers=_upstream_headers(ctx)) as stored:
        if ctx.anonymous and stored.info is not None and stored.info.mode is not SseMode.S3:
            raise access_denied()  # S3 serves SSE-KMS and SSE-C objects to no anonymous reader
        not_modified = _check_conditions(ctx, stored)
        if not_modified is not None:
            return not_modified
        if by_part and not stored.encrypted:
            return await _legacy_part(ctx, stored, ctx.part_number())
        customer_key = ctx.customer_key(gw) if stored.encrypted else None
        checksum_wanted = _checksum_wanted(ctx, stored, by_part)
        if ctx.is_head and not by_part and customer_key is None and stored.info is not None \
                and isinstance(stored.info.seal, KmsSeal) and not checksum_wanted:
            # S3 asks no kms:Decrypt of a HEAD: nothing is unwrapped, the metadata (its size checked
            # against the stored length) answers it
            span = requested_range(ctx.request.headers.get("range"), stored.size)
            return await _head_answer(ctx, _answer(stored, stored.size, None, span, customer_key, by_part))
        opened = await stored.open(customer_key, requester=ctx.requester(gw),
                                   with_manifest=by_part or not ctx.is_head or checksum_wanted)
        span = opened.part_span(ctx.part_number()) if by_part else requested_range(
            ctx.request.headers.get("range"), opened.size)
        answer = _answer(stored, opened.size, opened.manifest, span, customer_key, by_part)
        if checksum_wanted and span is None and (checksum := opened.checksum) is not None:
            answer["headers"].update({checksum.header: checksum.value, "x-amz-checksum-type": checksum.kind})
        if ctx.is_head:
            return await _head_answer(ctx, answer)
        response = web.StreamResponse(**answer)
        return await send_stream(ctx, response, opened.chunks(span))


async def _head_answer(ctx: RequestContext, answer: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(**answer)
    await response.prepare(ctx.request)
    await response.write_eof()
    return response


async def _legacy_part(ctx: RequestContext, stored: StoredObject, number: int) -> web.StreamResponse:
    """A part of an object the gateway did not encrypt: the upstream knows its parts; read pinned."""
    if ctx.is_head:
        head = await stored.pinned_head(number)
        response = stored_answer(206 if "Content-Range" in head.headers else 200, head.headers, ("x-amz-checksum-*",))
        await response.prepare(ctx.request)
        await response.write_eof()
        return response
    async with stored.pinned_get(part_number=number) as body:
        return await relay_object(ctx, body, drop=("x-amz-checksum-*",))


def _checksum_wanted(ctx: RequestContext, stored: StoredObject, by_part: bool) -> bool:
    """``x-amz-checksum-mode: ENABLED`` on a read of a whole encrypted object that may have a stored checksum
    (a single-stream object says so in its metadata; a multipart object's manifest tells). S3 gives a
    whole object's checksum only on a whole read: a range's bytes would not match it."""
    if ctx.request.headers.get("x-amz-checksum-mode", "").upper() != "ENABLED" or by_part:
        return False
    layout = stored.info.layout if stored.info is not None else None
    return isinstance(layout, Multipart) or (isinstance(layout, SingleStream) and layout.sealed_checksum is not None)


def _upstream_headers(ctx: RequestContext) -> dict[str, str]:
    """The client's headers that still mean something to the metadata read (x-amz-expected-bucket-owner,
    request payer ...); conditions, Range, partNumber and SSE are the gateway's own to serve."""
    return forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *CONDITIONAL_HEADERS, "range"))


def _check_conditions(ctx: RequestContext, stored: StoredObject) -> web.Response | None:
    """S3's conditional GET on the client-visible ETag: 412 as an S3 error naming the failed
    condition, 304 with the validators and no body (returned), None to serve the object."""
    outcome = evaluate_conditions(ctx.request.headers, stored.etag, stored.last_modified)
    if outcome == 412:
        raise precondition_failed("If-Match" if "if-match" in ctx.request.headers else "If-Unmodified-Since")
    if outcome == 304:
        validators = {"ETag": stored.etag, **({"Last-Modified": stored.last_modified} if stored.last_modified else {})}
        return web.Response(status=304, headers=validators)
    return None


def _answer(stored: StoredObject, size: int, manifest: Manifest | None, span: Span | None,
            customer_key: CustomerKey | None, by_part: bool) -> dict[str, Any]:
    """Status and headers of the plaintext answer: sizes, range, ETag and SSE headers in plaintext terms."""
    # A legacy object's checksums are the plaintext's own (the upstream's, asked with x-amz-checksum-mode):
    # kept for a whole read, never for a range or a part.
    legacy_drop = _STORED_HEADERS if span is not None or by_part else _LEGACY_WHOLE_DROPPED
    headers = response_headers(stored.head.headers, drop=_CIPHERTEXT_HEADERS if stored.encrypted else legacy_drop)
    headers.update({"ETag": stored.etag, "Accept-Ranges": "bytes", **mode_headers(stored.info, customer_key)})
    if by_part and manifest is not None:
        headers["x-amz-mp-parts-count"] = str(len(manifest.parts))
    if span is None:
        headers["Content-Length"] = str(size)
        return {"status": 200, "headers": headers}
    headers["Content-Length"] = str(span[1] - span[0] + 1)
    if span[1] >= span[0]:  # an empty part has no range to name
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    return {"status": 206, "headers": headers}
