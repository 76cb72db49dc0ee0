"""A bucket's default encryption set through the S3 API (PutBucketEncryption), durable and shared.

S3 clients set a bucket's default encryption with PutBucketEncryption and expect every later write that
names no encryption (the legacy application's PUT) to get it. Several gateway processes may serve one
bucket and share nothing but the upstream and the gateway secret, so the configuration lives in the bucket
itself, as the reserved object ``.s3gw/bucket-encryption`` (docs/FORMAT.md §5): out of the clients' reach
(gateway/reserved.py), and sealed like the bucket-state record with an HMAC under a key derived from the
gateway secret, the bucket name and this record's own label, so it can neither be forged, nor copied from
another bucket, nor swapped with the state record.

Reads are cached per process for ``bucket_config_ttl`` seconds (``[gateway] bucket_config_ttl``): another
process sees a change within that bound, the process that made it at once. Concurrent lookups of one bucket
share one upstream read, and a read that started before a change made here never overwrites it in the
cache. A record that does not authenticate is logged and fails closed: writes to that bucket (which need
its defaults) and GetBucketEncryption are 500 InternalError until a PutBucketEncryption or
DeleteBucketEncryption replaces or removes it, rather than silently falling back to another key.

What a write without SSE headers gets (`BucketDefaults`), first found wins: the bucket's API configuration,
then its TOML ``[buckets.NAME]`` table, then ``default_kms_key_id``, then the key service's
``alias/s3-gateway-default``. A TOML ``encryption = "passthrough"`` bucket is transparent: the API calls are
forwarded to the upstream and nothing is read here.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.bucketstate import RecordError, open_fields, seal_record
from gateway.config import GatewayConfig
from gateway.crypto.sse import SseMode
from gateway.reserved import RESERVED_KEY_PREFIX
from gateway.s3client import BodyTooLarge, S3Client, UpstreamError
from gateway.s3errors import internal_error
from gateway.upstream import Upstream

log = logging.getLogger("gateway.bucketencryption")

CONFIG_KEY = RESERVED_KEY_PREFIX + "bucket-encryption"
CONFIG_LABEL = b"s3gw/v1/bucket-encryption/"  # the state record's is "s3gw/v1/bucket-state/"
CONFIG_VERSION = 1
_MAX_RECORD = 64 * 1024
KMS = SseMode.KMS.value
SSE_S3 = SseMode.S3.value
BLOCK_SSEC = "SSE-C"
BLOCK_NONE = "NONE"


@dataclass(frozen=True)
class EncryptionConfig:
    """One ``ServerSideEncryptionConfiguration`` rule, as the client sent it (S3 echoes what was put)."""

    algorithm: str                   # "AES256" or "aws:kms"
    kms_key_id: str | None = None    # only with aws:kms: a key id, key ARN, alias name or alias ARN
    bucket_key: bool = False
    blocked: tuple[str, ...] = ()    # BlockedEncryptionTypes as sent: ("SSE-C",), ("NONE",) or () if absent

    @property
    def blocks_ssec(self) -> bool:
        return BLOCK_SSEC in self.blocked

    def fields(self) -> dict[str, Any]:
        """The record's JSON object (docs/FORMAT.md §5)."""
        moment = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"v": CONFIG_VERSION, "algorithm": self.algorithm, "kms_key_id": self.kms_key_id,
                "bucket_key": self.bucket_key, "blocked": list(self.blocked), "since": moment}

    @classmethod
    def of_fields(cls, fields: dict[str, Any]) -> "EncryptionConfig":
        """The configuration an authentic record holds; RecordError for one this version cannot read."""
        algorithm, key_id, bucket_key, blocked = (fields.get(name) for name in
                                                  ("algorithm", "kms_key_id", "bucket_key", "blocked"))
        if fields.get("v") != CONFIG_VERSION or algorithm not in (KMS, SSE_S3):
            raise RecordError(f"unknown record version {fields.get('v')!r} or algorithm {algorithm!r}")
        if not (key_id is None or isinstance(key_id, str)) or not isinstance(bucket_key, bool) \
                or not isinstance(blocked, list) or not all(isinstance(item, str) for item in blocked):
            raise RecordError("the record's fields have the wrong types")
        return cls(algorithm, key_id, bucket_key, tuple(blocked))


