"""Multipart uploads: Create, UploadPart, Complete, Abort and ListParts, encrypted part by part.

Create opens the upload upstream with the object's encryption metadata (one KMS call) and hands the
client an UploadId that carries it (gateway/uploads.py). Each UploadPart is encrypted as its own
stream (gateway/crypto/multipart.py) and answered with an ETag recording its stream parameters and
verified checksum. Complete checks the client's part list against those records and the upstream's,
writes the sealed manifest next to the object (gateway/reserved.py), then completes upstream.
Uploads in pass-through buckets that asked for no encryption keep the upstream's ids and pass through.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import AsyncIterable, Mapping

from aiohttp import web

from gateway.checksums import ALGORITHMS, STRIPPED_HEADERS, BodyChecks
from gateway.crypto import metadata
from gateway.crypto.multipart import PART_OVERHEAD, Manifest, ManifestPart, encrypt_part, part_stored_size, seal_manifest
from gateway.crypto.sse import SSEC_MODE, SseRequest, WrongCustomerKey
from gateway.crypto.stream import StreamParams
from common.digits import parse_decimal, parse_upstream_decimal
from gateway.etag import client_etag
from gateway.limits import MAX_PARTS, MAX_UPLOAD_SIZE
from gateway.handlers import passthrough
from gateway.handlers.context import Gateway, RequestContext, object_path
from gateway.handlers.passthrough import error_answer, read_small, relay, response_headers
from gateway.handlers.sse_headers import mode_headers, sse_mode
from gateway.handlers.upload_body import (BodyOutcome, check_metadata_size, checked, decoded_body, is_framed,
                                          plaintext_length, read_body, refuse_reserved, send_put)
from gateway.policy import SSE_HEADERS, customer_key, decide_put
from gateway.reserved import MANIFEST_PREFIX
from gateway.s3errors import (entity_too_large, entity_too_small, from_upstream, internal_error, invalid_argument,
                              invalid_part, invalid_part_order, invalid_request, malformed_xml, no_such_upload)
from gateway.s3xml import child, children, local, parse_request, parse_response, render, serialize, text
from gateway.upstream import forwardable_headers
from gateway.uploads import ForgedToken, Upload

log = logging.getLogger("gateway.multipart")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_COMPLETE_BODY = 16 * 1024 * 1024
_CHECKSUM_ELEMENTS = {f"Checksum{name.upper()}": name for name in ALGORITHMS}
_UPLOAD_HEADERS_DROPPED = (*SSE_HEADERS, *STRIPPED_HEADERS, "x-amz-checksum-algorithm", "x-amz-checksum-type")
_MISSING_SSEC = ("The multipart upload initiate requested encryption. Subsequent part requests must include "
                 "the appropriate encryption parameters.")
_WRONG_SSEC = "The provided encryption parameters did not match the ones used originally."
_NOT_OURS = ("This upload was not started through the gateway, so the gateway cannot encrypt its parts. "
             "Start a new upload.")


def manifest_path(bucket: str, tag: str) -> str:
    return object_path(bucket, MANIFEST_PREFIX + tag)


def manifest_cache_key(bucket: str, tag: str, object_key: bytes) -> tuple[str, str, bytes]:
    """A cached manifest serves only objects with the object key it was opened (or sealed) under: the
    tag in an object's metadata is not authenticated, so it alone must not pick a manifest."""
    return bucket, tag, hashlib.sha256(object_key).digest()


def upload_of(gw: Gateway, ctx: RequestContext, *, carries_data: bool) -> Upload | None:
    """The encrypting upload the UploadId names, or None for an upstream id that may pass through.

    Part data sent with an upstream id is refused outside pass-through buckets: it would be stored
    as plaintext inside an upload the gateway may have opened encrypted.
    """
    client_id = ctx.request.rel_url.query.get("uploadId", "")
    try:
        upload = gw.tokens.parse_upload_id(ctx.s3.bucket, ctx.s3.key, client_id)
    except (ForgedToken, ValueError):
        raise no_such_upload(client_id) from None
    if upload is None and carries_data and gw.config.bucket_policy(ctx.s3.bucket).encryption != "passthrough":
        raise no_such_upload(client_id, _NOT_OURS)
    return upload


