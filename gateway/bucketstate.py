"""What the gateway knows about a bucket as a whole: that it holds no plaintext (docs/FORMAT.md §5).

An object without gateway metadata is served as a legacy plaintext object when unencrypted reads are
allowed, so whoever can rewrite upstream metadata could strip ``x-amz-meta-x-gw-*`` from an encrypted
object and have the gateway hand out its ciphertext as if it were the object (a downgrade). A bucket
created through the gateway under an encrypting policy never held plaintext, so the gateway records that
in the bucket itself and refuses every unencrypted read there, whatever ``allow_unencrypted_reads`` says.

The record is a reserved object (``.s3gw/bucket-state``): upstream, like the manifests, so it survives
restarts and every gateway process sharing the gateway secret sees it; authenticated by an HMAC under a
key derived from that secret and bound to the bucket name, so it can be neither forged nor copied from
another bucket. A record that fails authentication counts as "no plaintext" (fail closed). It is read
only on the unencrypted-read path, so encrypted reads cost nothing; a positive answer is cached for the
life of the process (so deleting the marker upstream does not help against a running gateway), a
negative one briefly (so another process's new bucket is seen soon). Concurrent lookups of one bucket
share one upstream read, and a reader never holds an upstream response open while it waits for the
lookup (gateway/objects/reading.py, ObjectReader.stat: the legacy object is dropped and read again once the state is
known). Issue 9 (legacy data migration)
will add fields to the same record; readers ignore fields they do not know.
"""
from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.metadata import b64u, unb64u
from gateway.crypto.stream import IntegrityError
from gateway.reserved import RESERVED_KEY_PREFIX
from gateway.s3client import BodyTooLarge, S3Client, UpstreamError
from gateway.upstream import Upstream

log = logging.getLogger("gateway.bucketstate")

STATE_KEY = RESERVED_KEY_PREFIX + "bucket-state"
RECORD_VERSION = 1
_KEY_INFO = b"s3gw/v1/bucket-state/"
_MAX_RECORD = 64 * 1024
NEGATIVE_TTL = 5.0


class RecordError(ValueError):
    """The stored record is malformed or fails authentication."""


@dataclass(frozen=True)
class BucketRecord:
    """The authenticated content of a bucket's state record (``fields`` keeps what this version ignores)."""

    no_plaintext: bool
    since: str
    fields: dict[str, Any]


def _record_key(secret: bytes, bucket: str, label: bytes) -> bytes:
    """K_b = HKDF(gateway secret, info = LABEL BUCKET): one MAC key per bucket name and per record kind
    (``label``: "s3gw/v1/bucket-state/" for this record), so records of two kinds cannot be swapped."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=label + bucket.encode()).derive(secret)


def _mac(secret: bytes, bucket: str, record: bytes, label: bytes) -> bytes:
    return hmac.new(_record_key(secret, bucket, label), record, hashlib.sha256).digest()


def seal_record(secret: bytes, bucket: str, fields: dict[str, Any], *, label: bytes = _KEY_INFO) -> bytes:
    """The stored object: the record as one line of JSON, then b64u(HMAC-SHA256(K_b, that line))."""
    record = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return record + b"\n" + b64u(_mac(secret, bucket, record, label)).encode() + b"\n"


def open_fields(secret: bytes, bucket: str, body: bytes, *, label: bytes = _KEY_INFO) -> dict[str, Any]:
    """The JSON object of a sealed record if it authenticates for ``bucket`` under ``label``; RecordError
    otherwise. Versions are the caller's to check."""
    record, _, rest = body.partition(b"\n")
    try:
        tag = unb64u(rest.strip().decode("ascii"))
    except (IntegrityError, UnicodeDecodeError):
        raise RecordError("the record's MAC is not base64url") from None
    if not hmac.compare_digest(tag, _mac(secret, bucket, record, label)):
        raise RecordError("the record does not authenticate for this bucket")
    try:
        fields = json.loads(record)
    except ValueError:
        raise RecordError("the record is not JSON") from None
    if not isinstance(fields, dict):
        raise RecordError("the record is not a JSON object")
    return fields


def open_record(secret: bytes, bucket: str, body: bytes) -> BucketRecord:
    """The record of ``body`` if it authenticates for ``bucket``; RecordError otherwise."""
    fields = open_fields(secret, bucket, body)
    if fields.get("v") != RECORD_VERSION:
        raise RecordError(f"unknown record version {fields.get('v')!r}")
    return BucketRecord(no_plaintext=fields.get("no_plaintext") is True, since=str(fields.get("since", "")),
                        fields=fields)


def new_record(now: float | None = None) -> dict[str, Any]:
    """A fresh bucket's record: it holds no plaintext since now."""
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.timezone.utc)
    return {"v": RECORD_VERSION, "no_plaintext": True, "since": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}


