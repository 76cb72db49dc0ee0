"""Request bodies that become stored objects or parts: size, framing, checksums, metadata limits.

Shared by PutObject, UploadPart and the copy operations: decode the body (aws-chunked), verify the
client's checksums while streaming, and send it upstream as a plain fixed-length PUT. A checksum
mismatch is found before the last byte goes out, so the upstream request is cut short and the
upstream discards it.
"""
from __future__ import annotations

from typing import AsyncIterable, AsyncIterator, Mapping

import aiohttp

from gateway.awschunked import AwsChunkedDecoder
from gateway.checksums import BodyChecks
from gateway.crypto import metadata
from common.digits import parse_decimal
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.passthrough import request_chunks
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.s3errors import S3Error, entity_too_large, incomplete_body, invalid_argument, missing_content_length

USER_METADATA_LIMIT = 2048


class BodyOutcome:
    """What the checked body stream learned: the checksums to echo, or why the upload was cut short.

    The failure is recorded here rather than read back from the exception aiohttp raises, because
    aiohttp wraps it (and may retry a PUT on a persistent connection, replacing it).
    """

    def __init__(self) -> None:
        self.echoed: dict[str, str] = {}
        self.failure: S3Error | None = None
        self.started = False


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


def check_metadata_size(upstream_headers: Mapping[str, str]) -> None:
    """S3's 2 KB user-metadata limit, counted as the upstream will: the client's plus ours."""
    size = sum(len(name) - len("x-amz-meta-") + len(value.encode())
               for name, value in upstream_headers.items() if name.startswith("x-amz-meta-"))
    if size > USER_METADATA_LIMIT:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.",
                      400, Size=str(size), MaxSizeAllowed=str(USER_METADATA_LIMIT))


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


async def send_put(gw: Gateway, raw_path: str, query: list[tuple[str, str]], headers: dict[str, str],
                   body: AsyncIterable[bytes], length: int, outcome: BodyOutcome) -> aiohttp.ClientResponse:
    """The upstream PUT; when the body stream failed, the client gets that failure's S3 error."""
    try:
        return await gw.upstream.request("PUT", raw_path, query, headers, body=body, content_length=length)
    except Exception:
        if outcome.failure is not None:
            raise outcome.failure from None
        raise


async def read_body(ctx: RequestContext, limit: int) -> bytes:
    """A small request body the gateway parses or rewrites, its Content-MD5 and signed SHA-256 verified
    (it is not forwarded as the client signed it, so the upstream cannot check them)."""
    framed = is_framed(ctx)
    length = plaintext_length(ctx.request.headers, framed)
    if length > limit:
        raise entity_too_large(limit, length)
    checks = BodyChecks.from_headers(ctx.request.headers, ctx.auth.payload_hash)
    body = checked(decoded_body(ctx, length, checks, framed), checks, BodyOutcome(), length)
    return b"".join([chunk async for chunk in body])
