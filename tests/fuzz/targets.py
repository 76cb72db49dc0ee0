"""Fuzz targets: the gateway's parsers of client- and upstream-controlled input, each fed one input
and allowed to fail only with the error type its module documents. Anything else escaping (a
ValueError, IndexError, UnicodeError, ...) would become a 500 or a dropped connection instead of
S3's answer, so it is a bug.

The typed targets are driven by the hypothesis property tests (tests/gateway/test_parser_properties.py,
tests/gateway/test_sigv4_properties.py); the byte targets in BYTE_TARGETS, which slice one byte
string into those arguments, are driven by the coverage-guided fuzzer (scripts/fuzz, atheris).
"""
from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from typing import Any

from multidict import CIMultiDict

from common import sigv4
from gateway.awschunked import AwsChunkedDecoder
from gateway.crypto import metadata
from gateway.crypto.stream import IntegrityError
from gateway.crypto.multipart import part_count_from_etag
from gateway.handlers.buckets import parse_delete
from gateway.handlers.listing import rewrite_listing
from gateway.handlers.multipart import parse_complete, rewrite_list_parts
from gateway.handlers.request_body import plaintext_length
from gateway.ranges import RangeNotSatisfiable, parse_copy_range, parse_part_number, parse_range_header
from gateway.s3errors import S3Error
from common.sigv4 import AuthError
from gateway.uploads import ForgedToken, Upload, UploadTokens

ACCESS_KEY, SECRET_KEY = "AKIDFUZZ", "fuzz-secret"
REGION = "us-east-1"
NOW = 1_700_000_000.0
TOKENS = UploadTokens(b"\x01" * 32)


def run_sync(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits on I/O (the decoder over an in-memory source) without an
    event loop: thousands of fuzz inputs a second instead of hundreds."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the coroutine waited on something real")


# ------------------------------------------------------------------ typed targets


def verify_request(method: str, path: str, query: str, headers: Iterable[tuple[str, str]]) -> sigv4.AuthResult | None:
    """sigv4.verify for S3 at a fixed clock; raises only AuthError."""
    try:
        return sigv4.verify(method, path, query, CIMultiDict(headers), {ACCESS_KEY: SECRET_KEY}.get,
                            service="s3", now=NOW, region=REGION)
    except AuthError:
        return None


