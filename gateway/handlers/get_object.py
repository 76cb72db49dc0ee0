"""GetObject and HeadObject: serve the plaintext of encrypted objects, legacy objects as they are.

Read the reserved metadata, open the object key, map a Range onto whole ciphertext segments (one
upstream ranged GET) and decrypt as a stream. An integrity failure before the first byte is an S3
error; after the headers were sent it aborts the connection, never ends the body cleanly.
"""
from __future__ import annotations

import logging
from typing import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from gateway.crypto import metadata
from gateway.crypto.sse import EncryptionInfo, MissingCustomerKey, SseRequest, WrongCustomerKey
from gateway.crypto.stream import (IntegrityError, RangeNotSatisfiable, RangePlan, StreamDecryptor,
                                   decrypt_stream, parse_range_header, plan_range)
from gateway.etag import client_etag
from gateway.handlers.conditions import CONDITIONAL_HEADERS, evaluate_conditions
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.passthrough import body_chunks, relay, response_headers, send_body
from gateway.handlers.sse_headers import mode_headers, sse_mode
from gateway.policy import SSE_HEADERS, customer_key
from gateway.s3errors import (S3Error, access_denied, invalid_range, invalid_request, not_implemented,
                              precondition_failed)
from gateway.upstream import forwardable_headers

log = logging.getLogger("gateway.objects")

# Upstream response headers that describe the ciphertext or the upstream's own encryption.
_CIPHERTEXT_HEADERS = ("content-length", "content-range", "etag", "content-md5", "x-amz-checksum-*",
                       "x-amz-server-side-encryption*", metadata.RESERVED_PREFIX + "*", "x-amz-mp-parts-count")
_INTEGRITY_MESSAGE = "The object failed integrity verification"


def _conditional_response(ctx: RequestContext, outcome: int, etag: str, last_modified: str | None) -> web.Response:
    """412 as an S3 error naming the failed condition; 304 with the validators and no body."""
    if outcome == 412:
        condition = "If-Match" if "if-match" in ctx.request.headers else "If-Unmodified-Since"
        raise precondition_failed(condition)
    headers = {"ETag": etag, **({"Last-Modified": last_modified} if last_modified else {})}
    return web.Response(status=304, headers=headers)


async def _fetch(gw: Gateway, ctx: RequestContext, method: str,
                 extra: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
    """The upstream read, without the client's conditions, range and SSE headers (the gateway owns those)."""
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *CONDITIONAL_HEADERS, "range",
                                                             "x-amz-checksum-mode"))
    return await gw.upstream.request(method, ctx.raw_path, ctx.query, {**headers, **(extra or {})})


