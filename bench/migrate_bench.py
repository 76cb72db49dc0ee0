"""`gateway migrate` throughput: objects/s for small objects, MiB/s for a large one (issue 9's figures).

Seeds plaintext objects straight into ``bench.fast_upstream`` (so the upstream is not what is
measured), then runs ``gateway migrate`` as a process on them: a dry run first (process start, key
service start, inventory HEADs), then the migration (read, encrypt, conditional write, read back and
verify, checkpoint). The migration's rate is given from its whole wall time and net of the dry run.
fast_upstream ignores If-Match on PUT; the header is still sent, so the work measured is the same.

    .venv/bin/python -m bench.migrate_bench [--objects 2000] [--size 4096] [--large-mib 256] [--concurrency 8] [--upstream fast|moto]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

from bench.support import (MIB, REPO_ROOT, UPSTREAM_KEY, S3Client, Target, gateway_config, start_bench_server,
                           start_moto_target)


async def _seed(target: Target, bucket: str, count: int, size: int, large: int) -> None:
    body = os.urandom(size)
    async with aiohttp.ClientSession() as session:
        client = S3Client(session)
        await client.request(target, "PUT", f"/{bucket}", 200)
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                await client.put(target, f"/{bucket}/small/{queue.pop():06d}", body, size)
        await asyncio.gather(*(worker() for _ in range(16)))
        if large:
            chunk = os.urandom(MIB)

            async def stream():
                for _ in range(large // MIB):
                    yield chunk
            await client.put(target, f"/{bucket}/large/object", stream(), large)


def _peak_rss_mib() -> float:
    """The largest resident set of any child waited for so far (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _timed(config: Path, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gateway", "migrate", *args, "--config", str(config)],
                          cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "GATEWAY_LOG_LEVEL": "WARNING"})
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"gateway migrate {' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--upstream", choices=("fast", "moto"), default="fast")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        upstream = (Target("fast", start_bench_server(stack, "fast_upstream").url, UPSTREAM_KEY)
                    if args.upstream == "fast" else start_moto_target(stack))
        config = gateway_config(Path(workdir), upstream.url, upstream.credentials)
        concurrency = ("--concurrency", str(args.concurrency))
        asyncio.run(_seed(upstream, "small", args.objects, args.size, 0))
        asyncio.run(_seed(upstream, "large", 0, 0, args.large_mib * MIB))
        for bucket, amount, unit in (("small", args.objects, "objects"), ("large", args.large_mib, "MiB")):
            dry = _timed(config, f"s3://{bucket}", "--dry-run")
            whole = _timed(config, f"s3://{bucket}", *concurrency)
            print(f"{bucket}: {amount} {unit} in {whole:.2f} s (dry run {dry:.2f} s): "
                  f"{amount / whole:.1f} {unit}/s overall, {amount / max(whole - dry, 1e-9):.1f} {unit}/s net "
                  f"of start-up and inventory; peak RSS of the tool so far {_peak_rss_mib():.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
