"""The multipart format: fixed per-part overhead, sealed manifests, and reads of any span of the parts."""
from __future__ import annotations

import asyncio
import os
import random

import pytest

from gateway.crypto.multipart import (HEADER_SIZE, PART_OVERHEAD, EncryptedPart, Manifest, ManifestPart,
                                      decrypt_parts, object_plaintext_size, open_manifest, part_count_from_etag,
                                      part_segment_size, part_stored_size, plan_reads, seal_manifest)
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import SEGMENT_SIZE, IntegrityError, StreamDecryptor, StreamParams

OK = ObjectKey(bytes(range(32)))
MiB = 1024 * 1024


async def _chunks(data: bytes, size: int = 100_000):
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def _encrypt(data: bytes, number: int, key: ObjectKey = OK) -> tuple[StreamParams, bytes]:
    """The params the part made for itself (what its ETag records) and the stored part."""
    async def run() -> tuple[StreamParams, bytes]:
        part = EncryptedPart(_chunks(data), key, number, len(data))
        stored = b"".join([piece async for piece in part])
        assert part.stored_size == len(stored)
        return part.params, stored
    return asyncio.run(run())


def _object(sizes: list[int], numbers: list[int] | None = None, pin: bool = True):
    numbers = numbers or list(range(1, len(sizes) + 1))
    plaintexts = [os.urandom(size) for size in sizes]
    parts = [_encrypt(data, n) for data, n in zip(plaintexts, numbers)]
    stored = b"".join(part for _, part in parts)
    manifest = Manifest(tuple(ManifestPart(n, len(d), params if pin else None)
                              for n, d, (params, _) in zip(numbers, plaintexts, parts)))
    return b"".join(plaintexts), stored, manifest


def _read(stored: bytes, manifest: Manifest, start: int, end: int, key: ObjectKey = OK) -> bytes:
    reads = plan_reads(manifest, None if end < start else (start, end))
    if not reads:
        return b""
    whole = end < start  # the whole stored object is read, as a plain GET does
    window = stored if whole else stored[reads[0].upstream_start:reads[-1].upstream_end + 1]

    async def header(read) -> bytes:
        return stored[read.stored_offset:read.stored_offset + 23]

    async def run() -> bytes:
        return b"".join([piece async for piece in decrypt_parts(_chunks(window, 7777), key, reads, header)])
    return asyncio.run(run())


@pytest.mark.parametrize("size", [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, 5 * MiB + 1, 32 * MiB, 32 * MiB + 1])
def test_a_stored_part_is_exactly_part_overhead_longer_than_its_plaintext(size):
    params, stored = _encrypt(os.urandom(size), 1)
    assert len(stored) == size + PART_OVERHEAD == part_stored_size(size)
    assert stored[:HEADER_SIZE] == params.encode()


def test_a_part_is_its_params_then_its_own_segment_stream_then_zero_padding():
    data = os.urandom(70_000)
    params, stored = _encrypt(data, 9)
    stream = stored[HEADER_SIZE:HEADER_SIZE + 70_000 + 2 * 16]
    assert not any(stored[HEADER_SIZE + len(stream):])
    decryptor = StreamDecryptor(OK, params, len(data), 9, segment_size=part_segment_size(len(data)))
    assert bytes(decryptor.update(stream)) + decryptor.finalize() == data


def test_every_upload_of_a_part_makes_fresh_params():
    data = b"same part" * 1000
    uploads = [_encrypt(data, 3) for _ in range(8)]
    assert len({params.salt for params, _ in uploads}) == len({params.nonce_prefix for params, _ in uploads}) == 8
    assert len({stored for _, stored in uploads}) == 8
    assert all(stored[:HEADER_SIZE] == params.encode() for params, stored in uploads)


@pytest.mark.parametrize("replayable", [True, False])
def test_a_part_cannot_be_streamed_twice_under_the_same_params(replayable):
    """A replay of the part's body (an upstream retry) must make a new EncryptedPart, with new params:
    the same one refuses to encrypt again rather than reuse its segment nonces."""
    class Replayable:
        def __aiter__(self):
            return _chunks(b"x" * 1000)

    async def run() -> None:
        part = EncryptedPart(Replayable() if replayable else _chunks(b"x" * 1000), OK, 1, 1000)
        assert len(b"".join([piece async for piece in part])) == part.stored_size
        with pytest.raises(ValueError):
            async for _ in part:
                pass
    asyncio.run(run())


