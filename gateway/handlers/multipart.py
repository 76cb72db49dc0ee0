"""Multipart uploads: Create, UploadPart, Complete, Abort and ListParts, encrypted part by part.

The object layer (gateway/objects/multipart.py) opens the upload with the object's encryption metadata,
encrypts each part as its own stream, and completes the upload with a checked, sealed manifest; the
client's UploadId and part ETags carry what it needs between requests (gateway/uploads.py). Uploads in
pass-through buckets that asked for no encryption keep the upstream's ids and pass through.
"""
from __future__ import annotations

import base64
import binascii
from typing import Mapping

from aiohttp import web

from common.digits import parse_decimal, parse_upstream_decimal
from gateway.checksums import ALGORITHMS, DIGEST_SIZES, STRIPPED_HEADERS, BodyChecks, sent_algorithm
from gateway.crypto.checksum import (COMPOSITE_ALGORITHMS, FULL_OBJECT, FULL_OBJECT_ALGORITHMS, KINDS,
                                     ObjectChecksum, default_kind)
from gateway.etag import client_etag
from gateway.handlers.conditions import upstream_if_match
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import forward, read_small, relay, response_headers
from gateway.handlers.request_body import (BodyOutcome, checked, decoded_body, is_framed, plaintext_length,
                                           read_body, refuse_reserved)
from gateway.limits import MAX_PARTS
from gateway.objects.multipart import ExpectedChecksum, RequestedPart, part_checksum_algorithm
from gateway.objects.plaintext import part_plaintext_size
from gateway.s3errors import invalid_part_order, invalid_request, malformed_xml
from gateway.s3xml import child, children, local, parse_request, parse_response, render, serialize, text
from gateway.sseheaders import SSE_HEADERS, decide_put, mode_headers, refuse_blocked_ssec
from gateway.upstream import forwardable_headers

MAX_COMPLETE_BODY = 16 * 1024 * 1024
_CHECKSUM_ELEMENTS = {f"Checksum{name.upper()}": name for name in ALGORITHMS}
_UPLOAD_HEADERS_DROPPED = (*SSE_HEADERS, *STRIPPED_HEADERS, "x-amz-checksum-algorithm", "x-amz-checksum-type")


async def create_multipart_upload(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request, s3 = ctx.request, ctx.s3
    refuse_reserved(request.headers)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure,
                     defaults=await ctx.objects(gw).bucket_encryption.defaults(s3.bucket))
    if sse is None:
        return await forward(gw, ctx)
    headers = forwardable_headers(request.headers, drop=_UPLOAD_HEADERS_DROPPED)
    intent = checksum_intent(request.headers)
    created = await ctx.objects(gw).uploads.create(s3.bucket, s3.key, headers, sse, requester=ctx.requester(gw),
                                                   checksum_intent=intent)
    upload = gw.objects.tokens.parse_upload_id(s3.bucket, s3.key, created.upload_id)
    assert upload is not None
    await ctx.objects(gw).upload_records.record(s3.bucket, upload.upstream_id, created.upload_id)  # for listings
    body = render("InitiateMultipartUploadResult", {"Bucket": s3.bucket, "Key": s3.key, "UploadId": created.upload_id})
    out = mode_headers(created.info, ctx.customer_key(gw))
    if intent is not None:
        out.update({"x-amz-checksum-algorithm": intent[0].upper(), "x-amz-checksum-type": intent[1]})
    return web.Response(status=200, body=body, headers=out, content_type="application/xml")


async def upload_part(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = ctx.upload(gw, carries_data=True)
    if upload is None:
        return await forward(gw, ctx)
    number = ctx.part_number()
    request = ctx.request
    framed = is_framed(ctx)
    length = plaintext_length(request.headers, framed)
    sent = sent_algorithm(request.headers)
    recorded = part_checksum_algorithm(upload, sent)
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash,
                                     also_compute=() if recorded == sent else (recorded,))
    outcome = BodyOutcome()
    body = checked(decoded_body(ctx, length, checks, framed), checks, outcome, length)
    customer_key = ctx.customer_key(gw)
    if customer_key is not None:
        refuse_blocked_ssec(await ctx.objects(gw).bucket_encryption.defaults(ctx.s3.bucket))
    with outcome.reported():
        etag = await ctx.objects(gw).uploads.put_part(ctx.s3.bucket, ctx.s3.key, upload, number, body, length,
                                                      customer_key, outcome.echoed, requester=ctx.requester(gw))
    return web.Response(status=200, headers={"ETag": etag, **outcome.echoed, **mode_headers(upload.info, customer_key)})


