"""Slow, idle and surplus clients, for both servers (the gateway and ``keyservice serve``).

aiohttp's server only closes keep-alive connections that sit idle; a client may dribble its request
headers, stall its body or stop reading the answer forever, and nothing bounds how many connections
are open. Each of those holds memory, a handler task and (on the gateway) an upstream connection, so
a hundred stalled clients starved everyone else. This module bounds every wait on a client:

- **header timeout**: a connection must deliver a complete request line and headers within
  ``header_timeout`` of being accepted, or of the first byte of a later request on a keep-alive
  connection; otherwise it is closed without an answer (nginx's ``client_header_timeout``, Go's
  ``ReadHeaderTimeout``).
- **idle timeout**: a keep-alive connection with no request in flight is closed after
  ``idle_timeout`` (aiohttp's own ``keepalive_timeout``).
- **body timeout and minimum rate**: every read of a request body waits at most ``body_timeout`` for
  more bytes, and the body as a whole may keep the server waiting at most ``body_timeout +
  received_bytes / body_min_rate`` seconds (:func:`request_body_chunks`; Apache mod_reqtimeout's
  ``body=20,MinRate=500``, its default). The servers turn either into their protocol's timeout error.
  A client that keeps sending at least ``body_min_rate`` bytes/s on average is never cut off; one that
  dribbles a byte now and then, each within ``body_timeout``, no longer holds its handler (and on the
  gateway an upstream connection) for ever. Only the time spent waiting for the client counts, not
  the time the server spends consuming what it already has (e.g. waiting on the upstream).
- **send timeout**: when the client stops reading, the transport's write buffer fills and writing
  pauses; if it stays paused for ``send_timeout`` the connection is aborted, which fails the pending
  write and releases whatever the handler held (nginx's ``send_timeout``).
- **connection cap**: at most ``max_connections`` connections are served at once. Further ones are
  accepted, answered at once with the server's "slow down" reply (``refusal``: S3 ``503 SlowDown`` on
  the gateway, ``ThrottlingException`` on the key service) and closed, so SDKs back off and retry
  instead of hanging in a backlog; one log line (at most every ``LOG_INTERVAL`` seconds) says so.
  ``max_connections_per_ip`` (0: off, the default) caps one client address the same way (nginx's
  ``limit_conn``), so one host cannot take the whole ``max_connections`` alone.

The header timer and the cap need a protocol subclass: aiohttp has no header timeout and creates its
``RequestHandler`` itself, so :class:`GuardedAppRunner` plugs :class:`GuardedServer` (a
``web.Server`` whose protocol factory builds :class:`GuardedRequestHandler`) under the usual
``web.Application``. ``tests/gateway/test_e2e_slow_clients.py`` pins the behaviour against aiohttp
upgrades: the subclass uses private attributes of ``RequestHandler`` (``_waiter``, set while the
connection waits for its next request, ``_request_count`` and ``_next_keepalive_close_time``) and of
``web.Server`` (``_loop``, ``_kwargs``), and :meth:`GuardedServer.__call__` replaces
``web.Server.__call__`` (without its fallback that drops unknown handler arguments). pyproject.toml
pins the aiohttp releases this was verified against (``SUPPORTED_AIOHTTP``), and
:func:`check_aiohttp` (run when a :class:`GuardedAppRunner` is made) refuses to start, in one line
naming the installed version, on an aiohttp that lacks any of them, instead of serving without
header timeouts or with a broken connection cap.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from common.logsetup import failure_line

SUPPORTED_AIOHTTP = ">=3.12,<3.15"  # as pinned in pyproject.toml
# The private parts of aiohttp this module relies on: RequestHandler instance attributes, web.Server
# instance attributes, and the methods GuardedRequestHandler and GuardedAppRunner override.
_HANDLER_ATTRIBUTES = ("_waiter", "_request_count", "_next_keepalive_close_time", "_loop", "transport")
_SERVER_ATTRIBUTES = ("_loop", "_kwargs", "request_handler", "request_factory", "handler_cancellation")
_OVERRIDDEN = ((RequestHandler, ("connection_made", "connection_lost", "data_received", "pause_writing",
                                 "resume_writing", "force_close")),
               (web.AppRunner, ("_make_server",)))
LOG_INTERVAL = 60.0
REFUSAL_GRACE = 2.0  # seconds a refused connection may take to read its answer before it is closed


@dataclass(frozen=True)
class ServerLimits:
    """How long a server waits on a client, and how many connections it serves at once."""

    header_timeout: float = 30.0
    idle_timeout: float = 60.0
    body_timeout: float = 20.0
    send_timeout: float = 60.0
    max_connections: int = 1024
    body_min_rate: float = 500.0  # bytes/s; 0: no minimum rate, only the per-read body_timeout
    max_connections_per_ip: int = 0  # connections from one client address; 0: no per-address limit

    @classmethod
    def of(cls, settings: object) -> "ServerLimits":
        """The limits held by a server's configuration as flat settings of the same names (both servers'
        configs carry them so, one TOML key and one environment variable each)."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})