@dataclass(frozen=True)
class BucketDefaults:
    """What a write to the bucket gets when its request names no encryption (gateway/sseheaders.py).

    ``mode`` None: store plaintext (a TOML pass-through bucket). ``kms_key_id`` None: the key service's
    default key. ``bucket_key``: S3 Bucket Keys unless the request says otherwise. ``block_ssec``: SSE-C
    writes are refused (403 AccessDenied, as S3 answers)."""

    mode: SseMode | None
    kms_key_id: str | None = None
    bucket_key: bool = False
    block_ssec: bool = False


def toml_defaults(config: GatewayConfig, bucket: str) -> BucketDefaults:
    """The defaults the TOML settings alone give: ``[buckets.NAME]``, else the gateway-wide ones."""
    policy = config.bucket_policy(bucket)
    mode = None if policy.encryption == "passthrough" else SseMode.KMS
    return BucketDefaults(mode, policy.kms_key_id or config.default_kms_key_id or None)


def is_passthrough(config: GatewayConfig, bucket: str) -> bool:
    """TOML ``encryption = "passthrough"``: the gateway is transparent, the encryption API is the upstream's."""
    return config.bucket_policy(bucket).encryption == "passthrough"


def defaults_of(config: GatewayConfig, bucket: str, stored: EncryptionConfig | None) -> BucketDefaults:
    """The bucket's defaults: its API configuration over its TOML ones (see the module docstring)."""
    toml = toml_defaults(config, bucket)
    if stored is None or toml.mode is None:
        return toml
    if stored.algorithm == SSE_S3:
        return BucketDefaults(SseMode.S3, toml.kms_key_id, False, stored.blocks_ssec)
    return BucketDefaults(SseMode.KMS, stored.kms_key_id or toml.kms_key_id, stored.bucket_key, stored.blocks_ssec)


@dataclass
class _Cached:
    config: EncryptionConfig | None
    until: float


