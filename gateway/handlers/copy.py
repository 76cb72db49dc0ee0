"""CopyObject and UploadPartCopy: decrypt the source, re-encrypt for the destination, as one stream.

The upstream cannot copy encrypted objects itself (the destination needs its own object key, bound to
its own bucket and key), so the source's plaintext, read through the object layer, is written like a
PutObject or UploadPart, in constant memory. A source the gateway did not encrypt is read as it is:
copying a legacy object is how it gets encrypted. The source's SSE-C key comes in the
``x-amz-copy-source-server-side-encryption-customer-*`` headers, the destination's in the usual ones.
"""
from __future__ import annotations

import datetime
from contextlib import asynccontextmanager
from typing import AsyncIterator
from urllib.parse import parse_qs, quote, urlencode

from aiohttp import web

from gateway.checksums import BodyChecks
from gateway.crypto.checksum import FULL_OBJECT, ObjectChecksum
from gateway.handlers.conditions import evaluate_conditions
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import forward, written_headers
from gateway.handlers.request_body import BodyOutcome, checked, refuse_reserved
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.objects.multipart import part_checksum_algorithm
from gateway.objects.reading import ObjectRef, OpenedObject, StoredObject
from gateway.objects.writing import CONTENT_HEADERS, object_headers
from gateway.ranges import parse_copy_range
from gateway.reserved import refuse_reserved_key
from gateway.s3client import UpstreamError
from gateway.s3request import decode_uri_part
from gateway.s3errors import (S3Error, access_denied, entity_too_large, invalid_argument, invalid_request,
                              not_implemented, precondition_failed)
from gateway.s3xml import render
from gateway.sseheaders import DESTINATION_SSE_HEADERS, SSE_HEADERS, decide_put, mode_headers, refuse_blocked_ssec
from gateway.upstream import forwardable_headers

_COPY_CONDITIONS = {f"x-amz-copy-source-if-{name}": f"if-{name}"
                    for name in ("match", "none-match", "modified-since", "unmodified-since")}


def parse_copy_source(value: str) -> ObjectRef:
    """``[/]bucket/key[?versionId=v]`` (URL-encoded) -> the source object."""
    raw_path, _, raw_query = value.partition("?")
    bucket, _, key = decode_uri_part(raw_path).lstrip("/").partition("/")
    version = parse_qs(raw_query).get("versionId", [""])[0]
    if not bucket or not key:
        raise invalid_argument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                               "x-amz-copy-source", value)
    refuse_reserved_key(key)
    return ObjectRef(bucket, key, version or None)


@asynccontextmanager
async def _source(gw: Gateway, ctx: RequestContext, *, whole: bool) -> AsyncIterator[OpenedObject]:
    """The copy source, its conditions checked and its key opened (one KMS call).

    ``whole``: the whole source is copied (CopyObject), so one over S3's copy limit is refused from the
    HEAD, before the KMS call."""
    ref = parse_copy_source(ctx.request.headers["x-amz-copy-source"])
    found = False
    try:
        async with ctx.objects(gw).reader.stat(ref) as stored:
            found = True
            _check_conditions(ctx, stored)
            if whole and stored.size > MAX_UPLOAD_SIZE:
                raise invalid_request("The specified copy source is larger than the maximum allowable size for "
                                      f"a copy source: {MAX_UPLOAD_SIZE}")
            customer_key = ctx.copy_source_customer_key(gw) if stored.encrypted else None
            yield await stored.open(customer_key, requester=ctx.requester(gw))
    except UpstreamError as exc:
        if found:  # not the source's HEAD: an error of the copy itself
            raise
        raise _source_error(exc) from None


def _source_error(exc: UpstreamError) -> Exception:
    """A HEAD answer has no body to relay: S3's errors for a missing or forbidden copy source, and
    for an unavailable upstream the error its status stands for (a 503 stays a retryable 503)."""
    if exc.status == 404:
        return S3Error("NoSuchKey", "The specified copy source does not exist.", 404)
    if exc.status == 403:
        return access_denied("Access to the copy source was denied.")
    return exc


def _check_conditions(ctx: RequestContext, stored: StoredObject) -> None:
    """x-amz-copy-source-if-*: any failed condition is 412 for a copy (S3 has no 304 here)."""
    conditions = {target: ctx.request.headers[name] for name, target in _COPY_CONDITIONS.items()
                  if name in ctx.request.headers}
    if conditions and evaluate_conditions(conditions, stored.etag, stored.last_modified) is not None:
        raise precondition_failed()


def _destination_headers(ctx: RequestContext, source: StoredObject) -> dict[str, str]:
    """Metadata directive COPY (the default) takes the source's user metadata and content headers,
    never its reserved ones; REPLACE takes the request's."""
    directive = ctx.request.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown metadata directive.", "x-amz-metadata-directive", directive)
    headers = {name: value for name, value in forwardable_headers(ctx.request.headers, drop=SSE_HEADERS).items()
               if not name.startswith(("x-amz-copy-source", "x-amz-metadata-directive", "x-amz-tagging-directive"))}
    if directive == "REPLACE":
        return headers
    headers = {name: value for name, value in headers.items()
               if not name.startswith("x-amz-meta-") and name not in CONTENT_HEADERS}
    return {**headers, **object_headers(source.head.headers)}


