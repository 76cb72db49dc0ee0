"""A tiny round-robin TCP load balancer on loopback, in front of several gateways or key services.

Each accepted connection goes to the next backend in turn (per connection, as HAProxy's ``balance
roundrobin`` in ``mode tcp``); a backend that refuses the connection is skipped for the next one, as
HAProxy's ``retries`` + ``option redispatch`` do, so a dead node costs no client request that had not reached
it yet. Bytes are forwarded as they are; when one side closes or fails, both are closed. It runs its own
asyncio loop on a background thread (as tests/support/faultproxy.py does), so synchronous tests drive it
directly; ``chosen`` records which backend each connection went to.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024


class RoundRobinBalancer:
    """``RoundRobinBalancer([(host, port), ...]).start()``; ``.url``; ``.chosen``; ``.stop()``."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self.chosen: list[int] = []  # the index of the backend each connection went to, in order
        self.refused = 0              # connections a backend refused (then sent to the next one)
        self._next = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="balancer")
        self.port = 0

    @classmethod
    def of_urls(cls, urls: list[str]) -> RoundRobinBalancer:
        """A balancer in front of the servers at ``urls`` (http://HOST:PORT)."""
        return cls([(url.rsplit("/", 1)[-1].rsplit(":", 1)[0], int(url.rsplit(":", 1)[1])) for url in urls])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RoundRobinBalancer:
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the next backend that accepts one, starting with the one whose turn it is."""
        for _ in range(len(self.backends)):
            index = self._next
            self._next = (self._next + 1) % len(self.backends)
            try:
                streams = await asyncio.open_connection(*self.backends[index])
            except OSError:
                self.refused += 1
                continue
            self.chosen.append(index)
            return streams
        return None

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        target = await self._connect()
        if target is None:  # every backend down: the client sees its connection closed, as with HAProxy
            self._writers.discard(client_writer)
            client_writer.transport.abort()
            return
        target_reader, target_writer = target
        self._writers.add(target_writer)
        try:
            await asyncio.gather(self._pipe(client_reader, target_writer), self._pipe(target_reader, client_writer))
        finally:
            for writer in (client_writer, target_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward until EOF, then pass the half-close on; a reset on either side ends both directions."""
        try:
            while chunk := await reader.read(CHUNK):
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