def _upstream_query(ctx: RequestContext, upload: Upload | None) -> list[tuple[str, str]]:
    if upload is None:
        return ctx.query
    return [(name, upload.upstream_id if name == "uploadId" else value) for name, value in ctx.query]


def part_number_param(ctx: RequestContext) -> int:
    """The partNumber query parameter: 1..10000, else 400 InvalidArgument as S3 answers."""
    return parse_part_number(ctx.request.rel_url.query.get("partNumber", ""))


def parse_part_number(value: str) -> int:
    """A part number 1..10000 from its query value; anything else is S3's 400 InvalidArgument."""
    number = parse_decimal(value, MAX_PARTS + 1)
    if number is None or not 1 <= number <= MAX_PARTS:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive", "partNumber", value)
    return number


async def upload_object_key(gw: Gateway, ctx: RequestContext, upload: Upload) -> bytes:
    """The upload's object key: SSE-C uploads need the customer key on every part (checked against
    the stored check value); KMS uploads cost one KMS Decrypt per upload per gateway process."""
    info = upload.info
    key = customer_key(ctx.request.headers, secure=ctx.secure, allow_http=gw.config.allow_ssec_over_http)
    if info.mode == SSEC_MODE:
        if key is None:
            raise invalid_request(_MISSING_SSEC)
        try:
            return await gw.sse_c.open(ctx.s3.bucket, ctx.s3.key, info, SseRequest(mode=SSEC_MODE, customer_key=key))
        except WrongCustomerKey:
            raise invalid_request(_WRONG_SSEC) from None
    if key is not None:
        raise invalid_request(_WRONG_SSEC)
    cached = gw.upload_keys.get(upload.client_id)
    if cached is None:
        cached = await gw.sse_kms.open(ctx.s3.bucket, ctx.s3.key, info, None)
        gw.upload_keys.put(upload.client_id, cached)
    return cached


async def create_multipart_upload(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request, s3 = ctx.request, ctx.s3
    refuse_reserved(request.headers)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure)
    if sse is None:
        return await passthrough.proxy(gw, ctx)
    object_key, info = await sse_mode(gw, sse.mode).create(s3.bucket, s3.key, sse, None)
    info = replace(info, params=None, upload_tag=metadata.new_upload_tag())
    fields = metadata.encode(info)
    headers = {**forwardable_headers(request.headers, drop=_UPLOAD_HEADERS_DROPPED), **fields}
    check_metadata_size(headers)
    upstream = await gw.upstream.request("POST", ctx.raw_path, ctx.query, headers)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        upstream_id = text(parse_response(await read_small(upstream)), "UploadId")
    if not upstream_id:
        raise internal_error()
    client_id = gw.tokens.issue_upload_id(s3.bucket, s3.key, upstream_id, fields)
    if info.mode != SSEC_MODE:
        gw.upload_keys.put(client_id, object_key)
    body = render("InitiateMultipartUploadResult", {"Bucket": s3.bucket, "Key": s3.key, "UploadId": client_id})
    out = mode_headers(ctx, info)
    if "x-amz-checksum-algorithm" in request.headers:
        out["x-amz-checksum-algorithm"] = request.headers["x-amz-checksum-algorithm"]
    return web.Response(status=200, body=body, headers=out, content_type="application/xml")


async def store_part(gw: Gateway, ctx: RequestContext, upload: Upload, part_number: int,
                     body: AsyncIterable[bytes], length: int, outcome: BodyOutcome) -> str:
    """Encrypt and store one part; its client ETag (an upstream refusal is raised as its S3 error)."""
    if length > MAX_UPLOAD_SIZE:
        raise entity_too_large(MAX_UPLOAD_SIZE, length)
    object_key = await upload_object_key(gw, ctx, upload)
    params = StreamParams.new()
    stored = encrypt_part(body, object_key, part_number, length, params)
    query = [("partNumber", str(part_number)), ("uploadId", upload.upstream_id)]
    upstream = await send_put(gw, ctx.raw_path, query, {}, stored, part_stored_size(length), outcome)
    async with upstream:
        if upstream.status != 200:
            raise from_upstream(upstream.status, await read_small(upstream), upstream.headers)
        return gw.tokens.issue_part_etag(upload, part_number, upstream.headers.get("ETag", ""), params,
                                         outcome.echoed)


