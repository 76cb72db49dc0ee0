"""Data keys from the key service: on whose behalf they are asked for, and the bounded caches that spare
KMS calls (S3 Bucket Keys on writes, unwrapped data keys on reads).

Every KMS call the gateway makes for a client names that client's principal (``Requester``), so key
policies and grants decide who may encrypt and decrypt under which CMK, as AWS S3 does for SSE-KMS. The
caches are therefore per principal: a key one principal was given is never handed to another, who might
be refused it.

Why caches at all: one GenerateDataKey per PUT and one Decrypt per GET make the key service the limit
(its quota, its audit log). With a Bucket Key a burst of PUTs into one bucket shares one GenerateDataKey,
and repeated GETs of objects under one data key share one Decrypt. Each entry is used for at most
``max_age`` seconds, ``max_objects`` objects and ``max_bytes`` plaintext bytes (the limits of the AWS
Encryption SDK's caching materials manager), whichever comes first; ``max_age = 0`` turns caching off.
So disabling a CMK, scheduling its deletion or revoking a principal's grant takes effect within
``max_age`` -- at once when the change is made through the gateway's embedded key service, which drops
every entry (``clear``) when a key changes.

A throttled key service (ThrottlingException) is waited out with jittered exponential backoff within
``throttle_budget`` seconds before the client hears 503 SlowDown.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

log = logging.getLogger("gateway.datakeys")
T = TypeVar("T")
FIRST_BACKOFF = 0.02  # seconds before the first retry of a throttled call; doubled each time


@dataclass(frozen=True)
class DataKey:
    """A KMS data key: plaintext, the KMS ciphertext blob, and the ARN of the CMK that made it."""

    plaintext: bytes = field(repr=False)
    ciphertext: bytes
    key_arn: str


@dataclass(frozen=True)
class Requester:
    """On whose behalf the gateway uses a KMS key: a client's principal (its credential's), or the
    gateway itself (``GATEWAY``: start-up, the command-line tools), which acts as the key service's
    account root."""

    principal: str | None
    access_key: str | None = None

    @property
    def is_gateway(self) -> bool:
        return self.principal is None


GATEWAY = Requester(None)


class KeyProvider(Protocol):
    """What the gateway needs from a KMS (embedded or remote)."""

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *,
                                requester: Requester) -> DataKey:
        """A fresh AES-256 data key; key_id None means the gateway's default key."""

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *,
                               requester: Requester) -> DataKey:
        """Unwrap a data key; raises the provider's own error if the context does not match."""

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the CMK an id, ARN or alias names (DescribeKey): tools compare seals by ARN."""

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        """Set tags on a CMK (TagResource): `gateway keys usage --record` notes there what the key protects."""


class Throttled(Exception):
    """Marks an error as the key service's ThrottlingException: worth retrying after a pause."""


@dataclass(frozen=True)
class CacheLimits:
    """How long and how much one cached data key may be used; ``max_age`` 0: no caching."""

    max_age: float = 0.0        # seconds since the key service handed the key out
    max_objects: int = 0        # objects encrypted or decrypted with it (0: no limit)
    max_bytes: int = 0          # plaintext bytes of those objects (0: no limit)
    max_entries: int = 4096     # keys held at once, least recently used dropped first
    throttle_budget: float = 2.0  # seconds a throttled call is retried for before SlowDown

    @property
    def caching(self) -> bool:
        return self.max_age > 0


NO_CACHE = CacheLimits()


@dataclass
class _Entry:
    key: DataKey
    born: float
    objects: int = 0
    bytes: int = 0


