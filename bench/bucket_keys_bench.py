"""KMS calls and 4 KiB PUT/GET ops/s with and without S3 Bucket Keys and the data-key cache.

Three gateways in front of ``bench.fast_upstream`` (an S3 sink that is never the bottleneck), each with its
embedded key service, side by side with the upstream reached directly:

* ``no cache``: ``GATEWAY_KMS_DATA_KEY_MAX_AGE=0``, the behaviour before issue 10 (one GenerateDataKey per
  PUT, one Decrypt per GET);
* ``cache``: the default data-key cache (a Decrypt's answer reused by the same principal), PUTs without a
  Bucket Key;
* ``bucket key``: the default cache, PUTs with ``x-amz-server-side-encryption-bucket-key-enabled: true``.

KMS calls are counted from each gateway's audit log (every call the key service answers is one record).

    .venv/bin/python -m bench.bucket_keys_bench [--count 1000] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.gateway_bench import LatencyResult, run_ops
from bench.support import BUCKET, CLIENT_KEY, UPSTREAM_KEY, S3Client, Target, start_bench_server, start_gateway
from common.eventloop import new_event_loop

SMALL_SIZE = 4096
BUCKET_KEY_HEADERS = {"x-amz-server-side-encryption": "aws:kms",
                      "x-amz-server-side-encryption-bucket-key-enabled": "true"}


@dataclass
class Variant:
    name: str
    target: Target
    audit_log: Path | None
    put_headers: dict[str, str]


def kms_calls(audit_log: Path | None) -> Counter[str]:
    if audit_log is None or not audit_log.exists():
        return Counter()
    return Counter(json.loads(line)["operation"] for line in audit_log.read_text().splitlines() if line.strip())


async def measure(variant: Variant, client: S3Client, count: int, concurrency: int) -> list[tuple]:
    body = os.urandom(SMALL_SIZE)
    rows = []
    for workers in (1, concurrency):
        prefix = f"/{BUCKET}/{variant.name.replace(' ', '-')}-c{workers}-"

        def put(i: int, prefix: str = prefix):
            return client.put(variant.target, f"{prefix}{i}", body, SMALL_SIZE, variant.put_headers)

        async def get(i: int, prefix: str = prefix) -> None:
            if await client.get(variant.target, f"{prefix}{i}") != SMALL_SIZE:
                raise RuntimeError("short object")

        for operation, op in (("PUT", put), ("GET", get)):
            before = kms_calls(variant.audit_log)
            result: LatencyResult = await run_ops(variant.target, operation, op, count, workers)
            made = kms_calls(variant.audit_log) - before
            calls = made["GenerateDataKey"] + made["Decrypt"]
            rows.append((variant.name, operation, workers, result.ops, result.p50, calls * 1000 / count))
            print(f"  {variant.name:<11} {operation} c={workers:<3} {result.ops:8.0f} ops/s  p50 {result.p50:6.2f} ms  "
                  f"KMS calls per 1,000: {calls * 1000 / count:7.1f}", flush=True)
    return rows


async def run(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> None:
    upstream_server = start_bench_server(stack, "fast_upstream")
    upstream = Target("direct", upstream_server.url, UPSTREAM_KEY)
    variants = [Variant("direct", upstream, None, {})]
    for name, env, headers in (("no cache", {"GATEWAY_KMS_DATA_KEY_MAX_AGE": "0"}, {}),
                               ("cache", {}, {}),
                               ("bucket key", {}, BUCKET_KEY_HEADERS)):
        directory = workdir / name.replace(" ", "-")
        server = start_gateway(stack, directory, upstream, env=env)
        variants.append(Variant(name, Target(name, server.url, CLIENT_KEY), directory / "data" / "keyservice" /
                                "audit.log", headers))
    rows = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        client = S3Client(session)
        await client.request(upstream, "PUT", f"/{BUCKET}", 200)
        for variant in variants:
            await run_ops(variant.target, "warmup", lambda i, v=variant: client.put(
                v.target, f"/{BUCKET}/warm-{i}", b"w", 1, v.put_headers), 20, 1)
            rows += await measure(variant, client, args.count, args.concurrency)
    print(f"\n4 KiB objects, {args.count} per row; KMS calls = GenerateDataKey + Decrypt answered by the key service\n")
    print("| path | op | concurrency | ops/s | p50 ms | KMS calls per 1,000 |")
    print("|---|---|---:|---:|---:|---:|")
    for name, operation, workers, ops, p50, calls in rows:
        shown = "-" if name == "direct" else f"{calls:.1f}"
        print(f"| {name} | {operation} | {workers} | {ops:,.0f} | {p50:.2f} | {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="objects per row")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    loop = new_event_loop()
    with tempfile.TemporaryDirectory(prefix="bucket-keys-bench-") as tmp, ExitStack() as stack:
        loop.run_until_complete(run(args, stack, Path(tmp)))
    loop.close()


if __name__ == "__main__":
    main()
