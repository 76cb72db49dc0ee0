"""Multipart objects (docs/FORMAT.md §4): one stream per part, a fixed per-part overhead, a sealed manifest.

Each part is its own segment stream under the upload's object key OK, with the client's part number
bound into the segment key and fresh random stream parameters stored at the head of the part, so a
part uploaded twice never reuses a nonce and a part moved to another number does not open. Every
stored part is exactly PART_OVERHEAD bytes longer than its plaintext (the unused tag budget is zero
padding), so a listing turns the upstream size of a k-part object into its plaintext size without a
request. Which parts make up the object, and their sizes, is known only at Complete, after the
object's metadata was fixed: the gateway writes it as a manifest sealed under OK, so dropping,
duplicating, reordering or truncating parts upstream is detected.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator, Awaitable, Callable

from common.aead import AuthenticationFailed
from common.digits import parse_decimal
from gateway.crypto.checksum import ObjectChecksum
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import (SEGMENT_SIZE, TAG_SIZE, IntegrityError, RangePlan, StreamDecryptor,
                                   StreamEncryptor, StreamParams, ciphertext_size, plan_range, segment_count)
from gateway.limits import MAX_PARTS, MAX_UPLOAD_SIZE

MAX_SEGMENTS_PER_PART = 512
HEADER_SIZE = StreamParams.ENCODED_SIZE
PART_OVERHEAD = HEADER_SIZE + TAG_SIZE * MAX_SEGMENTS_PER_PART
_MANIFEST_MAGIC = b"S3GWMAN1"
_MANIFEST_MAGIC_WITH_CHECKSUM = b"S3GWMAN2"  # the same, followed by BE16(len) || the object's checksum
_MANIFEST_INFO = b"s3gw/v1/manifest"
_MANIFEST_AAD = b"s3gw/v1/manifest/"
_ENTRY = struct.Struct(">HQ")
_UNPINNED = bytes(HEADER_SIZE)


def part_segment_size(plaintext_size: int) -> int:
    """64 KiB, or the smallest multiple of it that keeps a part within MAX_SEGMENTS_PER_PART segments."""
    return SEGMENT_SIZE * max(1, -(-plaintext_size // (SEGMENT_SIZE * MAX_SEGMENTS_PER_PART)))


def part_stored_size(plaintext_size: int) -> int:
    return plaintext_size + PART_OVERHEAD


def _padding(plaintext_size: int) -> int:
    segment = part_segment_size(plaintext_size)
    return PART_OVERHEAD - HEADER_SIZE - (ciphertext_size(plaintext_size, segment) - plaintext_size)


def object_plaintext_size(stored_size: int, part_count: int) -> int:
    """c - k * PART_OVERHEAD; ValueError for sizes no k-part object can have."""
    if part_count < 1 or part_count > MAX_PARTS:
        raise ValueError(f"a multipart object has 1..{MAX_PARTS} parts, not {part_count}")
    plaintext = stored_size - part_count * PART_OVERHEAD
    if plaintext < 0:
        raise ValueError(f"{stored_size} bytes cannot hold {part_count} encrypted parts")
    return plaintext


def part_count_from_etag(etag: str) -> int | None:
    """k from a multipart ETag ``"<hex>-k"``; None for a single-part ETag."""
    bare = etag.strip().strip('"')
    _, dash, count = bare.rpartition("-")
    return parse_decimal(count, MAX_PARTS + 1) if dash else None


class EncryptedPart:
    """One part as stored: its fresh stream params, the part's segment stream, zero padding to
    PART_OVERHEAD. Iterate it for the stored bytes; ``params`` are what the part's ETag records."""

    def __init__(self, chunks: AsyncIterable[bytes], object_key: ObjectKey, part_number: int,
                 plaintext_size: int) -> None:
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"part number {part_number} outside 1..{MAX_PARTS}")
        self._chunks = chunks
        self._size = plaintext_size
        self._encryptor = StreamEncryptor(object_key, part_number, part_segment_size(plaintext_size))
        self.stored_size = part_stored_size(plaintext_size)

    @property
    def params(self) -> StreamParams:
        """The part's fresh stream parameters (stored at its head, recorded in its ETag)."""
        return self._encryptor.params

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # The params go out with the first sealed segment, not before: nothing is yielded until the client
        # has sent a whole segment (or its whole part), so a stalled client holds no upstream connection.
        head: bytes | None = self.params.encode()
        async for chunk in self._chunks:
            sealed = self._encryptor.update(chunk)
            if sealed:
                if head is not None:
                    yield head
                    head = None
                yield sealed
        if head is not None:
            yield head
        yield self._encryptor.finalize()
        yield bytes(_padding(self._size))


