"""Listening, TLS and signals, written once for both servers (the gateway and ``keyservice serve``).

Both promise the same thing to the scripts and tests that start them: exactly one line
``listening on http(s)://HOST:PORT`` on stdout once connections are accepted -- with the real port
when started on port 0 -- and a clean stop (exit 0) on SIGTERM or SIGINT, everything started being
stopped again, also when start-up fails half-way.

In a worker of ``--workers N`` (common/workers.py) the same code serves the sockets its parent bound, and
tells the parent it is ready instead of printing the line: the parent prints it once for all workers.
"""
from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import ssl
from os import PathLike

from aiohttp import web

LISTEN_BACKLOG = 1024
"""Pending connections the kernel queues before accepting: a burst of clients is not refused
(asyncio's default of 100 is easily reached by one SDK's connection pool)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def server_ssl_context(cert_file: str | PathLike[str] | None,
                       key_file: str | PathLike[str] | None) -> ssl.SSLContext | None:
    """The server-side TLS context for a certificate chain and its key; None (plain HTTP) without a
    certificate. A missing or unreadable file raises here, before anything is started."""
    if not cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file or None)
    except ssl.SSLError as exc:  # OpenSSL's own text ("[SSL] PEM lib (_ssl.c:3905)") names neither file nor fault
        raise ValueError(f"the TLS certificate {cert_file} and key {key_file or cert_file} are not a PEM certificate "
                         "chain and its private key") from None
    except OSError as exc:
        raise ValueError(f"the TLS certificate {cert_file} and key {key_file or cert_file} cannot be read: "
                         f"{exc.strerror or exc}") from None
    return context


def host_port(host: str, port: int) -> str:
    """HOST:PORT as URLs and --listen write it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listening_url(host: str, port: int, tls: bool) -> str:
    """The URL clients use."""
    return f"{'https' if tls else 'http'}://{host_port(host, port)}"


async def listen(runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None) -> str:
    """Accept connections on HOST:PORT through ``runner`` (already set up); the URL with the port
    actually bound, which is how a server started on port 0 tells its port."""
    bound_before = len(runner.addresses)
    inherited = _inherited_socket(admin=runner.app.get(_ADMIN_APP, False))
    site: web.BaseSite = (web.SockSite(runner, inherited, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
                          if inherited is not None else
                          web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=LISTEN_BACKLOG))
    try:
        await site.start()
    except OSError as exc:
        raise ListenFailed(host, port, exc) from None
    real_port = runner.addresses[bound_before][1]  # this site's first socket
    return listening_url(host, real_port, ssl_context is not None)


_ADMIN_APP = web.AppKey("serving_admin_app", bool)


def _inherited_socket(admin: bool) -> "socket.socket | None":
    """In a worker of ``--workers N`` (common/workers.py): the socket its parent bound for the main or the
    admin listener; None in a server of one process (it binds its own)."""
    from common import workers
    if workers.INHERITED is None:
        return None
    return workers.INHERITED.admin if admin else workers.INHERITED.main


class ListenFailed(OSError):
    """The listening socket could not be bound: one line naming the address and why (the event loop's own
    text repeats the address as a Python tuple)."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        hint = " (another process listens there: stop it or choose another address with --listen)" \
            if cause.errno == errno.EADDRINUSE else ""
        super().__init__(cause.errno, f"cannot listen on {host_port(host, port)}: {reason}{hint}")

    def __str__(self) -> str:
        return self.strerror


def announce(url: str, what: str = "listening on") -> None:
    """The one line scripts wait for; flushed, as stdout is a pipe for them."""
    print(f"{what} {url}", flush=True)


def stop_signals() -> asyncio.Future[signal.Signals]:
    """Handle SIGTERM and SIGINT from now on; the future is the first one received.

    Installed before the listening line is printed, so a script that stops a server as soon as it has
    read that line stops it cleanly. The handlers stay installed afterwards: a second signal during the
    orderly shutdown that follows must not kill the process half-way (it is ignored; the event loop
    removes them when it closes)."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def note(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, note, sig)
    return received


async def serve_until_signal(runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None,
                             log: logging.Logger, admin_listen: tuple[str, int] | None = None) -> None:
    """Set ``runner`` up (its application's start-up), listen, print the listening line and serve
    until SIGTERM/SIGINT; then stop listening, finish the requests in flight and run the
    application's cleanup -- also when start-up failed half-way (aiohttp then unwinds the cleanup
    contexts that were entered, in reverse order), before the failure propagates.

    With ``admin_listen``, the application's admin endpoints (common/admin.py) are served on that
    address too, after the main listener (so its line ``admin listening on URL`` comes second: scripts
    waiting for the first ``listening on`` line get the main one), and stopped first."""
    from common import workers
    admin: web.AppRunner | None = None
    try:
        await runner.setup()
        url = await listen(runner, host, port, ssl_context)
        received = stop_signals()
        if workers.INHERITED is None:
            announce(url)
        if admin_listen is not None:
            from common.admin import ADMIN_KEY, admin_app
            admin_application = admin_app(runner.app[ADMIN_KEY])
            admin_application[_ADMIN_APP] = True
            admin = web.AppRunner(admin_application, access_log=None, handle_signals=False)
            await admin.setup()
            admin_url = await listen(admin, *admin_listen, None)
            if workers.INHERITED is None:
                announce(admin_url, "admin listening on")
        workers.notify_ready()  # in a worker: the parent prints the lines once every worker is ready
        log.info("%s received: shutting down", (await received).name)
    finally:
        if admin is not None:
            await admin.cleanup()
        await runner.cleanup()


async def freeze_startup_objects(app: web.Application) -> None:
    """An ``on_startup`` hook, last: everything start-up made (modules, botocore's tables, the key
    service's state) lives as long as the process, so it leaves the garbage collector's reach instead of
    being scanned again by every full collection (a tenth of a small request's CPU, measured)."""
    gc.collect()
    gc.freeze()
