"""PutObject: the request body, decoded and checked, stored by the object layer (encrypted unless the
bucket passes plaintext through and the client asked for no encryption)."""
from __future__ import annotations

from aiohttp import web

from gateway.checksums import BodyChecks
from gateway.handlers.conditions import upstream_if_match
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import written_headers
from gateway.handlers.request_body import BodyOutcome, checked, decoded_body, is_framed, plaintext_length, refuse_reserved
from gateway.sseheaders import SSE_HEADERS, decide_put
from gateway.upstream import forwardable_headers


async def put_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request, s3 = ctx.request, ctx.s3
    framed = is_framed(ctx)
    length = plaintext_length(request.headers, framed)
    refuse_reserved(request.headers)
    if_match = await upstream_if_match(gw, ctx)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure,
                     defaults=await ctx.objects(gw).bucket_encryption.defaults(s3.bucket))
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash)
    headers = forwardable_headers(request.headers, drop=(*SSE_HEADERS, *checks.header_names_to_strip, "if-match"))
    outcome = BodyOutcome()
    body = checked(decoded_body(ctx, length, checks, framed), checks, outcome, length)
    with outcome.reported():
        written = await ctx.objects(gw).writer.put(s3.bucket, s3.key, headers, sse, body, length,
                                                   requester=ctx.requester(gw), if_match=if_match)
    return web.Response(status=200, headers=written_headers(written, ctx.customer_key(gw), outcome.echoed))