async def _pieces(body: bytes, cuts: Sequence[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(c for c in cuts if 0 < c < len(body)):
        yield body[start:cut]
        start = cut
    yield body[start:]


async def _decode(body: bytes, cuts: Sequence[int], decoded_length: int | None,
                  trailer_names: Sequence[str], verifier: sigv4.ChunkSignatureVerifier | None,
                  max_chunk_size: int) -> tuple[bytes, dict[str, str]]:
    decoder = AwsChunkedDecoder(_pieces(body, cuts), decoded_length=decoded_length, chunk_verifier=verifier,
                                trailer_names=trailer_names, max_chunk_size=max_chunk_size)
    out = bytearray()
    async for data in decoder:
        out += data
    return bytes(out), decoder.trailers


def chunk_verifier() -> sigv4.ChunkSignatureVerifier:
    """A fresh chunk-signature chain for a fixed key and seed signature."""
    key = sigv4.signing_key(SECRET_KEY, "20231114", REGION, "s3")
    return sigv4.ChunkSignatureVerifier(key, "20231114T221320Z", f"20231114/{REGION}/s3/aws4_request", "0" * 64)


def decode_aws_chunked(body: bytes, cuts: Sequence[int] = (), *, decoded_length: int | None = None,
                       trailer_names: Sequence[str] = (), verifier: sigv4.ChunkSignatureVerifier | None = None,
                       max_chunk_size: int = 1 << 20) -> tuple[bytes, dict[str, str]] | None:
    """The decoded payload and trailers of an aws-chunked body read in pieces cut at ``cuts``;
    None when the decoder refused it, which it may only do with an S3Error."""
    try:
        return run_sync(_decode(body, cuts, decoded_length, trailer_names, verifier, max_chunk_size))
    except S3Error:
        return None


def parse_complete_body(body: bytes) -> list | None:
    """The Complete part list; raises only S3Error (MalformedXML, InvalidPartOrder)."""
    try:
        return parse_complete(body)
    except S3Error:
        return None


def parse_delete_body(body: bytes) -> tuple | None:
    """The DeleteObjects batch; raises only S3Error (MalformedXML)."""
    try:
        return parse_delete(body)
    except S3Error:
        return None


def parse_range(value: str, size: int) -> tuple[int, int] | None | str:
    """A Range header against an object size; raises only RangeNotSatisfiable (returned as "416")."""
    try:
        return parse_range_header(value, size)
    except RangeNotSatisfiable:
        return "416"


def parse_part(value: str) -> int | None:
    """A partNumber query value; raises only S3Error (InvalidArgument)."""
    try:
        return parse_part_number(value)
    except S3Error:
        return None


def parse_length(value: str, framed: bool) -> int | None:
    """A PutObject/UploadPart Content-Length (``framed``: x-amz-decoded-content-length); raises only
    S3Error (MissingContentLength, EntityTooLarge)."""
    try:
        return plaintext_length({"x-amz-decoded-content-length" if framed else "content-length": value}, framed)
    except S3Error:
        return None


def parse_copy_source_range(value: str, size: int) -> tuple[int, int] | None:
    """An x-amz-copy-source-range against a source size; raises only S3Error (InvalidArgument)."""
    try:
        return parse_copy_range(value, size)
    except S3Error:
        return None


def all_encrypted(entries):
    """Every listed object taken for one the gateway encrypted (what a bucket holding no plaintext shows)."""
    from gateway.objects.listing import _from_listing
    return [_from_listing(entry) for entry in entries]


def rewrite_upstream_listing(body: bytes) -> bytes:
    """An upstream ListObjects/ListParts body (upstream-controlled sizes, counts, ETags) rewritten into
    the client's terms; raises only S3Error (an unparseable ListParts is the upstream's 500)."""
    rewrite_listing(body, all_encrypted)
    try:
        return rewrite_list_parts(body, "client-upload-id")
    except S3Error:
        return b""


def decode_metadata(headers: dict[str, str]) -> Any:
    """The reserved metadata of an upstream object; raises only IntegrityError."""
    try:
        return metadata.decode(headers)
    except IntegrityError:
        return None


def parse_upload_tokens(upload_id: str, etag: str, part_number: int = 1) -> Any:
    """A client's UploadId and part ETag; raise only ForgedToken (a ValueError) and, for an id
    whose metadata does not open, IntegrityError."""
    try:
        upload = TOKENS.parse_upload_id("bkt", "key", upload_id)
        if upload is not None:
            upload.info
        return TOKENS.parse_part_etag(upload or Upload("u", "u", {}), part_number, etag)
    except (ForgedToken, IntegrityError):
        return None


# ------------------------------------------------------------------ byte targets (atheris)


def _fields(data: bytes, count: int) -> list[bytes]:
    """``data`` split at NUL bytes into exactly ``count`` fields (the last keeps the rest)."""
    parts = data.split(b"\0", count - 1)
    return parts + [b""] * (count - len(parts))


def _wire_text(raw: bytes) -> str:
    """Bytes as aiohttp hands header values and paths to the gateway (UTF-8, surrogate-escaped)."""
    return raw.decode("utf-8", "surrogateescape")


def fuzz_sigv4(data: bytes) -> None:
    method, path, query, raw_headers = _fields(data, 4)
    headers = [tuple(_wire_text(line).partition(":")[::2]) for line in raw_headers.split(b"\n") if line]
    verify_request(_wire_text(method), _wire_text(path), _wire_text(query), headers)


def fuzz_awschunked(data: bytes) -> None:
    options, body = _fields(data, 2)
    mode, cuts = options[:1], list(options[1:])
    decode_aws_chunked(body, cuts, decoded_length=len(body) // 2 if mode == b"L" else None,
                       trailer_names=["x-amz-checksum-crc32"] if mode == b"T" else [],
                       verifier=chunk_verifier() if mode == b"S" else None, max_chunk_size=4096)


def fuzz_complete(data: bytes) -> None:
    parse_complete_body(data)


def fuzz_delete(data: bytes) -> None:
    parse_delete_body(data)


def fuzz_range(data: bytes) -> None:
    size, value = _fields(data, 2)
    parse_range(_wire_text(value), int.from_bytes(size[:8], "big"))


def fuzz_part_number(data: bytes) -> None:
    parse_part(data.decode("utf-8", "replace"))


def fuzz_metadata(data: bytes) -> None:
    headers = {}
    for line in data.split(b"\n"):
        name, _, value = _wire_text(line).partition(":")
        headers[metadata.RESERVED_PREFIX + name] = value
    decode_metadata(headers)


def fuzz_upload_tokens(data: bytes) -> None:
    upload_id, etag = _fields(data, 2)
    parse_upload_tokens(_wire_text(upload_id), _wire_text(etag))


BYTE_TARGETS: dict[str, Callable[[bytes], None]] = {
    "sigv4": fuzz_sigv4,
    "awschunked": fuzz_awschunked,
    "complete": fuzz_complete,
    "delete": fuzz_delete,
    "range": fuzz_range,
    "partnumber": fuzz_part_number,
    "metadata": fuzz_metadata,
    "uploadtokens": fuzz_upload_tokens,
}


def _seed_presigned_v4() -> bytes:
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    request = AWSRequest(method="PUT", url="http://h/bkt/key?partNumber=1", headers={"x-amz-meta-a": "1"})
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION).add_auth(request)
    path, _, query = request.url.split("/", 3)[3].partition("?")
    return b"\0".join([b"PUT", b"/" + path.encode(), query.encode(), b"host:h\nx-amz-meta-a:1"])


# Valid inputs the fuzzer starts from (it mutates them towards the paths they open).
SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "sigv4": lambda: [_seed_presigned_v4(),
                      b"GET\0/b/k\0\0authorization:AWS4-HMAC-SHA256 Credential=AKIDFUZZ/20231114/us-east-1/s3/"
                      b"aws4_request, SignedHeaders=host;x-amz-date, Signature=00\nx-amz-date:20231114T221320Z\n"
                      b"x-amz-content-sha256:UNSIGNED-PAYLOAD\nhost:h",
                      b"GET\0/b/k\0AWSAccessKeyId=AKIDFUZZ&Signature=abc%3D&Expires=1700000100\0host:h"],
    "awschunked": lambda: [b"T\0" + b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
                           b"L\x01\x03\0" + b"3;chunk-signature=ab\r\nabc\r\n0\r\n\r\n",
                           b"S\0" + _signed_chunks(b"abc")],
    "complete": lambda: [b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part>'
                         b'<PartNumber>1</PartNumber><ETag>"e-x"</ETag><ChecksumCRC32>AA==</ChecksumCRC32></Part>'
                         b'</CompleteMultipartUpload>'],
    "delete": lambda: [b"<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key><VersionId>v</VersionId></Object>"
                       b"</Delete>"],
    "range": lambda: [b"\0\0\0\0\0\0\x10\0\0bytes=0-99", b"\0\0\0\0\0\0\0\x05\0bytes=-3"],
    "partnumber": lambda: [b"1", b"10000"],
    "metadata": lambda: [b"\n".join(f"{name[len(metadata.RESERVED_PREFIX):]}:{value}".encode()
                                    for name, value in _sample_metadata().items())],
    "uploadtokens": lambda: [b"gw1.e30.AAAAAAAAAAAAAAAAAAAAAA.up\0\"etag-" + b"A" * 48 + b"\""],
}


def _signed_chunks(payload: bytes) -> bytes:
    signer = chunk_verifier()
    out = b""
    for chunk in (payload, b""):
        signer.previous_signature = signer.sign_chunk(hashlib.sha256(chunk).hexdigest())
        out += b"%x;chunk-signature=%s\r\n" % (len(chunk), signer.previous_signature.encode())
        out += chunk + b"\r\n" if chunk else b""
    return out + b"\r\n"


def _sample_metadata() -> dict[str, str]:
    from gateway.crypto.metadata import EncryptionInfo, SingleStream
    from gateway.crypto.sse import KmsSeal, SseMode
    from gateway.crypto.stream import StreamParams
    seal = KmsSeal(SseMode.KMS, bytes(metadata.SEALED_KEY_SIZE), "arn:aws:kms:k", b"w", {"a": "b"})
    return metadata.encode(EncryptionInfo(seal, SingleStream(StreamParams.decode(bytes(StreamParams.ENCODED_SIZE)), 5)))
