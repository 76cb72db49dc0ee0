"""GetObject and HeadObject: serve the plaintext of encrypted objects, legacy objects as they are.

Read the reserved metadata, open the object key, map a Range onto whole ciphertext segments (one
upstream ranged GET) and decrypt as a stream. An integrity failure before the first byte is an S3
error; after the headers were sent it aborts the connection, never ends the body cleanly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from gateway.crypto import metadata
from gateway.crypto.sse import EncryptionInfo, MissingCustomerKey, SseRequest, WrongCustomerKey
from gateway.crypto.multipart import (HEADER_SIZE, Manifest, PartRead, decrypt_parts, object_plaintext_size,
                                      open_manifest, part_count_from_etag, plan_reads)
from gateway.crypto.stream import (IntegrityError, RangeNotSatisfiable, StreamDecryptor, ciphertext_size,
                                   decrypt_stream, parse_range_header, plan_range)
from common.digits import parse_upstream_decimal
from gateway.etag import client_etag
from gateway.handlers.conditions import CONDITIONAL_HEADERS, evaluate_conditions
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers import passthrough
from gateway.handlers.multipart import manifest_cache_key, manifest_path, part_number_param
from gateway.handlers.passthrough import (body_chunks, read_error_body, read_small, relay, response_headers,
                                          send_body)
from gateway.handlers.sse_headers import mode_headers, sse_mode
from gateway.policy import SSE_HEADERS, customer_key
from gateway.s3errors import (S3Error, access_denied, from_upstream, invalid_range, invalid_request,
                              precondition_failed)
from gateway.upstream import forwardable_headers

log = logging.getLogger("gateway.objects")

# Upstream response headers that describe the ciphertext or the upstream's own encryption.
_CIPHERTEXT_HEADERS = ("content-length", "content-range", "etag", "content-md5", "x-amz-checksum-*",
                       "x-amz-server-side-encryption*", metadata.RESERVED_PREFIX + "*", "x-amz-mp-parts-count")
_INTEGRITY_MESSAGE = "The object failed integrity verification"


def _conditional_response(ctx: RequestContext, outcome: int, etag: str, last_modified: str | None) -> web.Response:
    """412 as an S3 error naming the failed condition; 304 with the validators and no body."""
    if outcome == 412:
        condition = "If-Match" if "if-match" in ctx.request.headers else "If-Unmodified-Since"
        raise precondition_failed(condition)
    headers = {"ETag": etag, **({"Last-Modified": last_modified} if last_modified else {})}
    return web.Response(status=304, headers=headers)


async def _fetch(gw: Gateway, ctx: RequestContext, method: str,
                 extra: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
    """The upstream read of the whole stored object, without the client's conditions, range, partNumber
    and SSE headers (the gateway owns those)."""
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *CONDITIONAL_HEADERS, "range",
                                                             "x-amz-checksum-mode"))
    return await gw.upstream.request(method, ctx.raw_path, _stored_object_query(ctx), {**headers, **(extra or {})})


def _stored_object_query(ctx: RequestContext) -> list[tuple[str, str]]:
    """The request's query for reads of the stored object: partNumber is the gateway's to serve."""
    return [(name, value) for name, value in ctx.query if name != "partNumber"]


def bucket_state_needed(gw: Gateway, bucket: str) -> bool:
    """Whether `check_unencrypted_read` in ``bucket`` needs the bucket state and it is not cached: it must
    then be looked up (`BucketStates.holds_no_plaintext`) with no upstream response held open, or reads
    holding every pooled connection would each wait for one more (a legacy GET of a large object would
    wait for its own connection with a pool of one)."""
    return (gw.config.bucket_policy(bucket).encryption != "passthrough" and gw.config.allow_unencrypted_reads
            and gw.bucket_states.cached(bucket) is None)


def check_unencrypted_read(gw: Gateway, bucket: str, no_plaintext: bool | None = None) -> None:
    """Reading (or copying) an object the gateway did not encrypt: allowed in pass-through buckets,
    elsewhere only if the configuration allows it (else anything planted upstream would be served), and
    never in a bucket known to hold no plaintext (gateway/bucketstate.py): there an object without
    metadata is an encrypted one stripped of it, and serving it would hand out its ciphertext.

    ``no_plaintext``: the bucket state looked up by the caller, else the cached one (see
    `bucket_state_needed`); with neither the read is refused (fail closed)."""
    if gw.config.bucket_policy(bucket).encryption == "passthrough":
        return
    if not gw.config.allow_unencrypted_reads:
        raise access_denied("The object is not encrypted by the gateway and unencrypted reads are disabled.")
    if no_plaintext is None:
        no_plaintext = gw.bucket_states.cached(bucket)
    if no_plaintext is not False:
        raise access_denied("The object is not encrypted by the gateway, and its bucket holds only objects "
                            "the gateway encrypted.")


async def _legacy(gw: Gateway, ctx: RequestContext, upstream: aiohttp.ClientResponse,
                  no_plaintext: bool | None) -> web.StreamResponse:
    """An object without gateway metadata: stored before the gateway, or in a pass-through bucket,
    served as it is."""
    check_unencrypted_read(gw, ctx.s3.bucket, no_plaintext)
    etag = upstream.headers.get("ETag", "")
    outcome = evaluate_conditions(ctx.request.headers, etag, upstream.headers.get("Last-Modified"))
    if outcome is not None:
        return _conditional_response(ctx, outcome, etag, upstream.headers.get("Last-Modified"))
    if "partNumber" in ctx.request.rel_url.query:
        return await passthrough.proxy(gw, ctx)
    if "range" in ctx.request.headers and ctx.request.method == "GET":
        ranged = await _fetch(gw, ctx, "GET", {"range": ctx.request.headers["range"]})
        async with ranged:
            return await relay(ctx, ranged, drop=("x-amz-checksum-*",))
    return await relay(ctx, upstream, drop=("x-amz-checksum-*",))


async def open_object_key(gw: Gateway, bucket: str, key: str, info: EncryptionInfo,
                          client_key: bytes | None) -> bytes:
    """Open a stored object's key; SSE-C objects need the client's key (``client_key``), a wrong one is refused."""
    request = SseRequest(mode=info.mode, kms_key_id=None, kms_context=info.kms_context or {}, customer_key=client_key)
    try:
        return await sse_mode(gw, info.mode).open(bucket, key, info, request)
    except MissingCustomerKey:
        raise invalid_request("The object was stored using a form of Server Side Encryption. The correct "
                              "parameters must be provided to retrieve the object.") from None
    except WrongCustomerKey:
        raise access_denied("The provided customer key does not match the key the object was stored with.") from None
    except IntegrityError as exc:
        raise integrity_failure(bucket, key, exc) from None


def _requested_range(ctx: RequestContext, size: int) -> tuple[int, int] | None:
    value = ctx.request.headers.get("range")
    if value is None:
        return None
    try:
        return parse_range_header(value, size)
    except RangeNotSatisfiable:
        error = invalid_range(size)
        error.headers["Content-Range"] = f"bytes */{size}"
        raise error from None


def _plaintext_headers(ctx: RequestContext, upstream: aiohttp.ClientResponse, info: EncryptionInfo, size: int,
                       span: tuple[int, int] | None) -> tuple[int, dict[str, str]]:
    """Status and headers of the plaintext answer: sizes, range, ETag and SSE headers rewritten."""
    headers = response_headers(upstream.headers, drop=_CIPHERTEXT_HEADERS)
    headers["ETag"] = client_etag(upstream.headers.get("ETag", ""))
    headers["Accept-Ranges"] = "bytes"
    headers.update(mode_headers(ctx, info))
    if span is None:
        headers["Content-Length"] = str(size)
        return 200, headers
    headers["Content-Length"] = str(span[1] - span[0] + 1)
    if span[1] >= span[0]:  # an empty part has no range to name
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    return 206, headers


async def _stream_plaintext(ctx: RequestContext, response: web.StreamResponse,
                            plaintext: AsyncIterator[bytes]) -> web.StreamResponse:
    """Send the decrypted body; a failure before the first byte is an S3 error, after it an abort."""
    try:
        first = await anext(plaintext, b"")
    except IntegrityError as exc:
        raise integrity_failure(ctx.s3.bucket, ctx.s3.key, exc) from None
    return await send_body(ctx, response, _prepend(first, plaintext))


def integrity_failure(bucket: str, key: str, exc: Exception) -> S3Error:
    """What a client gets for an object that fails authentication (logged with the reason)."""
    log.error("integrity failure in %s/%s: %s", bucket, key, exc)
    return S3Error("InternalError", _INTEGRITY_MESSAGE, 500)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def stored_size(meta: aiohttp.ClientResponse) -> int:
    """The stored object's full size, from a HEAD/GET's Content-Length (or a 206's Content-Range);
    IntegrityError when the upstream gives none that is a decimal."""
    content_range = meta.headers.get("Content-Range", "")
    value = content_range.rsplit("/", 1)[1] if "/" in content_range else meta.headers.get("Content-Length", "")
    size = parse_upstream_decimal(value)
    if size is None:
        raise IntegrityError(f"the upstream gave no stored size ({value[:40]!r})")
    return size


def plaintext_size_of(meta: aiohttp.ClientResponse, info: EncryptionInfo) -> int:
    """Single-stream objects record it; a multipart object's follows from its size and part count.

    The recorded size is not authenticated until the last segment opens, so it must agree with the
    stored length here: a Content-Length goes out before the body, and a client must never be told
    a size (0, or petabytes) the stream cannot have.
    """
    if info.upload_tag is None:
        if info.plaintext_size is None:
            raise IntegrityError("the gateway metadata lacks the plaintext size")
        stored = stored_size(meta)
        if stored != ciphertext_size(info.plaintext_size):
            raise IntegrityError(f"the recorded plaintext size {info.plaintext_size} does not fit the "
                                 f"stored length {stored}")
        return info.plaintext_size
    count = part_count_from_etag(meta.headers.get("ETag", ""))
    if count is None:
        raise IntegrityError("a multipart object's ETag does not give its part count")
    return object_plaintext_size(stored_size(meta), count)


async def load_manifest(gw: Gateway, bucket: str, object_key: bytes, info: EncryptionInfo,
                        meta: aiohttp.ClientResponse) -> Manifest:
    """The object's manifest (cached by its random tag), checked against the stored size and part count."""
    assert info.upload_tag is not None
    cache_key = manifest_cache_key(bucket, info.upload_tag, object_key)
    manifest = gw.manifests.get(cache_key)
    if manifest is None:
        upstream = await gw.upstream.request("GET", manifest_path(bucket, info.upload_tag), [], {})
        async with upstream:
            body = await read_small(upstream, limit=1024 * 1024)
            if upstream.status in (403, 404):
                raise IntegrityError(f"the manifest is missing (upstream answered {upstream.status})")
            if upstream.status != 200:
                raise from_upstream(upstream.status, body, upstream.headers)
        manifest = open_manifest(object_key, info.upload_tag, body)
        gw.manifests.put(cache_key, manifest)
    if (manifest.stored_size != stored_size(meta)
            or len(manifest.parts) != part_count_from_etag(meta.headers.get("ETag", ""))):
        raise IntegrityError("the stored object does not have the parts its manifest names")
    return manifest


def _part_span(ctx: RequestContext, manifest: Manifest | None, size: int) -> tuple[int, int] | None:
    """GET/HEAD ?partNumber=N: the plaintext span of the object's N-th part (a single-stream object
    is one part)."""
    if "range" in ctx.request.headers:
        raise invalid_request("Cannot specify both Range header and partNumber query parameter")
    number = part_number_param(ctx)
    if number > (len(manifest.parts) if manifest else 1):
        raise S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)
    if manifest is None:
        return None
    start = sum(part.size for part in manifest.parts[:number - 1])
    return start, start + manifest.parts[number - 1].size - 1  # an empty part: end = start - 1


