"""CopyObject and UploadPartCopy: decrypt the source, re-encrypt for the destination, as one stream.

The upstream cannot copy encrypted objects itself (the destination needs its own object key, bound to
its own bucket and key), so the gateway reads the source's plaintext and writes it like a PutObject
or UploadPart, in constant memory. A source the gateway did not encrypt is read as it is: copying a
legacy object is how it gets encrypted. The source's SSE-C key comes in the
``x-amz-copy-source-server-side-encryption-customer-*`` headers, the destination's in the usual ones.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import AsyncIterator, Mapping
from urllib.parse import parse_qs, unquote, urlencode

import aiohttp
from aiohttp import web

from gateway.checksums import BodyChecks
from gateway.crypto import metadata
from gateway.crypto.multipart import Manifest
from gateway.crypto.sse import EncryptionInfo
from gateway.crypto.stream import IntegrityError
from common.digits import parse_decimal
from gateway.etag import client_etag
from gateway.handlers import passthrough
from gateway.handlers.conditions import evaluate_conditions
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.handlers.context import Gateway, RequestContext, object_path
from gateway.handlers.get_object import (PinnedReader, bucket_state_needed, check_unencrypted_read, decrypted,
                                         integrity_failure, load_manifest, open_object_key, plaintext_size_of,
                                         stored_size)
from gateway.handlers.multipart import part_number_param, store_part, upload_of
from gateway.handlers.passthrough import read_small, relay
from gateway.handlers.put_object import response_headers, store
from gateway.handlers.sse_headers import mode_headers
from gateway.handlers.upload_body import BodyOutcome, checked, refuse_reserved
from gateway.policy import (COPY_SOURCE_SSEC_PREFIX, DESTINATION_SSE_HEADERS, SSE_HEADERS, SSEC_ALGORITHM, SSEC_KEY,
                            SSEC_KEY_MD5, customer_key, decide_put)
from gateway.s3errors import (S3Error, access_denied, entity_too_large, from_upstream, invalid_argument,
                              invalid_request, not_implemented, precondition_failed)
from gateway.reserved import refuse_reserved_key
from gateway.s3xml import local, parse_response, render, text
from gateway.upstream import forwardable_headers

_CONTENT_HEADERS = ("content-type", "content-encoding", "content-disposition", "content-language",
                    "cache-control", "expires", "x-amz-website-redirect-location")
_COPY_CONDITIONS = {f"x-amz-copy-source-if-{name}": f"if-{name}"
                    for name in ("match", "none-match", "modified-since", "unmodified-since")}


@dataclass(frozen=True)
class Source:
    """The copy source as the gateway will read it."""

    bucket: str
    key: str
    query: list[tuple[str, str]]
    headers: Mapping[str, str]  # the upstream HEAD's headers
    info: EncryptionInfo | None
    size: int
    object_key: bytes | None
    manifest: Manifest | None

    @property
    def path(self) -> str:
        return object_path(self.bucket, self.key)


def _parse_copy_source(value: str) -> tuple[str, str, list[tuple[str, str]]]:
    """``[/]bucket/key[?versionId=v]`` (URL-encoded) -> bucket, key, upstream query."""
    raw_path, _, raw_query = value.partition("?")
    bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
    version = parse_qs(raw_query).get("versionId", [""])[0]
    if not bucket or not key:
        raise invalid_argument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                               "x-amz-copy-source", value)
    refuse_reserved_key(key)
    return bucket, key, [("versionId", version)] if version else []


def _source_customer_key(gw: Gateway, ctx: RequestContext) -> bytes | None:
    """The source's SSE-C key, validated as S3 validates the destination's."""
    headers = ctx.request.headers
    renamed = {target: headers[COPY_SOURCE_SSEC_PREFIX + suffix]
               for target, suffix in ((SSEC_ALGORITHM, "algorithm"), (SSEC_KEY, "key"), (SSEC_KEY_MD5, "key-md5"))
               if COPY_SOURCE_SSEC_PREFIX + suffix in headers}
    return customer_key(renamed, secure=ctx.secure, allow_http=gw.config.allow_ssec_over_http)


def _check_conditions(ctx: RequestContext, etag: str, last_modified: str | None) -> None:
    """x-amz-copy-source-if-*: any failed condition is 412 for a copy (S3 has no 304 here)."""
    conditions = {target: ctx.request.headers[name] for name, target in _COPY_CONDITIONS.items()
                  if name in ctx.request.headers}
    if conditions and evaluate_conditions(conditions, etag, last_modified) is not None:
        raise precondition_failed()


async def open_source(gw: Gateway, ctx: RequestContext, whole: bool = False) -> Source:
    """HEAD the source, check the copy conditions, and open its object key (one KMS call).

    ``whole``: the whole source is copied (CopyObject), so one over S3's copy limit is refused from
    the HEAD, before the KMS call."""
    bucket, key, query = _parse_copy_source(ctx.request.headers["x-amz-copy-source"])
    no_plaintext: bool | None = None
    while True:
        upstream = await gw.upstream.request("HEAD", object_path(bucket, key), query, {})
        async with upstream:
            if upstream.status != 200:
                raise _source_error(upstream.status, upstream.headers)
            headers = upstream.headers
            try:
                info = metadata.decode(headers)
                size = plaintext_size_of(upstream, info) if info else stored_size(upstream)
            except (ValueError, IntegrityError) as exc:
                raise integrity_failure(bucket, key, exc) from None
            if info is not None or no_plaintext is not None or not bucket_state_needed(gw, bucket):
                return await _opened_source(gw, ctx, upstream, bucket, key, query, info, size, whole, no_plaintext)
        # A legacy source and its bucket's state unknown: look it up holding no upstream response (the
        # pool), then HEAD the source afresh (it may have changed meanwhile).
        no_plaintext = await gw.bucket_states.holds_no_plaintext(bucket)


async def _opened_source(gw: Gateway, ctx: RequestContext, upstream: aiohttp.ClientResponse, bucket: str, key: str,
                         query: list[tuple[str, str]], info: EncryptionInfo | None, size: int, whole: bool,
                         no_plaintext: bool | None) -> Source:
    headers = upstream.headers
    etag = client_etag(headers.get("ETag", "")) if info else headers.get("ETag", "")
    _check_conditions(ctx, etag, headers.get("Last-Modified"))
    if whole and size > MAX_UPLOAD_SIZE:
        raise invalid_request("The specified copy source is larger than the maximum allowable size for a "
                              f"copy source: {MAX_UPLOAD_SIZE}")
    if info is None:
        check_unencrypted_read(gw, bucket, no_plaintext)
        return Source(bucket, key, query, headers.copy(), None, size, None, None)
    object_key = await open_object_key(gw, bucket, key, info, _source_customer_key(gw, ctx))
    try:
        manifest = await load_manifest(gw, bucket, object_key, info, upstream) if info.upload_tag else None
    except (ValueError, IntegrityError) as exc:
        raise integrity_failure(bucket, key, exc) from None
    return Source(bucket, key, query, headers.copy(), info, size, object_key, manifest)


def _source_error(status: int, headers: Mapping[str, str]) -> S3Error:
    """A HEAD answer has no body to relay: S3's errors for a missing or forbidden copy source, and
    for an unavailable upstream the error its status stands for (a 503 stays a retryable 503)."""
    if status == 404:
        return S3Error("NoSuchKey", "The specified copy source does not exist.", 404)
    if status == 403:
        return access_denied("Access to the copy source was denied.")
    return from_upstream(status, b"", headers)


async def source_plaintext(gw: Gateway, source: Source, span: tuple[int, int] | None) -> AsyncIterator[bytes]:
    """The source's bytes (a span, or all); an integrity failure becomes an S3 error that cuts the copy."""
    reader = PinnedReader(gw, source.path, source.query, source.headers.get("ETag", ""))
    if source.info is None:
        if source.size == 0:
            return
        first, last = span or (0, source.size - 1)
        chunks = reader.chunks(first, last)
    else:
        assert source.object_key is not None
        chunks = decrypted(reader, source.object_key, source.info, source.manifest, span)
    try:
        async for chunk in chunks:
            yield chunk
    except IntegrityError as exc:
        raise integrity_failure(source.bucket, source.key, exc) from None


