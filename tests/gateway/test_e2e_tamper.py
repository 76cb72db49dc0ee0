"""Tampering with what the upstream stores never makes the gateway serve wrong bytes.

Each test edits the stored object directly on moto and then reads it through the gateway. The
only acceptable outcomes are an S3 error before any body byte (the gateway opens the sealed key
and the first segment before it answers), or a connection cut mid-body after only authenticated
plaintext was sent (damage found in a later segment, or a length that contradicts the metadata).
A clean 200 with other bytes would be the failure. Each test asserts which outcome it gets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

from gateway.crypto import metadata as gw_metadata

SEGMENT = 64 * 1024
CIPHER_SEGMENT = SEGMENT + 16
SIZE = 2 * SEGMENT + 1000  # three segments, the last one short
RESERVED_PREFIX = "x-gw-"
SIZE_FIELD = gw_metadata.PLAINTEXT_SIZE.removeprefix("x-amz-meta-")
INTEGRITY_ERROR = ("error", 500, "InternalError")


@dataclass(frozen=True)
class Outcome:
    """What a client saw: ``error`` (status, code), ``aborted`` mid-body, or ``ok``; and the bytes."""

    kind: str
    status: int
    code: str | None = None
    body: bytes = b""

    @property
    def summary(self) -> tuple[str, int, str | None]:
        return self.kind, self.status, self.code


def read_through_gateway(s3, bucket: str, key: str) -> Outcome:
    """GET the object and classify the result, keeping whatever body bytes arrived."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        meta = err.response
        return Outcome("error", meta["ResponseMetadata"]["HTTPStatusCode"], meta["Error"]["Code"])
    status = response["ResponseMetadata"]["HTTPStatusCode"]
    received = bytearray()
    try:
        for chunk in response["Body"].iter_chunks(16 * 1024):
            received += chunk
    except Exception:  # noqa: BLE001 - any read failure after the headers is the "aborted" outcome
        return Outcome("aborted", status, body=bytes(received))
    return Outcome("ok", status, body=bytes(received))


@dataclass
class Stored:
    """An object put through the gateway, and its ciphertext and metadata as moto holds them."""

    bucket: str
    key: str
    plaintext: bytes
    ciphertext: bytes
    metadata: dict[str, str]


def _store(s3, upstream_s3, bucket: str, key: str) -> Stored:
    plaintext = os.urandom(SIZE)
    s3.put_object(Bucket=bucket, Key=key, Body=plaintext)
    raw = upstream_s3.get_object(Bucket=bucket, Key=key)
    return Stored(bucket, key, plaintext, raw["Body"].read(), raw["Metadata"])


def _replace(upstream_s3, stored: Stored, ciphertext: bytes,
             metadata: dict[str, str] | None = None) -> None:
    upstream_s3.put_object(Bucket=stored.bucket, Key=stored.key, Body=ciphertext,
                           Metadata=stored.metadata if metadata is None else metadata)


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def _assert_aborted_after_authentic_prefix(outcome: Outcome, plaintext: bytes) -> None:
    assert outcome.summary == ("aborted", 200, None)
    assert len(outcome.body) < len(plaintext)
    assert plaintext.startswith(outcome.body)


@pytest.fixture
def stored(s3, upstream_s3, bucket) -> Stored:
    return _store(s3, upstream_s3, bucket, "victim")


def test_untampered_object_reads_back(s3, stored):
    assert read_through_gateway(s3, stored.bucket, stored.key) == Outcome(
        "ok", 200, body=stored.plaintext)


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda c: _flip(c, 100), id="flip-byte-in-first-segment"),
    pytest.param(lambda c: c[:1000], id="truncate-mid-first-segment"),
])
def test_damage_in_the_first_segment_is_an_error_before_the_body(s3, upstream_s3, stored, tamper):
    _replace(upstream_s3, stored, tamper(stored.ciphertext))
    assert read_through_gateway(s3, stored.bucket, stored.key).summary == INTEGRITY_ERROR


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda c: _flip(c, len(c) - 1), id="flip-byte-in-last-segment"),
    pytest.param(lambda c: c[:-500], id="truncate-mid-last-segment"),
    pytest.param(lambda c: c[:2 * CIPHER_SEGMENT], id="truncate-at-segment-boundary"),
    pytest.param(lambda c: c + b"\x00" * 16, id="append-bytes"),
])
def test_damage_after_the_first_segment_cuts_the_body_after_authentic_bytes(
        s3, upstream_s3, stored, tamper):
    _replace(upstream_s3, stored, tamper(stored.ciphertext))
    outcome = read_through_gateway(s3, stored.bucket, stored.key)
    _assert_aborted_after_authentic_prefix(outcome, stored.plaintext)


def test_swapped_bodies_of_two_objects_are_errors_before_the_body(s3, upstream_s3, bucket, stored):
    other = _store(s3, upstream_s3, bucket, "other")
    _replace(upstream_s3, stored, other.ciphertext)
    _replace(upstream_s3, other, stored.ciphertext)
    assert read_through_gateway(s3, bucket, stored.key).summary == INTEGRITY_ERROR
    assert read_through_gateway(s3, bucket, other.key).summary == INTEGRITY_ERROR


def test_ciphertext_copied_with_its_metadata_to_another_key_is_an_error(s3, upstream_s3, stored):
    upstream_s3.copy_object(Bucket=stored.bucket, Key="moved", MetadataDirective="COPY",
                            CopySource={"Bucket": stored.bucket, "Key": stored.key})
    assert read_through_gateway(s3, stored.bucket, "moved").summary == INTEGRITY_ERROR


def _altered(value: str) -> str:
    """The same value with its first alphanumeric character changed within its class."""
    for index, char in enumerate(value):
        if char.isdigit():
            new = str((int(char) + 1) % 10)
        elif char.isalpha():
            base = "a" if char.islower() else "A"
            new = chr((ord(char) - ord(base) + 1) % 26 + ord(base))
        else:
            continue
        return value[:index] + new + value[index + 1:]
    return value + "x"


def _reserved(stored: Stored) -> list[str]:
    fields = sorted(k for k in stored.metadata if k.startswith(RESERVED_PREFIX))
    assert SIZE_FIELD in fields
    return fields


def test_each_altered_reserved_field_is_refused_and_a_larger_size_cuts_the_body(s3, upstream_s3, stored):
    """A larger plaintext size passes the header checks and fails when the stream runs short."""
    outcomes = {}
    for field in _reserved(stored):
        metadata = {**stored.metadata, field: _altered(stored.metadata[field])}
        _replace(upstream_s3, stored, stored.ciphertext, metadata)
        outcomes[field] = read_through_gateway(s3, stored.bucket, stored.key)
    _assert_aborted_after_authentic_prefix(outcomes.pop(SIZE_FIELD), stored.plaintext)
    assert {f: o.summary for f, o in outcomes.items()} == {f: INTEGRITY_ERROR for f in outcomes}


def test_each_removed_reserved_field_is_an_error_before_the_body(s3, upstream_s3, stored):
    """With some reserved fields left, the object is known to be encrypted: never pass it through."""
    outcomes = {}
    for field in _reserved(stored):
        metadata = {k: v for k, v in stored.metadata.items() if k != field}
        _replace(upstream_s3, stored, stored.ciphertext, metadata)
        outcomes[field] = read_through_gateway(s3, stored.bucket, stored.key).summary
    assert outcomes == {field: INTEGRITY_ERROR for field in outcomes}
