"""``--workers N`` side by side in one run: 4 KiB PUT and GET ops/s at concurrency 16 straight to the
upstream, through the plain pass-through proxy (the most any aiohttp proxy gets here), through the gateway
with 1 worker and with 2; the key service's GenerateDataKey (and Decrypt) over
HTTP with 1 worker and with 2 (SQLite; PostgreSQL too with --store-url). Server CPU per request counts
every worker (bench/support.py ``tree_cpu_seconds``). Clients, servers and upstream share the machine's
cores: on a small machine the client is part of what is measured.

    .venv/bin/python -m bench.workers_bench [--count 3000] [--concurrency 16] [--seconds 3]
                                            [--store-url postgresql://...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import kms_bench
from bench.gateway_bench import SMALL_SIZE, WARMUP_OPS, run_ops
from bench.support import (BUCKET, CLIENT_KEY, UPSTREAM_KEY, S3Client, Target, start_bench_server, start_gateway,
                           tree_cpu_seconds)
from common.eventloop import run


@dataclass
class Row:
    target: str
    operation: str
    ops: float
    cpu_us: float | None  # server CPU microseconds per request (None: not measured)


async def small_objects(client: S3Client, target: Target, pid: int | None, count: int,
                        concurrency: int) -> list[Row]:
    """``count`` 4 KiB PUTs then GETs at ``concurrency``; ops/s and the server's CPU per request."""
    body = os.urandom(SMALL_SIZE)

    def put(i: int):
        return client.put(target, f"/{BUCKET}/w-{target.name}-{i}", body, SMALL_SIZE)

    async def get(i: int) -> None:
        if await client.get(target, f"/{BUCKET}/w-{target.name}-{i}") != SMALL_SIZE:
            raise RuntimeError(f"GET {target.name}: short object")

    await run_ops(target, "warmup", put, WARMUP_OPS, concurrency)
    await run_ops(target, "warmup", get, WARMUP_OPS, concurrency)
    rows = []
    for name, op in (("PUT", put), ("GET", get)):
        before = tree_cpu_seconds(pid) if pid else 0.0
        result = await run_ops(target, name, op, count, concurrency)
        cpu = (tree_cpu_seconds(pid) - before) / count * 1e6 if pid else None
        rows.append(Row(target.name, name, result.ops, cpu))
        print(f"  {target.name:<12} {name} c={concurrency} {result.ops:8.0f} ops/s", flush=True)
    return rows


async def gateway_phase(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> list[Row]:
    upstream_server = start_bench_server(stack, "fast_upstream")
    upstream = Target("direct", upstream_server.url, UPSTREAM_KEY)
    proxy = start_bench_server(stack, "passthrough_proxy", "--upstream", upstream_server.url)
    targets: list[tuple[Target, int | None]] = [(upstream, upstream_server.proc.pid),
                                                (Target("passthrough", proxy.url, UPSTREAM_KEY), proxy.proc.pid)]
    for workers in (1, 2):
        server = start_gateway(stack, workdir / f"gw{workers}", upstream, {"GATEWAY_WORKERS": str(workers),
                                                                           "GATEWAY_ACCESS_LOG": "off"})
        targets.append((Target(f"gateway-w{workers}", server.url, CLIENT_KEY), server.proc.pid))
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        client = S3Client(session)
        await client.request(upstream, "PUT", f"/{BUCKET}", 200)
        rows = []
        for target, pid in targets:
            rows += await small_objects(client, target, pid, args.count, args.concurrency)
        return rows


def key_service_phase(args: argparse.Namespace, workdir: Path) -> list[kms_bench.Result]:
    results = []
    stores: list[tuple[str, str | None]] = [("sqlite", None)]
    if args.store_url:
        stores.append(("pg", args.store_url))
    for store, url in stores:
        for workers in (1, 2):
            print(f"  key service, {store}, {workers} worker(s)", flush=True)
            results += kms_bench.over_http(workdir, args.seconds, args.kms_concurrency, args.client_processes,
                                           workers=workers, store_url=url, mode=f"{store}-w{workers}")
    return results


def print_report(rows: list[Row], kms: list[kms_bench.Result], concurrency: int) -> None:
    direct = {r.operation: r.ops for r in rows if r.target == "direct"}
    print(f"\n== {SMALL_SIZE // 1024} KiB objects, concurrency {concurrency} ==")
    print("| target       | op  |    ops/s | % of direct | server CPU us/op |")
    for r in rows:
        cpu = f"{r.cpu_us:16.0f}" if r.cpu_us is not None else f"{'-':>16}"
        print(f"| {r.target:<12} | {r.operation:<3} | {r.ops:8.0f} | {r.ops / direct[r.operation] * 100:10.1f}% "
              f"| {cpu} |")
    print("\n== key service over HTTP ==")
    print(kms_bench.HEADER)
    for result in kms:
        print(result.row())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="4 KiB requests per target and operation")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per key service run")
    parser.add_argument("--kms-concurrency", type=int, default=64)
    parser.add_argument("--client-processes", type=int, default=1,
                        help="key service client processes (bench.http_load: one drives two workers)")
    parser.add_argument("--store-url", help="also run the key service on this PostgreSQL database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp, ExitStack() as stack:
        print("4 KiB objects:", flush=True)
        rows = run(gateway_phase(args, stack, Path(tmp)))
        stack.close()
        print("key service:", flush=True)
        kms = key_service_phase(args, Path(tmp))
    print_report(rows, kms, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
