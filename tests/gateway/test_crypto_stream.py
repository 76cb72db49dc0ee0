"""The segmented AEAD stream: round trips, size arithmetic, range planning and every tampering check."""
from __future__ import annotations

import os
import random
import struct
from typing import AsyncIterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import (
    CIPHER_SEGMENT_SIZE,
    SEGMENT_SIZE as S,
    TAG_SIZE,
    IntegrityError,
    StreamDecryptor,
    StreamEncryptor,
    StreamParams,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    plan_range,
    plaintext_size,
)
from gateway.ranges import parse_range_header

SIZES = [0, 1, S - 1, S, S + 1, 3 * S, 3 * S + 12345]
RAW_KEY = bytes(range(32))
OBJECT_KEY = ObjectKey(RAW_KEY)


def encrypt(plaintext: bytes, chunk: int = 100_000, key: ObjectKey = OBJECT_KEY,
            part_number: int = 0) -> tuple[StreamParams, bytes]:
    """The stream params the encryptor made for itself, and the stream."""
    encryptor = StreamEncryptor(key, part_number)
    out = bytearray()
    for offset in range(0, len(plaintext), chunk):
        out += encryptor.update(plaintext[offset:offset + chunk])
    out += encryptor.finalize()
    return encryptor.params, bytes(out)


def reference_stream(raw_key: bytes, params: StreamParams, plaintext: bytes, part_number: int = 0,
                     segment: int = 65536) -> bytes:
    """The stored stream exactly as docs/FORMAT.md §1 defines it, from `cryptography` primitives alone.

    Known-answer reference for the encryptor (which makes its own params), and the way to build a
    stream that differs from another in one input only (the key, or the part number) under the
    same params, as the splicing tests need."""
    info = b"s3gw/v1/segment" + struct.pack(">I", part_number)
    segment_key = AESGCM(HKDF(hashes.SHA256(), 32, params.salt, info).derive(raw_key))
    count = max(1, -(-len(plaintext) // segment))
    out = bytearray()
    for i in range(count):
        nonce = params.nonce_prefix + struct.pack(">I", i) + (b"\x01" if i == count - 1 else b"\x00")
        out += segment_key.encrypt(nonce, plaintext[i * segment:(i + 1) * segment], b"")
    return bytes(out)


def decrypt(ciphertext: bytes, params: StreamParams, size: int, chunk: int = 100_000, key: ObjectKey = OBJECT_KEY,
            part_number: int = 0, plan=None) -> bytes:
    decryptor = StreamDecryptor(key, params, size, part_number, plan)
    out = bytearray()
    for offset in range(0, len(ciphertext), chunk):
        out += decryptor.update(ciphertext[offset:offset + chunk])
    out += decryptor.finalize()
    return bytes(out)


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, StreamParams, bytes]:
    """A 3.5-segment plaintext, its params and its ciphertext."""
    plaintext = random.Random(1).randbytes(3 * S + S // 2)
    params, ciphertext = encrypt(plaintext)
    return plaintext, params, ciphertext


def segments(ciphertext: bytes) -> list[bytes]:
    return [ciphertext[i:i + CIPHER_SEGMENT_SIZE] for i in range(0, len(ciphertext), CIPHER_SEGMENT_SIZE)]


# --- sizes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, expected", [(0, 16), (1, 17), (S - 1, S + 15), (S, S + 16), (S + 1, S + 33),
                                            (3 * S, 3 * S + 48)])
def test_ciphertext_size_adds_one_tag_per_segment(size: int, expected: int) -> None:
    assert ciphertext_size(size) == expected


def test_plaintext_size_inverts_ciphertext_size() -> None:
    for size in list(range(0, 200)) + [S - 1, S, S + 1, 5 * S, 5 * S + 7, 10**12]:
        assert plaintext_size(ciphertext_size(size)) == size


@pytest.mark.parametrize("impossible", [0, 1, 15, S + 16 + 1, S + 16 + 16, 2 * (S + 16) + 5, -1])
def test_plaintext_size_rejects_impossible_ciphertext_lengths(impossible: int) -> None:
    with pytest.raises(ValueError):
        plaintext_size(impossible)


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chunk", [S, S + 1, 7919, 1 << 20])
def test_round_trip_restores_plaintext(size: int, chunk: int) -> None:
    plaintext = os.urandom(size)
    params, ciphertext = encrypt(plaintext, chunk)
    assert len(ciphertext) == ciphertext_size(size)
    assert decrypt(ciphertext, params, size, chunk=chunk + 3) == plaintext


