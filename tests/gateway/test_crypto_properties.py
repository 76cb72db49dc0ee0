"""Property tests of the crypto layer: the stream decryptor under any chunking and range, and the multipart
read planner under any part layout and span (hypothesis draws the cases; failures shrink to a minimal one).

Small segment sizes keep every example fast while still crossing many segment boundaries.
"""
from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator

from hypothesis import given, settings, strategies as st

from gateway.crypto.multipart import (HEADER_SIZE, EncryptedPart, Manifest, ManifestPart, PartRead, decrypt_parts,
                                      part_stored_size, plan_reads)
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import (IntegrityError, StreamDecryptor, StreamEncryptor, StreamParams, ciphertext_size,
                                   plan_range)

OBJECT_KEY = ObjectKey(bytes(range(32)))
FAST = settings(max_examples=60, deadline=None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, any repeats): every chunking a network can deliver."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


def encrypt(plaintext: bytes, segment: int, cuts: list[int]) -> tuple[StreamParams, bytes]:
    """The params the encryptor made for itself, and the stream."""
    encryptor = StreamEncryptor(OBJECT_KEY, 0, segment)
    out = bytearray()
    for chunk in split(plaintext, cuts):
        out += encryptor.update(chunk)
    return encryptor.params, bytes(out + encryptor.finalize())


def decrypt(stored: bytes, params: StreamParams, size: int, segment: int, cuts: list[int], plan=None) -> bytes:
    decryptor = StreamDecryptor(OBJECT_KEY, params, size, plan=plan, segment_size=segment)
    out = bytearray()
    for chunk in split(stored, cuts):
        out += decryptor.update(chunk)
    decryptor.finalize()
    return bytes(out)


cuts = st.lists(st.integers(min_value=0, max_value=10_000), max_size=12)
segments = st.sampled_from([16, 64, 100, 4096])


@FAST
@given(size=st.integers(0, 1500), segment=segments, write_cuts=cuts, read_cuts=cuts)
def test_any_plaintext_round_trips_under_any_write_and_read_chunking(size, segment, write_cuts, read_cuts):
    plaintext = os.urandom(size)
    params, stored = encrypt(plaintext, segment, write_cuts)
    assert len(stored) == ciphertext_size(size, segment)
    assert decrypt(stored, params, size, segment, read_cuts) == plaintext


@FAST
@given(data=st.data(), size=st.integers(1, 1500), segment=segments, read_cuts=cuts)
def test_any_range_decrypts_exactly_its_bytes_from_the_planned_ciphertext(data, size, segment, read_cuts):
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start, size - 1))
    plaintext = os.urandom(size)
    params, stored = encrypt(plaintext, segment, [])
    plan = plan_range(size, start, end, segment)
    piece = stored[plan.cipher_start:plan.cipher_end + 1]
    assert decrypt(piece, params, size, segment, read_cuts, plan) == plaintext[start:end + 1]


@FAST
@given(size=st.integers(0, 800), segment=segments, cut=st.integers(0, 10_000), extra=st.binary(max_size=40),
       read_cuts=cuts)
def test_a_cut_or_extended_stream_never_yields_bytes_that_are_not_the_plaintext(size, segment, cut, extra,
                                                                                read_cuts):
    plaintext = os.urandom(size)
    params, stored = encrypt(plaintext, segment, [])
    damaged = stored[:cut % len(stored)] if cut % 2 else stored + (extra or b"\0")
    decryptor = StreamDecryptor(OBJECT_KEY, params, size, segment_size=segment)
    out = bytearray()
    try:
        for chunk in split(damaged, read_cuts):
            out += decryptor.update(chunk)
        decryptor.finalize()
    except IntegrityError:
        assert plaintext.startswith(bytes(out))
    else:
        raise AssertionError("a damaged stream decrypted without an integrity error")


# ------------------------------------------------------------------------------------- multipart


async def _aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _stored_parts(sizes: list[int]) -> tuple[Manifest, bytes, bytes]:
    parts, body, whole = [], bytearray(), bytearray()
    for number, size in enumerate(sizes, start=1):
        plaintext = os.urandom(size)
        whole += plaintext
        part = EncryptedPart(_aiter([plaintext]), OBJECT_KEY, number, size)
        async for piece in part:
            body += piece
        parts.append(ManifestPart(number, size, part.params))
    return Manifest(tuple(parts)), bytes(body), bytes(whole)


part_sizes = st.lists(st.sampled_from([0, 1, 17, 65535, 65536, 65537, 140_000]), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), sizes=part_sizes, read_cuts=cuts, unpinned=st.booleans())
def test_any_span_of_any_part_layout_reads_exactly_its_bytes_in_one_upstream_range(data, sizes, read_cuts,
                                                                                     unpinned):
    manifest, body, whole = asyncio.run(_stored_parts(sizes))
    assert len(body) == sum(part_stored_size(s) for s in sizes) == manifest.stored_size
    if unpinned:  # parts named by bare ETags at Complete: params come from each part's head
        manifest = Manifest(tuple(ManifestPart(p.number, p.size) for p in manifest.parts))
    span = None
    if whole and data.draw(st.booleans()):
        start = data.draw(st.integers(0, len(whole) - 1))
        span = (start, data.draw(st.integers(start, len(whole) - 1)))
    reads = plan_reads(manifest, span)
    expected = whole if span is None else whole[span[0]:span[1] + 1]
    if not reads:
        assert expected == b""
        return

    async def header(read: PartRead) -> bytes:
        return body[read.stored_offset:read.stored_offset + HEADER_SIZE]

    async def run() -> bytes:
        stored = body[reads[0].upstream_start:reads[-1].upstream_end + 1]
        return b"".join([c async for c in decrypt_parts(_aiter(split(stored, read_cuts)), OBJECT_KEY, reads, header)])

    assert asyncio.run(run()) == expected
    assert all(a.stored_offset < b.stored_offset for a, b in zip(reads, reads[1:]))


def test_a_span_across_an_empty_middle_part_reads_through_its_stored_bytes():
    """Found by the property above: sizes [65535, 0, 1], bytes 0..65535 cross an empty part whose stored
    header, tag and padding sit inside the one upstream range (S3's 5 MiB rule keeps such objects out of
    the gateway's own uploads, but the planner must not misread them)."""
    manifest, body, whole = asyncio.run(_stored_parts([65535, 0, 1]))
    reads = plan_reads(manifest, (0, 65535))
    assert [r.part.number for r in reads] == [1, 2, 3]

    async def run() -> bytes:
        stored = body[reads[0].upstream_start:reads[-1].upstream_end + 1]
        return b"".join([c async for c in decrypt_parts(_aiter([stored]), OBJECT_KEY, reads, None)])

    assert asyncio.run(run()) == whole[:65536]
