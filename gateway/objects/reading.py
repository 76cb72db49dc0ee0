"""Reading stored objects: metadata, then the object key, then plaintext of a span or a part.

    stat(ref)          HEAD (or GET, when the whole body is wanted: metadata and body in one request)
                       -> StoredObject: the upstream's answer, its EncryptionInfo or None (legacy)
    stored.open(CK)    -> OpenedObject: OK opened (one KMS call, or the SSE-C check), the plaintext size
                       checked against the stored size, the manifest of a multipart object
    opened.chunks(s)   the plaintext of span s, read in one upstream request pinned by If-Match to
                       the version stat() saw, so an overwrite in between fails instead of mixing

Legacy objects (no gateway metadata) are read as they are, only where unencrypted reads are allowed and
never in a bucket known to hold no plaintext (gateway/bucketstate.py); their ranged and part reads are
pinned too. Integrity failures are S3's 500 before the first byte, a cut connection after it.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Mapping, Sequence

from gateway.bucketstate import BucketStates
from gateway.config import GatewayConfig
from gateway.crypto import metadata
from gateway.crypto.checksum import ObjectChecksum, open_checksum
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.multipart import (HEADER_SIZE, Manifest, PartRead, decrypt_parts, object_plaintext_size,
                                      part_count_from_etag, plan_reads)
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.sse import CustomerKey, CustomerKeySeal, MissingCustomerKey, ObjectKeys, Requester, WrongCustomerKey
from gateway.crypto.stream import IntegrityError, StreamDecryptor, ciphertext_size, decrypt_stream, plan_range
from gateway.etag import client_etag
from gateway.objects.manifests import Manifests
from gateway.objects.plaintext import Span
from gateway.s3client import ObjectBody, ObjectChanged, ObjectHead, S3Client, UpstreamError
from gateway.s3errors import S3Error, access_denied, invalid_part_number, invalid_request

log = logging.getLogger("gateway.objects")
_INTEGRITY_MESSAGE = "The object failed integrity verification"


@dataclass(frozen=True)
class ObjectRef:
    """One object (one version of it, when ``version_id`` is set), with the read's extra query
    parameters (response-* header overrides) the upstream applies to its answer."""

    bucket: str
    key: str
    version_id: str | None = None
    query: Sequence[tuple[str, str]] = ()


def integrity_failure(bucket: str, key: str, exc: Exception) -> S3Error:
    """What a client gets for an object that fails authentication (logged with the reason)."""
    log.error("integrity failure in %s/%s: %s", bucket, key, exc)
    return S3Error("InternalError", _INTEGRITY_MESSAGE, 500)


def object_changed() -> S3Error:
    return S3Error("InternalError", "The object changed while it was being read; retry.", 500)


class UnencryptedReads:
    """Who may read an object the gateway did not encrypt: pass-through buckets always; elsewhere only
    if the configuration allows it (else anything planted upstream would be served), and never in a
    bucket known to hold no plaintext: there an object without metadata is an encrypted one stripped
    of it, and serving it would hand out its ciphertext."""

    def __init__(self, config: GatewayConfig, states: BucketStates) -> None:
        self._config = config
        self.states = states

    def lookup_needed(self, bucket: str) -> bool:
        """Whether `check` needs the bucket state and it is not cached: it must then be looked up with no
        upstream response held open, or reads holding every pooled connection would each wait for one
        more (a legacy GET of a large object would wait for its own connection with a pool of one)."""
        return (self._config.bucket_policy(bucket).encryption != "passthrough"
                and self._config.allow_unencrypted_reads and self.states.cached(bucket) is None)

    def check(self, bucket: str, no_plaintext: bool | None = None) -> None:
        """403 unless an unencrypted object of ``bucket`` may be read. ``no_plaintext``: the state the
        caller looked up, else the cached one; with neither the read is refused (fail closed)."""
        if self._config.bucket_policy(bucket).encryption == "passthrough":
            return
        if not self._config.allow_unencrypted_reads:
            raise access_denied("The object is not encrypted by the gateway and unencrypted reads are disabled.")
        if no_plaintext is None:
            no_plaintext = self.states.cached(bucket)
        if no_plaintext is not False:
            raise access_denied("The object is not encrypted by the gateway, and its bucket holds only objects "
                                "the gateway encrypted.")


class ObjectReader:
    """Opens stored objects for reading; shared by GET/HEAD, the copy operations and the tools."""

    def __init__(self, client: S3Client, keys: ObjectKeys, manifests: Manifests, unencrypted: UnencryptedReads) -> None:
        self.client = client
        self.keys = keys
        self.manifests = manifests
        self.unencrypted = unencrypted

    @asynccontextmanager
    async def stat(self, ref: ObjectRef, *, with_body: bool = False, error_body: bool = False,
                   headers: Mapping[str, str] | None = None) -> AsyncIterator["StoredObject"]:
        """The object as the upstream holds it. ``with_body``: GET it (its body stays readable while the
        context is open); ``error_body``: a failed HEAD is repeated as a GET so the UpstreamError carries
        S3's error document (what a GET answers). Legacy objects are checked against `UnencryptedReads`."""
        no_plaintext: bool | None = None
        while True:
            if with_body:
                async with self.client.get_object(ref.bucket, ref.key, version_id=ref.version_id, query=ref.query,
                                                  headers=headers) as body:
                    stored = self._found(ref, body.head, body, no_plaintext, headers)
                    if stored is not None:
                        yield stored
                        return
            else:
                stored = self._found(ref, await self._head(ref, error_body, headers), None, no_plaintext, headers)
                if stored is not None:
                    yield stored
                    return
            # A legacy object and the bucket state unknown: drop this answer (and its connection) before
            # looking the state up, then read the object afresh (it may have changed meanwhile).
            no_plaintext = await self.unencrypted.states.holds_no_plaintext(ref.bucket)

    def _found(self, ref: ObjectRef, head: ObjectHead, body: ObjectBody | None, no_plaintext: bool | None,
               headers: Mapping[str, str] | None) -> "StoredObject | None":
        """The object the metadata read found, or None when it is a legacy object whose bucket state must
        be looked up first (with no upstream answer held open)."""
        info = self._decode(ref, head)
        if info is None and no_plaintext is None and self.unencrypted.lookup_needed(ref.bucket):
            return None
        if info is None:
            self.unencrypted.check(ref.bucket, no_plaintext)
        return StoredObject(self, ref, head, info, body, headers)

    @staticmethod
    def _decode(ref: ObjectRef, head: ObjectHead) -> EncryptionInfo | None:
        try:
            return metadata.decode(head.headers)
        except IntegrityError as exc:
            raise integrity_failure(ref.bucket, ref.key, exc) from None

    async def _head(self, ref: ObjectRef, error_body: bool, headers: Mapping[str, str] | None) -> ObjectHead:
        try:
            return await self.client.head_object(ref.bucket, ref.key, version_id=ref.version_id, query=ref.query,
                                                 headers=headers)
        except UpstreamError as exc:
            if not error_body:
                raise
            raise await self._error_of_get(ref, exc, headers) from None

    async def _error_of_get(self, ref: ObjectRef, head_error: UpstreamError,
                            headers: Mapping[str, str] | None) -> Exception:
        """A GET whose metadata HEAD failed, repeated as a GET for S3's error body. When the GET then
        succeeds, a failing upstream (a 503 burst) has recovered in between: the HEAD's error stands
        (retryable, Retry-After kept), never a 500 for it."""
        try:
            async with self.client.get_object(ref.bucket, ref.key, version_id=ref.version_id, query=ref.query,
                                              headers=headers):
                pass
        except UpstreamError as exc:
            return exc
        return head_error if head_error.status >= 500 else object_changed()


