"""The key service's blocking work (store writes that wait for fsync, unwrapping material) runs on its
own thread: the caller's event loop keeps serving meanwhile, and each write is still durable, in order,
before its call answers. The slow store is a unit-level test double (a real KeyStore that sleeps)."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from keyservice.api import KmsApi
from keyservice.audit import AuditLog
from keyservice.errors import KMSError
from keyservice.clock import FakeClock
from keyservice.keys import DAY
from keyservice.quota import QuotaLimiter
from keyservice.service import CallContext, KeyService
from keyservice.store import BackingKeyRow, KeyStore
from keyservice.worker import ServiceWorker, WorkerClosed

ACCOUNT = "111122223333"
CTX = CallContext(f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, "req")
STALL = 0.5  # seconds each slow write takes: a loop it blocked goes that long without a tick (tests allow half)
START = 1_700_000_000.0


class SlowStore(KeyStore):
    """A real store whose writes and unwraps each take STALL seconds, as on a disk slow to fsync."""

    slow = False

    def _stall(self) -> None:
        if self.slow:
            time.sleep(STALL)

    def put_key(self, key_id: str, meta: dict[str, Any]) -> None:
        self._stall()
        super().put_key(key_id, meta)

    def add_backing_key(self, row: BackingKeyRow, meta: dict[str, Any] | None = None) -> None:
        self._stall()
        super().add_backing_key(row, meta)

    def destroy_key(self, key_id: str) -> None:
        self._stall()
        super().destroy_key(key_id)

    def backing_keys(self, key_id: str) -> list[BackingKeyRow]:
        self._stall()
        return super().backing_keys(key_id)


class WatchedService(KeyService):
    """The real service, noting on which thread each operation ran: the caller's or the service's."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ran: list[tuple[str, str]] = []

    def _dispatch(self, operation: str, params: dict[str, Any], ctx: CallContext) -> Any:
        where = "caller" if threading.current_thread() is threading.main_thread() else "service"
        self.ran.append((operation, where))
        return super()._dispatch(operation, params, ctx)


@pytest.fixture
async def api(tmp_path: Path):
    clock = FakeClock(START)
    service = WatchedService(SlowStore(tmp_path, os.urandom(32)), ACCOUNT, "us-east-1", clock)
    kms_api = KmsApi(service, QuotaLimiter({}), AuditLog(tmp_path / "audit.log"))
    yield kms_api
    await kms_api.close()


async def longest_gap_while(work: Any) -> tuple[Any, float, float]:
    """Run ``work`` beside a task ticking every 10 ms: (its result, how long it took, the longest
    time the loop went without a tick)."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.monotonic()
    try:
        result = await work
    finally:
        ticks.append(time.monotonic())  # a loop blocked until the end shows as one last long gap
        took = ticks[-1] - started
        task.cancel()
    return result, took, max(b - a for a, b in zip(ticks, ticks[1:]))


def stored_key_ids(data_dir: Path) -> set[str]:
    """What another connection reads from the database: only what has been committed."""
    db = sqlite3.connect(data_dir / "keys.db")
    try:
        return {k for (k,) in db.execute("SELECT key_id FROM keys")}
    finally:
        db.close()


async def test_the_loop_keeps_ticking_while_a_call_waits_for_a_slow_store_write(api: KmsApi, tmp_path: Path):
    api.service.store.slow = True
    result, took, gap = await longest_gap_while(api.call("CreateKey", {}, CTX))
    assert took >= STALL
    assert gap < STALL / 2
    assert stored_key_ids(tmp_path) == {result["KeyMetadata"]["KeyId"]}  # durable once answered


async def test_the_loop_keeps_ticking_while_material_is_unwrapped_from_a_slow_store(api: KmsApi):
    key_id = (await api.call("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    blob = (await api.call("Encrypt", {"KeyId": key_id, "Plaintext": b"p"}, CTX))["CiphertextBlob"]
    api.service._material.clear()  # as after a restart: the next use unwraps from the store
    api.service.store.slow = True
    result, took, gap = await longest_gap_while(api.call("Decrypt", {"CiphertextBlob": blob}, CTX))
    assert result["Plaintext"] == b"p"
    assert took >= STALL
    assert gap < STALL / 2


async def test_the_loop_keeps_ticking_while_the_periodic_purge_destroys_a_key(api: KmsApi, tmp_path: Path):
    key_id = (await api.call("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    await api.call("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7}, CTX)
    api.service.clock.advance(8 * DAY)
    api.service.store.slow = True
    _, took, gap = await longest_gap_while(api.purge_due_keys())
    assert took >= STALL
    assert gap < STALL / 2
    assert stored_key_ids(tmp_path) == set()


def stored_descriptions(data_dir: Path) -> list[str]:
    """The keys' descriptions in the order their rows were first written."""
    db = sqlite3.connect(data_dir / "keys.db")
    try:
        return [json.loads(meta)["description"] for (meta,) in db.execute("SELECT meta FROM keys ORDER BY rowid")]
    finally:
        db.close()


