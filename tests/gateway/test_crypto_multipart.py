"""The multipart format: fixed per-part overhead, sealed manifests, and reads of any span of the parts."""
from __future__ import annotations

import asyncio
import os
import random

import pytest

from gateway.crypto.multipart import (PART_OVERHEAD, Manifest, ManifestPart, decrypt_parts, encrypt_part,
                                      object_plaintext_size, open_manifest, part_count_from_etag,
                                      part_segment_size, plan_reads, seal_manifest)
from gateway.crypto.stream import SEGMENT_SIZE, IntegrityError, StreamParams

OK = bytes(range(32))
MiB = 1024 * 1024


async def _chunks(data: bytes, size: int = 100_000):
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


def _encrypt(data: bytes, number: int, params: StreamParams, key: bytes = OK) -> bytes:
    async def run() -> bytes:
        return b"".join([piece async for piece in encrypt_part(_chunks(data), key, number, len(data), params)])
    return asyncio.run(run())


def _object(sizes: list[int], numbers: list[int] | None = None, pin: bool = True):
    numbers = numbers or list(range(1, len(sizes) + 1))
    plaintexts = [os.urandom(size) for size in sizes]
    params = [StreamParams.new() for _ in sizes]
    stored = b"".join(_encrypt(data, n, p) for data, n, p in zip(plaintexts, numbers, params))
    manifest = Manifest(tuple(ManifestPart(n, len(d), p if pin else None)
                              for n, d, p in zip(numbers, plaintexts, params)))
    return b"".join(plaintexts), stored, manifest


def _read(stored: bytes, manifest: Manifest, start: int, end: int, key: bytes = OK) -> bytes:
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
    assert len(_encrypt(os.urandom(size), 1, StreamParams.new())) == size + PART_OVERHEAD


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
    renumbered = Manifest((ManifestPart(2, 1000, manifest.parts[0].params), ManifestPart(3, 20, manifest.parts[1].params)))
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
    for key, tag, blob in ((os.urandom(32), "tag", sealed), (OK, "other", sealed),
                           (OK, "tag", sealed[:-1] + bytes([sealed[-1] ^ 1]))):
        with pytest.raises(IntegrityError):
            open_manifest(key, tag, blob)


@pytest.mark.parametrize("parts", [(), (ManifestPart(2, 1), ManifestPart(1, 1)), (ManifestPart(1, 1),) * 2,
                                   (ManifestPart(0, 1),)])
def test_manifests_with_impossible_part_lists_are_refused(parts):
    with pytest.raises(IntegrityError):
        Manifest.decode(Manifest(parts).encode()) if parts else Manifest.decode(b"S3GWMAN1\x00\x00\x00\x00")
