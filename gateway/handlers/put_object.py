"""PutObject: the request body, decoded and checked, stored by the object layer (encrypted unless the
bucket passes plaintext through and the client asked for no encryption)."""
from __future__ import annotations

from aiohttp import web

from gateway.checksums import BodyChecks
from gateway.etag import etag_matches
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import written_headers
from gateway.handlers.request_body import BodyOutcome, checked, decoded_body, is_framed, plaintext_length, refuse_reserved
from gateway.objects.reading import ObjectRef
from gateway.s3client import UpstreamError
from gateway.s3errors import no_such_key, precondition_failed
from gateway.sseheaders import SSE_HEADERS, decide_put
from gateway.upstream import forwardable_headers


async def put_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request, s3 = ctx.request, ctx.s3
    framed = is_framed(ctx)
    length = plaintext_length(request.headers, framed)
    refuse_reserved(request.headers)
    if_match = await _upstream_if_match(gw, ctx)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure,
                     defaults=await gw.bucket_encryption.defaults(s3.bucket))
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash)
    headers = forwardable_headers(request.headers, drop=(*SSE_HEADERS, *checks.header_names_to_strip, "if-match"))
    outcome = BodyOutcome()
    body = checked(decoded_body(ctx, length, checks, framed), checks, outcome, length)
    with outcome.reported():
        written = await gw.objects.writer.put(s3.bucket, s3.key, headers, sse, body, length,
                                              requester=ctx.requester(gw), if_match=if_match)
    return web.Response(status=200, headers=written_headers(written, ctx.customer_key(gw), outcome.echoed))


async def _upstream_if_match(gw: Gateway, ctx: RequestContext) -> str | None:
    """S3's conditional write ``If-Match`` names the ETag the client saw (gateway/etag.py), which the upstream
    never handed out: the object's metadata is read to check it here, and the write is then made conditional
    on the upstream ETag of that very version, so the upstream refuses it (412) if the object changed in
    between: no read-then-write race. A missing object is 404 NoSuchKey, another ETag 412, as S3 answers.
    ``If-None-Match: *`` needs no translation and goes to the upstream as it is."""
    condition = ctx.request.headers.get("if-match")
    if condition is None:
        return None
    try:
        async with gw.objects.reader.stat(ObjectRef(ctx.s3.bucket, ctx.s3.key)) as stored:
            if not etag_matches(condition, stored.etag):
                raise precondition_failed("If-Match")
            return stored.head.etag
    except UpstreamError as exc:
        if exc.not_found:
            raise no_such_key(ctx.s3.key) from None
        raise
