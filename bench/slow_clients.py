"""A normal client's latency through the gateway while slow clients hold connections open.

For each level of slow clients (default 0, 50, 100, 200, 400 connected at once) it measures the p50
and p95 latency of one well-behaved client's small (4 KiB) PUTs and GETs, sequentially, and prints
the levels side by side. Half the slow clients (``--body-share``) are slowloris clients dribbling
their request headers (one header line every ``--dribble`` seconds), half send a signed PUT's headers
and a few bytes of its 1 MiB body and then stall. A slow client the gateway drops (header or body
timeout) reconnects at once, so the level stays constant while the normal client is measured.

Processes, all on 127.0.0.1 and stopped at the end (also on Ctrl-C or an error): the fast upstream
(``bench.fast_upstream``) and ``gateway serve`` in front of it with its production defaults
(``--env NAME=VALUE`` overrides any GATEWAY_* setting, e.g. ``--env GATEWAY_UPSTREAM_POOL_SIZE=400``).

    .venv/bin/python -m bench.slow_clients [--levels 0,50,100,200,400] [--ops 100] [--seconds 15]

Every stalled upload holds one pooled upstream connection until its body timeout, so once stalled
bodies reach ``pool_size`` (default 100) the normal client's requests wait ``pool_wait`` and get
``503 SlowDown``: the table counts those as errors (their latency is the pool wait).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bench.gateway_bench import WARMUP_OPS
from bench.serving import cancelled_by_signal
from bench.support import BUCKET, CLIENT_KEY, UPSTREAM_KEY, S3Client, Target, start_bench_server, start_gateway
from common.eventloop import new_event_loop

SMALL = 4096
STALLED_BODY = 1 << 20


@dataclass
class Level:
    slow: int
    put: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # slow connections the gateway closed (and the bench reopened) during the level


def percentile(values: list[float], fraction: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000:.1f}"


class SlowClients:
    """``count`` misbehaving connections kept open (reopened when the gateway drops one) until stopped."""

    def __init__(self, target: Target, signer: S3Client, count: int, body_share: float,
                 dribble: float) -> None:
        self.target, self.signer = target, signer
        self.bodies = round(count * body_share)
        self.headers = count - self.bodies
        self.dribble = dribble
        self.connected = 0
        self.dropped = 0
        self._tasks: list[asyncio.Task] = []

    async def start(self, ready_within: float = 60.0) -> None:
        """Open every connection, then give the stalled uploads a moment to reach the upstream."""
        self._tasks = [asyncio.create_task(self._slowloris(i)) for i in range(self.headers)]
        self._tasks += [asyncio.create_task(self._stalled_body(i)) for i in range(self.bodies)]
        deadline = time.monotonic() + ready_within
        while self.connected < self.headers + self.bodies and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Cancel every slow client; a client that failed otherwise (an unexpected answer) is reported."""
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        failures = [r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)]
        if failures:
            raise failures[0]

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.target.url)
        return await asyncio.open_connection(parts.hostname, parts.port)

    async def _slowloris(self, i: int) -> None:
        await self._keep_open(lambda reader, writer: self._dribble_headers(i, reader, writer))

    async def _stalled_body(self, i: int) -> None:
        await self._keep_open(lambda reader, writer: self._stall_body(i, reader, writer))

    async def _keep_open(self, session: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> None:
        """Run ``session`` on a connection, and again on a new one each time the gateway drops it."""
        first = True
        while True:
            try:
                reader, writer = await self._open()
            except OSError:
                await asyncio.sleep(0.5)
                continue
            self.connected += first
            first = False
            try:
                await session(reader, writer)
            except OSError:
                pass
            finally:
                writer.close()
            self.dropped += 1
            await asyncio.sleep(0.1)  # no reconnect storm if the gateway refuses at once

    async def _dribble_headers(self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A request line, then one header line every ``dribble`` seconds, never the end of the headers."""
        writer.write(f"GET /{BUCKET}/slow-{i} HTTP/1.1\r\nHost: gateway\r\n".encode())
        while not reader.at_eof():
            await writer.drain()
            await asyncio.sleep(self.dribble)
            writer.write(b"X-Slow: 1\r\n")

    async def _stall_body(self, i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A signed PUT that sends 100 of its bytes and stalls; the gateway must answer RequestTimeout."""
        path = f"/{BUCKET}/stalled-{i}"
        headers = self.signer.signed(self.target, "PUT", path, {"Content-Length": str(STALLED_BODY)})
        head = f"PUT {path} HTTP/1.1\r\nHost: {urlsplit(self.target.url).netloc}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode() + b"\r\n" + b"x" * 100)
        await writer.drain()
        answer = await reader.read()  # the RequestTimeout answer, then the close
        if b"RequestTimeout" not in answer and b"SlowDown" not in answer:
            raise RuntimeError(f"a stalled upload got an unexpected answer: {answer[:300]!r}")


async def normal_client(client: S3Client, target: Target, level: Level, ops: int, seconds: float) -> None:
    """Sequential 4 KiB PUT then GET pairs, each timed, for ``ops`` pairs or ``seconds``."""
    body = os.urandom(SMALL)
    deadline = time.monotonic() + seconds
    for i in range(ops):
        if time.monotonic() > deadline:
            break
        for name, samples, call in (("PUT", level.put, lambda: client.put(target, f"/{BUCKET}/n-{i}", body, SMALL)),
                                    ("GET", level.get, lambda: client.get(target, f"/{BUCKET}/n-{i}"))):
            start = time.perf_counter()
            try:
                await call()
            except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                kind = "SlowDown" if "SlowDown" in str(exc) else type(exc).__name__
                level.errors[kind] = level.errors.get(kind, 0) + 1
                continue
            samples.append(time.perf_counter() - start)


async def measure(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> list[Level]:
    upstream = Target("direct", start_bench_server(stack, "fast_upstream").url, UPSTREAM_KEY)
    server = start_gateway(stack, workdir / "gw", upstream, env=dict(pair.split("=", 1) for pair in args.env))
    gateway = Target("gateway", server.url, CLIENT_KEY)
    levels = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        client = S3Client(session)
        await client.request(upstream, "PUT", f"/{BUCKET}", 200)
        await normal_client(client, gateway, Level(0), WARMUP_OPS, args.seconds)  # warm-up
        for count in args.levels:
            level = Level(count)
            slow = SlowClients(gateway, client, count, args.body_share, args.dribble)
            await slow.start()
            try:
                await normal_client(client, gateway, level, args.ops, args.seconds)
            finally:
                level.dropped = slow.dropped
                await slow.stop()
            levels.append(level)
            print(f"  {count:4d} slow clients: PUT p50 {percentile(level.put, 0.5):>7} ms, "
                  f"GET p50 {percentile(level.get, 0.5):>7} ms, errors {level.errors or 0}", flush=True)
            await asyncio.sleep(1.0)  # let the gateway close what the slow clients left behind
    return levels


def print_table(levels: list[Level], body_share: float) -> None:
    print(f"\nNormal client, sequential 4 KiB PUT/GET through the gateway (latency in ms); slow clients: "
          f"{1 - body_share:.0%} dribbling headers, {body_share:.0%} stalled bodies")
    print(f"{'slow clients':>12} | {'PUT p50':>8} {'PUT p95':>8} | {'GET p50':>8} {'GET p95':>8} | "
          f"{'ok ops':>6} | {'errors':<22} | {'slow conns dropped':>17}")
    for level in levels:
        errors = ", ".join(f"{k} {v}" for k, v in level.errors.items()) or "-"
        print(f"{level.slow:>12} | {percentile(level.put, 0.5):>8} {percentile(level.put, 0.95):>8} | "
              f"{percentile(level.get, 0.5):>8} {percentile(level.get, 0.95):>8} | "
              f"{len(level.put) + len(level.get):>6} | {errors:<22} | {level.dropped:>17}")
    base = levels[0] if levels and levels[0].slow == 0 else None
    if base and base.get and base.put:
        survived = [lv.slow for lv in levels if not lv.errors and lv.get and lv.put
                    and _unchanged(lv.get, base.get) and _unchanged(lv.put, base.put)]
        print(f"\nMost slow clients with an unchanged p50 (within 1.5x + 1 ms of none) and no errors: "
              f"{max(survived) if survived else 0}")


def _unchanged(values: list[float], base: list[float]) -> bool:
    """A p50 within the noise of a shared 2-core machine: 1.5x the baseline plus 1 ms."""
    return _median(values) <= 1.5 * _median(base) + 0.001


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[0, 50, 100, 200, 400],
                        help="numbers of slow clients, comma-separated")
    parser.add_argument("--ops", type=int, default=100, help="PUT+GET pairs per level (at most)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time limit of each level's measurement")
    parser.add_argument("--body-share", type=float, default=0.5, help="fraction of slow clients stalling a body")
    parser.add_argument("--dribble", type=float, default=2.0, help="seconds between a slowloris client's lines")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="a gateway setting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slow-clients-bench-") as workdir, ExitStack() as stack:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                levels = runner.run(cancelled_by_signal(measure(args, stack, Path(workdir))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted; stopping servers", file=sys.stderr)
            return 130
    print_table(levels, args.body_share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