def test_round_trip_with_one_byte_chunks() -> None:
    """Chunking never changes the stream: one-byte and whole-segment writes both give exactly the
    documented stream for the params the encryptor made."""
    plaintext = os.urandom(S + 100)
    params, ciphertext = encrypt(plaintext, chunk=1)
    assert ciphertext == reference_stream(RAW_KEY, params, plaintext)
    other_params, whole_segments = encrypt(plaintext, chunk=S)
    assert whole_segments == reference_stream(RAW_KEY, other_params, plaintext)
    assert decrypt(ciphertext, params, len(plaintext), chunk=1) == plaintext


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("part_number", [0, 1, 10000])
@pytest.mark.parametrize("chunk", [1000, S, 1 << 20])
def test_the_encryptor_writes_exactly_the_documented_stream_for_its_own_params(size: int, part_number: int,
                                                                               chunk: int) -> None:
    plaintext = random.Random(size + part_number).randbytes(size)
    params, ciphertext = encrypt(plaintext, chunk, part_number=part_number)
    assert ciphertext == reference_stream(RAW_KEY, params, plaintext, part_number)


@pytest.mark.parametrize("size", [0, 1, 2 * S, 2 * S + 1, 5 * S + 3])
def test_a_larger_segment_size_writes_the_documented_stream_too(size: int) -> None:
    """Multipart parts over 32 MiB use segments of a multiple of 64 KiB (docs/FORMAT.md §4)."""
    plaintext = os.urandom(size)
    encryptor = StreamEncryptor(OBJECT_KEY, 7, 2 * S)
    ciphertext = bytes(encryptor.update(plaintext) + encryptor.finalize())
    assert ciphertext == reference_stream(RAW_KEY, encryptor.params, plaintext, 7, 2 * S)
    assert len(ciphertext) == ciphertext_size(size, 2 * S)
    decryptor = StreamDecryptor(OBJECT_KEY, encryptor.params, size, 7, segment_size=2 * S)
    assert bytes(decryptor.update(ciphertext)) + decryptor.finalize() == plaintext


def test_empty_stream_is_one_final_tag_only_segment() -> None:
    encryptor = StreamEncryptor(OBJECT_KEY)
    assert encryptor.update(b"") == b""
    final = encryptor.finalize()
    assert len(final) == TAG_SIZE
    assert bytes(final) == reference_stream(RAW_KEY, encryptor.params, b"")
    assert decrypt(bytes(final), encryptor.params, 0) == b""


def test_encryptor_holds_back_a_full_segment_until_more_data_arrives() -> None:
    encryptor = StreamEncryptor(OBJECT_KEY)
    assert encryptor.update(b"a" * S) == b""
    assert len(encryptor.update(b"b")) == CIPHER_SEGMENT_SIZE
    assert len(encryptor.finalize()) == 1 + TAG_SIZE


def test_random_sizes_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(10):
        plaintext = rng.randbytes(rng.randrange(0, 4 * S))
        params, ciphertext = encrypt(plaintext, rng.randrange(1, 3 * S))
        assert decrypt(ciphertext, params, len(plaintext), rng.randrange(1, 3 * S)) == plaintext


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


async def test_async_helpers_round_trip() -> None:
    plaintext = os.urandom(2 * S + 3)
    encryptor = StreamEncryptor(OBJECT_KEY)
    encrypted = encrypt_stream(chunks_of(plaintext, 5000), encryptor)
    ciphertext = b"".join([piece async for piece in encrypted])
    assert ciphertext == reference_stream(RAW_KEY, encryptor.params, plaintext)
    decryptor = StreamDecryptor(OBJECT_KEY, encryptor.params, len(plaintext))
    assert b"".join([p async for p in decrypt_stream(chunks_of(ciphertext, 4096), decryptor)]) == plaintext


async def test_decrypt_stream_yields_nothing_of_a_bad_segment(sample) -> None:
    plaintext, params, ciphertext = sample
    tampered = bytearray(ciphertext)
    tampered[CIPHER_SEGMENT_SIZE + 5] ^= 1
    received = bytearray()
    with pytest.raises(IntegrityError):
        async for piece in decrypt_stream(chunks_of(bytes(tampered), CIPHER_SEGMENT_SIZE),
                                          StreamDecryptor(OBJECT_KEY, params, len(plaintext))):
            received += piece
    assert bytes(received) == plaintext[:S]



@pytest.mark.parametrize("damaged_segment", [1, 3])
async def test_damage_after_the_first_segment_surfaces_after_authentic_bytes_even_in_one_chunk(
        sample, damaged_segment) -> None:
    """An upstream that delivers the whole object at once (it had time while the data key was being
    decrypted) still gets the first segment out before the error: the client sees a cut body, as
    with any other chunking, not an error answer."""
    plaintext, params, ciphertext = sample
    tampered = bytearray(ciphertext)
    tampered[damaged_segment * CIPHER_SEGMENT_SIZE + 5] ^= 1
    received = bytearray()
    with pytest.raises(IntegrityError):
        async for piece in decrypt_stream(chunks_of(bytes(tampered), len(tampered)),
                                          StreamDecryptor(OBJECT_KEY, params, len(plaintext))):
            received += piece
    assert bytes(received) == plaintext[:S]