class UnsupportedAiohttp(RuntimeError):
    """The installed aiohttp lacks an internal this module relies on."""


def check_aiohttp() -> None:
    """Raise :class:`UnsupportedAiohttp` (one line naming the aiohttp version and what is missing)
    unless aiohttp has every private attribute and method this module uses."""
    missing = [f"{cls.__name__}.{name}" for cls, names in _OVERRIDDEN for name in names if not hasattr(cls, name)]
    loop = asyncio.new_event_loop()
    try:
        server = web.Server(_no_handler, loop=loop)
        handler = RequestHandler(server, loop=loop)
        missing += [f"web.Server.{name}" for name in _SERVER_ATTRIBUTES if not hasattr(server, name)]
        missing += [f"RequestHandler.{name}" for name in _HANDLER_ATTRIBUTES if not hasattr(handler, name)]
    except TypeError as exc:  # a constructor whose signature changed
        missing.append(f"web.Server/RequestHandler({exc})")
    finally:
        loop.close()
    if missing:
        raise UnsupportedAiohttp(f"aiohttp {aiohttp.__version__} is not supported (need {SUPPORTED_AIOHTTP}): "
                                 f"it lacks {', '.join(missing)}, which the slow-client guards rely on")


def refused_aiohttp(program: str, redact: Callable[[str], str]) -> int | None:
    """``check_aiohttp`` at a server's start, before anything is started, forked or written: None when the
    installed aiohttp will do, else the exit status 2 (a dependency refused by a check), once the one line
    ``program: why`` is on stderr."""
    try:
        check_aiohttp()
    except UnsupportedAiohttp as exc:
        print(f"{program}: {redact(failure_line(exc))}", file=sys.stderr)
        return 2
    return None


async def _no_handler(request: web.BaseRequest) -> web.StreamResponse:
    raise NotImplementedError


class BodyTimeout(TimeoutError):
    """The client sent no request-body bytes for ``body_timeout`` seconds, or sent them slower than
    ``body_min_rate`` allows."""


