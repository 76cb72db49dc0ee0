"""A fault-injecting TCP proxy on loopback, placed between the gateway and its upstream or key service.

It runs its own asyncio loop on a background thread, so synchronous tests (boto3) drive it directly.
Bytes are forwarded as they are; the current `Fault` decides what goes wrong:

* ``latency``: each forwarded chunk is delayed; ``bandwidth``: bytes/s per direction;
* ``reset_after`` bytes in a direction (``UP`` = towards the target, ``DOWN`` = back to the client):
  forward exactly that many, then reset both sides (RST, as a crashed peer or a middlebox does);
* ``stall_after`` bytes in a direction: forward that many, then nothing more, keeping both sockets
  open (a half-open connection; 0 in ``UP`` = accept and never answer);
* ``burst``: the proxy answers the next N HTTP requests itself with a canned error (S3 XML or an
  HTML page, optional Retry-After) instead of forwarding them.

Independently of the fault, `before(pattern, action)` runs ``action`` (a blocking call, e.g. a boto3
request straight to the target) once, when bytes towards the target first contain ``pattern`` (a request
line), and only then forwards them: a race with the request is staged deterministically.

Setting a fault closes every open connection, so pooled keep-alive connections cannot dodge it and
every count starts from a fresh connection. Everything is bounded: `stop()` closes all connections,
and the thread is a daemon.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")
UP = "up"      # client -> target
DOWN = "down"  # target -> client
CHUNK = 16 * 1024
MAX_HEADER = 64 * 1024

_REASONS = {409: "Conflict", 500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable"}
S3_XML_ERRORS = {
    409: ("ConditionalRequestConflict", "A conflicting operation occurred. If using PutObject you can retry "
          "the request."),
    501: ("NotImplemented", "A header you provided implies functionality that is not implemented."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class Burst:
    """The next ``count`` requests get ``status`` from the proxy: an S3 XML error, or an HTML page."""

    count: int
    status: int = 503
    html: bool = False
    retry_after: str | None = None

    def response(self, with_body: bool = True) -> bytes:
        """The whole HTTP answer (a HEAD's without its body, as HTTP wants)."""
        reason = _REASONS.get(self.status, "Error")
        if self.html:
            body = (f"<html><head><title>{self.status} {reason}</title></head><body><center><h1>{self.status} "
                    f"{reason}</h1></center><hr><center>nginx</center></body></html>\n").encode()
            content_type = "text/html"
        else:
            code, message = S3_XML_ERRORS.get(self.status, ("InternalError", reason))
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                    f"</Message><RequestId>FAULTPROXY</RequestId></Error>").encode()
            content_type = "application/xml"
        head = [f"HTTP/1.1 {self.status} {reason}", f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}", "Connection: close"]
        if self.retry_after is not None:
            head.append(f"Retry-After: {self.retry_after}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + (body if with_body else b"")


@dataclass(frozen=True)
class Fault:
    latency: float = 0.0
    bandwidth: int | None = None
    reset_after: int | None = None
    reset_direction: str = DOWN
    stall_after: int | None = None
    stall_direction: str = DOWN
    burst: Burst | None = None


NO_FAULT = Fault()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter | None
    task: asyncio.Task | None
    target: asyncio.StreamWriter | None = None
    sent: dict[str, int] = field(default_factory=lambda: {UP: 0, DOWN: 0})

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.target) if w is not None]

    def close(self) -> None:
        """Drop both sides and end the connection's task (also one held by a stall)."""
        for writer in self.writers():
            writer.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer does, not with an orderly FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """``FaultProxy(host, port).start()``; ``.url``; ``.set(Fault(...))`` / ``.clear()``; ``.stop()``.
    ``connections`` and ``answered`` count accepted connections and requests answered by bursts."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.fault = NO_FAULT
        self.connections = 0
        self.answered = 0
        self._burst_left = 0
        self._before: tuple[bytes, Callable[[], None]] | None = None
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="faultproxy")
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set(self, fault: Fault = NO_FAULT) -> None:
        """Apply ``fault`` to every connection from now on; open connections are closed first."""
        async def apply() -> None:
            self.fault = fault
            self._burst_left = fault.burst.count if fault.burst else 0
            for conn in list(self._conns):
                conn.close()
            self._conns.clear()
        self._call(apply())

    def clear(self) -> None:
        self.set(NO_FAULT)

    def before(self, pattern: bytes, action: Callable[[], None]) -> None:
        """Run ``action`` once, before forwarding the first bytes towards the target containing ``pattern``."""
        async def apply() -> None:
            self._before = (pattern, action)
        self._call(apply())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.clear()
        if self._server is not None:
            self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the proxy's loop and wait for it (bounded)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ------------------------------------------------------------------ proxying (the proxy's loop)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn(writer, asyncio.current_task())
        self._conns.add(conn)
        fault = self.fault
        try:
            if self._burst_left > 0:
                self._burst_left -= 1
                await self._answer(reader, writer, fault)
                conn.client = None
                return
            if fault.stall_after == 0 and fault.stall_direction == UP:
                await reader.read(MAX_HEADER)  # accept, take the request, never answer
                await asyncio.sleep(3600)
                return
            target_reader, conn.target = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pump(conn, reader, conn.target, UP, fault),
                                 self._pump(conn, target_reader, writer, DOWN, fault))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass  # the connection ends: a peer went away, or the proxy closed it
        finally:
            self._conns.discard(conn)
            for w in conn.writers():
                w.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault) -> None:
        """Read one request (headers and a Content-Length body), answer it with the burst's error, close."""
        assert fault.burst is not None
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        if length:
            await reader.readexactly(length)
        self.answered += 1
        writer.write(fault.burst.response(with_body=not head.startswith(b"HEAD ")))
        await writer.drain()
        writer.close()  # an orderly close that sends the buffered answer (abort would drop it)
        await writer.wait_closed()

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str,
                    fault: Fault) -> None:
        """Forward one direction until EOF, applying the fault; a reset ends both directions."""
        while True:
            room = self._room(conn, direction, fault)
            if room == 0:
                if fault.reset_after is not None and fault.reset_direction == direction:
                    for w in conn.writers():
                        _reset(w)
                    return
                await asyncio.sleep(3600)  # stalled: hold both sockets open, forward nothing
                return
            data = await src.read(min(CHUNK, room) if room is not None else CHUNK)
            if not data:
                with contextlib.suppress(OSError):
                    if dst.can_write_eof():
                        dst.write_eof()
                return
            if direction == UP and self._before is not None and self._before[0] in data:
                action, self._before = self._before[1], None
                await asyncio.get_running_loop().run_in_executor(None, action)
            await self._pace(len(data), fault)
            conn.sent[direction] += len(data)
            dst.write(data)
            await dst.drain()

    @staticmethod
    def _room(conn: _Conn, direction: str, fault: Fault) -> int | None:
        """Bytes this direction may still forward before its reset or stall point (None: unlimited)."""
        limits = [limit for limit, d in ((fault.reset_after, fault.reset_direction),
                                         (fault.stall_after, fault.stall_direction))
                  if limit is not None and d == direction]
        return max(0, min(limits) - conn.sent[direction]) if limits else None

    @staticmethod
    async def _pace(size: int, fault: Fault) -> None:
        delay = fault.latency + (size / fault.bandwidth if fault.bandwidth else 0.0)
        if delay:
            await asyncio.sleep(delay)


def burst(count: int, status: int = 503, *, html: bool = False, retry_after: str | None = None) -> Fault:
    return Fault(burst=Burst(count, status, html, retry_after))


def reset(after: int, direction: str = DOWN) -> Fault:
    return Fault(reset_after=after, reset_direction=direction)


def stall(after: int, direction: str = DOWN) -> Fault:
    return Fault(stall_after=after, stall_direction=direction)