class BucketEncryption:
    """The buckets' encryption configurations: stored upstream, cached as the module docstring says."""

    def __init__(self, upstream: Upstream, secret: bytes, config: GatewayConfig, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = S3Client(upstream, max_attempts=config.upstream.max_attempts)
        self._secret = secret
        self._config = config
        self._ttl = config.bucket_config_ttl
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lookups: dict[str, tuple[int, asyncio.Task[EncryptionConfig | None]]] = {}
        self._generation: dict[str, int] = {}  # bumped by every change made here

    def signed_as(self, upstream: Upstream) -> "BucketEncryption":
        """The configurations read and written over another view of the pool (a client's own upstream user),
        with a cache of their own: what one upstream user could read never answers another's lookup."""
        return BucketEncryption(upstream, self._secret, self._config, clock=self._clock)

    async def defaults(self, bucket: str) -> BucketDefaults:
        """What a write without SSE headers gets; no upstream read for a pass-through bucket."""
        if is_passthrough(self._config, bucket):
            return toml_defaults(self._config, bucket)
        return defaults_of(self._config, bucket, await self.stored(bucket))

    async def stored(self, bucket: str) -> EncryptionConfig | None:
        """The bucket's API configuration, None when it has none (cached; single flight). 404
        NoSuchBucket for a bucket that does not exist; 500 for a record that does not authenticate.

        The caller must not hold an upstream response open meanwhile (the pool could run dry)."""
        cached = self._cache.get(bucket)
        if cached is not None and cached.until > self._clock():
            return cached.config
        generation = self._generation.get(bucket, 0)
        generation_read, lookup = self._lookups.get(bucket, (-1, None))
        if lookup is None or generation_read != generation:  # none, or one begun before a change made here
            lookup = asyncio.ensure_future(self._look_up(bucket, generation))
            self._lookups[bucket] = (generation, lookup)
            lookup.add_done_callback(lambda done: self._finished(bucket, done))
        return await asyncio.shield(lookup)  # a caller going away does not cancel the others' read

    def _finished(self, bucket: str, lookup: asyncio.Task[EncryptionConfig | None]) -> None:
        if self._lookups.get(bucket, (0, None))[1] is lookup:
            del self._lookups[bucket]
        if not lookup.cancelled():
            lookup.exception()  # retrieved here too: every waiter may have gone away

    async def _look_up(self, bucket: str, generation: int) -> EncryptionConfig | None:
        body = await self.read_stored(bucket)
        try:
            found = None if body is None else EncryptionConfig.of_fields(
                open_fields(self._secret, bucket, body, label=CONFIG_LABEL))
        except RecordError as exc:
            log.error("bucket %s: its encryption configuration %s is not authentic (%s); refusing writes that "
                      "need it until PutBucketEncryption or DeleteBucketEncryption replaces it",
                      bucket, CONFIG_KEY, exc)
            raise internal_error() from None
        if self._generation.get(bucket, 0) == generation:  # no change made here meanwhile
            self._remember(bucket, found)
        return found

    def _changed(self, bucket: str, config: EncryptionConfig | None) -> None:
        """A change made here is stored: this process uses it from now on. The generation is bumped again
        after the write, so a lookup that began during it (and may have read the old record) caches nothing."""
        self._generation[bucket] = self._generation.get(bucket, 0) + 1
        self._remember(bucket, config)

    def _remember(self, bucket: str, config: EncryptionConfig | None) -> None:
        self._cache[bucket] = _Cached(config, self._clock() + self._ttl)

    async def read_stored(self, bucket: str) -> bytes | None:
        """The record's bytes as stored (authentic or not), None when there is none; NoSuchBucket and any
        other upstream failure as its S3 error, a record longer than any record can be as 500."""
        try:
            _, body = await self._client.get_small(bucket, CONFIG_KEY, limit=_MAX_RECORD)
        except BodyTooLarge as exc:
            log.error("bucket %s: its encryption configuration %s is longer than any record", bucket, CONFIG_KEY)
            raise exc.s3_error() from None
        except UpstreamError as exc:
            if exc.status == 404 and exc.code != "NoSuchBucket":
                return None
            raise exc.s3_error() from None
        return body

    async def put(self, bucket: str, config: EncryptionConfig) -> None:
        """Store the bucket's configuration; this process uses it from now on."""
        self._generation[bucket] = self._generation.get(bucket, 0) + 1
        self._cache.pop(bucket, None)
        body = seal_record(self._secret, bucket, config.fields(), label=CONFIG_LABEL)
        try:
            await self._client.put_object(bucket, CONFIG_KEY, body, len(body), {"content-type": "application/json"})
        except UpstreamError as exc:
            raise exc.s3_error() from None
        self._changed(bucket, config)

    async def delete(self, bucket: str) -> None:
        """Remove the bucket's configuration (none is no error, as S3's 204 for a repeated delete)."""
        self._generation[bucket] = self._generation.get(bucket, 0) + 1
        self._cache.pop(bucket, None)
        try:
            await self._client.delete_object(bucket, CONFIG_KEY)
        except UpstreamError as exc:
            raise exc.s3_error() from None
        self._changed(bucket, None)

    async def write_stored(self, bucket: str, body: bytes) -> None:
        """Write bytes `read_stored` returned back (a DeleteBucket the upstream refused)."""
        self.forget(bucket)
        try:
            await self._client.put_object(bucket, CONFIG_KEY, body, len(body), {"content-type": "application/json"})
        except UpstreamError as exc:
            raise exc.s3_error() from None
        self.forget(bucket)  # a lookup begun during the write may have read the record before it

    def forget(self, bucket: str) -> None:
        """The bucket was deleted (or its record rewritten): the next lookup reads upstream."""
        self._generation[bucket] = self._generation.get(bucket, 0) + 1
        self._cache.pop(bucket, None)
