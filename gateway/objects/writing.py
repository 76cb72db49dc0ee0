"""Writing objects: a plaintext stream in, an encrypted single-stream object (or a plain one) upstream.

    OK, seal = ObjectKeys.create(bucket, key, request)      one KMS call (none for SSE-C)
    E        = StreamEncryptor(OK)                            makes its own stream params
    PUT key  body = E(plaintext), metadata = seal, E.params, size   (docs/FORMAT.md §1-2)

The upstream is sent exactly `ciphertext_size(length)` bytes; a body that ends early or fails its
checksums is cut short before its last byte, so the upstream discards it (nothing half-written).
A small object (one segment at most) written unconditionally is read whole first and sent as bytes: a
body that fails then sends nothing at all, the upstream request is signed with the body's SHA-256 and
may be retried, and the per-chunk streaming machinery, a large share of a 4 KiB PUT's CPU, is skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterable, Mapping

from gateway.crypto import metadata
from gateway.crypto.checksum import ObjectChecksum, seal_checksum
from gateway.crypto.metadata import EncryptionInfo, SingleStream
from gateway.crypto.sse import ObjectKeys, Requester, SseRequest
from gateway.crypto.stream import SEGMENT_SIZE, StreamEncryptor, ciphertext_size, encrypt_stream
from gateway.s3client import PutResult, S3Client
from gateway.s3errors import S3Error

USER_METADATA_LIMIT = 2048
SMALL_OBJECT_SIZE = SEGMENT_SIZE  # read whole before the upstream request (at most this much per request)
CONTENT_HEADERS = ("content-type", "content-encoding", "content-disposition", "content-language",
                   "cache-control", "expires", "x-amz-website-redirect-location")


@dataclass(frozen=True)
class Written:
    """What a write stored: the upstream's answer and the encryption (None: stored as sent)."""

    result: PutResult
    info: EncryptionInfo | None


def object_headers(upstream_headers: Mapping[str, str]) -> dict[str, str]:
    """What describes a stored object's content and goes with it when it is copied or rewritten: its
    content headers and user metadata (x-amz-meta-*, never the gateway's reserved ones), lower-case."""
    kept: dict[str, str] = {}
    for name, value in upstream_headers.items():
        lower = name.lower()
        if lower in CONTENT_HEADERS or (lower.startswith("x-amz-meta-") and not metadata.is_reserved(lower)):
            kept[lower] = value
    return kept


def check_metadata_size(upstream_headers: Mapping[str, str]) -> None:
    """S3's 2 KB user-metadata limit, counted as the upstream will: the client's plus ours."""
    size = sum(len(name) - len("x-amz-meta-") + len(value.encode())
               for name, value in upstream_headers.items() if name.lower().startswith("x-amz-meta-"))
    if size > USER_METADATA_LIMIT:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed metadata size.",
                      400, Size=str(size), MaxSizeAllowed=str(USER_METADATA_LIMIT))


class ObjectWriter:
    """Stores whole objects (PutObject, CopyObject, and the tools that rewrite objects)."""

    def __init__(self, client: S3Client, keys: ObjectKeys) -> None:
        self.client = client
        self.keys = keys

    async def put(self, bucket: str, key: str, headers: Mapping[str, str], request: SseRequest | None,
                  body: AsyncIterable[bytes], length: int, *, requester: Requester,
                  if_match: str | None = None, checksum: ObjectChecksum | None = None) -> Written:
        """Store ``length`` plaintext bytes, encrypted as ``request`` asks (None: as they are), with KMS keys
        used on ``requester``'s behalf.

        ``headers``: the upstream request headers (content type, user metadata, tagging ...) without any
        SSE header. ``if_match``: replace only that version of the object (the tools' rewrite in place).
        ``checksum``: the plaintext's checksum, known before the body (a client's header, verified as the body
        streams: a mismatch cuts the write short), stored sealed for x-amz-checksum-mode reads."""
        # A conditional write stays streamed, so it is sent once: retried after a lost answer it would meet its
        # own first write and answer 412 for a write that was made.
        conditional = if_match is not None or any(name.lower() in ("if-match", "if-none-match") for name in headers)
        whole = await _read_whole(body, length) if length <= SMALL_OBJECT_SIZE and not conditional else None
        if request is None:
            check_metadata_size(headers)
            result = await self.client.put_object(bucket, key, body if whole is None else whole, length, headers,
                                                  if_match=if_match)
            return Written(result, None)
        object_key, seal = await self.keys.create(bucket, key, request, requester, size=length)
        encryptor = StreamEncryptor(object_key)
        sealed = seal_checksum(object_key, checksum) if checksum is not None else None
        info = EncryptionInfo(seal=seal, layout=SingleStream(encryptor.params, length, sealed))
        stored_headers = {**headers, **metadata.encode(info)}
        check_metadata_size(stored_headers)
        ciphertext = (encrypt_stream(body, encryptor) if whole is None
                      else bytes(encryptor.update(whole) + encryptor.finalize()))
        result = await self.client.put_object(bucket, key, ciphertext, ciphertext_size(length), stored_headers,
                                              if_match=if_match)
        return Written(result, info)


async def _read_whole(body: AsyncIterable[bytes], length: int) -> bytes:
    """A small body, read to its end (which runs its checks: a failure is raised here, before any upstream
    request)."""
    data = b"".join([chunk async for chunk in body])
    if len(data) != length:
        raise ValueError(f"a body of {len(data)} bytes written as {length}")
    return data
