"""`gateway rewrap` throughput: objects/s moved from one CMK to another, in process.

    .venv/bin/python -m bench.rewrap_bench [--objects 300] [--concurrency 16] [--upstream fast|moto]

The upstream is ``bench.fast_upstream`` (its own process) or moto (no IAM). The key service is the
embedded one, in this process. Objects are 4 KiB single-part objects; the size
does not matter (no body is read or written by the gateway), only the count of requests per object:
one HEAD, one CopyObject, one Decrypt and one GenerateDataKey.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

from bench.support import UPSTREAM_KEY, Target as BenchTarget, start_bench_server, start_moto_target
from gateway.config import GatewayConfig, UpstreamConfig
from gateway.crypto.sse import KmsRequest
from gateway.tools.rewrap import REWRAPPED, Options, run_rewrap
from gateway.tools.runtime import object_store
from gateway.tools.scan import Target


async def _one(data: bytes):
    yield data


async def bench(upstream: str, url: str, key: tuple[str, str], objects: int, concurrency: int,
                workdir: Path) -> None:
    config = GatewayConfig(data_dir=workdir, upstream=UpstreamConfig(url=url, access_key=key[0], secret_key=key[1]))
    bucket = f"rewrap-bench-{uuid.uuid4().hex[:8]}"
    async with object_store(config) as store:
        await store.client.upstream.request("PUT", f"/{bucket}", [], {})
        target_arn = await store.keys.kms._provider._keys.ensure_alias_key("alias/rewrap-bench", "bench")  # type: ignore[attr-defined]
        body = os.urandom(4096)
        gate = asyncio.Semaphore(concurrency)

        async def put(number: int) -> None:
            async with gate:
                await store.writer.put(bucket, f"obj/{number:06d}", {}, KmsRequest(), _one(body), len(body))
        await asyncio.gather(*(put(n) for n in range(objects)))
        started = time.monotonic()
        tally, seconds = await run_rewrap(store, Options(Target(bucket), target_arn, concurrency=concurrency), workdir)
        assert tally.counts[REWRAPPED] == objects, tally.counts
        print(f"rewrap {objects} x 4 KiB objects against {upstream}, concurrency {concurrency}: "
              f"{objects / seconds:.1f} objects/s ({time.monotonic() - started:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--upstream", choices=("fast", "moto"), default="fast")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as workdir:
        target = (start_moto_target(stack) if args.upstream == "moto"
                  else BenchTarget("fast", start_bench_server(stack, "fast_upstream").url, UPSTREAM_KEY))
        asyncio.run(bench(args.upstream, target.url, target.credentials, args.objects, args.concurrency,
                          Path(workdir)))


if __name__ == "__main__":
    main()
