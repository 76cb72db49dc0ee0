"""Bucket operations that must know about the gateway's reserved keys (multipart manifests under ``.s3gw/``).

DeleteObjects may not name reserved keys (a client could otherwise delete a manifest and make an object
unreadable). DeleteBucket first removes the manifests a bucket holds once nothing else is left in it,
so emptying a bucket through the gateway and deleting it works as on S3 (``aws s3 rb --force``).
"""
from __future__ import annotations

import base64
import hashlib
from xml.sax.saxutils import escape

from aiohttp import web

from gateway.handlers import passthrough
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.multipart import RESERVED_PREFIX
from gateway.handlers.passthrough import read_small, relay
from gateway.handlers.upload_body import read_body
from gateway.policy import SSE_HEADERS
from gateway.s3errors import access_denied, from_upstream
from gateway.s3xml import children, parse_request, parse_response, text
from gateway.upstream import forwardable_headers

MAX_DELETE_BODY = 2 * 1024 * 1024
_DELETE_BATCH = 1000


async def delete_objects(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Forward the batch unchanged unless it names a reserved key."""
    body = await read_body(ctx, MAX_DELETE_BODY)
    root = parse_request(body, "Delete")
    if any((text(item, "Key") or "").startswith(RESERVED_PREFIX) for item in children(root, "Object")):
        raise access_denied(f"Keys under {RESERVED_PREFIX} are reserved by the gateway.")
    headers = forwardable_headers(ctx.request.headers, drop=SSE_HEADERS)
    headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
    upstream = await gw.upstream.request("POST", ctx.raw_path, ctx.query, headers, body=body,
                                         content_length=len(body), payload_hash=hashlib.sha256(body).hexdigest())
    async with upstream:
        return await relay(ctx, upstream)


async def _reserved_versions(gw: Gateway, ctx: RequestContext) -> list[tuple[str, str | None]] | None:
    """Every (key, version) under the reserved prefix, or None when the bucket holds anything else."""
    found: list[tuple[str, str | None]] = []
    markers: list[tuple[str, str]] = []
    while True:
        upstream = await gw.upstream.request("GET", ctx.raw_path, [("versions", ""), *markers], {})
        async with upstream:
            body = await read_small(upstream)
            if upstream.status != 200:
                raise from_upstream(upstream.status, body)
        root = parse_response(body)
        for entry in (*children(root, "Version"), *children(root, "DeleteMarker")):
            key = text(entry, "Key") or ""
            if not key.startswith(RESERVED_PREFIX):
                return None
            version = text(entry, "VersionId")
            found.append((key, version if version and version != "null" else None))
        if (text(root, "IsTruncated") or "").lower() != "true":
            return found
        markers = [("key-marker", text(root, "NextKeyMarker") or ""),
                   ("version-id-marker", text(root, "NextVersionIdMarker") or "")]


async def _delete_batch(gw: Gateway, ctx: RequestContext, batch: list[tuple[str, str | None]]) -> None:
    objects = "".join(f"<Object><Key>{escape(key)}</Key>"
                      + (f"<VersionId>{escape(version)}</VersionId>" if version else "") + "</Object>"
                      for key, version in batch)
    body = f"<Delete><Quiet>true</Quiet>{objects}</Delete>".encode()
    headers = {"content-md5": base64.b64encode(hashlib.md5(body).digest()).decode()}
    upstream = await gw.upstream.request("POST", ctx.raw_path, [("delete", "")], headers, body=body,
                                         content_length=len(body), payload_hash=hashlib.sha256(body).hexdigest())
    async with upstream:
        answer = await read_small(upstream)
        if upstream.status != 200 or b"<Error>" in answer:
            raise from_upstream(upstream.status, answer)


async def delete_bucket(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    reserved = await _reserved_versions(gw, ctx)
    for start in range(0, len(reserved or []), _DELETE_BATCH):
        await _delete_batch(gw, ctx, (reserved or [])[start:start + _DELETE_BATCH])
    return await passthrough.proxy(gw, ctx)
