"""PutObject: a single-stream encrypted object (docs/FORMAT.md), also the destination side of CopyObject."""
from __future__ import annotations

from typing import AsyncIterable, Mapping

import aiohttp
from aiohttp import web

from gateway.checksums import BodyChecks
from gateway.crypto import metadata
from gateway.crypto.sse import EncryptionInfo, SseRequest
from gateway.crypto.stream import StreamEncryptor, ciphertext_size, encrypt_stream
from gateway.etag import client_etag
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.passthrough import relay
from gateway.handlers.sse_headers import mode_headers, sse_mode
from gateway.handlers.upload_body import (BodyOutcome, check_metadata_size, checked, decoded_body, is_framed,
                                          plaintext_length, refuse_reserved, send_put)
from gateway.policy import SSE_HEADERS, decide_put
from gateway.upstream import forwardable_headers


def response_headers(ctx: RequestContext, upstream: aiohttp.ClientResponse, info: EncryptionInfo | None,
                      echoed: Mapping[str, str]) -> dict[str, str]:
    """ETag (client-visible for encrypted objects), verified checksums, SSE headers, a real version id."""
    etag = upstream.headers.get("ETag", "")
    out = {"ETag": client_etag(etag) if info is not None else etag, **echoed, **mode_headers(ctx, info)}
    version = upstream.headers.get("x-amz-version-id")
    if version and version != "null":
        out["x-amz-version-id"] = version
    return out


async def store(gw: Gateway, ctx: RequestContext, headers: dict[str, str], sse: SseRequest | None,
                body: AsyncIterable[bytes], length: int,
                outcome: BodyOutcome) -> tuple[aiohttp.ClientResponse, EncryptionInfo | None]:
    """PUT ``length`` plaintext bytes to the request's object, encrypted as ``sse`` asks (None: as they are).

    ``headers`` are the upstream request headers without any SSE header; the caller reads the response.
    """
    info = None
    if sse is not None:
        object_key, info = await sse_mode(gw, sse.mode).create(ctx.s3.bucket, ctx.s3.key, sse, length)
        headers = {**headers, **metadata.encode(info)}
        assert info.params is not None
        body = encrypt_stream(body, StreamEncryptor(object_key, info.params))
    check_metadata_size(headers)
    upstream_length = ciphertext_size(length) if info is not None else length
    upstream = await send_put(gw, ctx.raw_path, [], headers, body, upstream_length, outcome)
    return upstream, info


async def put_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request, s3 = ctx.request, ctx.s3
    framed = is_framed(ctx)
    length = plaintext_length(request.headers, framed)
    refuse_reserved(request.headers)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure)
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash)
    headers = forwardable_headers(request.headers, drop=(*SSE_HEADERS, *checks.header_names_to_strip))
    outcome = BodyOutcome()
    body = checked(decoded_body(ctx, length, checks, framed), checks, outcome, length)
    upstream, info = await store(gw, ctx, headers, sse, body, length, outcome)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        return web.Response(status=200, headers=response_headers(ctx, upstream, info, outcome.echoed))