class RateLimitedLog:
    """One warning per ``interval`` about a recurring event, with how often it happened meanwhile,
    so a flood of refused connections cannot flood the log too."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self._logger = logger
        self._interval = interval
        self._last = -interval
        self._count = 0

    def note(self, message: str, *args: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._logger.warning(message + " (%d time(s) since the last report)", *args, self._count)
            self._last, self._count = now, 0


class ConnectionGuard:
    """The limits, the count of connections served, and the answer for connections over the cap.

    ``name`` is the server's ("gateway", "keyservice"); its lines go to the logger ``NAME.connections``,
    under the namespace whose level GATEWAY_LOG_LEVEL / KEYSERVICE_LOG_LEVEL set (common/logsetup.py)."""

    def __init__(self, limits: ServerLimits, refusal: bytes, name: str) -> None:
        self.limits = limits
        self.refusal = refusal
        self.name = name
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.log = logging.getLogger(f"{name}.connections")
        self._cap_log = RateLimitedLog(self.log)
        self._address_log = RateLimitedLog(self.log)

    def admit(self, address: str | None = None) -> bool:
        """Count one more connection (from ``address``, the client's IP if known), unless the cap or
        the per-address cap is reached (then log it, rate-limited)."""
        if self.open >= self.limits.max_connections:
            self._cap_log.note("%s: connection cap reached (max_connections=%d): new connections are "
                               "refused", self.name, self.limits.max_connections)
            return False
        per_address = self.limits.max_connections_per_ip
        if per_address and address is not None and self.by_address.get(address, 0) >= per_address:
            self._address_log.note("%s: per-address connection cap reached (max_connections_per_ip=%d, "
                                   "latest %s): its new connections are refused", self.name, per_address, address)
            return False
        self.open += 1
        if address is not None:
            self.by_address[address] = self.by_address.get(address, 0) + 1
        return True

    def release(self, address: str | None = None) -> None:
        self.open -= 1
        if address is not None:
            left = self.by_address.get(address, 1) - 1
            if left > 0:
                self.by_address[address] = left
            else:
                self.by_address.pop(address, None)


def _client_address(transport: asyncio.BaseTransport) -> str | None:
    """The peer's IP address (None for a Unix socket or an unknown peer)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection protocol with a header timeout, a send timeout and the connection cap."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=guard.limits.idle_timeout, **kwargs)
        self.guard = guard
        self._admitted = False
        self._address: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # ----------------------------------------------------------------- the cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._address = _client_address(transport)
        if not self.guard.admit(self._address):
            _refuse(transport, self.guard.refusal)  # type: ignore[arg-type]
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self.guard.release(self._address)
        for timer in (self._header_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    # ----------------------------------------------------------------- request headers

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return  # a refused connection: its request is never read
        starts = bool(data) and self._header_timer is None and self._waiting_for_request()
        super().data_received(data)
        if starts and self._waiting_for_request():
            # the first bytes of a request (on a kept-alive connection) without all its headers: the rest must
            # come within the header timeout (a request whose headers came whole, the usual case, needs no timer)
            self._arm_header_timer()
        elif self._header_timer is not None and not self._waiting_for_request():
            self._header_timer.cancel()  # the request line and headers are complete
            self._header_timer = None

    def _waiting_for_request(self) -> bool:
        """Whether no request is being served: the connection waits for (the rest of) its next one."""
        waiter = self._waiter
        return (waiter is not None and not waiter.done()) or (waiter is None and self._request_count == 0)

    def _arm_header_timer(self) -> None:
        deadline = self._loop.time() + self.guard.limits.header_timeout
        self._header_timer = self._loop.call_at(deadline, self._header_timeout)
        # aiohttp's idle timer must not cut a request whose headers are arriving within this deadline
        self._next_keepalive_close_time = max(self._next_keepalive_close_time, deadline)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._waiting_for_request() and self.transport is not None:
            self.guard.log.debug("%s: closing a connection that sent no complete request headers in %ss",
                      self.guard.name, self.guard.limits.header_timeout)
            self.force_close()

    # ----------------------------------------------------------------- responses

    def pause_writing(self) -> None:
        super().pause_writing()
        self._send_timer = self._loop.call_later(self.guard.limits.send_timeout, self._send_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_timeout(self) -> None:
        """The client has not read for ``send_timeout``: abort, which fails the handler's pending write."""
        self._send_timer = None
        if self.transport is not None:
            self.guard.log.debug("%s: aborting a connection whose client stopped reading for %ss",
                      self.guard.name, self.guard.limits.send_timeout)
            self.transport.abort()


def _refuse(transport: asyncio.Transport, answer: bytes) -> None:
    """Answer a connection over the cap and close it once the client had a moment to read the answer
    (closing at once with its request unread would reset the connection and lose the answer)."""
    transport.write(answer)
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(REFUSAL_GRACE, transport.close)


class GuardedServer(web.Server):
    """``web.Server`` whose connections are served by :class:`GuardedRequestHandler`."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` for an application served under a :class:`ConnectionGuard`."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        check_aiohttp()
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return GuardedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=plain._loop,
                             guard=self._guard, **plain._kwargs)


async def request_body_chunks(request: web.BaseRequest, size: int) -> AsyncIterator[bytes]:
    """The request body in chunks of at most ``size`` bytes. Each read waits at most the server's
    ``body_timeout`` for the client, and all reads together at most ``body_timeout + received /
    body_min_rate`` seconds (raising :class:`BodyTimeout`, logged at DEBUG)."""
    protocol = request.protocol
    guard = protocol.guard if isinstance(protocol, GuardedRequestHandler) else None
    if guard is None:
        async for chunk in _unlimited(request, size):
            yield chunk
        return
    timeout, min_rate = guard.limits.body_timeout, guard.limits.body_min_rate
    stream = request.content
    loop = asyncio.get_running_loop()
    waited, received = 0.0, 0  # seconds spent waiting for the client, bytes it sent
    while True:
        wait = min(timeout, timeout + received / min_rate - waited) if min_rate > 0 else timeout
        if stream.is_eof():  # all of it has arrived: nothing to wait for, no timer to arm
            chunk = stream.read_nowait(size)
            if not chunk:
                return
            received += len(chunk)
            yield chunk
            continue
        started = loop.time()
        try:
            if wait <= 0:
                raise TimeoutError
            async with asyncio.timeout(wait):
                chunk = await stream.read(size)
        except TimeoutError:
            reason = (f"no request body bytes for {timeout:g}s" if wait >= timeout else
                      f"request body slower than body_min_rate={min_rate:g} bytes/s: {received} bytes in "
                      f"{waited + max(wait, 0):.1f}s")
            guard.log.debug("%s: %s", guard.name, reason)
            raise BodyTimeout(reason) from None
        waited += loop.time() - started
        if not chunk:
            return
        received += len(chunk)
        yield chunk


async def _unlimited(request: web.BaseRequest, size: int) -> AsyncIterator[bytes]:
    """The body under a plain aiohttp runner (tests): no limits."""
    while chunk := await request.content.read(size):
        yield chunk


async def send_and_close(request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
    """Send ``response`` and close the connection: after a stalled body there is nothing left to read
    (aiohttp would otherwise linger, reading the rest of a body that is not coming)."""
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    if request.transport is not None:
        request.transport.close()
    return response
