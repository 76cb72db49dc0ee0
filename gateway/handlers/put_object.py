"""PutObject: the request body, decoded and checked, stored by the object layer (encrypted unless the
bucket passes plaintext through and the client asked for no encryption).

`store_object` is the write itself, shared with PostObject (gateway/handlers/post_object.py), whose
request context carries the form's fields as the request's headers and whose body is the form's file."""
from __future__ import annotations

import base64
from typing import AsyncIterable, AsyncIterator

from aiohttp import web

from gateway.checksums import CHECKSUM_HEADER_PREFIX, BodyChecks
from gateway.crypto.checksum import FULL_OBJECT, ObjectChecksum
from gateway.handlers.conditions import upstream_if_match
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import written_headers
from gateway.handlers.request_body import BodyOutcome, checked, decoded_body, is_framed, plaintext_length, refuse_reserved
from gateway.sseheaders import SSE_HEADERS, decide_put
from gateway.upstream import forwardable_headers


async def put_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request = ctx.request
    framed = is_framed(ctx)
    length = plaintext_length(request.headers, framed)
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash)
    headers = await store_object(gw, ctx, decoded_body(ctx, length, checks, framed), length, checks)
    return web.Response(status=200, headers=headers)


async def store_object(gw: Gateway, ctx: RequestContext, body: AsyncIterable[bytes], length: int,
                       checks: BodyChecks) -> dict[str, str]:
    """Store ``length`` plaintext bytes of ``body`` as the object ``ctx`` names, encrypted as the request's
    headers and the bucket's default encryption ask, with its checksums verified on the way: the answer's
    headers (ETag, checksums, SSE, version id). A body that fails is cut short upstream: nothing is stored.

    The plaintext checksum the client sent is stored with the object (sealed: gateway/crypto/checksum.py) when
    it is known before the upstream write starts: from a header, or from a trailer of a small body held until
    the trailer arrives (gateway/bodybuffer.py)."""
    request, s3 = ctx.request, ctx.s3
    refuse_reserved(request.headers)
    if_match = await upstream_if_match(gw, ctx)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure,
                     defaults=await ctx.objects(gw).bucket_encryption.defaults(s3.bucket))
    headers = forwardable_headers(request.headers, drop=(*SSE_HEADERS, *checks.header_names_to_strip, "if-match"))
    outcome = BodyOutcome()
    stream = checked(body, checks, outcome, length)
    announced = checks.announced
    checksum = ObjectChecksum(announced[0], FULL_OBJECT, announced[1]) if announced else None
    with gw.body_buffer.hold(length if sse is not None and checks.trailer_algorithm else 0) as held:
        if held:
            stream, checksum = await _held_for_trailer(stream, checks, outcome)
        with outcome.reported():
            written = await ctx.objects(gw).writer.put(s3.bucket, s3.key, headers, sse, stream, length,
                                                       requester=ctx.requester(gw), if_match=if_match,
                                                       checksum=checksum)
    echoed = {**outcome.echoed, "x-amz-checksum-type": FULL_OBJECT} if outcome.echoed else {}
    return written_headers(written, ctx.customer_key(gw), echoed)


async def _held_for_trailer(body: AsyncIterator[bytes], checks: BodyChecks,
                            outcome: BodyOutcome) -> tuple[AsyncIterator[bytes], ObjectChecksum]:
    """The whole body read and verified before anything goes upstream, so the checksum its trailer carries is
    stored with the object (gateway/bodybuffer.py bounds the memory). A body that fails its checks is refused
    here, having written nothing."""
    chunks = [chunk async for chunk in body]
    algorithm = checks.trailer_algorithm
    assert algorithm is not None
    digest = base64.b64decode(outcome.echoed[CHECKSUM_HEADER_PREFIX + algorithm])
    return _replayed(chunks), ObjectChecksum(algorithm, FULL_OBJECT, digest)


async def _replayed(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