@dataclass(frozen=True)
class ManifestPart:
    """One part of a completed object: the client's part number, plaintext size, and (when the
    client replayed the ETag the gateway issued) the stream parameters it was uploaded with."""

    number: int
    size: int
    params: StreamParams | None = None


@dataclass(frozen=True)
class Manifest:
    parts: tuple[ManifestPart, ...]
    checksum: ObjectChecksum | None = None  # the object's plaintext checksum, when its parts had them

    @property
    def plaintext_size(self) -> int:
        return sum(part.size for part in self.parts)

    @property
    def stored_size(self) -> int:
        return self.plaintext_size + len(self.parts) * PART_OVERHEAD

    def encode(self) -> bytes:
        """MAGIC || BE32(k) || k * (BE16(number) || BE64(size) || params or 23 zero bytes), then, under the
        second magic only, BE16(len) || the checksum. Without a checksum the first magic: a manifest any
        earlier version reads."""
        magic = _MANIFEST_MAGIC if self.checksum is None else _MANIFEST_MAGIC_WITH_CHECKSUM
        out = bytearray(magic + struct.pack(">I", len(self.parts)))
        for part in self.parts:
            out += _ENTRY.pack(part.number, part.size)
            out += part.params.encode() if part.params else _UNPINNED
        if self.checksum is not None:
            encoded = self.checksum.encode()
            out += struct.pack(">H", len(encoded)) + encoded
        return bytes(out)

    @classmethod
    def decode(cls, raw: bytes) -> "Manifest":
        entry = _ENTRY.size + HEADER_SIZE
        head = len(_MANIFEST_MAGIC) + 4
        magic = raw[:len(_MANIFEST_MAGIC)]
        if magic not in (_MANIFEST_MAGIC, _MANIFEST_MAGIC_WITH_CHECKSUM) or len(raw) < head:
            raise IntegrityError("not a gateway manifest")
        (count,) = struct.unpack(">I", raw[len(_MANIFEST_MAGIC):head])
        end = head + count * entry
        if not 1 <= count <= MAX_PARTS or len(raw) < end:
            raise IntegrityError("manifest length does not match its part count")
        checksum = _trailing_checksum(raw[end:]) if magic == _MANIFEST_MAGIC_WITH_CHECKSUM else None
        if checksum is None and len(raw) != end:
            raise IntegrityError("manifest length does not match its part count")
        parts = []
        for offset in range(head, end, entry):
            number, size = _ENTRY.unpack_from(raw, offset)
            params = raw[offset + _ENTRY.size:offset + entry]
            parts.append(ManifestPart(number, size, None if params == _UNPINNED else StreamParams.decode(params)))
        manifest = cls(tuple(parts), checksum)
        manifest.validate()
        return manifest

    def validate(self) -> None:
        numbers = [part.number for part in self.parts]
        if not self.parts or numbers != sorted(set(numbers)) or not 1 <= numbers[0] <= numbers[-1] <= MAX_PARTS:
            raise IntegrityError("manifest part numbers must be strictly increasing within 1..10000")
        if any(not 0 <= part.size <= MAX_UPLOAD_SIZE for part in self.parts):
            raise IntegrityError("manifest part size out of range")


def _trailing_checksum(raw: bytes) -> ObjectChecksum:
    if len(raw) < 2 or len(raw) != 2 + struct.unpack(">H", raw[:2])[0]:
        raise IntegrityError("the manifest's checksum does not fill its end")
    return ObjectChecksum.decode(raw[2:])


def seal_manifest(object_key: ObjectKey, tag: str, manifest: Manifest) -> bytes:
    """nonce(12) || GCM(MK, nonce, manifest, A = "s3gw/v1/manifest/" || tag), MK = HKDF(OK, none, "s3gw/v1/manifest")."""
    return object_key.aead(_MANIFEST_INFO).seal(manifest.encode(), _MANIFEST_AAD + tag.encode())


def open_manifest(object_key: ObjectKey, tag: str, sealed: bytes) -> Manifest:
    try:
        raw = object_key.aead(_MANIFEST_INFO).open(sealed, _MANIFEST_AAD + tag.encode())
    except AuthenticationFailed:
        raise IntegrityError("the manifest failed authentication") from None
    return Manifest.decode(raw)


