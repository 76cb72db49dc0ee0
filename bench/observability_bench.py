"""What the access log and the metrics cost: 4 KiB PUT/GET ops/s through a gateway with both off, with the
access log alone (the default: no admin listener, no metrics), and with both on.

Three gateways run side by side in front of one ``bench.fast_upstream`` (an S3 sink that is never the
bottleneck), identical but for their observability settings:

* ``off``: ``GATEWAY_ACCESS_LOG=off`` and no admin listener (no metrics are collected): the middleware is not
  even installed;
* ``log``: the access log (JSON lines to a file) and no admin listener, as the gateway runs by default;
* ``on``:  the access log (JSON lines, to a file in the temp dir: a pipe to this process would charge the
  bench's own reading to the gateway) and the metrics, with the admin listener on; /metrics is scraped once
  a round, as Prometheus would.

Each round runs all three, in an order rotated from round to round (an A/A run with both off measured the
gateway that runs second at ~5% more CPU per request), so load from the rest of the machine and the order
hit both alike; each figure is the median of its rounds. Throughput on a shared machine moves with everything else
running, so the bench also reports what the load leaves alone: the CPU time each gateway process spent per
request (user + system, from /proc/PID/stat), whose difference is what observing costs. The goal is a cost
under 5%.

    .venv/bin/python -m bench.observability_bench [--count 1000] [--rounds 4] [--concurrency 8]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

from bench.serving import cancelled_by_signal
from bench.support import BUCKET, CLIENT_KEY, UPSTREAM_KEY, S3Client, Target, start_bench_server, start_gateway
from common.eventloop import new_event_loop

SMALL_SIZE = 4096
WARMUP_OPS = 100
NAMES = ("off", "log", "on")
ADMIN_LINE = re.compile(r"admin listening on (http://\S+)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def ops_per_second(client: S3Client, target: Target, operation: str, count: int, concurrency: int,
                         body: bytes, round_no: int) -> float:
    """``count`` PUTs (or GETs of what the PUTs wrote) of 4 KiB over ``concurrency`` workers, in ops/s."""
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            path = f"/{BUCKET}/{target.name}-{round_no}-{i}"
            if operation == "PUT":
                await client.put(target, path, body, SMALL_SIZE)
            elif await client.get(target, path) != SMALL_SIZE:
                raise RuntimeError(f"GET {target.name}{path}: short object")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - start)


async def scrape(session: aiohttp.ClientSession, admin: str) -> int:
    """One /metrics scrape; the number of requests the gateway counted so far."""
    async with session.get(f"{admin}/metrics") as response:
        text = await response.text()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("s3gw_requests_total{")))


def admin_url(output: list[str], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := ADMIN_LINE.search("".join(output)):
            return found.group(1)
        time.sleep(0.05)
    raise RuntimeError("the gateway printed no admin listening line")


Results = dict[tuple[str, str, str], list[float]]  # (gateway, operation, "ops/s" | "cpu us") -> per round


async def measure(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> Results:
    upstream = Target("direct", start_bench_server(stack, "fast_upstream").url, UPSTREAM_KEY)
    access_log = workdir / "access.log"
    off = start_gateway(stack, workdir / "off", upstream, {"GATEWAY_ACCESS_LOG": "off"})
    log_only = start_gateway(stack, workdir / "log", upstream, {"GATEWAY_ACCESS_LOG": str(workdir / "log.log")})
    on = start_gateway(stack, workdir / "on", upstream, {"GATEWAY_ACCESS_LOG": str(access_log),
                                                         "GATEWAY_ADMIN_LISTEN": "127.0.0.1:0"})
    admin = admin_url(on.output)
    targets = (Target("off", off.url, CLIENT_KEY), Target("log", log_only.url, CLIENT_KEY),
               Target("on", on.url, CLIENT_KEY))
    pids = {"off": off.proc.pid, "log": log_only.proc.pid, "on": on.proc.pid}
    results: Results = {}
    body = os.urandom(SMALL_SIZE)
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = S3Client(session)
        await client.request(upstream, "PUT", f"/{BUCKET}", 200)
        for target in targets:
            for operation in ("PUT", "GET"):
                await ops_per_second(client, target, operation, WARMUP_OPS, 1, body, -1)
        for round_no in range(args.rounds):
            shift = round_no % len(targets)  # a later place in the round pays more: rotate
            for target in targets[shift:] + targets[:shift]:
                for operation in ("PUT", "GET"):
                    cpu = cpu_seconds(pids[target.name])
                    ops = await ops_per_second(client, target, operation, args.count, args.concurrency, body,
                                               round_no)
                    cpu = (cpu_seconds(pids[target.name]) - cpu) / args.count * 1e6
                    results.setdefault((target.name, operation, "ops/s"), []).append(ops)
                    results.setdefault((target.name, operation, "cpu us"), []).append(cpu)
                if target.name == "on":
                    counted = await scrape(session, admin)
            print(f"  round {round_no + 1}: " + "  ".join(
                f"{name} {op} {results[(name, op, 'ops/s')][-1]:5.0f} ops/s {results[(name, op, 'cpu us')][-1]:5.0f} us"
                for name in NAMES for op in ("PUT", "GET")), flush=True)
    lines = sum(1 for _ in access_log.open())
    expected = 2 * (WARMUP_OPS + args.rounds * args.count)
    print(f"the 'on' gateway counted {counted} requests in /metrics and wrote {lines} access-log lines "
          f"(its workload: {expected})", flush=True)
    if lines != expected or counted != expected:
        raise RuntimeError("the 'on' gateway did not log and count every request")
    return results


def print_report(results: Results, args: argparse.Namespace) -> None:
    print(f"\n== 4 KiB objects, concurrency {args.concurrency}, median of {args.rounds} rounds ==")
    print("| op  | gateway | ops/s |   cost | CPU us/request |   cost |")
    print("|-----|---------|-------|--------|----------------|--------|")
    for operation in ("PUT", "GET"):
        ops = {name: statistics.median(results[(name, operation, "ops/s")]) for name in NAMES}
        cpu = {name: statistics.median(results[(name, operation, "cpu us")]) for name in NAMES}
        for name in NAMES:
            print(f"| {operation:<3} | {name:<7} | {ops[name]:5.0f} | {(ops['off'] - ops[name]) / ops['off'] * 100:5.1f}% "
                  f"| {cpu[name]:14.0f} | {(cpu[name] - cpu['off']) / cpu['off'] * 100:5.1f}% |")
    print("(cost against 'off': throughput lost and gateway CPU time added; 'log' is the default (access log, no "
          "metrics), 'on' adds the metrics; goal < 5%)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="4 KiB requests per operation per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each running both gateways (in turn first)")
    parser.add_argument("--concurrency", type=int, default=8, help="client workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="observability-bench-") as workdir, ExitStack() as stack:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                results = runner.run(cancelled_by_signal(measure(args, stack, Path(workdir))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted; stopping servers", file=sys.stderr)
            return 130
    print_report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