async def _serve_encrypted(gw: Gateway, ctx: RequestContext, meta: aiohttp.ClientResponse,
                           info: EncryptionInfo) -> web.StreamResponse:
    etag = client_etag(meta.headers.get("ETag", ""))
    last_modified = meta.headers.get("Last-Modified")
    outcome = evaluate_conditions(ctx.request.headers, etag, last_modified)
    if outcome is not None:
        return _conditional_response(ctx, outcome, etag, last_modified)
    client_key = customer_key(ctx.request.headers, secure=ctx.secure, allow_http=gw.config.allow_ssec_over_http)
    object_key = await open_object_key(gw, ctx.s3.bucket, ctx.s3.key, info, client_key)
    by_part = "partNumber" in ctx.request.rel_url.query
    try:
        size = plaintext_size_of(meta, info)
        manifest = None
        if info.upload_tag is not None and (by_part or ctx.request.method == "GET"):
            manifest = await load_manifest(gw, ctx.s3.bucket, object_key, info, meta)
    except (ValueError, IntegrityError) as exc:
        raise integrity_failure(ctx.s3.bucket, ctx.s3.key, exc) from None
    span = _part_span(ctx, manifest, size) if by_part else _requested_range(ctx, size)
    status, headers = _plaintext_headers(ctx, meta, info, size, span)
    if by_part and manifest is not None:
        headers["x-amz-mp-parts-count"] = str(len(manifest.parts))
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = int(headers.pop("Content-Length"))
    if ctx.request.method == "HEAD":
        await response.prepare(ctx.request)
        await response.write_eof()
        return response
    reader = PinnedReader(gw, ctx.raw_path, _stored_object_query(ctx), meta.headers.get("ETag", ""))
    whole_body = body_chunks(meta) if span is None and meta.method == "GET" else None
    plaintext = decrypted(reader, object_key, info, manifest, span, whole_body)
    return await _stream_plaintext(ctx, response, plaintext)


