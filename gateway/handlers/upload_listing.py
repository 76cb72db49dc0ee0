"""ListMultipartUploads with the UploadIds the gateway issued (gateway/objects/upload_records.py), so a client
can find its uploads and resume or abort them; the gateway's own reserved keys are hidden.

The upstream's listing is forwarded and rewritten in place: each upload's id, and the page's
``NextUploadIdMarker``, become the issued id when a record names one that authenticates for that bucket
and key; an ``upload-id-marker`` the client sends back is turned into the upstream's id first."""
from __future__ import annotations

from aiohttp import web

from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import read_small, relay, response_headers
from gateway.reserved import is_reserved_key
from gateway.s3xml import child, children, parse_response, serialize, text
from gateway.sseheaders import SSE_HEADERS
from gateway.upstream import forwardable_headers
from gateway.uploads import ForgedToken


async def list_multipart_uploads(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    bucket = ctx.s3.bucket
    query = [(name, _upstream_marker(gw, ctx, value) if name == "upload-id-marker" else value)
             for name, value in ctx.query]
    headers = forwardable_headers(ctx.request.headers, drop=SSE_HEADERS)
    upstream = await ctx.upstream(gw).request("GET", ctx.raw_path, query, headers)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        body = await read_small(upstream)
        answer_headers = response_headers(upstream.headers)
    root = parse_response(body)
    uploads = [(item, text(item, "Key") or "", text(item, "UploadId") or "") for item in children(root, "Upload")]
    for item, key, _ in uploads:
        if is_reserved_key(key):
            root.remove(item)
    shown = [(item, key, upstream_id) for item, key, upstream_id in uploads if not is_reserved_key(key)]
    issued = await ctx.objects(gw).upload_records.issued(bucket, {upstream_id for _, _, upstream_id in shown})
    by_upstream: dict[str, str] = {}
    for item, key, upstream_id in shown:
        client_id = _authentic(gw, bucket, key, upstream_id, issued.get(upstream_id))
        if client_id is not None:
            child(item, "UploadId").text = client_id  # type: ignore[union-attr]
            by_upstream[upstream_id] = client_id
    marker = child(root, "NextUploadIdMarker")
    if marker is not None and marker.text in by_upstream:
        marker.text = by_upstream[marker.text]
    return web.Response(status=200, body=serialize(root), headers=answer_headers)


def _authentic(gw: Gateway, bucket: str, key: str, upstream_id: str, client_id: str | None) -> str | None:
    """The recorded id when it is one the gateway issued for this very upload (its MAC binds bucket, key
    and upstream id), else None: a record planted upstream never renames an upload."""
    if client_id is None:
        return None
    try:
        upload = gw.objects.tokens.parse_upload_id(bucket, key, client_id)
    except (ForgedToken, ValueError):
        return None
    return client_id if upload is not None and upload.upstream_id == upstream_id else None


def _upstream_marker(gw: Gateway, ctx: RequestContext, marker: str) -> str:
    """An ``upload-id-marker`` as the upstream knows it: the issued id's upstream part (its key is the
    ``key-marker``'s, which S3 requires with it)."""
    key = ctx.request.rel_url.query.get("key-marker", "")
    try:
        upload = gw.objects.tokens.parse_upload_id(ctx.s3.bucket, key, marker)
    except (ForgedToken, ValueError):
        return marker
    return upload.upstream_id if upload is not None else marker

