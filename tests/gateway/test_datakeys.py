"""The data-key caches and the throttling budget (gateway/datakeys.py), against a counting key provider."""
from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping

import pytest

from gateway.datakeys import GATEWAY, CacheLimits, DataKey, DataKeys, Requester, Throttled
from gateway.s3errors import S3Error

ARN = "arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555"
ALICE = Requester("arn:aws:iam::111122223333:user/alice", "AKIAALICE")
BOB = Requester("arn:aws:iam::111122223333:user/bob", "AKIABOB")
CONTEXT = {"aws:s3:arn": "arn:aws:s3:::bkt"}


class ThrottledError(S3Error, Throttled):
    pass


class CountingProvider:
    """Hands out random data keys and counts the calls, per operation and per principal."""

    def __init__(self, throttle_first: int = 0, delay: float = 0.0) -> None:
        self.calls: Counter[tuple[str, str | None]] = Counter()
        self.throttle_first = throttle_first
        self.delay = delay

    async def _answer(self, operation: str, requester: Requester, ciphertext: bytes | None = None) -> DataKey:
        self.calls[operation, requester.principal] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.throttle_first:
            self.throttle_first -= 1
            raise ThrottledError("SlowDown", "Please reduce your request rate.", 503)
        return DataKey(os.urandom(32), ciphertext or os.urandom(40), ARN)

    async def generate_data_key(self, key_id, context: Mapping[str, str], *, requester: Requester) -> DataKey:
        return await self._answer("GenerateDataKey", requester)

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *,
                               requester: Requester) -> DataKey:
        return await self._answer("Decrypt", requester, ciphertext)

    def total(self, operation: str) -> int:
        return sum(n for (op, _), n in self.calls.items() if op == operation)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LIMITS = CacheLimits(max_age=60, max_objects=100, max_bytes=10_000)


async def test_a_burst_of_writes_under_one_bucket_key_makes_one_generate_data_key() -> None:
    provider = CountingProvider(delay=0.01)
    keys = DataKeys(provider, LIMITS)
    got = await asyncio.gather(*(keys.bucket_key(None, CONTEXT, ALICE, 10) for _ in range(50)))
    assert provider.calls == Counter({("GenerateDataKey", ALICE.principal): 1})
    assert len({key.plaintext for key in got}) == 1


async def test_a_bucket_key_is_replaced_after_max_objects() -> None:
    provider = CountingProvider()
    keys = DataKeys(provider, LIMITS)
    first = [await keys.bucket_key(None, CONTEXT, ALICE, 1) for _ in range(100)]
    after = await keys.bucket_key(None, CONTEXT, ALICE, 1)
    assert provider.total("GenerateDataKey") == 2
    assert len({key.plaintext for key in first}) == 1 and after.plaintext != first[0].plaintext


async def test_a_bucket_key_is_replaced_when_the_next_object_would_pass_max_bytes() -> None:
    provider = CountingProvider()
    keys = DataKeys(provider, LIMITS)
    a = await keys.bucket_key(None, CONTEXT, ALICE, 6_000)
    b = await keys.bucket_key(None, CONTEXT, ALICE, 4_000)  # exactly 10,000: still within
    c = await keys.bucket_key(None, CONTEXT, ALICE, 1)
    assert a == b and c != a
    assert provider.total("GenerateDataKey") == 2


async def test_a_cached_key_is_not_used_past_max_age() -> None:
    provider, clock = CountingProvider(), Clock()
    keys = DataKeys(provider, LIMITS, clock=clock)
    a = await keys.unwrap(b"wrapped", CONTEXT, ALICE)
    clock.now += 59.9
    assert await keys.unwrap(b"wrapped", CONTEXT, ALICE) == a
    clock.now += 0.1
    await keys.unwrap(b"wrapped", CONTEXT, ALICE)
    assert provider.total("Decrypt") == 2


async def test_cached_keys_are_never_shared_between_principals() -> None:
    provider = CountingProvider()
    keys = DataKeys(provider, LIMITS)
    await keys.unwrap(b"wrapped", CONTEXT, ALICE)
    await keys.unwrap(b"wrapped", CONTEXT, BOB)
    await keys.unwrap(b"wrapped", CONTEXT, ALICE)
    await keys.bucket_key(None, CONTEXT, ALICE, 1)
    await keys.bucket_key(None, CONTEXT, BOB, 1)
    assert provider.calls == Counter({("Decrypt", ALICE.principal): 1, ("Decrypt", BOB.principal): 1,
                                      ("GenerateDataKey", ALICE.principal): 1,
                                      ("GenerateDataKey", BOB.principal): 1})


