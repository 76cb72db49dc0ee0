"""The admin listener of both servers: health and metrics, without any S3 or KMS signature.

``GET /health/live``  200 while the process serves requests.
``GET /health/ready`` 200 when what the server needs answers (the gateway: its upstream and key service),
                      else 503 with one line per thing that is down; a probe result is reused for
                      ``READY_TTL`` seconds, so scrapes and load balancers cannot hammer the upstream.
``GET /metrics``      Prometheus text format (common/metrics.py).

It runs on a listener of its own (``admin_listen``), never on the S3/KMS port: these endpoints are
unauthenticated, so they must not be reachable wherever clients are, and an operator can bind them to
loopback or an internal network only. The server's application carries its ``Admin`` (``ADMIN_KEY``); the
listener is started by common/serving.py once the application is set up.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from common.metrics import exposition

READY_TTL = 1.5      # seconds a readiness answer is reused
PROBE_TIMEOUT = 3.0  # seconds a probe may take before what it checks counts as down

Probe = Callable[[], Awaitable["str | None"]]  # None when healthy, else a one-line reason


class Readiness:
    """The server's probes, run together, their answer cached for ``ttl`` seconds; concurrent callers
    share one run. A probe that raises or outlasts ``timeout`` reports its thing as down."""

    def __init__(self, probes: Mapping[str, Probe], *, ttl: float = READY_TTL, timeout: float = PROBE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probes = dict(probes)
        self._ttl = ttl
        self._timeout = timeout
        self._clock = clock
        self._last: tuple[float, list[str]] | None = None
        self._running: asyncio.Task[list[str]] | None = None

    async def problems(self) -> list[str]:
        """``"name: reason"`` for each thing that is down; empty when ready."""
        if self._last is not None and self._clock() - self._last[0] < self._ttl:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._probe_all())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, task: asyncio.Task[list[str]]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self._last = (self._clock(), task.result())

    async def _probe_all(self) -> list[str]:
        names = list(self._probes)
        results = await asyncio.gather(*(self._probe(self._probes[name]) for name in names))
        return [f"{name}: {reason}" for name, reason in zip(names, results) if reason is not None]

    async def _probe(self, probe: Probe) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                return await probe()
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except Exception as exc:  # noqa: BLE001 - a failing probe means down, never a failed endpoint
            return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


@dataclass
class Admin:
    """What a server's admin endpoints show: its metrics registry and its readiness."""

    registry: CollectorRegistry
    readiness: Readiness = field(default_factory=lambda: Readiness({}))


ADMIN_KEY = web.AppKey("admin", Admin)


def admin_app(admin: Admin) -> web.Application:
    """The admin endpoints as an application of their own (no middleware, no signature)."""
    async def live(request: web.Request) -> web.Response:
        return web.Response(text="live\n")

    async def ready(request: web.Request) -> web.Response:
        problems = await admin.readiness.problems()
        if problems:
            return web.Response(status=503, text="not ready\n" + "".join(f"{p}\n" for p in problems))
        return web.Response(text="ready\n")

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = exposition(admin.registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app
