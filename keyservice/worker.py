"""The thread that owns the key service: its in-memory state, its SQLite store and the unwrapping.

Why a thread: a call may write the store (a save, a lazily due rotation or deletion) and SQLite
commits with ``synchronous=FULL`` wait for an fsync; a key's first use unwraps its material from the
store. Done on the caller's event loop (the gateway's, or the HTTP server's) that stalls every
connection it serves. Here it runs on one dedicated thread instead.

Why one thread with its own event loop, rather than a pool or a bare single-thread executor: the
service's state is plain dicts written through to the store, correct because one call's
synchronous stretch runs at a time. Confining it to one thread keeps exactly that, with no lock in
the service: calls run in the order they arrive, each write is committed (fsync'd) before its call
answers, and memory and store never disagree halfway through a call. The loop lets the few
handlers that await slow CPU work (RSA key generation, ``KeyService.in_thread``) leave other calls
running meanwhile, as they did on the caller's loop.

The hot path (a ready key's GenerateDataKey, Encrypt, Decrypt) needs no store: the hop to the
thread and back would cost more than the call, so the caller runs it itself when the thread holds no
work (``if_idle``): the state is then nobody else's.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerClosed(RuntimeError):
    """A call reached the key service after it was closed."""


class ServiceWorker:
    """A daemon thread running an event loop that every key-service coroutine is sent to.

    One caller's event loop uses a worker (``run`` and ``if_idle`` from that loop only): it counts
    the work it has sent that the thread has not finished, so it knows when the thread holds nothing
    and the state may be read and changed on the caller's side instead (``if_idle``).
    """

    def __init__(self, name: str = "keyservice") -> None:
        self._loop = asyncio.new_event_loop()
        self._closed = False
        self._unfinished = 0  # work sent and not finished there; changed on the caller's loop only
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``'s result, run on the worker's thread. Once sent it runs to its end even if the caller
        is cancelled: the state it changes is the thread's until then, and the write it does is durable."""
        if self._closed:
            work.close()
            raise WorkerClosed("the key service is closed")
        finished = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._loop))
        self._unfinished += 1
        finished.add_done_callback(self._one_finished)  # set only after the work ended on the thread
        return await asyncio.shield(finished)

    def _one_finished(self, _: asyncio.Future[Any]) -> None:
        self._unfinished -= 1

    def if_idle(self, work: Callable[[], T | None]) -> T | None:
        """``work()`` here and now if the thread holds no work (nothing there can touch the state
        meanwhile: only this loop sends it work); None if it is busy or closed, or from ``work``."""
        if self._unfinished or self._closed:
            return None
        return work()

    async def close(self, last: Coroutine[Any, Any, Any]) -> None:
        """Cancel whatever still runs there, run ``last`` (closing what the thread owns), then stop
        the thread and wait for it."""
        if self._closed:
            last.close()
            return
        try:
            await self.run(_wind_down(last))
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)


async def _wind_down(last: Coroutine[Any, Any, Any]) -> None:
    """Cancel every other task of the running loop, wait for them, then run ``last``."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await last