def _destination_headers(ctx: RequestContext, source: Source) -> dict[str, str]:
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
               if not name.startswith("x-amz-meta-") and name not in _CONTENT_HEADERS}
    for name, value in source.headers.items():
        lname = name.lower()
        if (lname.startswith("x-amz-meta-") and not metadata.is_reserved(lname)) or lname in _CONTENT_HEADERS:
            headers[lname] = value
    return headers


async def _with_tags(gw: Gateway, ctx: RequestContext, source: Source, headers: dict[str, str]) -> dict[str, str]:
    """Tagging directive COPY (the default) gives the destination the source's tags, REPLACE the request's."""
    directive = ctx.request.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown tagging directive.", "x-amz-tagging-directive", directive)
    if directive == "REPLACE":
        return headers
    upstream = await gw.upstream.request("GET", source.path, [*source.query, ("tagging", "")], {})
    async with upstream:
        body = await read_small(upstream)
        if upstream.status != 200:
            raise from_upstream(upstream.status, body, upstream.headers)
    tags = [(text(tag, "Key") or "", text(tag, "Value") or "") for tag in parse_response(body).iter()
            if local(tag.tag) == "Tag"]
    headers = {name: value for name, value in headers.items() if name != "x-amz-tagging"}
    return {**headers, "x-amz-tagging": urlencode(tags)} if tags else headers