# --- nonce and key uniqueness ------------------------------------------------------------------

def test_two_encryptions_of_the_same_part_use_fresh_salt_and_nonce_prefix() -> None:
    plaintext = b"same part" * 1000
    (first, one), (second, two) = encrypt(plaintext, part_number=3), encrypt(plaintext, part_number=3)
    assert first.salt != second.salt and first.nonce_prefix != second.nonce_prefix
    assert one != two


def test_every_encryptor_makes_its_own_fresh_params_and_takes_none_from_its_caller() -> None:
    encryptors = [StreamEncryptor(OBJECT_KEY, 1) for _ in range(64)]
    assert len({e.params.salt for e in encryptors}) == len({e.params.nonce_prefix for e in encryptors}) == 64
    assert all(len(e.params.encode()) == StreamParams.ENCODED_SIZE for e in encryptors)
    # the params it exposes are the ones it encrypts with (and no other encryptor's open its stream)
    first, second = encryptors[:2]
    stream = bytes(first.update(b"x" * 100) + first.finalize())
    assert StreamDecryptor(OBJECT_KEY, first.params, 100, 1).update(stream) == b"x" * 100
    with pytest.raises(IntegrityError):
        StreamDecryptor(OBJECT_KEY, second.params, 100, 1).update(stream)
    # stale params cannot be handed in, by keyword or in the old positional place
    with pytest.raises(TypeError):
        StreamEncryptor(OBJECT_KEY, params=StreamParams.new())
    with pytest.raises(TypeError):
        StreamEncryptor(OBJECT_KEY, StreamParams.new(), 3)


def test_the_stream_takes_an_object_key_not_raw_bytes() -> None:
    with pytest.raises((TypeError, AttributeError)):
        StreamEncryptor(RAW_KEY)
    with pytest.raises((TypeError, AttributeError)):
        StreamDecryptor(RAW_KEY, StreamParams.new(), 0)


def test_an_encryptor_cannot_go_on_after_finalize() -> None:
    encryptor = StreamEncryptor(OBJECT_KEY)
    encryptor.update(b"abc")
    encryptor.finalize()
    with pytest.raises(ValueError):
        encryptor.update(b"more")
    with pytest.raises(ValueError):
        encryptor.finalize()


def test_stream_params_encode_decode_round_trip_and_reject_bad_length() -> None:
    params = StreamParams.new()
    assert StreamParams.decode(params.encode()) == params
    assert len(params.encode()) == 23
    with pytest.raises(IntegrityError):
        StreamParams.decode(params.encode()[:-1])


# --- ranges ------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, S - 1, S, S + 1, 3 * S + S // 2])
def test_every_range_plan_matches_python_slicing(size: int) -> None:
    rng = random.Random(size)
    plaintext = rng.randbytes(size)
    params, ciphertext = encrypt(plaintext)
    edges = [0, 1, S - 1, S, S + 1, size - 1]
    pairs = [(a, b) for a in edges for b in edges if 0 <= a <= b < size]
    pairs += [tuple(sorted(rng.randrange(size) for _ in range(2))) for _ in range(60)]
    for start, end in pairs:
        plan = plan_range(size, start, end)
        assert plan.cipher_end < len(ciphertext)
        assert (plan.length, plan.start, plan.end) == (end - start + 1, start, end)
        window = ciphertext[plan.cipher_start:plan.cipher_end + 1]
        assert decrypt(window, params, size, chunk=rng.randrange(1, 2 * S), plan=plan) == plaintext[start:end + 1]


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=10-", "bytes=-1", "bytes=-100", "bytes=5-20",
                                    "bytes=70000-999999", "bytes=-999999"])
def test_parsed_header_ranges_decrypt_like_python_slicing(sample, header: str) -> None:
    plaintext, params, ciphertext = sample
    size = len(plaintext)
    start, end = parse_range_header(header, size)
    first, last = header[6:].split("-")
    expected = plaintext[-int(last):] if not first else plaintext[int(first):(int(last) + 1 if last else None)]
    plan = plan_range(size, start, end)
    assert decrypt(ciphertext[plan.cipher_start:plan.cipher_end + 1], params, size, plan=plan) == expected


@pytest.mark.parametrize("start, end", [(-1, 0), (5, 4), (0, 1000)])
def test_plan_range_rejects_ranges_outside_the_object(start: int, end: int) -> None:
    with pytest.raises(ValueError):
        plan_range(1000, start, end)


# --- tampering ---------------------------------------------------------------------------------