@dataclass(frozen=True)
class PinnedReader:
    """Further reads of one stored object, pinned by If-Match to the version whose metadata was read."""

    gw: Gateway
    path: str
    query: list[tuple[str, str]]
    etag: str

    async def get(self, first: int, last: int) -> aiohttp.ClientResponse:
        headers = {"if-match": self.etag, "range": f"bytes={first}-{last}"}
        upstream = await self.gw.upstream.request("GET", self.path, self.query, headers)
        if upstream.status == 206:
            return upstream
        async with upstream:
            if upstream.status in (200, 412):
                raise S3Error("InternalError", "The object changed while it was being read; retry.", 500)
            # The upstream failing (a 503 SlowDown) is its own error, still retryable as it was.
            raise from_upstream(upstream.status, await read_error_body(upstream), upstream.headers)

    async def chunks(self, first: int, last: int) -> AsyncIterator[bytes]:
        async with await self.get(first, last) as upstream:
            async for chunk in body_chunks(upstream):
                yield chunk

    async def header(self, read: PartRead) -> bytes:
        async with await self.get(read.stored_offset, read.stored_offset + HEADER_SIZE - 1) as upstream:
            return await upstream.content.read()


async def decrypted(reader: PinnedReader, object_key: bytes, info: EncryptionInfo, manifest: Manifest | None,
                    span: tuple[int, int] | None, whole_body: AsyncIterator[bytes] | None = None) -> AsyncIterator[bytes]:
    """The plaintext of ``span`` (None: all of it) of an encrypted object, read in one upstream request
    (``whole_body`` when the whole stored object is already being read). Raises IntegrityError."""
    if manifest is not None:
        reads = plan_reads(manifest, span)
        if not reads:  # an empty part
            return
        body = whole_body or reader.chunks(reads[0].upstream_start, reads[-1].upstream_end)
        async for chunk in decrypt_parts(body, object_key, reads, reader.header):
            yield chunk
        return
    assert info.params is not None and info.plaintext_size is not None
    size = info.plaintext_size
    plan = plan_range(size, *span) if span else None
    if whole_body is None:
        whole_body = reader.chunks(plan.cipher_start, plan.cipher_end) if plan else reader.chunks(
            0, ciphertext_size(size) - 1)
    async for chunk in decrypt_stream(whole_body, StreamDecryptor(object_key, info.params, size, plan=plan)):
        yield chunk