async def upload_part(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = upload_of(gw, ctx, carries_data=True)
    if upload is None:
        return await passthrough.proxy(gw, ctx)
    number = part_number_param(ctx)
    request = ctx.request
    framed = is_framed(ctx)
    length = plaintext_length(request.headers, framed)
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash)
    outcome = BodyOutcome()
    body = checked(decoded_body(ctx, length, checks, framed), checks, outcome, length)
    etag = await store_part(gw, ctx, upload, number, body, length, outcome)
    return web.Response(status=200, headers={"ETag": etag, **outcome.echoed, **mode_headers(ctx, upload.info)})


@dataclass(frozen=True)
class _RequestedPart:
    number: int
    etag: str
    checksums: Mapping[str, str]


def parse_complete(body: bytes) -> list[_RequestedPart]:
    """The client's part list: ETags quoted, entity-escaped or bare; numbers ascending, gaps allowed."""
    root = parse_request(body, "CompleteMultipartUpload")
    parts = []
    for element in children(root, "Part"):
        number, etag = text(element, "PartNumber"), text(element, "ETag")
        parsed = None if number is None else parse_decimal(number.strip(), MAX_PARTS + 1)
        if parsed is None or etag is None:
            raise malformed_xml()
        checksums = {_CHECKSUM_ELEMENTS[local(item.tag)]: (item.text or "").strip()
                     for item in element if local(item.tag) in _CHECKSUM_ELEMENTS}
        parts.append(_RequestedPart(parsed, etag.strip(), checksums))
    if not parts:
        raise malformed_xml()
    numbers = [part.number for part in parts]
    if numbers != sorted(set(numbers)) or not 1 <= numbers[0] or numbers[-1] > MAX_PARTS:
        raise invalid_part_order()
    return parts


async def _stored_parts(gw: Gateway, ctx: RequestContext, upload: Upload) -> dict[int, tuple[str, int]]:
    """Part number -> (upstream ETag, stored size), from the upstream's ListParts (all pages)."""
    parts: dict[int, tuple[str, int]] = {}
    marker = "0"
    while True:
        query = [("uploadId", upload.upstream_id), ("max-parts", "1000"), ("part-number-marker", marker)]
        upstream = await gw.upstream.request("GET", ctx.raw_path, query, {})
        async with upstream:
            body = await read_small(upstream)
            if upstream.status != 200:
                raise from_upstream(upstream.status, body, upstream.headers)
        root = parse_response(body)
        for element in children(root, "Part"):
            number = parse_upstream_decimal(text(element, "PartNumber") or "")
            size = parse_upstream_decimal(text(element, "Size") or "")
            if number is None or size is None:
                log.error("upstream ListParts of %s gave a part without a decimal PartNumber and Size", ctx.raw_path)
                raise internal_error()
            parts[number] = ((text(element, "ETag") or "").strip().strip('"'), size)
        marker = text(root, "NextPartNumberMarker") or ""
        if (text(root, "IsTruncated") or "").lower() != "true" or not marker:
            return parts


def _checked_manifest(gw: Gateway, upload: Upload, requested: list[_RequestedPart],
                      stored: Mapping[int, tuple[str, int]]) -> Manifest:
    """The manifest of the parts the client named, each matched against what was recorded and stored."""
    parts = []
    for index, wanted in enumerate(requested):
        try:
            record = gw.tokens.parse_part_etag(upload, wanted.number, wanted.etag)
        except ForgedToken:
            raise invalid_part() from None
        upstream_etag, stored_size = stored.get(wanted.number, ("", -1))
        if upstream_etag != record.upstream_etag or stored_size < PART_OVERHEAD:
            raise invalid_part()
        for algorithm, value in wanted.checksums.items():
            if record.params is None:
                raise invalid_part(f"Part {wanted.number} is named by its upstream ETag, so its {algorithm.upper()} "
                                   "checksum cannot be verified; use the ETag UploadPart returned.")
            if record.checksum != (algorithm, value):
                raise invalid_part(f"The {algorithm.upper()} checksum given for part {wanted.number} does not "
                                   "match the checksum of the part as it was uploaded.")
        size = stored_size - PART_OVERHEAD
        if index < len(requested) - 1 and size < MIN_PART_SIZE:
            raise entity_too_small()
        parts.append(ManifestPart(wanted.number, size, record.params))
    return Manifest(tuple(parts))


