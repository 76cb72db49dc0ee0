"""Key service throughput: GenerateDataKey and Decrypt per second, in-process and over HTTP.

In-process calls go through ``KmsApi.call`` (quota, service, audit) on one event loop. Over HTTP
a real ``keyservice serve`` process on loopback is driven by many concurrent keep-alive connections;
every request is SigV4-signed afresh (reusing a signed request would measure a replay, not a client) by
``common.sigv4_signing`` (botocore's signing byte for byte, at a fifth of its CPU) and sent by
``bench.http_load`` (about 50 µs of client CPU per call, signing included, where aiohttp's client took
150): on a small machine the client shares the cores with the server, and what it takes the server
cannot have. Quotas are raised so nothing throttles.

    .venv/bin/python -m bench.kms_bench [--seconds 3] [--concurrency 64] [--client-processes 1]
                                        [--in-process-only] [--in-process-workers 1]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.http_load import HttpConnection
from bench.support import REPO_ROOT, start_server, tree_cpu_seconds
from common.eventloop import run
from common.sigv4_signing import SigV4Signer
from keyservice.config import Credential, KeyServiceConfig, build_api
from keyservice.service import CallContext

ACCOUNT = "111122223333"
REGION = "us-east-1"
CREDS = ("AKIABENCH00000000001", "bench-secret")
UNLIMITED = {"symmetric": 1e9, "CreateKey": 1e9}
ROOT_KEY = base64.b64encode(bytes(32)).decode()


HEADER = "| mode       | operation       |      ops/s |  p50 ms  |  p99 ms  | server CPU us/op | client CPU us/op |"


@dataclass
class Result:
    mode: str
    operation: str
    count: int
    seconds: float
    latencies: list[float]
    server_cpu: float | None = None  # CPU seconds the server process used (HTTP runs)
    client_cpu: float | None = None  # CPU seconds the client processes used (HTTP runs)

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        cpu = [f"{seconds / self.count * 1e6:>8.0f}" if seconds is not None else f"{'-':>8}"
               for seconds in (self.server_cpu, self.client_cpu)]
        return (f"| {self.mode:<10} | {self.operation:<15} | {self.count / self.seconds:>10,.0f} "
                f"| {p50:>8.3f} | {p99:>8.3f} | {cpu[0]} | {cpu[1]} |")


async def run_for(seconds: float, workers: int, one_call: Callable[[], Awaitable[None]],
                  mode: str, operation: str) -> Result:
    """Call ``one_call`` from ``workers`` concurrent tasks for ``seconds``; time each call."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await one_call()
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Result(mode, operation, len(latencies), time.perf_counter() - started, latencies)


def bench_config(data_dir: Path) -> KeyServiceConfig:
    return KeyServiceConfig(data_dir=data_dir, root_key=ROOT_KEY, account_id=ACCOUNT, region=REGION,
                            quotas=dict(UNLIMITED),
                            credentials=(Credential(*CREDS, f"arn:aws:iam::{ACCOUNT}:root"),))


async def in_process(data_dir: Path, seconds: float, workers: int = 1) -> list[Result]:
    """``workers`` concurrent callers on one loop (1: each call waits for the previous one)."""
    api = build_api(bench_config(data_dir))
    ctx = CallContext(principal_arn=f"arn:aws:iam::{ACCOUNT}:root", account_id=ACCOUNT,
                      request_id="bench", access_key=CREDS[0], source="bench")
    try:
        key_id = (await api.call("CreateKey", {}, ctx))["KeyMetadata"]["KeyId"]
        gdk = {"KeyId": key_id, "KeySpec": "AES_256"}
        blob = (await api.call("GenerateDataKey", gdk, ctx))["CiphertextBlob"]

        async def generate() -> None:
            await api.call("GenerateDataKey", gdk, ctx)

        async def decrypt() -> None:
            await api.call("Decrypt", {"CiphertextBlob": blob}, ctx)

        return [await run_for(seconds, workers, generate, "in-process", "GenerateDataKey"),
                await run_for(seconds, workers, decrypt, "in-process", "Decrypt")]
    finally:
        await api.close()


class SignedClient:
    """Posts KMS JSON calls over one keep-alive connection (``bench.http_load``), each signed afresh."""

    def __init__(self, connection: HttpConnection, host: str) -> None:
        self.connection = connection
        self.host = host
        self.signer = SigV4Signer(*CREDS, REGION, "kms")

    @classmethod
    async def open(cls, url: str) -> "SignedClient":
        host = url.split("//", 1)[1].rstrip("/")
        address, _, port = host.rpartition(":")
        return cls(await HttpConnection.open(address, int(port)), host)

    async def call(self, operation: str, params: dict) -> dict:
        body = json.dumps(params).encode()
        headers = self.signer.sign_parts("POST", self.host, "/", "", {
            "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{operation}"},
            hashlib.sha256(body).hexdigest())
        answer = await self.connection.request("POST", "/", self.host, headers, body)
        payload = json.loads(answer.body)
        if answer.status != 200:
            raise RuntimeError(f"{operation}: {answer.status} {payload}")
        return payload