class StoredObject:
    """An object as its metadata read found it: nothing opened or decrypted yet."""

    def __init__(self, reader: ObjectReader, ref: ObjectRef, head: ObjectHead, info: EncryptionInfo | None,
                 body: ObjectBody | None, headers: Mapping[str, str] | None = None) -> None:
        self._reader = reader
        self.ref = ref
        self.head = head
        self.info = info
        self._body = body
        self._headers = headers  # what the metadata read sent (requester pays, expected owner): so do the rest

    @property
    def encrypted(self) -> bool:
        return self.info is not None

    @property
    def etag(self) -> str:
        """The ETag clients see (gateway/etag.py for encrypted objects, the upstream's otherwise)."""
        return client_etag(self.head.etag) if self.info is not None else self.head.etag

    @property
    def last_modified(self) -> str | None:
        return self.head.last_modified

    def integrity_failure(self, exc: Exception) -> S3Error:
        return integrity_failure(self.ref.bucket, self.ref.key, exc)

    @property
    def size(self) -> int:
        """The plaintext size. A single-stream object records it, a multipart object's follows from its
        stored size and part count. The recorded size is not authenticated until the last segment
        opens, so it must agree with the stored length: a Content-Length goes out before the body,
        and a client must never be told a size (0, or petabytes) the stream cannot have."""
        if self.info is None:
            return self.head.size
        try:
            return _plaintext_size(self.head, self.info)
        except (ValueError, IntegrityError) as exc:
            raise self.integrity_failure(exc) from None

    async def open(self, customer_key: CustomerKey | None, *, requester: Requester,
                   with_manifest: bool = True) -> "OpenedObject":
        """Open the object key (KMS keys used on ``requester``'s behalf) and (``with_manifest``) a multipart
        object's manifest; a legacy object opens as it is. SSE-C objects need the client's key; a missing
        or wrong one is refused."""
        size = self.size
        if self.info is None:
            return OpenedObject(self, None, size, None)
        object_key = await self._object_key(customer_key, requester, size)
        manifest = None
        if with_manifest and isinstance(self.info.layout, Multipart):
            try:
                manifest = await self._reader.manifests.load(self.ref.bucket, self.info.layout.upload_tag,
                                                             object_key, self.head)
            except (ValueError, IntegrityError) as exc:
                raise self.integrity_failure(exc) from None
        return OpenedObject(self, object_key, size, manifest)

    async def _object_key(self, customer_key: CustomerKey | None, requester: Requester, size: int) -> ObjectKey:
        assert self.info is not None
        if customer_key is not None and not isinstance(self.info.seal, CustomerKeySeal):
            raise invalid_request("The encryption parameters are not applicable to this object.")
        try:
            return await self._reader.keys.open(self.ref.bucket, self.ref.key, self.info.seal, customer_key,
                                                requester, size=size)
        except MissingCustomerKey:
            raise invalid_request("The object was stored using a form of Server Side Encryption. The correct "
                                  "parameters must be provided to retrieve the object.") from None
        except WrongCustomerKey:
            raise access_denied("The provided customer key does not match the key the object was stored "
                                "with.") from None
        except IntegrityError as exc:
            raise self.integrity_failure(exc) from None

    async def tags(self) -> list[tuple[str, str]]:
        """The object's tag set (of the version stat() read, when one was named)."""
        ref = self.ref
        return await self._reader.client.get_object_tagging(ref.bucket, ref.key, version_id=ref.version_id)

    def whole_body(self) -> AsyncIterator[bytes] | None:
        """The stored body, when stat() read it (a GET), to be consumed once."""
        body, self._body = self._body, None
        return body.chunks() if body is not None else None

    @asynccontextmanager
    async def pinned_get(self, byte_range: tuple[int, int] | None = None,
                         part_number: int | None = None) -> AsyncIterator[ObjectBody]:
        """A further read of this very version (If-Match on the ETag stat() saw)."""
        ref = self.ref
        try:
            async with self._reader.client.get_object(ref.bucket, ref.key, version_id=ref.version_id,
                                                      query=ref.query, byte_range=byte_range, headers=self._headers,
                                                      part_number=part_number, if_match=self.head.etag) as body:
                yield body
        except ObjectChanged:
            raise object_changed() from None

    async def pinned_head(self, part_number: int) -> ObjectHead:
        """What the upstream says of one part of this very version (a legacy object's part, for HEAD)."""
        ref = self.ref
        try:
            return await self._reader.client.head_object(ref.bucket, ref.key, version_id=ref.version_id,
                                                         query=ref.query, headers=self._headers,
                                                         if_match=self.head.etag, part_number=part_number)
        except ObjectChanged:
            raise object_changed() from None

    async def pinned_chunks(self, first: int, last: int) -> AsyncIterator[bytes]:
        async with self.pinned_get((first, last)) as body:
            async for chunk in body.chunks():
                yield chunk