def test_segments_grow_past_32_mib_so_a_part_never_has_more_than_512():
    assert part_segment_size(32 * MiB) == SEGMENT_SIZE
    assert part_segment_size(32 * MiB + 1) == 2 * SEGMENT_SIZE
    assert part_segment_size(5 * 1024 * MiB) == 160 * SEGMENT_SIZE


def test_object_size_follows_from_stored_size_and_part_count():
    assert object_plaintext_size(3 * PART_OVERHEAD + 1000, 3) == 1000
    assert part_count_from_etag('"0123abcd-12"') == 12 and part_count_from_etag('"0123abcd"') is None
    with pytest.raises(ValueError):
        object_plaintext_size(PART_OVERHEAD - 1, 1)


def test_whole_object_and_random_spans_decrypt_to_the_plaintext():
    data, stored, manifest = _object([5 * MiB + 3, 70_000, 10])
    assert _read(stored, manifest, 0, -1) == data
    rng = random.Random(7)
    spans = [(5 * MiB, 5 * MiB + 5), (5 * MiB + 3, 5 * MiB + 3), (len(data) - 1, len(data) - 1)]
    spans += [tuple(sorted(rng.sample(range(len(data)), 2))) for _ in range(40)]
    for start, end in spans:
        assert _read(stored, manifest, start, end) == data[start:end + 1], (start, end)


def test_spans_starting_mid_part_fetch_the_header_when_nothing_is_pinned():
    data, stored, manifest = _object([200_000, 5], pin=False)
    assert _read(stored, manifest, 150_000, 200_003) == data[150_000:200_004]


def test_gaps_in_part_numbers_are_part_of_the_keys():
    data, stored, manifest = _object([1000, 20], numbers=[2, 7])
    assert _read(stored, manifest, 0, -1) == data
    renumbered = Manifest((ManifestPart(2, 1000, manifest.parts[0].params),
                           ManifestPart(3, 20, manifest.parts[1].params)))
    with pytest.raises(IntegrityError):
        _read(stored, renumbered, 0, -1)


@pytest.mark.parametrize("tamper", ["swap", "params", "padding", "body"])
def test_altered_parts_fail_authentication(tamper):
    data, stored, manifest = _object([1000, 1000], pin=tamper != "params")
    first, second = stored[:1000 + PART_OVERHEAD], stored[1000 + PART_OVERHEAD:]
    if tamper == "swap":
        stored = second + first
    elif tamper == "params":
        manifest = Manifest((ManifestPart(1, 1000, StreamParams.new()), manifest.parts[1]))
    elif tamper == "padding":
        stored = first[:-1] + b"\x01" + second
    else:
        stored = stored[:30] + bytes([stored[30] ^ 1]) + stored[31:]
    with pytest.raises(IntegrityError):
        _read(stored, manifest, 0, -1)


def test_a_stored_object_that_runs_long_or_short_fails():
    data, stored, manifest = _object([100, 100])
    for bad in (stored + b"x", stored[:-1]):
        with pytest.raises(IntegrityError):
            _read(bad, manifest, 0, -1)


def test_manifest_round_trips_only_under_its_key_and_tag():
    manifest = Manifest((ManifestPart(1, 5 * MiB, StreamParams.new()), ManifestPart(3, 7, None)))
    sealed = seal_manifest(OK, "tag", manifest)
    assert open_manifest(OK, "tag", sealed) == manifest
    for key, tag, blob in ((ObjectKey.generate(), "tag", sealed), (OK, "other", sealed),
                           (OK, "tag", sealed[:-1] + bytes([sealed[-1] ^ 1]))):
        with pytest.raises(IntegrityError):
            open_manifest(key, tag, blob)


@pytest.mark.parametrize("parts", [(), (ManifestPart(2, 1), ManifestPart(1, 1)), (ManifestPart(1, 1),) * 2,
                                   (ManifestPart(0, 1),)])
def test_manifests_with_impossible_part_lists_are_refused(parts):
    with pytest.raises(IntegrityError):
        Manifest.decode(Manifest(parts).encode()) if parts else Manifest.decode(b"S3GWMAN1\x00\x00\x00\x00")
