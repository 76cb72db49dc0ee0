"""The CORS preflight (``OPTIONS``), and PutBucketCors / DeleteBucketCors, which are forwarded and make this
process read the bucket's rules afresh (gateway/cors.py)."""
from __future__ import annotations

from aiohttp import web

from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import forward


async def preflight(gw: Gateway, request: web.Request, bucket: str) -> web.Response:
    """An unsigned ``OPTIONS``: 200 with the CORS headers the first matching rule gives, else S3's 403
    AccessForbidden (400 BadRequest without Origin or Access-Control-Request-Method)."""
    return web.Response(status=200, headers=await gw.cors.preflight(bucket, request.headers))


async def change_bucket_cors(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    response = await forward(gw, ctx)
    if response.status < 300:
        gw.cors.forget(ctx.s3.bucket)
    return response