def _plaintext_size(head: ObjectHead, info: EncryptionInfo) -> int:
    layout = info.layout
    if isinstance(layout, SingleStream):
        if head.size != ciphertext_size(layout.plaintext_size):
            raise IntegrityError(f"the recorded plaintext size {layout.plaintext_size} does not fit the "
                                 f"stored length {head.size}")
        return layout.plaintext_size
    count = part_count_from_etag(head.etag)
    if count is None:
        raise IntegrityError("a multipart object's ETag does not give its part count")
    return object_plaintext_size(head.size, count)


class OpenedObject:
    """A stored object ready to be read: its plaintext size, parts, and plaintext of any span."""

    def __init__(self, stored: StoredObject, object_key: ObjectKey | None, size: int,
                 manifest: Manifest | None) -> None:
        self.stored = stored
        self._object_key = object_key
        self.size = size
        self.manifest = manifest

    @property
    def checksum(self) -> ObjectChecksum | None:
        """The object's stored plaintext checksum (sealed under its key; a multipart object's in its manifest,
        which must be loaded); None for an object stored without one, and for a legacy object (the upstream's
        own checksums are the plaintext's there)."""
        info = self.stored.info
        if info is None or self._object_key is None:
            return None
        if isinstance(info.layout, Multipart):
            assert self.manifest is not None, "open(with_manifest=True) before reading a multipart object's checksum"
            return self.manifest.checksum
        if info.layout.sealed_checksum is None:
            return None
        try:
            return open_checksum(self._object_key, info.layout.sealed_checksum)
        except IntegrityError as exc:
            raise self.stored.integrity_failure(exc) from None

    @property
    def part_count(self) -> int | None:
        """Parts of a multipart object with its manifest loaded; 1 for a single-stream object; None
        for a legacy object (the upstream knows)."""
        if self.manifest is not None:
            return len(self.manifest.parts)
        return None if self._object_key is None else 1

    def part_span(self, number: int) -> Span | None:
        """The plaintext span of part ``number`` (None: the whole single-stream object, which is part 1);
        416 InvalidPartNumber beyond the last part."""
        if number > (self.part_count or 1):
            raise invalid_part_number()
        if self.manifest is None:
            return None
        start = sum(part.size for part in self.manifest.parts[:number - 1])
        return start, start + self.manifest.parts[number - 1].size - 1  # an empty part: end = start - 1

    async def chunks(self, span: Span | None = None) -> AsyncIterator[bytes]:
        """The plaintext of ``span`` (None: all of it). An integrity failure raises S3Error mid-stream:
        before the answer's first byte the client gets that error, after it a cut connection."""
        try:
            async for chunk in self._plaintext(span):
                yield chunk
        except IntegrityError as exc:
            raise self.stored.integrity_failure(exc) from None

    def _plaintext(self, span: Span | None) -> AsyncIterator[bytes]:
        stored = self.stored
        whole = stored.whole_body() if span is None else None
        if self._object_key is None:
            return _legacy_bytes(stored, span, whole, self.size)
        info = stored.info
        assert info is not None
        if isinstance(info.layout, Multipart):
            assert self.manifest is not None, "open(with_manifest=True) before reading a multipart object"
            return _multipart_plaintext(stored, self._object_key, self.manifest, span, whole)
        return _single_plaintext(stored, self._object_key, info.layout, span, whole)