@dataclass(frozen=True)
class PartRead:
    """What to read of one part: its stored offset, the segments wanted, and the framing around them."""

    part: ManifestPart
    stored_offset: int
    plan: RangePlan
    with_header: bool
    with_padding: bool

    @property
    def segment_size(self) -> int:
        return part_segment_size(self.part.size)

    @property
    def upstream_start(self) -> int:
        return self.stored_offset + (0 if self.with_header else HEADER_SIZE + self.plan.cipher_start)

    @property
    def upstream_end(self) -> int:
        """Inclusive."""
        if self.with_padding:
            return self.stored_offset + part_stored_size(self.part.size) - 1
        return self.stored_offset + HEADER_SIZE + self.plan.cipher_end


def _whole_plan(size: int, segment: int) -> RangePlan:
    """The plan of a part's every segment (an empty part has one empty segment)."""
    last = segment_count(size, segment) - 1
    return RangePlan(start=0, end=max(size - 1, 0), cipher_start=0, cipher_end=ciphertext_size(size, segment) - 1,
                     first_segment=0, skip=0, length=size, last_segment=last)


def plan_reads(manifest: Manifest, span: tuple[int, int] | None) -> list[PartRead]:
    """The parts holding plaintext bytes start..end (inclusive; none when end < start), or every part
    when ``span`` is None (the whole object, which may be empty). One upstream range covers them all."""
    whole = span is None
    start, end = span or (0, -1)
    if not whole and end < start:
        return []
    reads: list[PartRead] = []
    plain_offset = stored_offset = 0
    for part in manifest.parts:
        part_end = plain_offset + part.size - 1
        # An empty part strictly inside the span lies between two parts the one upstream range covers,
        # so it is read (and checked) too: its stored bytes are in the middle of that range.
        inside_empty = not part.size and start < plain_offset <= end
        if whole or inside_empty or (part.size and plain_offset <= end and part_end >= start):
            segment = part_segment_size(part.size)
            if whole or (start <= plain_offset and end >= part_end):
                plan = _whole_plan(part.size, segment)
            else:
                plan = plan_range(part.size, max(start, plain_offset) - plain_offset,
                                  min(end, part_end) - plain_offset, segment)
            reads.append(PartRead(part, stored_offset, plan, with_header=plan.first_segment == 0,
                                  with_padding=whole or end > part_end))
        plain_offset += part.size
        stored_offset += part_stored_size(part.size)
    return reads


class _Feed:
    """Hands out exact byte counts from a chunk stream."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = aiter(chunks)
        self._rest = memoryview(b"")

    async def take(self, count: int) -> AsyncIterator[memoryview]:
        while count:
            if not self._rest:
                chunk = await anext(self._chunks, None)
                if chunk is None:
                    raise IntegrityError("the stored object ended early")
                self._rest = memoryview(chunk)
            piece, self._rest = self._rest[:count], self._rest[count:]
            count -= len(piece)
            yield piece

    async def read(self, count: int) -> bytes:
        return b"".join([bytes(piece) async for piece in self.take(count)])

    async def expect_end(self) -> None:
        if self._rest or await anext(self._chunks, None):
            raise IntegrityError("bytes after the last part")


HeaderFetch = Callable[[PartRead], Awaitable[bytes]]


def _check_params(read: PartRead, raw: bytes) -> StreamParams:
    params = StreamParams.decode(raw)
    if read.part.params is not None and read.part.params != params:
        raise IntegrityError(f"part {read.part.number} is not the upload the manifest names")
    return params


async def decrypt_parts(chunks: AsyncIterable[bytes], object_key: ObjectKey, reads: list[PartRead],
                        fetch_header: HeaderFetch) -> AsyncIterator[bytes]:
    """Plaintext of ``reads`` from the upstream bytes upstream_start(first)..upstream_end(last).

    A part whose header lies before the range gets it from the manifest's pinned parameters, or
    from ``fetch_header``; every header is checked against the pinned parameters when there are some.
    """
    feed = _Feed(chunks)
    for read in reads:
        if read.with_header:
            params = _check_params(read, await feed.read(HEADER_SIZE))
        else:
            params = read.part.params or _check_params(read, await fetch_header(read))
        decryptor = StreamDecryptor(object_key, params, read.part.size, read.part.number, plan=read.plan,
                                    segment_size=read.segment_size)
        async for piece in feed.take(read.plan.cipher_end - read.plan.cipher_start + 1):
            plaintext = decryptor.update(piece)
            if plaintext:
                yield plaintext
        decryptor.finalize()
        if read.with_padding and any(await feed.read(_padding(read.part.size))):
            raise IntegrityError(f"part {read.part.number} has altered padding")
    await feed.expect_end()
