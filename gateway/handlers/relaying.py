"""The I/O floor of the handlers: forward a request re-signed, relay or render the upstream's answer.

`forward` is also the handler of every operation that carries no object data: the body is forwarded
unchanged, so a client's hex SHA-256 payload hash (and any checksum header,
e.g. DeleteObjects' x-amz-checksum-crc32 over its plaintext XML) stays valid and is re-used
upstream, where it is verified again. SSE-C keys are never forwarded.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from typing import AsyncIterable, AsyncIterator, Iterable, Mapping

import aiohttp
from aiohttp import web

from gateway.crypto.metadata import RESERVED_PREFIX
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.request_body import request_chunks
from gateway.crypto.sse import CustomerKey
from gateway.etag import client_etag
from gateway.objects.writing import Written
from gateway.s3client import ObjectBody, UpstreamError
from gateway.sseheaders import SSE_HEADERS, mode_headers
from gateway.s3errors import (S3Error, error_xml, from_upstream, not_implemented, parse_s3_error,
                              refuses_gateway_credential, with_message)
from gateway.upstream import HOP_BY_HOP, UNSIGNED_PAYLOAD, forwardable_headers, read_up_to

log = logging.getLogger("gateway.passthrough")
CHUNK = 256 * 1024
ERROR_BODY_LIMIT = 64 * 1024
# Headers describing an upstream error body, which the client gets a body of its own in place of.
_ERROR_BODY_HEADERS = ("content-length", "content-type", "content-encoding", "content-md5")
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# Upstream response headers that describe the upstream's own request or connection, not the data.
_UPSTREAM_ONLY = HOP_BY_HOP | {"x-amz-request-id", "x-amz-id-2", "date", "server", "x-amzn-requestid",
                               # request headers some stores (moto) echo in their answers
                               "x-amz-content-sha256", "x-amz-sdk-checksum-algorithm"}
# Never relayed on any path: the gateway's own metadata (docs/FORMAT.md), whatever the object.
# The gateway's reserved metadata, and CORS headers: the gateway answers CORS itself (gateway/cors.py), and an
# upstream's own (some answer any origin) must never widen what the bucket's rules allow.
_NEVER_RELAYED_PREFIXES = (RESERVED_PREFIX, "access-control-")


async def body_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in response.content.iter_chunked(CHUNK):
        yield chunk


def response_headers(upstream_headers: Mapping[str, str], drop: Iterable[str] = ()) -> dict[str, str]:
    """Upstream response headers worth relaying, minus ``drop`` (lower-case names or prefixes ending in
    ``*``) and, always, the gateway's reserved metadata."""
    exact = {d for d in drop if not d.endswith("*")}
    prefixes = (*_NEVER_RELAYED_PREFIXES, *(d[:-1] for d in drop if d.endswith("*")))
    out: dict[str, str] = {}
    for name, value in upstream_headers.items():
        lname = name.lower()
        if lname in _UPSTREAM_ONLY or lname in exact or lname.startswith(prefixes):
            continue
        if lname == "x-amz-version-id" and value == "null":
            continue
        out[name] = value
    return out


async def relay(ctx: RequestContext, upstream: aiohttp.ClientResponse, *,
                drop: Iterable[str] = ()) -> web.StreamResponse:
    """Stream an upstream response to the client unchanged (bar per-hop headers); errors go through
    `relay_error`."""
    if upstream.status >= 400:
        return await relay_error(ctx, upstream, drop=drop)
    response = stored_answer(upstream.status, upstream.headers, drop, reason=upstream.reason)
    return await send_body(ctx, response, body_chunks(upstream) if ctx.request.method != "HEAD" else None)


async def relay_error(ctx: RequestContext, upstream: aiohttp.ClientResponse, *,
                      drop: Iterable[str] = ()) -> web.Response:
    """An upstream error answer, its body read (see `error_answer`)."""
    body = b"" if ctx.request.method == "HEAD" else await read_error_body(upstream)
    return error_answer(ctx.request, ctx.request_id, upstream.status, upstream.headers, body, drop=drop)


def error_answer(request: web.Request, request_id: str, status: int, upstream_headers: Mapping[str, str],
                 body: bytes, *, drop: Iterable[str] = ()) -> web.Response:
    """An upstream error answer for the client: an S3 error document as it is, anything else (a load
    balancer's HTML 502 page, plain text, a cut-off body) as the S3 error its status stands for. The
    upstream's headers (Retry-After, x-amz-delete-marker ...) are kept either way."""
    headers = response_headers(upstream_headers, (*drop, *_ERROR_BODY_HEADERS))
    document = parse_s3_error(body)
    if document is not None and not refuses_gateway_credential(document):
        # relayed as it is, an empty <Message> (Ceph RGW's) filled in; a refusal of the gateway's own
        # credential is the gateway's 503 (`from_upstream`), not the client's signature mistake
        return web.Response(status=status, body=with_message(body, status), headers=headers,
                            content_type="application/xml")
    err = from_upstream(status, body, upstream_headers)
    head = request.method == "HEAD"
    if document is None and not head:
        log.warning("request %s: the upstream answered %s with a body that is not an S3 error; sending %s %s",
                    request_id, status, err.status, err.code)
    rendered = b"" if head else error_xml(err, request_id=request_id, resource=request.path)
    return web.Response(status=err.status, body=rendered, headers={**headers, **err.headers},
                        content_type="application/xml")