def test_flipped_bit_in_each_segment_is_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    for index in range(len(segments(ciphertext))):
        for position in (0, S // 2, -1):
            tampered = bytearray(ciphertext)
            offset = index * CIPHER_SEGMENT_SIZE + (position % len(segments(ciphertext)[index]))
            tampered[offset] ^= 0x80
            with pytest.raises(IntegrityError):
                decrypt(bytes(tampered), params, len(plaintext))


def test_truncation_at_every_segment_boundary_and_mid_segment_is_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    cuts = [i * CIPHER_SEGMENT_SIZE for i in range(len(segments(ciphertext)))]
    cuts += [cut + 100 for cut in cuts] + [len(ciphertext) - 1]
    for cut in cuts:
        with pytest.raises(IntegrityError):
            decrypt(ciphertext[:cut], params, len(plaintext))


def test_stream_cut_at_a_boundary_and_relabelled_with_a_smaller_size_is_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    with pytest.raises(IntegrityError):
        decrypt(ciphertext[:2 * CIPHER_SEGMENT_SIZE], params, 2 * S)


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(16), os.urandom(CIPHER_SEGMENT_SIZE)])
def test_extra_bytes_after_the_final_segment_are_detected(sample, extra: bytes) -> None:
    plaintext, params, ciphertext = sample
    with pytest.raises(IntegrityError):
        decrypt(ciphertext + extra, params, len(plaintext))


def test_reordered_segments_are_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    parts = segments(ciphertext)
    with pytest.raises(IntegrityError):
        decrypt(b"".join([parts[1], parts[0], *parts[2:]]), params, len(plaintext))


def test_duplicated_segment_is_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    parts = segments(ciphertext)
    with pytest.raises(IntegrityError):
        decrypt(b"".join([parts[0], parts[0], *parts[2:]]), params, len(plaintext))


def test_segment_spliced_from_another_object_is_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    assert reference_stream(RAW_KEY, params, plaintext) == ciphertext
    same_params_other_key = reference_stream(os.urandom(32), params, plaintext)  # only the object key differs
    _, other_object = encrypt(plaintext, key=ObjectKey.generate())
    for other in (same_params_other_key, other_object):
        with pytest.raises(IntegrityError):
            decrypt(ciphertext[:CIPHER_SEGMENT_SIZE] + other[CIPHER_SEGMENT_SIZE:], params, len(plaintext))


def test_segment_spliced_from_another_part_of_the_same_object_is_detected() -> None:
    plaintext = os.urandom(2 * S)
    params, part1 = encrypt(plaintext, part_number=1)
    assert reference_stream(RAW_KEY, params, plaintext, part_number=1) == part1
    part2 = reference_stream(RAW_KEY, params, plaintext, part_number=2)  # only the part number differs
    _, other_part2 = encrypt(plaintext, part_number=2)
    for other in (part2, other_part2):
        with pytest.raises(IntegrityError):
            decrypt(part1[:CIPHER_SEGMENT_SIZE] + other[CIPHER_SEGMENT_SIZE:], params, len(plaintext), part_number=1)
    with pytest.raises(IntegrityError):
        decrypt(part1, params, len(plaintext), part_number=2)


def test_other_stream_params_fail_authentication(sample) -> None:
    plaintext, params, ciphertext = sample
    altered_params = (StreamParams.new(), StreamParams(params.salt, os.urandom(7)),
                      StreamParams(os.urandom(16), params.nonce_prefix))
    for altered in altered_params:
        with pytest.raises(IntegrityError):
            decrypt(ciphertext, altered, len(plaintext))


@pytest.mark.parametrize("delta", [-1, 1, -S // 2, -S, S, 10])
def test_altered_plaintext_size_is_detected(sample, delta: int) -> None:
    plaintext, params, ciphertext = sample
    with pytest.raises(IntegrityError):
        decrypt(ciphertext, params, len(plaintext) + delta)


def test_ranged_read_of_a_tampered_segment_is_detected(sample) -> None:
    plaintext, params, ciphertext = sample
    plan = plan_range(len(plaintext), S + 10, S + 20)
    window = bytearray(ciphertext[plan.cipher_start:plan.cipher_end + 1])
    window[3] ^= 1
    with pytest.raises(IntegrityError):
        decrypt(bytes(window), params, len(plaintext), plan=plan)


def test_ranged_read_of_the_final_segment_checks_the_last_flag(sample) -> None:
    plaintext, params, ciphertext = sample
    # Claim the object ends after segment 2 (a boundary): segment 2 was sealed as not-final.
    claimed = 3 * S
    plan = plan_range(claimed, claimed - 5, claimed - 1)
    with pytest.raises(IntegrityError):
        decrypt(ciphertext[plan.cipher_start:plan.cipher_end + 1], params, claimed, plan=plan)