class BucketStates:
    """Reads and writes the buckets' state records upstream, with the cache described above."""

    def __init__(self, upstream: Upstream, secret: bytes, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = S3Client(upstream)
        self._writer = S3Client(upstream, max_attempts=1)
        self._secret = secret
        self._clock = clock
        self._known: set[str] = set()
        self._unknown_until: dict[str, float] = {}
        self._lookups: dict[str, asyncio.Task[bool]] = {}

    def signed_as(self, upstream: Upstream) -> "BucketStates":
        """The records read and written over another view of the pool (a client's own upstream user), with a
        cache of their own: what one upstream user could read never answers another's lookup."""
        return BucketStates(upstream, self._secret, self._clock)

    def cached(self, bucket: str) -> bool | None:
        """The cached answer of `holds_no_plaintext`, or None when only an upstream read can tell."""
        if bucket in self._known:
            return True
        if self._unknown_until.get(bucket, 0.0) > self._clock():
            return False
        return None

    async def holds_no_plaintext(self, bucket: str) -> bool:
        """Whether the bucket is known to hold no plaintext (cached; see the module docstring).

        Concurrent callers for one bucket share one upstream read (single flight). The caller must not
        hold an upstream response open meanwhile: with the pool exhausted by such callers, the read would
        wait for a connection none of them releases."""
        answer = self.cached(bucket)
        if answer is not None:
            return answer
        lookup = self._lookups.get(bucket)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(bucket))
            self._lookups[bucket] = lookup
            lookup.add_done_callback(lambda done: self._finished(bucket, done))
        return await asyncio.shield(lookup)  # a caller going away does not cancel the others' read

    def _finished(self, bucket: str, lookup: asyncio.Task[bool]) -> None:
        if self._lookups.get(bucket) is lookup:
            del self._lookups[bucket]
        if not lookup.cancelled():
            lookup.exception()  # retrieved here too: every waiter may have gone away

    async def _look_up(self, bucket: str) -> bool:
        answer = await self._read(bucket)
        if answer:
            self._known.add(bucket)
            self._unknown_until.pop(bucket, None)
        else:
            self._unknown_until[bucket] = self._clock() + NEGATIVE_TTL
        return answer

    async def _read(self, bucket: str) -> bool:
        log.debug("bucket %s: reading its state record %s", bucket, STATE_KEY)
        try:
            body = await self._stored(bucket)
            return body is not None and open_record(self._secret, bucket, body).no_plaintext
        except (RecordError, BodyTooLarge) as exc:
            log.error("bucket %s: its state record %s is not authentic (%s); treating the bucket as holding "
                      "no plaintext", bucket, STATE_KEY, exc)
            return True

    async def record_no_plaintext(self, bucket: str) -> None:
        """Store a fresh record for a bucket that holds nothing but the gateway's own keys."""
        await self.write_stored(bucket, seal_record(self._secret, bucket, new_record()))
        self._known.add(bucket)
        self._unknown_until.pop(bucket, None)

    async def withdraw_no_plaintext(self, bucket: str) -> None:
        """Delete the bucket's record (a mark `gateway migrate` wrote, then found wrong): this process takes the
        bucket as unknown at once; another process sees it once it reads the record again, which a process that
        found the mark never does before it restarts (a positive answer is cached for its life)."""
        try:
            await self._client.delete_object(bucket, STATE_KEY)
        except UpstreamError as exc:
            raise exc.s3_error() from None
        self.forget(bucket)

    async def read_stored(self, bucket: str) -> bytes | None:
        """The record object's bytes as stored (authentic or not), None when there is none; an upstream
        failure is its S3 error."""
        try:
            return await self._stored(bucket)
        except BodyTooLarge as exc:
            raise exc.s3_error() from None

    async def _stored(self, bucket: str) -> bytes | None:
        """The record object's bytes, None when there is none (any 404); BodyTooLarge when it is longer
        than a record can be; any other upstream failure as its S3 error."""
        try:
            _, body = await self._client.get_small(bucket, STATE_KEY, limit=_MAX_RECORD)
        except BodyTooLarge:
            raise
        except UpstreamError as exc:
            if exc.not_found:
                return None
            raise exc.s3_error() from None
        return body

    async def write_stored(self, bucket: str, body: bytes) -> None:
        """Store ``body`` as the bucket's record object (a sealed record, or bytes `read_stored` returned).
        Sent once: its callers retry it (gateway/handlers/buckets.py), and retrying here too would
        multiply their attempts."""
        try:
            await self._writer.put_object(bucket, STATE_KEY, body, len(body), {"content-type": "application/json"})
        except UpstreamError as exc:
            raise exc.s3_error() from None

    def forget(self, bucket: str) -> None:
        """The bucket was deleted: a bucket of the same name created later starts unknown."""
        self._known.discard(bucket)
        self._unknown_until.pop(bucket, None)