def http_client_process(url: str, operation: str, params: dict, seconds: float,
                        connections: int) -> tuple[list[float], float, float]:
    """One client process (signing is CPU work, so several processes keep the server busy), with
    ``connections`` keep-alive connections, each one call at a time."""

    async def drive() -> tuple[list[float], float, float]:
        cpu_before = time.process_time()
        idle = [await SignedClient.open(url) for _ in range(connections)]

        async def one_call() -> None:
            client = idle.pop()
            try:
                await client.call(operation, params)
            finally:
                idle.append(client)
        try:
            result = await run_for(seconds, connections, one_call, "http", operation)
        finally:
            for client in idle:
                client.connection.close()
        return result.latencies, result.seconds, time.process_time() - cpu_before

    return run(drive())


async def prepare_http(url: str) -> tuple[dict, dict]:
    """Create a key over HTTP; the GenerateDataKey and Decrypt parameters to replay-sign."""
    client = await SignedClient.open(url)
    try:
        key_id = (await client.call("CreateKey", {}))["KeyMetadata"]["KeyId"]
        gdk = {"KeyId": key_id, "KeySpec": "AES_256"}
        blob = (await client.call("GenerateDataKey", gdk))["CiphertextBlob"]
        return gdk, {"CiphertextBlob": blob}
    finally:
        client.connection.close()


def over_http(data_dir: Path, seconds: float, concurrency: int, processes: int, workers: int = 1,
              store_url: str | None = None, mode: str = "http") -> list[Result]:
    """GenerateDataKey and Decrypt against ``keyservice serve --workers WORKERS`` (SQLite in ``data_dir``,
    or PostgreSQL at ``store_url``); server CPU counts every worker."""
    config = data_dir / "bench.toml"
    quota_lines = "\n".join(f"{k} = {v:.0f}" for k, v in UNLIMITED.items())
    config.write_text(f'[keyservice]\naccount_id = "{ACCOUNT}"\n\n[[keyservice.credentials]]\n'
                      f'access_key = "{CREDS[0]}"\nsecret_key = "{CREDS[1]}"\n\n'
                      f"[keyservice.quotas]\n{quota_lines}\n")
    server = start_server([sys.executable, "-m", "keyservice", "serve", "--config", str(config),
                           "--listen", "127.0.0.1:0"],
                          {"KEYSERVICE_DATA_DIR": str(data_dir / f"http-{mode}"), "KEYSERVICE_ROOT_KEY": ROOT_KEY,
                           "KEYSERVICE_WORKERS": str(workers),
                           **({"KEYSERVICE_STORE_URL": store_url} if store_url else {})},
                          cwd=REPO_ROOT)
    try:
        gdk, decrypt = run(prepare_http(server.url))
        if workers > 1:
            time.sleep(2.0)  # the key, made by one worker, known to the others (README: "Workers")
        per_process = max(1, concurrency // processes)
        results = []
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            for operation, params in (("GenerateDataKey", gdk), ("Decrypt", decrypt)):
                cpu_before = tree_cpu_seconds(server.proc.pid)
                runs = list(pool.map(http_client_process, *zip(*[(server.url, operation, params, seconds,
                                                                    per_process)] * processes)))
                latencies = [x for run, _, _ in runs for x in run]
                results.append(Result(mode, operation, len(latencies),
                                      max(elapsed for _, elapsed, _ in runs), latencies,
                                      tree_cpu_seconds(server.proc.pid) - cpu_before,
                                      sum(cpu for _, _, cpu in runs)))
        return results
    finally:
        server.stop()


def measure(args: argparse.Namespace) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="kms-bench-") as tmp:
        results = run(in_process(Path(tmp) / "inproc", args.seconds, args.in_process_workers))
        if not args.in_process_only:
            results += over_http(Path(tmp), args.seconds, args.concurrency, args.client_processes)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--in-process-workers", type=int, default=1,
                        help="concurrent in-process callers (group commit shows with more than one)")
    args = parser.parse_args()
    results = measure(args)
    print(HEADER)
    print("|------------|-----------------|-----------:|---------:|---------:|---------:|---------:|")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