async def _legacy_bytes(stored: StoredObject, span: Span | None, whole: AsyncIterator[bytes] | None,
                        size: int) -> AsyncIterator[bytes]:
    if whole is None:
        first, last = span or (0, size - 1)
        if last < first:
            return
        whole = stored.pinned_chunks(first, last)
    async for chunk in whole:
        yield chunk


async def _single_plaintext(stored: StoredObject, object_key: ObjectKey, layout: SingleStream,
                            span: Span | None, whole: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    size = layout.plaintext_size
    plan = plan_range(size, *span) if span else None
    if whole is None:
        whole = (stored.pinned_chunks(plan.cipher_start, plan.cipher_end) if plan
                 else stored.pinned_chunks(0, ciphertext_size(size) - 1))
    decryptor = StreamDecryptor(object_key, layout.params, size, plan=plan)
    async for chunk in decrypt_stream(whole, decryptor):
        yield chunk


async def _multipart_plaintext(stored: StoredObject, object_key: ObjectKey, manifest: Manifest, span: Span | None,
                               whole: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    reads = plan_reads(manifest, span)
    if not reads:  # an empty part
        return

    async def header(read: PartRead) -> bytes:
        async with stored.pinned_get((read.stored_offset, read.stored_offset + HEADER_SIZE - 1)) as body:
            return await body.read(HEADER_SIZE)
    body = whole or stored.pinned_chunks(reads[0].upstream_start, reads[-1].upstream_end)
    async for chunk in decrypt_parts(body, object_key, reads, header):
        yield chunk
