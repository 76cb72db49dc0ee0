"""PutObject: the one upload the gateway encrypts.

Decode the body (aws-chunked), verify the client's checksums while streaming, encrypt, and send a
plain fixed-length PUT upstream (Content-Length = ciphertext size). A checksum mismatch is found
before the last byte goes out, so the upstream request is cut short and the upstream discards it.
"""
from __future__ import annotations

from typing import AsyncIterable, AsyncIterator, Mapping

import aiohttp
from aiohttp import web

from gateway.awschunked import AwsChunkedDecoder
from gateway.checksums import BodyChecks
from gateway.crypto import metadata
from gateway.crypto.sse import EncryptionInfo
from gateway.crypto.stream import StreamEncryptor, ciphertext_size, encrypt_stream
from gateway.etag import client_etag
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.passthrough import relay, request_chunks
from gateway.handlers.sse_headers import mode_headers, sse_mode
from gateway.policy import SSE_HEADERS, decide_put
from gateway.s3errors import S3Error, incomplete_body, invalid_argument, missing_content_length
from gateway.upstream import forwardable_headers

USER_METADATA_LIMIT = 2048


class _BodyOutcome:
    """What the checked body stream learned: the checksums to echo, or why the upload was cut short.

    The failure is recorded here rather than read back from the exception aiohttp raises, because
    aiohttp wraps it (and may retry a PUT on a persistent connection, replacing it).
    """

    def __init__(self) -> None:
        self.echoed: dict[str, str] = {}
        self.failure: S3Error | None = None
        self.started = False


def _is_framed(ctx: RequestContext) -> bool:
    """Whether the body is aws-chunked (declared by Content-Encoding or a STREAMING-* payload hash)."""
    return ("aws-chunked" in ctx.request.headers.get("Content-Encoding", "")
            or (ctx.auth.payload_hash or "").startswith("STREAMING-"))


def _plaintext_length(headers: Mapping[str, str], framed: bool) -> int:
    """The object's size: X-Amz-Decoded-Content-Length for aws-chunked bodies, else Content-Length."""
    value = headers.get("x-amz-decoded-content-length" if framed else "content-length")
    if value is None:
        raise missing_content_length()
    if not value.strip().isdigit():
        raise invalid_argument("The content length is not a number.", "Content-Length", value)
    return int(value)


def _refuse_reserved(headers: Mapping[str, str]) -> None:
    """Clients may not write the gateway's own metadata (it would forge or break decryption)."""
    for name in headers:
        if metadata.is_reserved(name):
            raise invalid_argument(f"Metadata names starting with {metadata.RESERVED_PREFIX} are reserved "
                                   "by the gateway.", name)


def _check_metadata_size(upstream_headers: Mapping[str, str]) -> None:
    """S3's 2 KB user-metadata limit, counted as the upstream will: the client's plus ours."""
    size = sum(len(name) - len("x-amz-meta-") + len(value.encode())
               for name, value in upstream_headers.items() if name.startswith("x-amz-meta-"))
    if size > USER_METADATA_LIMIT:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.",
                      400, Size=str(size), MaxSizeAllowed=str(USER_METADATA_LIMIT))


def _decoded_body(ctx: RequestContext, length: int, checks: BodyChecks, framed: bool) -> AsyncIterable[bytes]:
    """The request body as plaintext bytes, aws-chunked framing removed."""
    if not framed:
        return request_chunks(ctx.request)
    return AwsChunkedDecoder(request_chunks(ctx.request), decoded_length=length,
                             chunk_verifier=ctx.auth.chunk_verifier, trailer_names=checks.trailer_names)


async def _checked(source: AsyncIterable[bytes], checks: BodyChecks, outcome: _BodyOutcome,
                   length: int) -> AsyncIterator[bytes]:
    """Yield the body while hashing it; verify before the stream ends, so a mismatch cuts the PUT short."""
    if outcome.started:
        raise RuntimeError("the request body cannot be sent twice")
    outcome.started = True
    received = 0
    try:
        async for chunk in source:
            received += len(chunk)
            checks.update(chunk)
            yield chunk
        if received != length:
            raise incomplete_body()
        outcome.echoed.update(checks.finish(getattr(source, "trailers", {}) or {}))
    except S3Error as exc:
        outcome.failure = exc
        raise


async def _send_put(gw: Gateway, ctx: RequestContext, headers: dict[str, str], body: AsyncIterable[bytes],
                    length: int, outcome: _BodyOutcome) -> aiohttp.ClientResponse:
    """The upstream PUT; when the body stream failed, the client gets that failure's S3 error."""
    try:
        return await gw.upstream.request("PUT", ctx.raw_path, ctx.query, headers, body=body, content_length=length)
    except Exception:
        if outcome.failure is not None:
            raise outcome.failure from None
        raise


def _response_headers(ctx: RequestContext, upstream: aiohttp.ClientResponse, info: EncryptionInfo | None,
                      echoed: Mapping[str, str]) -> dict[str, str]:
    """ETag (client-visible for encrypted objects), verified checksums, SSE headers, a real version id."""
    etag = upstream.headers.get("ETag", "")
    out = {"ETag": client_etag(etag) if info is not None else etag, **echoed, **mode_headers(ctx, info)}
    version = upstream.headers.get("x-amz-version-id")
    if version and version != "null":
        out["x-amz-version-id"] = version
    return out


async def put_object(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    request, s3 = ctx.request, ctx.s3
    framed = _is_framed(ctx)
    length = _plaintext_length(request.headers, framed)
    _refuse_reserved(request.headers)
    sse = decide_put(gw.config, s3.bucket, request.headers, secure=ctx.secure)
    checks = BodyChecks.from_headers(request.headers, ctx.auth.payload_hash)
    headers = forwardable_headers(request.headers, drop=(*SSE_HEADERS, *checks.header_names_to_strip))
    outcome = _BodyOutcome()
    body: AsyncIterable[bytes] = _checked(_decoded_body(ctx, length, checks, framed), checks, outcome, length)
    info = None
    if sse is not None:
        object_key, info = await sse_mode(gw, sse.mode).create(s3.bucket, s3.key, sse, length)
        headers.update(metadata.encode(info))
        body = encrypt_stream(body, StreamEncryptor(object_key, info.params))
    _check_metadata_size(headers)
    upstream_length = ciphertext_size(length) if info is not None else length
    upstream = await _send_put(gw, ctx, headers, body, upstream_length, outcome)
    async with upstream:
        if upstream.status != 200:
            return await relay(ctx, upstream)
        return web.Response(status=200, headers=_response_headers(ctx, upstream, info, outcome.echoed))
