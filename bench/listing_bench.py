"""What an exact listing costs: a 1,000-entry page, direct vs through the gateway, side by side.

Listings through the gateway are exact for every object (gateway/objects/listing.py). In a bucket
known to hold no plaintext (made through the gateway) every entry is shown from the listing alone; in a
mixed bucket (legacy plaintext written straight upstream, beside encrypted objects) each entry whose
stored size could be a ciphertext's is looked up once (a HEAD, 32 at a time) and cached. This bench
lists one page of each kind through ``bench.fast_upstream`` and the gateway in front of it:

* direct: the upstream's own ListObjectsV2;
* gateway, bucket holding no plaintext: no lookups;
* gateway, mixed bucket, first listing (cold: one HEAD per entry) and repeated (warm: cached).

    .venv/bin/python -m bench.listing_bench [--entries 1000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

from bench.serving import cancelled_by_signal
from bench.support import CLIENT_KEY, UPSTREAM_KEY, S3Client, Target, start_bench_server, start_gateway
from common.eventloop import new_event_loop

BODY = b"x" * 4096


async def _fill(client: S3Client, target: Target, bucket: str, count: int, prefix: str) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            await client.put(target, f"/{bucket}/{prefix}{index:06d}", BODY, len(BODY))
    await asyncio.gather(*(worker() for _ in range(16)))


async def _list_once(client: S3Client, target: Target, bucket: str, entries: int) -> float:
    started = time.perf_counter()
    await client.request(target, "GET", f"/{bucket}?list-type=2&max-keys={entries}", 200)
    return time.perf_counter() - started


async def measure(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> list[tuple[str, float, float]]:
    upstream = Target("direct", start_bench_server(stack, "fast_upstream").url, UPSTREAM_KEY)
    gateway = Target("gateway", start_gateway(stack, workdir / "gw", upstream).url, CLIENT_KEY)
    half = args.entries // 2
    rows: list[tuple[str, float, float]] = []
    async with aiohttp.ClientSession() as session:
        client = S3Client(session)
        await client.request(gateway, "PUT", "/encrypted", 200)  # through the gateway: no plaintext
        await _fill(client, gateway, "encrypted", args.entries, "k")
        await client.request(upstream, "PUT", "/mixed", 200)  # made upstream: may hold plaintext
        await _fill(client, upstream, "mixed", half, "legacy-")
        await _fill(client, gateway, "mixed", args.entries - half, "new-")
        direct = [await _list_once(client, upstream, "mixed", args.entries) for _ in range(args.repeats)]
        rows.append(("direct (upstream's own listing)", statistics.median(direct), min(direct)))
        known = [await _list_once(client, gateway, "encrypted", args.entries) for _ in range(args.repeats)]
        rows.append(("gateway, bucket holding no plaintext", statistics.median(known), min(known)))
        cold = await _list_once(client, gateway, "mixed", args.entries)
        rows.append((f"gateway, mixed bucket, first listing ({args.entries} HEADs)", cold, cold))
        warm = [await _list_once(client, gateway, "mixed", args.entries) for _ in range(args.repeats)]
        rows.append(("gateway, mixed bucket, repeated (cached)", statistics.median(warm), min(warm)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1000, help="objects per bucket, listed as one page")
    parser.add_argument("--repeats", type=int, default=5, help="listings per warm measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="listing-bench-") as workdir, ExitStack() as stack:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                rows = runner.run(cancelled_by_signal(measure(args, stack, Path(workdir))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted; stopping servers", file=sys.stderr)
            return 130
    print(f"\n== one ListObjectsV2 page of {args.entries} entries (ms) ==")
    print(f"| {'listing':55} | {'median':>8} | {'min':>8} |")
    for name, median, least in rows:
        print(f"| {name:55} | {median * 1000:8.1f} | {least * 1000:8.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
