"""Tampering with what the upstream stores never makes the gateway serve wrong bytes.

Each test edits the stored object directly on moto and then reads it through the gateway. The
only acceptable outcomes are an S3 error before any body byte (the gateway opens the sealed key
and the first segment before it answers), or a connection cut mid-body after only authenticated
plaintext was sent (damage found in a later segment, or a length that contradicts the metadata).
A clean 200 with other bytes would be the failure. Each test asserts which outcome it gets.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

from gateway.crypto import metadata as gw_metadata
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.clients import signed_request

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
    pytest.param(lambda c: c[:-500], id="truncate-mid-last-segment"),
    pytest.param(lambda c: c[:2 * CIPHER_SEGMENT], id="truncate-at-segment-boundary"),
    pytest.param(lambda c: c + b"\x00" * 16, id="append-bytes"),
])
def test_damage_in_the_first_segment_or_to_the_stored_length_is_an_error_before_the_body(s3, upstream_s3, stored, tamper):
    _replace(upstream_s3, stored, tamper(stored.ciphertext))
    assert read_through_gateway(s3, stored.bucket, stored.key).summary == INTEGRITY_ERROR


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda c: _flip(c, len(c) - 1), id="flip-byte-in-last-segment"),
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


def test_each_altered_reserved_field_is_an_error_before_the_body(s3, upstream_s3, stored):
    outcomes = {}
    for field in _reserved(stored):
        metadata = {**stored.metadata, field: _altered(stored.metadata[field])}
        _replace(upstream_s3, stored, stored.ciphertext, metadata)
        outcomes[field] = read_through_gateway(s3, stored.bucket, stored.key).summary
    assert outcomes == {field: INTEGRITY_ERROR for field in outcomes}
    _replace(upstream_s3, stored, stored.ciphertext, {k: v for k, v in stored.metadata.items() if k != "x-gw-h"})
    got = s3.get_object(Bucket=stored.bucket, Key=stored.key, ChecksumMode="ENABLED")
    assert got["Body"].read() == stored.plaintext
    assert not any(name.startswith("x-amz-checksum-") for name in got["ResponseMetadata"]["HTTPHeaders"])


@pytest.mark.parametrize("recorded", [
    pytest.param("0", id="zero"),
    pytest.param(str(SIZE - 1), id="smaller"),
    pytest.param(str(SIZE + 1), id="larger"),
    pytest.param("99999999999999", id="huge"),
    pytest.param("12ab", id="non-numeric"),
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_recorded_size_that_does_not_fit_the_stored_length_is_an_error_before_any_header(
        gateway, upstream_s3, stored, recorded, method):
    """The plaintext size goes out as Content-Length before the body is authenticated, so it is
    checked against the stored length first: the client never sees a size the stream cannot have."""
    _replace(upstream_s3, stored, stored.ciphertext, {**stored.metadata, SIZE_FIELD: recorded})
    response = signed_request(method, f"{gateway.url}/{stored.bucket}/{stored.key}",
                              GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    assert response.status_code == 500
    assert recorded not in response.headers.values()
    if method == "GET":
        assert response.headers["Content-Length"] == str(len(response.content))
        assert _error_fields(response.content) == ("InternalError", "The object failed integrity verification")
    else:
        assert "Content-Length" not in response.headers and response.content == b""


def test_a_copy_source_whose_recorded_size_does_not_fit_is_an_integrity_error(s3, upstream_s3, stored):
    _replace(upstream_s3, stored, stored.ciphertext, {**stored.metadata, SIZE_FIELD: str(SIZE + 1)})
    with pytest.raises(ClientError) as err:
        s3.copy_object(Bucket=stored.bucket, Key="copy", CopySource={"Bucket": stored.bucket, "Key": stored.key})
    assert (err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]) == (
        "InternalError", "The object failed integrity verification")
    assert "Contents" not in upstream_s3.list_objects_v2(Bucket=stored.bucket, Prefix="copy")


def test_an_object_with_its_recorded_size_intact_reads_through_get_and_head(s3, stored):
    assert s3.head_object(Bucket=stored.bucket, Key=stored.key)["ContentLength"] == SIZE
    assert s3.get_object(Bucket=stored.bucket, Key=stored.key)["Body"].read() == stored.plaintext


def _error_fields(body: bytes) -> tuple[str | None, str | None]:
    root = ET.fromstring(body)
    return root.findtext("Code"), root.findtext("Message")


def test_each_removed_reserved_field_is_an_error_before_the_body(s3, upstream_s3, stored):
    """With some reserved fields left, the object is known to be encrypted: never pass it through. The sealed
    checksum (x-gw-h) is the one optional field: without it the object reads, with no checksum to show
    (its bytes are still authenticated segment by segment), as an object written without one does."""
    outcomes = {}
    assert "x-gw-h" in _reserved(stored)
    for field in set(_reserved(stored)) - {"x-gw-h"}:
        metadata = {k: v for k, v in stored.metadata.items() if k != field}
        _replace(upstream_s3, stored, stored.ciphertext, metadata)
        outcomes[field] = read_through_gateway(s3, stored.bucket, stored.key).summary
    assert outcomes == {field: INTEGRITY_ERROR for field in outcomes}