async def test_another_context_or_cmk_is_another_bucket_key() -> None:
    provider = CountingProvider()
    keys = DataKeys(provider, LIMITS)
    await keys.bucket_key(None, CONTEXT, ALICE, 1)
    await keys.bucket_key(None, {**CONTEXT, "project": "red"}, ALICE, 1)
    await keys.bucket_key("alias/other", CONTEXT, ALICE, 1)
    await keys.bucket_key(None, {"aws:s3:arn": "arn:aws:s3:::other"}, ALICE, 1)
    assert provider.total("GenerateDataKey") == 4


async def test_clear_drops_every_cached_key_and_what_is_in_flight_is_not_cached() -> None:
    provider = CountingProvider(delay=0.05)
    keys = DataKeys(provider, LIMITS)
    await keys.unwrap(b"wrapped", CONTEXT, ALICE)
    keys.clear()
    in_flight = asyncio.ensure_future(keys.bucket_key(None, CONTEXT, ALICE, 1))
    await asyncio.sleep(0.01)
    keys.clear()  # e.g. the CMK was disabled while GenerateDataKey ran
    await in_flight
    await keys.unwrap(b"wrapped", CONTEXT, ALICE)
    await keys.bucket_key(None, CONTEXT, ALICE, 1)
    assert provider.total("Decrypt") == 2 and provider.total("GenerateDataKey") == 2


async def test_no_caching_with_max_age_zero_and_fresh_keys_are_never_cached() -> None:
    provider = CountingProvider()
    keys = DataKeys(provider, CacheLimits(max_age=0))
    for _ in range(3):
        await keys.unwrap(b"wrapped", CONTEXT, GATEWAY)
        await keys.bucket_key(None, CONTEXT, GATEWAY, 1)
    cached = DataKeys(provider, LIMITS)
    for _ in range(3):
        await cached.fresh(None, CONTEXT, GATEWAY)
    assert provider.total("Decrypt") == 3 and provider.total("GenerateDataKey") == 6


async def test_callers_waiting_on_a_refused_call_share_its_refusal_and_a_later_call_asks_again() -> None:
    class Refusing(CountingProvider):
        async def decrypt_data_key(self, ciphertext, context, *, requester):
            await super().decrypt_data_key(ciphertext, context, requester=requester)
            raise S3Error("AccessDenied", "denied", 403)

    provider = Refusing(delay=0.01)
    keys = DataKeys(provider, LIMITS)
    results = await asyncio.gather(*(keys.unwrap(b"w", CONTEXT, ALICE) for _ in range(3)), return_exceptions=True)
    assert [(type(r), r.code) for r in results] == [(S3Error, "AccessDenied")] * 3
    assert provider.total("Decrypt") == 1
    with pytest.raises(S3Error):
        await keys.unwrap(b"w", CONTEXT, ALICE)
    assert provider.total("Decrypt") == 2


async def test_a_throttled_burst_ends_within_one_retry_budget() -> None:
    provider = CountingProvider(throttle_first=10_000)
    keys = DataKeys(provider, CacheLimits(max_age=60, throttle_budget=0.3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(keys.bucket_key(None, CONTEXT, ALICE, 1) for _ in range(10)),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [ThrottledError] * 10
    assert loop.time() - started < 0.5


async def test_waiters_of_a_cancelled_call_ask_for_themselves() -> None:
    provider = CountingProvider(delay=0.05)
    keys = DataKeys(provider, LIMITS)
    first = asyncio.ensure_future(keys.unwrap(b"w", CONTEXT, ALICE))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(keys.unwrap(b"w", CONTEXT, ALICE))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).ciphertext == b"w"
    assert provider.total("Decrypt") == 2


async def test_a_throttled_call_is_retried_within_the_budget() -> None:
    provider = CountingProvider(throttle_first=3)
    keys = DataKeys(provider, CacheLimits(max_age=0, throttle_budget=2.0))
    await keys.fresh(None, CONTEXT, ALICE)
    assert provider.total("GenerateDataKey") == 4


async def test_throttling_past_the_budget_is_slow_down() -> None:
    provider = CountingProvider(throttle_first=1_000)
    keys = DataKeys(provider, CacheLimits(max_age=0, throttle_budget=0.2))
    started = asyncio.get_running_loop().time()
    with pytest.raises(ThrottledError) as caught:
        await keys.fresh(None, CONTEXT, ALICE)
    assert (caught.value.code, caught.value.status) == ("SlowDown", 503)
    assert asyncio.get_running_loop().time() - started < 0.5
    assert provider.total("GenerateDataKey") >= 3
