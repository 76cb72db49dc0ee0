"""The stored plaintext checksum (docs/FORMAT.md §7): its encoding, its seal under the object key, the
object checksum made from part checksums, and where it is kept (object metadata, manifest version 2)."""
from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from awscrt import checksums as crt
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.crypto import metadata
from gateway.crypto.checksum import (COMPOSITE, FULL_OBJECT, ObjectChecksum, combined, default_kind, open_checksum,
                                     seal_checksum)
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.multipart import Manifest, ManifestPart, open_manifest, seal_manifest
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.sse import CustomerKeySeal
from gateway.crypto.stream import IntegrityError, StreamParams

CRC32 = ObjectChecksum("crc32", FULL_OBJECT, zlib.crc32(b"hello").to_bytes(4, "big"))


def test_a_sealed_checksum_opens_under_its_object_key_only():
    key = ObjectKey.generate()
    sealed = seal_checksum(key, CRC32)
    assert open_checksum(key, sealed) == CRC32
    with pytest.raises(IntegrityError):
        open_checksum(ObjectKey.generate(), sealed)
    flipped = bytearray(sealed)
    flipped[20] ^= 1
    with pytest.raises(IntegrityError):
        open_checksum(key, bytes(flipped))


def test_a_sealed_checksum_hides_the_digest():
    digest = hashlib.sha256(b"a known document").digest()
    sealed = seal_checksum(ObjectKey.generate(), ObjectChecksum("sha256", FULL_OBJECT, digest))
    assert digest not in sealed and len(sealed) == 12 + 4 + 32 + 16


@pytest.mark.parametrize("checksum", [
    CRC32,
    ObjectChecksum("sha256", COMPOSITE, bytes(32), 10_000),
    ObjectChecksum("crc64nvme", FULL_OBJECT, bytes(8)),
    ObjectChecksum("sha1", FULL_OBJECT, bytes(20)),  # a single-stream object's: any algorithm is FULL_OBJECT
])
def test_a_checksum_encodes_and_decodes_to_itself(checksum):
    assert ObjectChecksum.decode(checksum.encode()) == checksum


@pytest.mark.parametrize("raw", [b"", b"\x09\x00\x00\x00" + bytes(4), b"\x00\x02\x00\x00" + bytes(4),
                                 b"\x00\x00\x00\x00" + bytes(5), b"\x02\x01\x00\x01" + bytes(8)],
                         ids=["empty", "unknown-algorithm", "unknown-kind", "wrong-size", "crc64nvme-composite"])
def test_a_malformed_checksum_is_an_integrity_error(raw):
    with pytest.raises(IntegrityError):
        ObjectChecksum.decode(raw)


def test_values_are_shown_as_s3_shows_them():
    composite = ObjectChecksum("crc32", COMPOSITE, b"\x00\x00\x00\x01", 3)
    assert (composite.value, composite.header, composite.element) == ("AAAAAQ==-3", "x-amz-checksum-crc32",
                                                                     "ChecksumCRC32")
    assert CRC32.value == base64.b64encode(zlib.crc32(b"hello").to_bytes(4, "big")).decode()


def test_multipart_defaults_follow_s3():
    assert [default_kind(a) for a in ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")] == [
        COMPOSITE, COMPOSITE, FULL_OBJECT, COMPOSITE, COMPOSITE]


DIRECT = {"crc32": lambda d: zlib.crc32(d).to_bytes(4, "big"), "crc32c": lambda d: crt.crc32c(d).to_bytes(4, "big"),
          "crc64nvme": lambda d: crt.crc64nvme(d).to_bytes(8, "big")}


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(DIRECT)), st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_a_full_object_checksum_from_parts_is_the_checksum_of_all_the_bytes(algorithm, parts):
    made = combined(algorithm, FULL_OBJECT, [(DIRECT[algorithm](p), len(p)) for p in parts])
    assert made == ObjectChecksum(algorithm, FULL_OBJECT, DIRECT[algorithm](b"".join(parts)))


def test_a_composite_checksum_is_the_hash_of_the_part_hashes():
    parts = [os.urandom(100), os.urandom(7)]
    digests = [hashlib.sha256(p).digest() for p in parts]
    made = combined("sha256", COMPOSITE, [(d, 0) for d in digests])
    assert made == ObjectChecksum("sha256", COMPOSITE, hashlib.sha256(b"".join(digests)).digest(), 2)


def test_a_single_stream_objects_metadata_carries_the_sealed_checksum():
    params = StreamParams.new()
    seal = CustomerKeySeal(bytes(60), bytes(32), bytes(32))
    info = EncryptionInfo(seal, SingleStream(params, 5, b"sealed-bytes"))
    headers = metadata.encode(info)
    assert headers[metadata.SEALED_CHECKSUM] == metadata.b64u(b"sealed-bytes")
    assert metadata.decode(headers) == info
    without = EncryptionInfo(seal, SingleStream(params, 5))
    assert metadata.SEALED_CHECKSUM not in metadata.encode(without)  # objects without one: as version 1 wrote them


def test_multipart_metadata_with_a_sealed_checksum_is_refused():
    seal = CustomerKeySeal(bytes(60), bytes(32), bytes(32))
    headers = metadata.encode(EncryptionInfo(seal, Multipart(metadata.new_upload_tag())))
    headers[metadata.SEALED_CHECKSUM] = "AAAA"
    with pytest.raises(IntegrityError):
        metadata.decode(headers)


def test_a_manifest_keeps_the_objects_checksum_and_one_without_stays_version_1():
    key, tag = ObjectKey.generate(), metadata.new_upload_tag()
    parts = (ManifestPart(1, 5 * 1024 * 1024, StreamParams.new()), ManifestPart(2, 3))
    with_checksum = Manifest(parts, ObjectChecksum("crc32", COMPOSITE, bytes(4), 2))
    assert open_manifest(key, tag, seal_manifest(key, tag, with_checksum)) == with_checksum
    assert with_checksum.encode().startswith(b"S3GWMAN2")
    plain = Manifest(parts)
    assert plain.encode().startswith(b"S3GWMAN1")
    assert open_manifest(key, tag, seal_manifest(key, tag, plain)) == plain


@pytest.mark.parametrize("tail", [b"", b"\x00", b"\x00\x09" + CRC32.encode(), CRC32.encode()],
                         ids=["missing", "short-length", "length-too-long", "no-length"])
def test_a_version_2_manifest_whose_checksum_does_not_fill_its_end_is_refused(tail):
    raw = Manifest((ManifestPart(1, 3),)).encode().replace(b"S3GWMAN1", b"S3GWMAN2") + tail
    with pytest.raises(IntegrityError):
        Manifest.decode(raw)
