"""Gateway throughput, latency and memory, side by side with a direct upstream and a plain proxy.

Three servers run as separate processes on loopback, as in production: ``bench.fast_upstream``
(an S3 sink that is never the bottleneck), ``bench.passthrough_proxy`` (the no-crypto aiohttp
baseline the goals are stated against) and ``gateway serve`` in front of the fast upstream.

* one big object (default 1 GiB): a single streamed PUT and GET through each path, in MiB/s;
* 4 KiB objects: PUT/GET latency p50/p99 and ops/s, sequentially and with concurrency, direct vs
  gateway;
* the gateway's resident memory (sampled VmRSS, and VmHWM) after each phase.

The client never holds a big body: it streams a repeated random 1 MiB block with a Content-Length
and a SigV4 ``UNSIGNED-PAYLOAD`` signature made by botocore, and counts the bytes it reads back.

    .venv/bin/python -m bench.gateway_bench [--size-mib 1024] [--small-count 2000] [--concurrency 16] [--moto]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.serving import cancelled_by_signal
from bench.support import (BUCKET, CLIENT_KEY, MIB, UPSTREAM_KEY, RssSampler, S3Client, Target, percent,
                           start_bench_server, start_gateway, start_moto_target)
from common.eventloop import new_event_loop

SMALL_SIZE = 4096
WARMUP_OPS = 50


async def stream_body(size: int, block: bytes) -> AsyncIterator[bytes]:
    """``size`` bytes as repeats of one random block: constant memory, no generation cost per byte."""
    remaining = size
    while remaining:
        n = min(len(block), remaining)
        yield block if n == len(block) else block[:n]
        remaining -= n


@dataclass
class LatencyResult:
    target: str
    operation: str
    concurrency: int
    latencies: list[float]
    seconds: float

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def ops(self) -> float:
        return len(self.latencies) / self.seconds


@dataclass
class Report:
    size: int
    throughput: dict[tuple[str, str], float] = field(default_factory=dict)  # (target, op) -> MiB/s
    latency: list[LatencyResult] = field(default_factory=list)
    rss: list[tuple[str, int]] = field(default_factory=list)  # (phase, peak bytes)


async def big_put(client: S3Client, target: Target, size: int, report: Report) -> None:
    """One streamed PUT of ``size`` bytes (a random 1 MiB block repeated: constant client memory)."""
    block = os.urandom(MIB)
    start = time.perf_counter()
    await client.put(target, f"/{BUCKET}/big-{target.name}", stream_body(size, block), size)
    report.throughput[(target.name, "PUT")] = size / MIB / (time.perf_counter() - start)


async def big_get(client: S3Client, target: Target, size: int, report: Report) -> None:
    """One streamed GET; it must return every byte."""
    start = time.perf_counter()
    received = await client.get(target, f"/{BUCKET}/big-{target.name}")
    report.throughput[(target.name, "GET")] = size / MIB / (time.perf_counter() - start)
    if received != size:
        raise RuntimeError(f"GET {target.name}: {received} bytes, expected {size}")
    print(f"  {target.name:<12} PUT {report.throughput[(target.name, 'PUT')]:8.1f} MiB/s   "
          f"GET {report.throughput[(target.name, 'GET')]:8.1f} MiB/s", flush=True)


async def run_ops(target: Target, operation: str, op: Callable[[int], Awaitable[object]],
                  count: int, concurrency: int) -> LatencyResult:
    """``count`` calls of ``op(i)`` spread over ``concurrency`` workers, each timed."""
    latencies: list[float] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            start = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LatencyResult(target.name, operation, concurrency, latencies, time.perf_counter() - start)


async def small_objects(client: S3Client, target: Target, count: int, concurrency: int, report: Report) -> None:
    body = os.urandom(SMALL_SIZE)

    def put(i: int) -> Awaitable[None]:
        return client.put(target, f"/{BUCKET}/small-{target.name}-{i}", body, SMALL_SIZE)

    async def get(i: int) -> None:
        if await client.get(target, f"/{BUCKET}/small-{target.name}-{i}") != SMALL_SIZE:
            raise RuntimeError(f"GET {target.name}: short small object")

    await run_ops(target, "warmup", put, WARMUP_OPS, 1)
    await run_ops(target, "warmup", get, WARMUP_OPS, 1)
    for workers in (1, concurrency):
        for name, op in (("PUT", put), ("GET", get)):
            result = await run_ops(target, name, op, count, workers)
            report.latency.append(result)
            print(f"  {target.name:<12} {name} c={workers:<3} p50 {result.p50:6.2f} ms  "
                  f"p99 {result.percentile(0.99):6.2f} ms  {result.ops:8.0f} ops/s", flush=True)


async def measure(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> Report:
    report = Report(size=args.size_mib * MIB)
    upstream_server = start_bench_server(stack, "fast_upstream")
    upstream = Target("direct", upstream_server.url, UPSTREAM_KEY)
    proxy = Target("passthrough", start_bench_server(stack, "passthrough_proxy", "--upstream", upstream.url).url,
                   UPSTREAM_KEY)
    gateway_server = start_gateway(stack, workdir / "gw", upstream)
    gateway = Target("gateway", gateway_server.url, CLIENT_KEY)
    sampler = RssSampler(gateway_server.proc.pid)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        client = S3Client(session)
        await client.request(upstream, "PUT", f"/{BUCKET}", 200)
        sampler.start()
        try:
            await _big_phase(client, (upstream, proxy, gateway), upstream, report, sampler)
            if args.moto:
                await _moto_phase(client, stack, workdir, report)
            print(f"{args.small_count} x 4 KiB objects:", flush=True)
            sampler.reset()
            for target in (upstream, gateway):
                await small_objects(client, target, args.small_count, args.concurrency, report)
            report.rss.append(("peak during 4 KiB objects", sampler.peak()))
            report.rss.append(("after 4 KiB objects", sampler.status("VmRSS")))
            report.rss.append(("VmHWM (whole run)", sampler.status("VmHWM")))
        finally:
            await sampler.stop()
    return report


async def _big_phase(client: S3Client, targets: tuple[Target, ...], upstream: Target, report: Report,
                     sampler: RssSampler) -> None:
    print(f"{report.size / MIB:.0f} MiB object, single PUT and GET:", flush=True)
    report.rss.append(("at start", sampler.peak()))
    for target in targets:
        sampler.reset()
        await big_put(client, target, report.size, report)
        if target.name == "gateway":
            report.rss.append((f"after the {report.size / MIB:.0f} MiB PUT", sampler.status("VmRSS")))
        await big_get(client, target, report.size, report)
        if target.name == "gateway":
            report.rss.append((f"peak during {report.size / MIB:.0f} MiB PUT+GET", sampler.peak()))
        await client.request(upstream, "DELETE", f"/{BUCKET}/big-{target.name}", 204)


async def _moto_phase(client: S3Client, stack: ExitStack, workdir: Path, report: Report) -> None:
    """The same big object straight to moto and through a second gateway in front of moto."""
    moto = start_moto_target(stack)
    await client.request(moto, "PUT", f"/{BUCKET}", 200)
    gateway = Target("gateway+moto", start_gateway(stack, workdir / "gw-moto", moto).url, CLIENT_KEY)
    for target in (moto, gateway):
        await big_put(client, target, report.size, report)
        await big_get(client, target, report.size, report)


def print_report(report: Report) -> None:
    t = report.throughput
    print(f"\n== {report.size / MIB:.0f} MiB single object (MiB/s) ==")
    targets = sorted({name for name, _ in t}, key=["direct", "passthrough", "gateway", "moto",
                                                   "gateway+moto"].index)
    print(f"| {'op':<4} | " + " | ".join(f"{name:>12}" for name in targets)
          + " | gw/passthrough | gw/direct |")
    for op in ("PUT", "GET"):
        cells = " | ".join(f"{t.get((name, op), 0):12.1f}" for name in targets)
        gw = t.get(("gateway", op))
        print(f"| {op:<4} | {cells} | {percent(gw, t.get(('passthrough', op))):>14} | "
              f"{percent(gw, t.get(('direct', op))):>9} |")
    print("goal: gateway >= 60% of passthrough")
    print(f"\n== {SMALL_SIZE // 1024} KiB objects ==")
    print(f"| {'target':<8} | {'op':<4} | {'conc':>4} | {'p50 ms':>7} | {'p99 ms':>7} | {'ops/s':>8} |")
    for r in report.latency:
        print(f"| {r.target:<8} | {r.operation:<4} | {r.concurrency:>4} | {r.p50:7.2f} | "
              f"{r.percentile(0.99):7.2f} | {r.ops:8.0f} |")
    print("added latency at p50 (gateway - direct), goal < 2 ms:")
    by_key = {(r.target, r.operation, r.concurrency): r for r in report.latency}
    for (target, op, conc), r in by_key.items():
        if target == "gateway" and ("direct", op, conc) in by_key:
            print(f"  {op} c={conc:<3} {r.p50 - by_key[('direct', op, conc)].p50:+6.2f} ms")
    print("\n== gateway memory: VmRSS (goal < 150 MB, flat) ==")
    for phase, size in report.rss:
        print(f"  {phase:<34} {size / 1e6:7.1f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the big object (MiB)")
    parser.add_argument("--small-count", type=int, default=2000, help="4 KiB requests per run")
    parser.add_argument("--concurrency", type=int, default=16, help="workers in the concurrent 4 KiB runs")
    parser.add_argument("--moto", action="store_true", help="also move the big object through moto (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as workdir, ExitStack() as stack:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                report = runner.run(cancelled_by_signal(measure(args, stack, Path(workdir))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted; stopping servers", file=sys.stderr)
            return 130
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