async def test_concurrent_calls_are_written_one_at_a_time_in_arrival_order(api: KmsApi, tmp_path: Path):
    api.service.store.slow = True
    created = await asyncio.gather(*(api.call("CreateKey", {"Description": str(i)}, CTX) for i in range(3)))
    assert [c["KeyMetadata"]["Description"] for c in created] == ["0", "1", "2"]
    assert stored_descriptions(tmp_path) == ["0", "1", "2"]


async def test_a_ready_keys_calls_are_answered_on_the_callers_thread_and_the_rest_on_the_service_thread(
        api: KmsApi):
    key_id = (await api.call("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    gdk = {"KeyId": key_id, "KeySpec": "AES_256"}
    await api.call("GenerateDataKey", gdk, CTX)  # unwraps the new material from the store
    blob = (await api.call("GenerateDataKey", gdk, CTX))["CiphertextBlob"]
    await api.call("Decrypt", {"CiphertextBlob": blob}, CTX)
    await api.call("EnableKeyRotation", {"KeyId": key_id, "RotationPeriodInDays": 90}, CTX)
    api.service.clock.advance(91 * DAY)
    await api.call("GenerateDataKey", gdk, CTX)  # a rotation is due: it writes the store
    assert api.service.ran == [("CreateKey", "service"), ("GenerateDataKey", "service"),
                               ("GenerateDataKey", "caller"), ("Decrypt", "caller"),
                               ("EnableKeyRotation", "service"), ("GenerateDataKey", "service")]
    assert len(api.service.store.backing_keys(key_id)) == 2


async def test_a_ready_keys_call_waits_while_the_service_thread_is_busy(api: KmsApi):
    key_id = (await api.call("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    gdk = {"KeyId": key_id, "KeySpec": "AES_256"}
    await api.call("GenerateDataKey", gdk, CTX)
    api.service.store.slow = True
    finished: list[str] = []

    async def call(operation: str, params: dict[str, Any]) -> None:
        await api.call(operation, params, CTX)
        finished.append(operation)

    slow = asyncio.create_task(call("CreateKey", {}))
    await asyncio.sleep(STALL / 5)  # the service's thread is inside the slow write
    await call("GenerateDataKey", gdk)
    await slow
    assert finished == ["CreateKey", "GenerateDataKey"]
    assert api.service.ran[-2:] == [("CreateKey", "service"), ("GenerateDataKey", "service")]


async def test_a_call_whose_caller_goes_away_still_finishes_and_is_audited(api: KmsApi, tmp_path: Path):
    api.service.store.slow = True
    caller = asyncio.create_task(api.call("CreateKey", {"Description": "orphan"}, CTX))
    await asyncio.sleep(STALL / 5)  # the service's thread is inside the slow write
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await api.close()  # waits for the call in flight, then its audit record
    assert stored_descriptions(tmp_path) == ["orphan"]
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(r["operation"], r["outcome"]) for r in records] == [("CreateKey", "ok")]


async def test_a_closed_worker_refuses_work_instead_of_hanging():
    worker = ServiceWorker()

    async def answer() -> int:
        return 42

    assert await worker.run(answer()) == 42
    closed: list[str] = []

    async def close_store() -> None:
        closed.append("store")

    await worker.close(close_store())
    assert closed == ["store"]
    with pytest.raises(WorkerClosed):
        await worker.run(answer())


async def test_a_call_that_arrives_once_close_began_is_refused_not_met_by_a_closed_store(api: KmsApi) -> None:
    key_id = (await api.call("CreateKey", {}, CTX))["KeyMetadata"]["KeyId"]
    closing = asyncio.ensure_future(api.close())
    await asyncio.sleep(0)
    with pytest.raises(KMSError) as caught:
        await api.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"}, CTX)
    assert (caught.value.type, caught.value.message) == ("KMSInternalException", "The key service is shutting down.")
    await closing