def upstream_error_answer(request: web.Request, request_id: str, exc: UpstreamError) -> web.Response | None:
    """The answer to the upstream's own error (see `error_answer`), or None when ``exc`` is not one to relay:
    the client's error is then ``exc.s3_error()`` (an object that changed while it was read, an answer
    too long, a success answer that is not the one asked for; their headers describe no error)."""
    if type(exc) is not UpstreamError or (exc.status < 400 and parse_s3_error(exc.body) is None):
        return None
    return error_answer(request, request_id, exc.status, exc.headers, b"" if request.method == "HEAD" else exc.body)


def written_headers(written: Written, customer_key: CustomerKey | None,
                    echoed: Mapping[str, str]) -> dict[str, str]:
    """The answer to a write: the ETag (client-visible for an encrypted object), the verified checksums,
    the SSE headers, and a real version id."""
    etag = client_etag(written.result.etag) if written.info is not None else written.result.etag
    out = {"ETag": etag, **echoed, **mode_headers(written.info, customer_key)}
    if written.result.version_id:
        out["x-amz-version-id"] = written.result.version_id
    return out


async def relay_object(ctx: RequestContext, body: ObjectBody, *, drop: Iterable[str] = ()) -> web.StreamResponse:
    """An upstream read of an object relayed as it is (a legacy object's part): status, headers, body."""
    response = stored_answer(body.status, body.head.headers, drop)
    return await send_body(ctx, response, None if ctx.request.method == "HEAD" else body.chunks())


def stored_answer(status: int, upstream_headers: Mapping[str, str], drop: Iterable[str] = (), *,
                  reason: str | None = None) -> web.StreamResponse:
    """An upstream answer's status and headers, to send as they are, its Content-Length kept."""
    response = web.StreamResponse(status=status, reason=reason, headers=response_headers(upstream_headers, drop))
    length = upstream_headers.get("Content-Length")
    if length is not None:
        response.content_length = int(length)
    return response


async def send_stream(ctx: RequestContext, response: web.StreamResponse,
                      chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    """Send a produced body (decrypted plaintext): its first piece is made before the answer's headers
    go out, so a failure there (the object's first segment fails authentication, the key does not
    open) is still an S3 error answer; after the headers it aborts the connection (`send_body`)."""
    first = await anext(chunks, b"")
    return await send_body(ctx, response, _prepend(first, chunks))


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def send_body(ctx: RequestContext, response: web.StreamResponse,
                    chunks: AsyncIterable[bytes] | None) -> web.StreamResponse:
    """Send headers, then the body. Once headers are out a failure (an integrity error, the upstream
    dying) can no longer become an S3 error: abort the connection so the client sees a broken
    transfer, never a clean but short or corrupt body."""
    await response.prepare(ctx.request)
    try:
        if chunks is not None:
            async for chunk in chunks:
                await response.write(chunk)
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:
        log.error("request %s failed mid-body (%s: %s); aborting the connection",
                  ctx.request_id, type(exc).__name__, exc)
        if ctx.request.transport is not None:
            ctx.request.transport.abort()
        raise ConnectionAbortedError("response aborted mid-body") from exc
    await response.write_eof()
    return response


def _forwarded_payload(ctx: RequestContext) -> str:
    signed = ctx.auth.payload_hash or ""
    return signed if _HEX_SHA256.fullmatch(signed) else UNSIGNED_PAYLOAD


async def forward(gw: Gateway, ctx: RequestContext, query: list[tuple[str, str]] | None = None, *,
                  headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """Forward the request as it is (``query`` replacing its query, ``headers`` added to or replacing
    its own), re-signed, and relay the answer."""
    request = ctx.request
    if "aws-chunked" in request.headers.get("Content-Encoding", ""):
        raise not_implemented("aws-chunked bodies are only accepted for object uploads")
    sent = {**forwardable_headers(request.headers, drop=(*SSE_HEADERS, *(headers or {}))), **(headers or {})}
    body = request_chunks(request) if request.body_exists else None  # the body goes upstream as it came
    upstream = await ctx.upstream(gw).request(request.method, ctx.raw_path, ctx.query if query is None else query,
                                              sent, body=body,
                                              content_length=request.content_length if body else None,
                                              payload_hash=_forwarded_payload(ctx))
    async with upstream:
        return await relay(ctx, upstream)


async def read_small(upstream: aiohttp.ClientResponse, limit: int = 64 * 1024 * 1024) -> bytes:
    """A small XML body in full (listings are at most 1000 entries)."""
    body = await read_up_to(upstream, limit)
    if len(body) > limit:
        raise S3Error("InternalError", "The upstream response is too large to rewrite", 500)
    return body


async def read_error_body(upstream: aiohttp.ClientResponse) -> bytes:
    """An upstream error answer's body, cut after ERROR_BODY_LIMIT bytes (S3's are a few hundred bytes;
    anything longer is no S3 error document and is never relayed)."""
    return await read_up_to(upstream, ERROR_BODY_LIMIT)


async def send_checked_body(gw: Gateway, ctx: RequestContext, method: str, query: list[tuple[str, str]],
                            body: bytes, headers: dict[str, str]) -> aiohttp.ClientResponse:
    """An upstream request with a small body the gateway checked (or built), with the Content-MD5 S3 requires
    of such bodies; ``headers`` must not carry the client's body-integrity headers (STRIPPED_HEADERS)."""
    headers = {**headers, "content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    return await ctx.upstream(gw).request(method, ctx.raw_path, query, headers, body=body,
                                          content_length=len(body), payload_hash=hashlib.sha256(body).hexdigest())