def _upstream_complete_body(requested: list[_RequestedPart], stored: Mapping[int, tuple[str, int]]) -> bytes:
    parts = "".join(f'<Part><PartNumber>{part.number}</PartNumber><ETag>"{stored[part.number][0]}"</ETag></Part>'
                    for part in requested)
    return f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()


async def _put_manifest(gw: Gateway, bucket: str, tag: str, sealed: bytes) -> None:
    path = manifest_path(bucket, tag)
    headers = {"content-type": "application/octet-stream"}
    upstream = await gw.upstream.request("PUT", path, [], headers, body=sealed, content_length=len(sealed),
                                         payload_hash=hashlib.sha256(sealed).hexdigest())
    async with upstream:
        if upstream.status != 200:
            body = await read_small(upstream)
            log.error("storing manifest %s failed: %s %s", path, upstream.status, body[:200])
            raise from_upstream(upstream.status, body, upstream.headers)


async def complete_multipart_upload(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = upload_of(gw, ctx, carries_data=True)
    if upload is None:
        return await passthrough.proxy(gw, ctx)
    s3, info = ctx.s3, upload.info
    requested = parse_complete(await read_body(ctx, MAX_COMPLETE_BODY))
    object_key = await upload_object_key(gw, ctx, upload)
    stored = await _stored_parts(gw, ctx, upload)
    manifest = _checked_manifest(gw, upload, requested, stored)
    assert info.upload_tag is not None
    await _put_manifest(gw, s3.bucket, info.upload_tag, seal_manifest(object_key, info.upload_tag, manifest))
    body = _upstream_complete_body(requested, stored)
    upstream = await gw.upstream.request("POST", ctx.raw_path, _upstream_query(ctx, upload), {}, body=body,
                                         content_length=len(body), payload_hash=hashlib.sha256(body).hexdigest())
    async with upstream:
        answer = await read_small(upstream)
        # The manifest stays on failure: a concurrent or retried Complete of this upload may have succeeded with it.
        if upstream.status != 200:
            return error_answer(ctx, upstream.status, upstream.headers, answer)
        if b"<Error>" in answer:  # S3's failure inside a 200, relayed as S3 sent it
            return web.Response(status=200, body=answer, content_type="application/xml")
        etag = client_etag(text(parse_response(answer), "ETag") or "")
        headers = {**mode_headers(ctx, info), **response_headers(upstream.headers, drop=("content-*", "etag",
                                                                                         "x-amz-server-side-*"))}
    gw.upload_keys.pop(upload.client_id)
    gw.manifests.put(manifest_cache_key(s3.bucket, info.upload_tag, object_key), manifest)
    location = f"{ctx.request.scheme}://{ctx.request.host}/{s3.bucket}/{s3.key}"
    result = render("CompleteMultipartUploadResult",
                    {"Location": location, "Bucket": s3.bucket, "Key": s3.key, "ETag": etag})
    return web.Response(status=200, body=result, headers=headers, content_type="application/xml")


async def abort_multipart_upload(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = upload_of(gw, ctx, carries_data=False)
    if upload is not None:
        gw.upload_keys.pop(upload.client_id)
    return await passthrough.proxy(gw, ctx, _upstream_query(ctx, upload))


def rewrite_list_parts(body: bytes, client_id: str) -> bytes:
    """Upstream ListParts in the client's terms: its UploadId, plaintext sizes, no ciphertext checksums."""
    root = parse_response(body)
    upload_id = child(root, "UploadId")
    if upload_id is not None:
        upload_id.text = client_id
    for element in list(root):
        if local(element.tag) == "ChecksumAlgorithm":
            root.remove(element)
    for part in children(root, "Part"):
        for item in list(part):
            name = local(item.tag)
            if name in _CHECKSUM_ELEMENTS:
                part.remove(item)
            elif name == "Size" and (size := parse_upstream_decimal(item.text or "")) is not None:
                item.text = str(max(0, size - PART_OVERHEAD))
    return serialize(root)


async def list_parts(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = upload_of(gw, ctx, carries_data=False)
    if upload is None:
        return await passthrough.proxy(gw, ctx)
    upstream = await gw.upstream.request("GET", ctx.raw_path, _upstream_query(ctx, upload), {})
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        body = rewrite_list_parts(await read_small(upstream), upload.client_id)
        return web.Response(status=200, body=body, headers=response_headers(upstream.headers, drop=("content-*",)),
                            content_type="application/xml")
