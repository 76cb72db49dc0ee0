"""Signal handling shared by the benches: a bench server's aiohttp app served on HOST:PORT until
SIGTERM/SIGINT (printing the listening line bench/support.py's start_server waits for), and a
bench's measurement cancelled by SIGTERM/SIGINT so the servers it started stop on the way out."""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")


async def serve_until_signalled(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    bound = runner.addresses[0]
    print(f"listening on http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def cancelled_by_signal(work: Awaitable[T]) -> T:
    """``work``, cancelled by SIGINT or SIGTERM: the bench's ExitStack then stops every server it started."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await work