class KeyCache:
    """Data keys by (principal, what they were asked for), each used within the limits, LRU-bounded."""

    def __init__(self, limits: CacheLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()

    def take(self, slot: tuple, size: int) -> DataKey | None:
        """The cached key for ``slot`` charged with one object of ``size`` bytes, or None when there is
        none or it would exceed a limit (it is then dropped: its successor replaces it)."""
        entry = self._entries.get(slot)
        if entry is None:
            return None
        limits = self._limits
        if (self._clock() - entry.born >= limits.max_age
                or (limits.max_objects and entry.objects + 1 > limits.max_objects)
                or (limits.max_bytes and entry.bytes + size > limits.max_bytes)):
            del self._entries[slot]
            return None
        entry.objects += 1
        entry.bytes += size
        self._entries.move_to_end(slot)
        return entry.key

    def put(self, slot: tuple, key: DataKey, size: int) -> None:
        """Cache a key the key service just handed out, already charged with its first object."""
        self._entries[slot] = _Entry(key, self._clock(), 1, size)
        self._entries.move_to_end(slot)
        while len(self._entries) > self._limits.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class DataKeys:
    """The key provider behind the caches and the throttling budget; what the SSE-KMS seal uses."""

    def __init__(self, provider: KeyProvider, limits: CacheLimits = NO_CACHE, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.limits = limits
        self._bucket_keys = KeyCache(limits, clock)
        self._unwrapped = KeyCache(limits, clock)
        self._pending: dict[tuple, asyncio.Future[None]] = {}
        self.calls: Counter[str] = Counter()  # the key provider's calls by operation, retries included
        # Uses of the caches by kind ("generate": Bucket Keys, "decrypt": unwrapped keys), for the metrics.
        self.cache_hits: Counter[str] = Counter()
        self.cache_misses: Counter[str] = Counter()
        self._generation = 0  # bumped by clear(): a call in flight across a clear is not cached

    async def fresh(self, key_id: str | None, context: Mapping[str, str], requester: Requester) -> DataKey:
        """A new data key for one object (GenerateDataKey), never cached."""
        return await self._retrying(lambda: self._generate(key_id, context, requester))

    async def bucket_key(self, key_id: str | None, context: Mapping[str, str], requester: Requester,
                         size: int) -> DataKey:
        """A Bucket Key: a data key for ``context`` (the bucket's) shared by the objects written within the
        limits; concurrent first uses share one GenerateDataKey."""
        slot = ("generate", requester.principal, key_id, tuple(sorted(context.items())))
        return await self._cached(self._bucket_keys, slot, size, lambda: self._generate(key_id, context, requester))

    async def unwrap(self, ciphertext: bytes, context: Mapping[str, str], requester: Requester,
                     size: int = 0) -> DataKey:
        """The plaintext of a wrapped data key (Decrypt), cached for ``requester`` within the limits."""
        slot = ("decrypt", requester.principal, ciphertext, tuple(sorted(context.items())))
        return await self._cached(self._unwrapped, slot, size, lambda: self._decrypt(ciphertext, context, requester))

    def _generate(self, key_id: str | None, context: Mapping[str, str], requester: Requester) -> Awaitable[DataKey]:
        self.calls["GenerateDataKey"] += 1
        return self.provider.generate_data_key(key_id, context, requester=requester)

    def _decrypt(self, ciphertext: bytes, context: Mapping[str, str], requester: Requester) -> Awaitable[DataKey]:
        self.calls["Decrypt"] += 1
        return self.provider.decrypt_data_key(ciphertext, context, requester=requester)

    def clear(self) -> None:
        """Drop every cached key (a CMK, alias, policy or grant changed): the next use asks the key service."""
        self._bucket_keys.clear()
        self._unwrapped.clear()
        self._generation += 1

    async def key_arn(self, key_id: str) -> str:
        return await self._retrying(lambda: self.provider.key_arn(key_id))

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        await self._retrying(lambda: self.provider.tag_key(key_id, tags))

    async def _cached(self, cache: KeyCache, slot: tuple, size: int,
                      ask: Callable[[], Awaitable[DataKey]]) -> DataKey:
        """The cached key of ``slot``, else ``ask()``'s, cached. Callers arriving while it is asked for wait
        for that one answer (a burst makes one KMS call) and share its failure too: the slot names one
        principal, so the refusal is theirs as well, and a burst stays within one retry budget instead of
        retrying one after another. Only a cancelled asker leaves its waiters to ask again."""
        if not self.limits.caching:
            return await self._retrying(ask)
        while (key := cache.take(slot, size)) is None and (pending := self._pending.get(slot)) is not None:
            await asyncio.wait([pending])
            if not pending.cancelled() and (failure := pending.exception()) is not None:
                raise failure
        if key is not None:
            self.cache_hits[slot[0]] += 1
            return key
        self.cache_misses[slot[0]] += 1
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[slot] = outcome
        generation = self._generation
        try:
            key = await self._retrying(ask)
        except asyncio.CancelledError:
            outcome.cancel()
            raise
        except Exception as exc:
            outcome.set_exception(exc)
            outcome.exception()  # retrieved: there may be no waiter
            raise
        else:
            if generation == self._generation:  # not across a clear(): the key may predate the change
                cache.put(slot, key, size)
            outcome.set_result(None)
            return key
        finally:
            del self._pending[slot]

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried with jittered exponential backoff while the key service throttles it, for at
        most ``throttle_budget`` seconds; then its last SlowDown is raised."""
        deadline = time.monotonic() + self.limits.throttle_budget
        pause = FIRST_BACKOFF
        while True:
            try:
                return await call()
            except Exception as exc:
                if not isinstance(exc, Throttled):
                    raise
                wait = random.uniform(pause / 2, pause)
                if time.monotonic() + wait > deadline:
                    log.warning("the key service kept throttling for %.1f s; answering 503 SlowDown",
                                self.limits.throttle_budget)
                    raise
                await asyncio.sleep(wait)
                pause *= 2
