"""An upstream whose answers a test writes itself, for what no real S3 server can be made to send (a listing
that never advances, a record trickled in pieces): an aiohttp app on a loopback port and the gateway's own
``Upstream`` to it. Tests of behaviour a real server shows use moto or Ceph RGW instead."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from gateway.upstream import Upstream, UpstreamTarget


@asynccontextmanager
async def scripted_upstream(answer: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> AsyncIterator[Upstream]:
    """Every GET answered by ``answer``; the Upstream (started) is closed and the server stopped on exit."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream = Upstream(UpstreamTarget(f"http://127.0.0.1:{port}", "us-east-1", "AK", "SK"))
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.close()
        await runner.cleanup()