async def get_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """GET and HEAD. A plain GET reads metadata and body in one request; HEAD and ranged GETs
    read the metadata first (a HEAD), since the range plan needs the plaintext size."""
    plain_get = ctx.request.method == "GET" and "range" not in ctx.request.headers
    method = "GET" if plain_get and "partNumber" not in ctx.request.rel_url.query else "HEAD"
    no_plaintext: bool | None = None
    while True:
        upstream = await _fetch(gw, ctx, method)
        async with upstream:
            if upstream.status != 200:
                if method == "HEAD" and ctx.request.method == "GET":
                    return await _relay_get(gw, ctx, upstream)
                return await relay(ctx, upstream)
            try:
                info = metadata.decode(upstream.headers)
            except (ValueError, IntegrityError) as exc:
                raise integrity_failure(ctx.s3.bucket, ctx.s3.key, exc) from None
            if info is not None:
                return await _serve_encrypted(gw, ctx, upstream, info)
            if no_plaintext is not None or not bucket_state_needed(gw, ctx.s3.bucket):
                return await _legacy(gw, ctx, upstream, no_plaintext)
            # A legacy object and the bucket state unknown: drop this response (and its connection)
            # before looking the state up, then read the object afresh (it may have changed meanwhile).
            upstream.close()
        no_plaintext = await gw.bucket_states.holds_no_plaintext(ctx.s3.bucket)


async def _relay_get(gw: Gateway, ctx: RequestContext, head: aiohttp.ClientResponse) -> web.StreamResponse:
    """A GET whose metadata HEAD failed: repeat it as a GET so the client gets S3's error body. When the
    GET then succeeds, a failing upstream (a 503 burst) has recovered in between: the client still gets
    the HEAD's error as its status stands for (retryable, Retry-After kept), never a 500 for it."""
    upstream = await _fetch(gw, ctx, "GET")
    async with upstream:
        if upstream.status == 200:
            if head.status >= 500:
                raise from_upstream(head.status, b"", head.headers)
            raise S3Error("InternalError", "The object changed while it was being read; retry.", 500)
        return await relay(ctx, upstream)