async def _with_tags(ctx: RequestContext, source: StoredObject,
                     headers: dict[str, str]) -> dict[str, str]:
    """Tagging directive COPY (the default) gives the destination the source's tags, REPLACE the request's."""
    directive = ctx.request.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown tagging directive.", "x-amz-tagging-directive", directive)
    if directive == "REPLACE":
        return headers
    tags = await source.tags()
    headers = {name: value for name, value in headers.items() if name != "x-amz-tagging"}
    return {**headers, "x-amz-tagging": urlencode(tags, quote_via=quote)} if tags else headers


def _refuse_pointless_self_copy(ctx: RequestContext, source: ObjectRef) -> None:
    headers = ctx.request.headers
    changes = (headers.get("x-amz-metadata-directive", "").upper() == "REPLACE"
               or any(name in headers for name in DESTINATION_SSE_HEADERS) or "x-amz-storage-class" in headers)
    if (source.bucket, source.key) == (ctx.s3.bucket, ctx.s3.key) and not source.version_id and not changes:
        raise invalid_request("This copy request is illegal because it is trying to copy an object to itself "
                              "without changing the object's metadata, storage class, website redirect location "
                              "or encryption attributes.")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _source_version_header(source: StoredObject) -> dict[str, str]:
    version = source.head.version_id
    return {"x-amz-copy-source-version-id": version} if version else {}


def _copied(source: OpenedObject, span: tuple[int, int] | None, length: int, outcome: BodyOutcome,
            checks: BodyChecks | None = None) -> AsyncIterator[bytes]:
    """The source's plaintext, counted like a request body (a short source cuts the write); ``checks``
    computes the checksums a copied part records."""
    return checked(source.chunks(span), checks or BodyChecks(), outcome, length)


def _carried_checksum(ctx: RequestContext, source: OpenedObject) -> ObjectChecksum | None:
    """The destination's checksum: the source's full-object one (the same plaintext), unless the request asks
    for another algorithm (``x-amz-checksum-algorithm``), which would be known only after the body, too late
    to be stored with it. A composite checksum describes the source's parts, not the single-stream copy."""
    checksum = source.checksum
    wanted = ctx.request.headers.get("x-amz-checksum-algorithm", "").strip().lower()
    if checksum is None or checksum.kind != FULL_OBJECT or wanted not in ("", checksum.algorithm):
        return None
    return checksum


async def copy_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    refuse_reserved(ctx.request.headers)
    # before the source holds a connection
    defaults = await ctx.objects(gw).bucket_encryption.defaults(ctx.s3.bucket)
    async with _source(gw, ctx, whole=True) as source:
        _refuse_pointless_self_copy(ctx, source.stored.ref)
        sse = decide_put(gw.config, ctx.s3.bucket, ctx.request.headers, secure=ctx.secure, defaults=defaults)
        headers = await _with_tags(ctx, source.stored, _destination_headers(ctx, source.stored))
        outcome = BodyOutcome()
        with outcome.reported():
            written = await ctx.objects(gw).writer.put(ctx.s3.bucket, ctx.s3.key, headers, sse,
                                                       _copied(source, None, source.size, outcome), source.size,
                                                       requester=ctx.requester(gw),
                                                       checksum=_carried_checksum(ctx, source))
        answer = written_headers(written, ctx.customer_key(gw), {})
        result = render("CopyObjectResult", {"LastModified": _now(), "ETag": answer.pop("ETag")})
        return web.Response(status=200, body=result, content_type="application/xml",
                            headers={**answer, **_source_version_header(source.stored)})


async def upload_part_copy(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = ctx.upload(gw, carries_data=True)
    number = ctx.part_number()
    if ctx.customer_key(gw) is not None:  # before the source is opened: no upstream read held meanwhile
        refuse_blocked_ssec(await ctx.objects(gw).bucket_encryption.defaults(ctx.s3.bucket))
    async with _source(gw, ctx, whole=False) as source:
        if upload is None:
            if source.stored.encrypted:
                raise not_implemented("Copying an encrypted object into an unencrypted multipart upload is not "
                                      "supported")
            # The upstream copies: only the version checked here (legacy, its conditions met) may be copied.
            return await forward(gw, ctx, headers={"x-amz-copy-source-if-match": source.stored.head.etag})
        span = parse_copy_range(ctx.request.headers.get("x-amz-copy-source-range"), source.size)
        length = span[1] - span[0] + 1 if span else source.size
        if length > MAX_UPLOAD_SIZE:
            raise entity_too_large(MAX_UPLOAD_SIZE, length)
        outcome = BodyOutcome()
        customer_key = ctx.customer_key(gw)
        checks = BodyChecks.computing((part_checksum_algorithm(upload, None),))
        with outcome.reported():
            etag = await ctx.objects(gw).uploads.put_part(ctx.s3.bucket, ctx.s3.key, upload, number,
                                                          _copied(source, span, length, outcome, checks),
                                                          length, customer_key, outcome.echoed, requester=ctx.requester(gw))
        fields = {"LastModified": _now(), "ETag": etag}
        if upload.checksum_intent is not None:  # the client asked for part checksums: S3 shows the part's
            fields.update({f"Checksum{name.removeprefix('x-amz-checksum-').upper()}": value
                           for name, value in outcome.echoed.items()})
        result = render("CopyPartResult", fields)
        return web.Response(status=200, body=result, content_type="application/xml",
                            headers={**mode_headers(upload.info, customer_key), **_source_version_header(source.stored)})