async def _legacy(gw: Gateway, ctx: RequestContext, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """An object without gateway metadata: stored before the gateway, or in a pass-through bucket,
    served as it is. Outside pass-through buckets the configuration may forbid such reads."""
    passthrough = gw.config.bucket_policy(ctx.s3.bucket).encryption == "passthrough"
    if not (passthrough or gw.config.allow_unencrypted_reads):
        raise access_denied("The object is not encrypted by the gateway and unencrypted reads are disabled.")
    etag = upstream.headers.get("ETag", "")
    outcome = evaluate_conditions(ctx.request.headers, etag, upstream.headers.get("Last-Modified"))
    if outcome is not None:
        return _conditional_response(ctx, outcome, etag, upstream.headers.get("Last-Modified"))
    if "range" in ctx.request.headers and ctx.request.method == "GET":
        ranged = await _fetch(gw, ctx, "GET", {"range": ctx.request.headers["range"]})
        async with ranged:
            return await relay(ctx, ranged, drop=("x-amz-checksum-*",))
    return await relay(ctx, upstream, drop=("x-amz-checksum-*",))


async def _object_key(gw: Gateway, ctx: RequestContext, info: EncryptionInfo) -> bytes:
    """Open the per-object key; SSE-C objects need the client's key, a wrong one is refused."""
    key = customer_key(ctx.request.headers, secure=ctx.secure, allow_http=gw.config.allow_ssec_over_http)
    request = SseRequest(mode=info.mode, kms_key_id=None, kms_context=info.kms_context or {}, customer_key=key)
    try:
        return await sse_mode(gw, info.mode).open(ctx.s3.bucket, ctx.s3.key, info, request)
    except MissingCustomerKey:
        raise invalid_request("The object was stored using a form of Server Side Encryption. The correct "
                              "parameters must be provided to retrieve the object.") from None
    except WrongCustomerKey:
        raise access_denied("The provided customer key does not match the key the object was stored with.") from None
    except IntegrityError as exc:
        log.error("integrity failure opening %s/%s: %s", ctx.s3.bucket, ctx.s3.key, exc)
        raise S3Error("InternalError", _INTEGRITY_MESSAGE, 500) from None


def _requested_range(ctx: RequestContext, size: int) -> tuple[int, int] | None:
    value = ctx.request.headers.get("range")
    if value is None:
        return None
    try:
        return parse_range_header(value, size)
    except RangeNotSatisfiable:
        error = invalid_range(size)
        error.headers["Content-Range"] = f"bytes */{size}"
        raise error from None


def _plaintext_headers(ctx: RequestContext, upstream: aiohttp.ClientResponse, info: EncryptionInfo,
                       span: tuple[int, int] | None) -> tuple[int, dict[str, str]]:
    """Status and headers of the plaintext answer: sizes, range, ETag and SSE headers rewritten."""
    headers = response_headers(upstream.headers, drop=_CIPHERTEXT_HEADERS)
    headers["ETag"] = client_etag(upstream.headers.get("ETag", ""))
    headers["Accept-Ranges"] = "bytes"
    headers.update(mode_headers(ctx, info))
    size = info.plaintext_size
    if span is None:
        headers["Content-Length"] = str(size)
        return 200, headers
    headers["Content-Length"] = str(span[1] - span[0] + 1)
    headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    return 206, headers


async def _stream_plaintext(ctx: RequestContext, response: web.StreamResponse,
                            plaintext: AsyncIterator[bytes]) -> web.StreamResponse:
    """Send the decrypted body; a failure before the first byte is an S3 error, after it an abort."""
    try:
        first = await anext(plaintext, b"")
    except IntegrityError as exc:
        log.error("integrity failure in %s/%s: %s", ctx.s3.bucket, ctx.s3.key, exc)
        raise S3Error("InternalError", _INTEGRITY_MESSAGE, 500) from None
    return await send_body(ctx, response, _prepend(first, plaintext))


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def _require_size(info: EncryptionInfo) -> None:
    """Single-part objects always record their plaintext size; its absence means tampered metadata."""
    if info.plaintext_size is None:
        raise IntegrityError("the gateway metadata lacks the plaintext size")


async def _serve_encrypted(gw: Gateway, ctx: RequestContext, meta: aiohttp.ClientResponse,
                           info: EncryptionInfo) -> web.StreamResponse:
    etag = client_etag(meta.headers.get("ETag", ""))
    last_modified = meta.headers.get("Last-Modified")
    outcome = evaluate_conditions(ctx.request.headers, etag, last_modified)
    if outcome is not None:
        return _conditional_response(ctx, outcome, etag, last_modified)
    object_key = await _object_key(gw, ctx, info)
    span = _requested_range(ctx, info.plaintext_size)
    status, headers = _plaintext_headers(ctx, meta, info, span)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = int(headers.pop("Content-Length"))
    if ctx.request.method == "HEAD":
        await response.prepare(ctx.request)
        await response.write_eof()
        return response
    if span is None and meta.method == "GET":
        decryptor = StreamDecryptor(object_key, info.params, info.plaintext_size)
        return await _stream_plaintext(ctx, response, decrypt_stream(body_chunks(meta), decryptor))
    plan = plan_range(info.plaintext_size, *span) if span else None
    return await _serve_ranged(gw, ctx, response, object_key, info, plan, meta.headers.get("ETag", ""))


async def _serve_ranged(gw: Gateway, ctx: RequestContext, response: web.StreamResponse, object_key: bytes,
                        info: EncryptionInfo, plan: RangePlan | None, upstream_etag: str) -> web.StreamResponse:
    """One upstream ranged GET of whole ciphertext segments, pinned to the version we planned for."""
    extra = {"if-match": upstream_etag}
    if plan is not None:
        extra["range"] = f"bytes={plan.cipher_start}-{plan.cipher_end}"
    upstream = await _fetch(gw, ctx, "GET", extra)
    async with upstream:
        if upstream.status != (200 if plan is None else 206):
            raise S3Error("InternalError", "The object changed while it was being read; retry.", 500)
        decryptor = StreamDecryptor(object_key, info.params, info.plaintext_size, plan=plan)
        return await _stream_plaintext(ctx, response, decrypt_stream(body_chunks(upstream), decryptor))


async def get_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """GET and HEAD. A plain GET reads metadata and body in one request; HEAD and ranged GETs
    read the metadata first (a HEAD), since the range plan needs the plaintext size."""
    if "partNumber" in ctx.request.rel_url.query:
        raise not_implemented("GetObject and HeadObject by partNumber are not implemented by the gateway yet")
    method = "GET" if ctx.request.method == "GET" and "range" not in ctx.request.headers else "HEAD"
    upstream = await _fetch(gw, ctx, method)
    async with upstream:
        if upstream.status != 200:
            if method == "HEAD" and ctx.request.method == "GET":
                return await _relay_get(gw, ctx)
            return await relay(ctx, upstream)
        try:
            info = metadata.decode(upstream.headers)
            if info is not None:
                _require_size(info)
        except (ValueError, IntegrityError) as exc:
            log.error("unreadable gateway metadata on %s/%s: %s", ctx.s3.bucket, ctx.s3.key, exc)
            raise S3Error("InternalError", _INTEGRITY_MESSAGE, 500) from None
        if info is None:
            return await _legacy(gw, ctx, upstream)
        return await _serve_encrypted(gw, ctx, upstream, info)


async def _relay_get(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """A GET whose metadata HEAD failed: repeat it as a GET so the client gets S3's error body."""
    upstream = await _fetch(gw, ctx, "GET")
    async with upstream:
        if upstream.status == 200:
            raise S3Error("InternalError", "The object changed while it was being read; retry.", 500)
        return await relay(ctx, upstream)