def checksum_intent(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(algorithm, type) of a Create's ``x-amz-checksum-algorithm`` / ``x-amz-checksum-type``, by S3's rules:
    the type needs an algorithm, defaults to FULL_OBJECT for CRC64NVME and COMPOSITE otherwise, and SHAs
    cannot be FULL_OBJECT nor CRC64NVME COMPOSITE."""
    algorithm = headers.get("x-amz-checksum-algorithm", "").strip().lower()
    kind = headers.get("x-amz-checksum-type", "").strip().upper()
    if not algorithm:
        if kind:
            raise invalid_request("The x-amz-checksum-type header can only be used with the "
                                  "x-amz-checksum-algorithm header.")
        return None
    if algorithm not in ALGORITHMS:
        raise invalid_request("Checksum algorithm provided is unsupported. Please try again with any of the valid "
                              "types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]")
    if kind and kind not in KINDS:
        raise invalid_request("Value for x-amz-checksum-type header is invalid.")
    kind = kind or default_kind(algorithm)
    if algorithm not in (FULL_OBJECT_ALGORITHMS if kind == FULL_OBJECT else COMPOSITE_ALGORITHMS):
        raise invalid_request(f"The {kind} checksum type cannot be used with the {algorithm} checksum algorithm.")
    return algorithm, kind


def expected_checksum(headers: Mapping[str, str]) -> ExpectedChecksum | None:
    """The object checksum a Complete names in ``x-amz-checksum-<alg>`` (``b64`` or composite ``b64-N``)
    and ``x-amz-checksum-type``: the object's, not the XML body's."""
    named = [algorithm for algorithm in ALGORITHMS if f"x-amz-checksum-{algorithm}" in headers]
    if not named:
        return None
    if len(named) > 1:
        raise invalid_request("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.")
    algorithm = named[0]
    value = headers[f"x-amz-checksum-{algorithm}"].strip()
    encoded, dash, count = value.partition("-")
    parts = parse_decimal(count, MAX_PARTS + 1) if dash else None
    kind = headers.get("x-amz-checksum-type", "").strip().upper() or None
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != DIGEST_SIZES[algorithm] or (dash and not parts) or (kind is not None and kind not in KINDS):
        raise invalid_request(f"Value for x-amz-checksum-{algorithm} header is invalid.")
    return ExpectedChecksum(algorithm, digest, parts, kind)


def parse_complete(body: bytes) -> list[RequestedPart]:
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
        parts.append(RequestedPart(parsed, etag.strip(), checksums))
    if not parts:
        raise malformed_xml()
    numbers = [part.number for part in parts]
    if numbers != sorted(set(numbers)) or not 1 <= numbers[0] or numbers[-1] > MAX_PARTS:
        raise invalid_part_order()
    return parts


async def complete_multipart_upload(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = ctx.upload(gw, carries_data=True)
    if upload is None:
        return await forward(gw, ctx)
    s3 = ctx.s3
    expected = expected_checksum(ctx.request.headers)
    requested = parse_complete(await read_body(ctx, MAX_COMPLETE_BODY, object_checksums=True))
    customer_key = ctx.customer_key(gw)
    if_match = await upstream_if_match(gw, ctx)  # S3's conditional Complete: never dropped, or it overwrites
    completed = await ctx.objects(gw).uploads.complete(s3.bucket, s3.key, upload, requested, customer_key,
                                                       requester=ctx.requester(gw), if_match=if_match,
                                                       if_none_match=ctx.request.headers.get("if-none-match"),
                                                       expected=expected)
    await ctx.objects(gw).upload_records.forget(s3.bucket, upload.upstream_id)
    headers = {**mode_headers(upload.info, customer_key),
               **response_headers(completed.result.headers, drop=("content-*", "etag", "x-amz-server-side-*"))}
    location = f"{ctx.request.scheme}://{ctx.request.host}/{s3.bucket}/{s3.key}"
    fields = {"Location": location, "Bucket": s3.bucket, "Key": s3.key, "ETag": client_etag(completed.result.etag)}
    result = render("CompleteMultipartUploadResult", {**fields, **_checksum_fields(completed.manifest.checksum)})
    return web.Response(status=200, body=result, headers=headers, content_type="application/xml")


def _checksum_fields(checksum: ObjectChecksum | None) -> dict[str, str]:
    """S3's ``<ChecksumCRC32>…</ChecksumCRC32><ChecksumType>…</ChecksumType>`` of a completed object."""
    return {} if checksum is None else {checksum.element: checksum.value, "ChecksumType": checksum.kind}


async def abort_multipart_upload(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = ctx.upload(gw, carries_data=False)
    response = await forward(gw, ctx, ctx.upstream_query(upload))
    if response.status < 300:
        upstream_id = upload.upstream_id if upload is not None else ctx.request.rel_url.query.get("uploadId", "")
        await ctx.objects(gw).upload_records.forget(ctx.s3.bucket, upstream_id)
    return response


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
                item.text = str(part_plaintext_size(size))
    return serialize(root)


async def list_parts(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = ctx.upload(gw, carries_data=False)
    if upload is None:
        return await forward(gw, ctx)
    upstream = await ctx.upstream(gw).request("GET", ctx.raw_path, ctx.upstream_query(upload), {})
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        body = rewrite_list_parts(await read_small(upstream), upload.client_id)
        return web.Response(status=200, body=body, headers=response_headers(upstream.headers, drop=("content-*",)),
                            content_type="application/xml")
