"""The segmented AEAD stream format (docs/FORMAT.md): encrypt, decrypt, size arithmetic, ranges.

Modelled on Tink's streaming AEAD: the plaintext is cut into 64 KiB segments, each sealed with
AES-256-GCM under a per-stream key, with a nonce made of a random per-stream prefix, the segment
counter and a last-segment flag. The stream parameters live outside the segments (in the object's
metadata, or at the head of a multipart part), so ciphertext offsets are pure arithmetic and a ranged
GET maps to one upstream ranged GET.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import AsyncIterable, AsyncIterator, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.crypto.objectkey import ObjectKey
from gateway.limits import MAX_PARTS

SEGMENT_SIZE = 64 * 1024
TAG_SIZE = 16
CIPHER_SEGMENT_SIZE = SEGMENT_SIZE + TAG_SIZE
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 7
MAX_SEGMENTS = 2**32
SEGMENT_KEY_INFO = b"s3gw/v1/segment"
_LAST = b"\x01"
_NOT_LAST = b"\x00"


class IntegrityError(Exception):
    """Ciphertext or metadata failed authentication: never return bytes after this."""


@dataclass(frozen=True)
class StreamParams:
    """Fresh random values per stream, so re-uploading a part never reuses a (key, nonce) pair."""

    salt: bytes
    nonce_prefix: bytes

    ENCODED_SIZE = SALT_SIZE + NONCE_PREFIX_SIZE

    @classmethod
    def new(cls) -> "StreamParams":
        return cls(os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE))

    def encode(self) -> bytes:
        """salt(16) || nonce_prefix(7)."""
        return self.salt + self.nonce_prefix

    @classmethod
    def decode(cls, raw: bytes) -> "StreamParams":
        if len(raw) != cls.ENCODED_SIZE:
            raise IntegrityError(f"stream parameters must be {cls.ENCODED_SIZE} bytes, got {len(raw)}")
        return cls(bytes(raw[:SALT_SIZE]), bytes(raw[SALT_SIZE:]))


def segment_count(plaintext_size: int, segment_size: int = SEGMENT_SIZE) -> int:
    """Segments in a stream: an empty stream is one empty final segment."""
    if plaintext_size < 0:
        raise ValueError("negative plaintext size")
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(plaintext_size: int, segment_size: int = SEGMENT_SIZE) -> int:
    """c = p + 16 * max(1, ceil(p / S))."""
    return plaintext_size + TAG_SIZE * segment_count(plaintext_size, segment_size)


def plaintext_size(ciphertext_size: int) -> int:
    """Inverse of ciphertext_size; ValueError for a length no stream can have."""
    if ciphertext_size < TAG_SIZE:
        raise ValueError(f"ciphertext of {ciphertext_size} bytes is shorter than one tag")
    full, rest = divmod(ciphertext_size, CIPHER_SEGMENT_SIZE)
    if rest == 0:
        return full * SEGMENT_SIZE
    if rest <= TAG_SIZE and not (full == 0 and rest == TAG_SIZE):
        raise ValueError(f"ciphertext of {ciphertext_size} bytes ends in a {rest}-byte segment")
    return full * SEGMENT_SIZE + rest - TAG_SIZE


def _segment_cipher(object_key: ObjectKey, params: StreamParams, part_number: int) -> AESGCM:
    """SK = HKDF-SHA256(ikm=OK, salt=params.salt, info="s3gw/v1/segment" || BE32(part_number)).

    AES-GCM itself, not common.aead: the segment nonces are the stream's own (prefix, counter,
    last flag), which is what binds each segment to its position."""
    if not 0 <= part_number <= MAX_PARTS:
        raise ValueError(f"part number {part_number} outside 0..{MAX_PARTS}")
    return AESGCM(object_key.derive(salt=params.salt, info=SEGMENT_KEY_INFO + struct.pack(">I", part_number)))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    """nonce_prefix(7) || BE32(index) || last_flag(1)."""
    if index >= MAX_SEGMENTS:
        raise ValueError("stream too long for a 32-bit segment counter")
    return prefix + struct.pack(">I", index) + (_LAST if last else _NOT_LAST)


class StreamEncryptor:
    """Incremental encryptor: feed plaintext with update(), close with finalize().

    It makes its own stream parameters (fresh salt and nonce prefix) and exposes them as ``params``
    for the caller to store: no caller can hand it stale ones, so no two streams share a segment key
    and nonce. ``segment_size`` is 64 KiB except for multipart parts larger than 32 MiB
    (gateway/crypto/multipart.py).

    A full segment is held back until more data arrives, because only then is it known not to be
    the final segment (whose nonce carries the last flag).
    """

    def __init__(self, object_key: ObjectKey, part_number: int = 0, segment_size: int = SEGMENT_SIZE) -> None:
        params = self._params = StreamParams.new()
        self._aead = _segment_cipher(object_key, params, part_number)
        self._prefix = params.nonce_prefix
        self._segment = segment_size
        self._pending = bytearray()
        self._index = 0
        self._done = False

    @property
    def params(self) -> StreamParams:
        """The stream's parameters, for the caller to store beside the stream (read-only)."""
        return self._params

    def update(self, data: bytes) -> bytearray:
        """Whole encrypted segments ready so far (may be empty); at most one segment stays buffered.

        Returns a bytearray: the segments are sealed straight into one preallocated buffer,
        which is what makes the stream run at AES-GCM speed.
        """
        if self._done:
            raise ValueError("update() after finalize()")
        view = memoryview(data)
        sources: list[bytes | bytearray | memoryview] = []
        size = self._segment
        if self._pending:
            room = size - len(self._pending)
            self._pending += view[:room]
            view = view[room:]
            if not view:
                return bytearray()
            sources.append(self._pending)
            self._pending = bytearray()
        full = (len(view) - 1) // size if view else 0
        sources.extend(view[offset:offset + size] for offset in range(0, full * size, size))
        self._pending += view[full * size:]
        return self._seal(sources, last=False)

    def finalize(self) -> bytearray:
        """The final segment, flagged last (an empty stream yields one 16-byte segment)."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        return self._seal([self._pending], last=True)

    def _seal(self, segments: list[bytes | bytearray | memoryview], last: bool) -> bytearray:
        """Seal consecutive segments into one buffer; ``last`` flags the final one of them."""
        out = bytearray(sum(len(segment) for segment in segments) + TAG_SIZE * len(segments))
        with memoryview(out) as target:
            offset = 0
            for position, segment in enumerate(segments, 1):
                nonce = _nonce(self._prefix, self._index, last and position == len(segments))
                end = offset + len(segment) + TAG_SIZE
                self._aead.encrypt_into(nonce, segment, None, target[offset:end])
                self._index += 1
                offset = end
        return out


@dataclass(frozen=True)
class RangePlan:
    """How a plaintext byte range maps onto whole ciphertext segments."""

    start: int
    end: int
    cipher_start: int
    cipher_end: int
    first_segment: int
    skip: int
    length: int
    last_segment: int


def plan_range(plaintext_size: int, start: int, end: int, segment_size: int = SEGMENT_SIZE) -> RangePlan:
    """Plan the upstream range for plaintext bytes start..end (inclusive, already clamped)."""
    if not 0 <= start <= end < plaintext_size:
        raise ValueError(f"range {start}-{end} outside an object of {plaintext_size} bytes")
    first, last = start // segment_size, end // segment_size
    cipher_segment = segment_size + TAG_SIZE
    cipher_end = min((last + 1) * cipher_segment, ciphertext_size(plaintext_size, segment_size)) - 1
    return RangePlan(
        start=start,
        end=end,
        cipher_start=first * cipher_segment,
        cipher_end=cipher_end,
        first_segment=first,
        skip=start - first * segment_size,
        length=end - start + 1,
        last_segment=last,
    )


class StreamDecryptor:
    """Incremental decryptor for a whole stream or for the segments a RangePlan names.

    The segment boundaries and which segment is final follow from the plaintext size in the
    metadata; a stream that ends early, runs long, or whose expected final segment lacks the last
    flag fails authentication.
    """

    def __init__(
        self,
        object_key: ObjectKey,
        params: StreamParams,
        plaintext_size: int,
        part_number: int = 0,
        plan: RangePlan | None = None,
        segment_size: int = SEGMENT_SIZE,
    ) -> None:
        self._aead = _segment_cipher(object_key, params, part_number)
        self._prefix = params.nonce_prefix
        self._size = plaintext_size
        self._segment = segment_size
        self._final_index = segment_count(plaintext_size, segment_size) - 1
        if plan is None:
            self._index, self._stop = 0, self._final_index
            self._skip, self._remaining = 0, plaintext_size
        else:
            self._index, self._stop = plan.first_segment, plan.last_segment
            self._skip, self._remaining = plan.skip, plan.length
        self._buffer = bytearray()
        self._done = False

    def update(self, data: bytes) -> bytearray:
        """Plaintext of every segment completed by ``data`` (a bytearray); IntegrityError on failure."""
        if self._done:
            raise ValueError("update() after finalize()")
        segments = self._split(data)
        if self._index + len(segments) > self._stop and self._buffer:
            self._fail("bytes after the final segment")
        out = bytearray(sum(len(segment) for segment in segments) - TAG_SIZE * len(segments))
        with memoryview(out) as target:
            written = 0
            for segment in segments:
                end = written + len(segment) - TAG_SIZE
                self._open(segment, target[written:end])
                written = end
        return self._trim(out)

    def _split(self, data: bytes) -> list[bytearray | memoryview]:
        """Cut the expected segments completed by ``data``; buffer only the incomplete rest.

        Segments are views into ``data`` where possible, so aligned input is never copied.
        """
        view = memoryview(data)
        segments: list[bytearray | memoryview] = []
        index = self._index
        if self._buffer and index <= self._stop:
            need = self._cipher_length(index)
            missing = need - len(self._buffer)
            self._buffer += view[:missing]
            view = view[missing:]
            if len(self._buffer) < need:
                return segments
            segments.append(self._buffer)
            self._buffer = bytearray()
            index += 1
        while index <= self._stop and len(view) >= self._cipher_length(index):
            need = self._cipher_length(index)
            segments.append(view[:need])
            view = view[need:]
            index += 1
        self._buffer += view
        return segments

    def _trim(self, plaintext: bytearray) -> bytearray:
        """Drop the bytes before the range start (all in the first segment) and after its end."""
        if self._skip and plaintext:
            del plaintext[:self._skip]
            self._skip = 0
        if len(plaintext) > self._remaining:
            del plaintext[self._remaining:]
        self._remaining -= len(plaintext)
        return plaintext

    def finalize(self) -> bytes:
        """Check the stream ended exactly after its last expected segment."""
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        if self._index <= self._stop or self._buffer:
            self._fail("stream truncated")
        return b""

    def _cipher_length(self, index: int) -> int:
        if index < self._final_index:
            return self._segment + TAG_SIZE
        return self._size - index * self._segment + TAG_SIZE

    def _open(self, segment: bytearray | memoryview, target: memoryview) -> None:
        nonce = _nonce(self._prefix, self._index, self._index == self._final_index)
        try:
            self._aead.decrypt_into(nonce, segment, None, target)
        except InvalidTag:
            self._fail(f"segment {self._index} failed authentication")
        self._index += 1

    def _fail(self, reason: str) -> NoReturn:
        self._done = True
        self._buffer = bytearray()
        raise IntegrityError(reason)


async def encrypt_stream(chunks: AsyncIterable[bytes], encryptor: StreamEncryptor) -> AsyncIterator[bytes]:
    """Encrypt an async byte stream, yielding only non-empty ciphertext pieces."""
    async for chunk in chunks:
        sealed = encryptor.update(chunk)
        if sealed:
            yield sealed
    yield encryptor.finalize()


async def decrypt_stream(chunks: AsyncIterable[bytes], decryptor: StreamDecryptor) -> AsyncIterator[bytes]:
    """Decrypt an async byte stream; raises IntegrityError mid-iteration, so callers abort the response.

    Until the first plaintext is out, input is fed one segment's worth at a time: damage after the
    first segment then always shows as a body cut after authentic bytes, never as an error before
    the answer, whether the upstream delivered the object in many chunks or (having had time while
    the data key was being decrypted) in one."""
    started = False
    async for chunk in chunks:
        view = memoryview(chunk)
        while view and not started:
            plaintext = decryptor.update(view[:CIPHER_SEGMENT_SIZE])
            view = view[CIPHER_SEGMENT_SIZE:]
            if plaintext:
                started = True
                yield plaintext
        plaintext = decryptor.update(view) if view else None
        if plaintext:
            yield plaintext
    decryptor.finalize()