def _refuse_pointless_self_copy(ctx: RequestContext, source: Source) -> None:
    headers = ctx.request.headers
    changes = (headers.get("x-amz-metadata-directive", "").upper() == "REPLACE"
               or any(name in headers for name in DESTINATION_SSE_HEADERS) or "x-amz-storage-class" in headers)
    if (source.bucket, source.key) == (ctx.s3.bucket, ctx.s3.key) and not source.query and not changes:
        raise invalid_request("This copy request is illegal because it is trying to copy an object to itself "
                              "without changing the object's metadata, storage class, website redirect location "
                              "or encryption attributes.")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _source_version_header(source: Source) -> dict[str, str]:
    version = source.headers.get("x-amz-version-id")
    return {"x-amz-copy-source-version-id": version} if version and version != "null" else {}


async def copy_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    refuse_reserved(ctx.request.headers)
    source = await open_source(gw, ctx, whole=True)
    _refuse_pointless_self_copy(ctx, source)
    sse = decide_put(gw.config, ctx.s3.bucket, ctx.request.headers, secure=ctx.secure)
    outcome = BodyOutcome()
    body = checked(source_plaintext(gw, source, None), BodyChecks(), outcome, source.size)
    headers = await _with_tags(gw, ctx, source, _destination_headers(ctx, source))
    upstream, info = await store(gw, ctx, headers, sse, body, source.size, outcome)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        headers = response_headers(ctx, upstream, info, {})
    result = render("CopyObjectResult", {"LastModified": _now(), "ETag": headers.pop("ETag")})
    return web.Response(status=200, body=result, content_type="application/xml",
                        headers={**headers, **_source_version_header(source)})


def _copy_range(ctx: RequestContext, size: int) -> tuple[int, int] | None:
    return parse_copy_range(ctx.request.headers.get("x-amz-copy-source-range"), size)


def parse_copy_range(value: str | None, size: int) -> tuple[int, int] | None:
    """x-amz-copy-source-range ``bytes=first-last`` (ASCII digits, any length), which must lie inside a
    source of ``size`` bytes; S3's 400 InvalidArgument otherwise."""
    if value is None:
        return None
    first_text, dash, last_text = value.strip().removeprefix("bytes=").partition("-")
    first, last = parse_decimal(first_text, size), parse_decimal(last_text, size)  # >= size: out of range
    if not (value.strip().startswith("bytes=") and dash and first is not None and last is not None):
        raise invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last where "
                               "first and last are the zero-based offsets of the first and last bytes to copy",
                               "x-amz-copy-source-range", value)
    if not first <= last < size:
        raise invalid_argument(f"Range specified is not valid for source object of size: {size}",
                               "x-amz-copy-source-range", value)
    return first, last


async def upload_part_copy(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    upload = upload_of(gw, ctx, carries_data=True)
    number = part_number_param(ctx)
    source = await open_source(gw, ctx)
    if upload is None:
        if source.info is not None:
            raise not_implemented("Copying an encrypted object into an unencrypted multipart upload is not supported")
        return await passthrough.proxy(gw, ctx)
    span = _copy_range(ctx, source.size)
    length = span[1] - span[0] + 1 if span else source.size
    if length > MAX_UPLOAD_SIZE:
        raise entity_too_large(MAX_UPLOAD_SIZE, length)
    outcome = BodyOutcome()
    body = checked(source_plaintext(gw, source, span), BodyChecks(), outcome, length)
    etag = await store_part(gw, ctx, upload, number, body, length, outcome)
    result = render("CopyPartResult", {"LastModified": _now(), "ETag": etag})
    return web.Response(status=200, body=result, content_type="application/xml",
                        headers={**mode_headers(ctx, upload.info), **_source_version_header(source)})

