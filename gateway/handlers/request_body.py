"""Request bodies: read with the slow-client limits, and those that become stored objects or parts:
size, framing, checksums.

Shared by PutObject, UploadPart and the copy operations: decode the body (aws-chunked), verify the
client's checksums while streaming, and send it upstream as a plain fixed-length PUT. A checksum
mismatch is found before the last byte goes out, so the upstream request is cut short and the
upstream discards it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, AsyncIterable, AsyncIterator, Iterator, Mapping

from aiohttp import web

from common.connections import BodyTimeout, request_body_chunks
from gateway.awschunked import AwsChunkedDecoder
from gateway.checksums import CHECKSUM_HEADER_PREFIX, BodyChecks
from common.digits import parse_decimal
from gateway.crypto import metadata
from gateway.handlers.context import RequestContext
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.s3errors import (S3Error, entity_too_large, incomplete_body, invalid_argument, missing_content_length,
                              request_timeout)

CHUNK = 256 * 1024
# Set on a request whose body stalled (RequestTimeout): its connection is closed after the answer.
BODY_STALLED: Any = web.RequestKey("gateway.body_stalled", bool) if hasattr(web, "RequestKey") else "gateway.body_stalled"


async def request_chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request body; a client that stops sending it, or sends it slower than ``body_min_rate``,
    gets S3's RequestTimeout, and ``BODY_STALLED`` on the request tells the server to close the
    connection after that answer."""
    try:
        async for chunk in request_body_chunks(request, CHUNK):
            yield chunk
    except BodyTimeout:
        request[BODY_STALLED] = True
        raise request_timeout() from None


class BodyOutcome:
    """What the checked body stream learned: the checksums to echo, or why the upload was cut short.

    The failure is recorded here rather than read back from the exception aiohttp raises, because
    aiohttp wraps it (and may retry a PUT on a persistent connection, replacing it).
    """

    def __init__(self) -> None:
        self.echoed: dict[str, str] = {}
        self.failure: S3Error | None = None
        self.started = False

    @contextmanager
    def reported(self) -> Iterator[None]:
        """Around the upstream write of a checked body: when the body stream failed (a checksum, a short
        body, a stalled client), the client gets that failure's S3 error, not the upstream's view of a
        cut request."""
        try:
            yield
        except Exception:
            if self.failure is not None:
                raise self.failure from None
            raise


def is_framed(ctx: RequestContext) -> bool:
    """Whether the body is aws-chunked (declared by Content-Encoding or a STREAMING-* payload hash)."""
    return ("aws-chunked" in ctx.request.headers.get("Content-Encoding", "")
            or (ctx.auth.payload_hash or "").startswith("STREAMING-"))


def plaintext_length(headers: Mapping[str, str], framed: bool) -> int:
    """The object's size: X-Amz-Decoded-Content-Length for aws-chunked bodies, else Content-Length.

    A value that is no ASCII decimal is S3's 411 MissingContentLength (what S3 answers for an invalid
    x-amz-decoded-content-length; an invalid Content-Length never gets here, aiohttp's parser refuses
    the request first). Over S3's 5 GiB limit, however many digits, is EntityTooLarge here, from the
    headers alone, so no KMS call and no upstream request is spent on a body S3 would refuse."""
    value = headers.get("x-amz-decoded-content-length" if framed else "content-length")
    if value is None:
        raise missing_content_length()
    length = parse_decimal(value.strip(), MAX_UPLOAD_SIZE + 1)
    if length is None:
        raise missing_content_length()
    if length > MAX_UPLOAD_SIZE:
        proposed = value.strip().lstrip("0")
        raise entity_too_large(MAX_UPLOAD_SIZE, int(proposed) if len(proposed) <= 20 else None)
    return length


def refuse_reserved(headers: Mapping[str, str]) -> None:
    """Clients may not write the gateway's own metadata (it would forge or break decryption)."""
    for name in headers:
        if metadata.is_reserved(name):
            raise invalid_argument(f"Metadata names starting with {metadata.RESERVED_PREFIX} are reserved "
                                   "by the gateway.", name)


def decoded_body(ctx: RequestContext, length: int, checks: BodyChecks, framed: bool) -> AsyncIterable[bytes]:
    """The request body as plaintext bytes, aws-chunked framing removed."""
    if not framed:
        return request_chunks(ctx.request)
    return AwsChunkedDecoder(request_chunks(ctx.request), decoded_length=length,
                             chunk_verifier=ctx.auth.chunk_verifier, trailer_names=checks.trailer_names)


async def checked(source: AsyncIterable[bytes], checks: BodyChecks, outcome: BodyOutcome,
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


async def read_body(ctx: RequestContext, limit: int, *, object_checksums: bool = False) -> bytes:
    """A small request body the gateway parses or rewrites, its Content-MD5 and signed SHA-256 verified
    (it is not forwarded as the client signed it, so the upstream cannot check them).

    ``object_checksums``: the request's ``x-amz-checksum-*`` headers describe an object, not this body (a
    CompleteMultipartUpload's), and are left to the caller."""
    framed = is_framed(ctx)
    length = plaintext_length(ctx.request.headers, framed)
    if length > limit:
        raise entity_too_large(limit, length)
    headers: Mapping[str, str] = ctx.request.headers
    if object_checksums:
        headers = {name: value for name, value in headers.items()
                   if not name.lower().startswith(CHECKSUM_HEADER_PREFIX)}
    checks = BodyChecks.from_headers(headers, ctx.auth.payload_hash)
    body = checked(decoded_body(ctx, length, checks, framed), checks, BodyOutcome(), length)
    return b"".join([chunk async for chunk in body])
