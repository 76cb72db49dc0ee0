"""Soak: many concurrent clients mixing every data path through one gateway for a bounded time.

The gateway runs in front of ``bench.fast_upstream`` (loopback only, both stopped at the end, also
on Ctrl-C or SIGTERM). ``--workers`` clients each own a few keys and loop over a weighted mix: PUT,
GET (whole and ranged), multipart upload, CopyObject, DELETE, slow uploads and downloads, uploads
that stop mid-body and close, and GETs that read half and close. Each client knows what its keys
must hold, so every byte read is checked: an aborted upload must leave the previous object, a
deleted key must be NoSuchKey.

It prints requests/s, answers by status and S3 error code, the wrong-bytes count, and the gateway's
RSS and open file descriptors (from /proc/PID) at start and at the end (after the clients are done
and a short settle), and exits non-zero on any wrong byte, any 5xx or any unexpected answer.

    .venv/bin/python -m bench.soak [--seconds 120] [--workers 24]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import aiohttp
from yarl import URL

from bench.serving import cancelled_by_signal
from bench.support import (BUCKET, CLIENT_KEY, MIB, UPSTREAM_KEY, S3Client, Target, start_bench_server,
                           start_gateway)
from common.eventloop import new_event_loop

KEYS_PER_WORKER = 4
SMALL_MAX = 256 * 1024
PART = 5 * MIB
SETTLE = 2.0  # seconds for aborted connections to be closed before the final sample
_CODE = re.compile(rb"<Code>([^<]*)</Code>")


class Aborted(Exception):
    """Raised inside an upload body to make the client drop the connection mid-body."""


@dataclass
class Tally:
    requests: int = 0
    answers: Counter = field(default_factory=Counter)      # "200", "404 NoSuchKey", ...
    unexpected: list[str] = field(default_factory=list)
    wrong_bytes: int = 0
    cut: int = 0  # transfers the client itself cut short on purpose

    def answer(self, status: int, body: bytes = b"") -> None:
        self.requests += 1
        code = _CODE.search(body) if status >= 300 else None
        self.answers[f"{status} {code.group(1).decode()}" if code else str(status)] += 1

    def fail(self, what: str) -> None:
        if len(self.unexpected) < 20:
            self.unexpected.append(what)
        else:
            self.unexpected[-1] = f"... and more ({what})"

    @property
    def server_errors(self) -> int:
        return sum(n for answer, n in self.answers.items() if answer.startswith("5"))


class Answer(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class SoakClient(S3Client):
    """Signed requests with any method, query and body; answers are tallied."""

    def __init__(self, session: aiohttp.ClientSession, target: Target, tally: Tally) -> None:
        super().__init__(session)
        self.target, self.tally = target, tally

    async def call(self, method: str, path: str, *, body: bytes | AsyncIterator[bytes] | None = None,
                   length: int | None = None, headers: dict[str, str] | None = None) -> Answer:
        """One request; its status, headers and whole body."""
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Length"] = str(length if length is not None else len(body))  # type: ignore[arg-type]
        signed = self.signed(self.target, method, path, sent)
        url = URL(f"{self.target.url}{path}", encoded=True)
        async with self.session.request(method, url, data=body, headers=signed) as response:
            data = await response.read()
        self.tally.answer(response.status, data)
        return Answer(response.status, response.headers.copy(), data)


def _path(key: str, query: str = "") -> str:
    return f"/{BUCKET}/{key}" + (f"?{query}" if query else "")


async def _trickle(data: bytes, piece: int, pause: float, stop_after: int | None = None) -> AsyncIterator[bytes]:
    """``data`` in pieces with pauses (a slow client); raise Aborted after ``stop_after`` bytes."""
    for offset in range(0, len(data), piece):
        if stop_after is not None and offset >= stop_after:
            raise Aborted()
        yield data[offset:offset + piece]
        await asyncio.sleep(pause)


class Worker:
    """One client: its own keys, what each must hold (None: absent), and the operation mix."""

    def __init__(self, index: int, client: SoakClient, rng: random.Random) -> None:
        self.client, self.rng, self.tally = client, rng, client.tally
        self.keys = [f"w{index}/k{i}" for i in range(KEYS_PER_WORKER)]
        self.big_key = f"w{index}/multipart"
        self.expected: dict[str, bytes | None] = {key: None for key in [*self.keys, self.big_key]}
        self.ops = [(self.put, 30), (self.get, 30), (self.ranged_get, 10), (self.copy, 6), (self.delete, 6),
                    (self.multipart, 2), (self.slow_put, 3), (self.slow_get, 3), (self.aborted_put, 5),
                    (self.aborted_get, 5)]

    async def warm_up(self) -> None:
        for key in self.keys:
            await self.put(key)
            await self.get(key)

    def body(self) -> bytes:
        return os.urandom(self.rng.randint(0, SMALL_MAX))

    async def run(self, deadline: float) -> None:
        functions, weights = zip(*self.ops)
        while time.monotonic() < deadline:
            op = self.rng.choices(functions, weights)[0]
            try:
                await op(self.rng.choice(self.keys))
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.tally.fail(f"{op.__name__}: {type(exc).__name__}: {exc}")

    def check(self, what: str, got: bytes, expected: bytes | None) -> None:
        if got != expected:
            self.tally.wrong_bytes += 1
            self.tally.fail(f"{what}: {len(got)} bytes differ from the {len(expected or b'')} expected")

    def expect(self, what: str, status: int, wanted: int) -> bool:
        if status != wanted:
            self.tally.fail(f"{what}: HTTP {status}, expected {wanted}")
        return status == wanted

    async def put(self, key: str) -> None:
        data = self.body()
        status, _, _ = await self.client.call("PUT", _path(key), body=data)
        if self.expect("PUT", status, 200):
            self.expected[key] = data

    async def verify(self, key: str, what: str) -> None:
        """GET ``key``: its exact bytes, or NoSuchKey when it must be absent."""
        status, _, data = await self.client.call("GET", _path(key))
        if self.expected[key] is None:
            self.expect(f"{what} of an absent key", status, 404)
        elif self.expect(what, status, 200):
            self.check(what, data, self.expected[key])

    async def get(self, key: str) -> None:
        await self.verify(key, "GET")

    async def ranged_get(self, key: str) -> None:
        data = self.expected[key]
        if not data:
            return await self.verify(key, "GET")
        first = self.rng.randrange(len(data))
        last = self.rng.randrange(first, len(data))
        status, _, got = await self.client.call("GET", _path(key), headers={"Range": f"bytes={first}-{last}"})
        if self.expect("ranged GET", status, 206):
            self.check("ranged GET", got, data[first:last + 1])

    async def copy(self, key: str) -> None:
        source = self.rng.choice(self.keys)
        if self.expected[source] is None or source == key:
            return await self.put(key)
        status, _, _ = await self.client.call("PUT", _path(key), headers={"x-amz-copy-source": f"/{BUCKET}/{source}"})
        if self.expect("CopyObject", status, 200):
            self.expected[key] = self.expected[source]
            await self.verify(key, "GET of a copy")

    async def delete(self, key: str) -> None:
        status, _, _ = await self.client.call("DELETE", _path(key))
        if self.expect("DELETE", status, 204):
            self.expected[key] = None
            await self.verify(key, "GET after DELETE")

    async def multipart(self, _key: str) -> None:
        """Two parts (5 MiB and a small last one), completed, then read back whole."""
        key = self.big_key
        status, _, answer = await self.client.call("POST", _path(key, "uploads"))
        if not self.expect("CreateMultipartUpload", status, 200):
            return
        upload_id = re.search(rb"<UploadId>([^<]+)</UploadId>", answer).group(1).decode()  # type: ignore[union-attr]
        parts, etags = [os.urandom(PART), self.body()], []
        for number, data in enumerate(parts, 1):
            answer = await self.client.call("PUT", _path(key, f"partNumber={number}&uploadId={upload_id}"), body=data)
            if not self.expect("UploadPart", answer.status, 200):
                return
            etags.append(answer.headers["ETag"])
        listing = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1))
        complete = f"<CompleteMultipartUpload>{listing}</CompleteMultipartUpload>".encode()
        status, _, _ = await self.client.call("POST", _path(key, f"uploadId={upload_id}"), body=complete)
        if self.expect("CompleteMultipartUpload", status, 200):
            self.expected[key] = b"".join(parts)
            await self.verify(key, "GET of a multipart object")

    async def slow_put(self, key: str) -> None:
        data = self.body()
        status, _, _ = await self.client.call("PUT", _path(key), body=_trickle(data, 16 * 1024, 0.02), length=len(data))
        if self.expect("slow PUT", status, 200):
            self.expected[key] = data

    async def slow_get(self, key: str) -> None:
        if not self.expected[key]:
            return await self.verify(key, "GET")
        signed = self.client.signed(self.client.target, "GET", _path(key), {})
        received = bytearray()
        async with self.client.session.get(URL(f"{self.client.target.url}{_path(key)}", encoded=True),
                                           headers=signed) as response:
            async for chunk in response.content.iter_chunked(16 * 1024):
                received += chunk
                await asyncio.sleep(0.02)
        self.tally.answer(response.status)
        if self.expect("slow GET", response.status, 200):
            self.check("slow GET", bytes(received), self.expected[key])

    async def aborted_put(self, key: str) -> None:
        """An upload that stops mid-body and closes: the key must keep what it held."""
        data = os.urandom(self.rng.randint(64 * 1024, SMALL_MAX))
        try:
            await self.client.call("PUT", _path(key), body=_trickle(data, 16 * 1024, 0.005, len(data) // 2),
                                   length=len(data))
            self.tally.fail("aborted PUT: answered")
        except (aiohttp.ClientError, Aborted):
            self.tally.cut += 1
        await self.verify(key, "GET after an aborted PUT")

    async def aborted_get(self, key: str) -> None:
        """A GET that reads half and closes the connection; the next GET must still be exact."""
        data = self.expected[key]
        if not data or len(data) < 2:
            return await self.verify(key, "GET")
        signed = self.client.signed(self.client.target, "GET", _path(key), {})
        async with self.client.session.get(URL(f"{self.client.target.url}{_path(key)}", encoded=True),
                                           headers=signed) as response:
            half = await response.content.readexactly(len(data) // 2)
            response.close()  # drop the connection with the rest unread
        self.tally.answer(response.status)
        self.tally.cut += 1
        self.check("half GET", half, data[:len(data) // 2])
        await self.verify(key, "GET after an aborted GET")


def proc_sample(pid: int) -> tuple[int, int]:
    """(VmRSS bytes, open file descriptors) of a process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def soak(args: argparse.Namespace, stack: ExitStack, workdir: Path) -> tuple[Tally, dict[str, object]]:
    upstream_server = start_bench_server(stack, "fast_upstream")
    upstream = Target("direct", upstream_server.url, UPSTREAM_KEY)
    gateway_server = start_gateway(stack, workdir / "gw", upstream)
    gateway = Target("gateway", gateway_server.url, CLIENT_KEY)
    pid = gateway_server.proc.pid
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=args.workers * 2)
    timeout = aiohttp.ClientTimeout(total=120, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        await S3Client(session).request(upstream, "PUT", f"/{BUCKET}", 200)
        rng = random.Random(args.seed)
        workers = [Worker(i, SoakClient(session, gateway, tally), random.Random(rng.random()))
                   for i in range(args.workers)]
        # Warm-up, all clients at once: every key written and read once, so start-up costs (connection
        # pools at working size, lazily built state) are not counted as growth.
        await asyncio.gather(*(w.warm_up() for w in workers))
        await asyncio.sleep(SETTLE)
        start_sample = proc_sample(pid)
        started = time.monotonic()
        samples: list[tuple[int, int]] = []
        sampler = asyncio.create_task(_sample_every(pid, args.seconds / 10, samples))
        await asyncio.gather(*(w.run(started + args.seconds) for w in workers))
        elapsed = time.monotonic() - started
        sampler.cancel()
        await asyncio.sleep(SETTLE)  # inside the session, so both samples count its idle connections
        end_sample = proc_sample(pid)
    figures = {"seconds": elapsed, "start": start_sample, "end": end_sample, "samples": samples,
               "log": [line for line in gateway_server.output if "Traceback" in line or " ERROR " in line]}
    return tally, figures


async def _sample_every(pid: int, interval: float, samples: list[tuple[int, int]]) -> None:
    """(RSS, fds) of the gateway every ``interval`` seconds while the clients run: the trend."""
    while True:
        await asyncio.sleep(interval)
        samples.append(proc_sample(pid))


def report(tally: Tally, figures: dict) -> int:
    (rss0, fd0), (rss1, fd1) = figures["start"], figures["end"]
    seconds = figures["seconds"]
    print(f"requests:      {tally.requests} in {seconds:.1f} s = {tally.requests / seconds:.0f}/s")
    print("answers:       " + ", ".join(f"{answer}: {n}" for answer, n in sorted(tally.answers.items())))
    print(f"cut on purpose: {tally.cut}")
    print(f"wrong bytes:   {tally.wrong_bytes}")
    print(f"5xx answers:   {tally.server_errors}")
    print(f"unexpected:    {len(tally.unexpected)}" + "".join(f"\n  {what}" for what in tally.unexpected))
    print(f"gateway RSS:   {rss0 / 1e6:.1f} MB at start, {rss1 / 1e6:.1f} MB at end ({(rss1 - rss0) / 1e6:+.1f} MB)")
    print(f"gateway fds:   {fd0} at start, {fd1} at end ({fd1 - fd0:+d})")
    print("under load:    RSS MB " + " ".join(f"{rss / 1e6:.0f}" for rss, _ in figures["samples"])
          + " | fds " + " ".join(str(fds) for _, fds in figures["samples"]))
    shown = "".join(f"\n  {line.rstrip()}" for line in figures["log"][:10])
    print(f"gateway log errors: {len(figures['log'])}{shown}")
    ok = not (tally.wrong_bytes or tally.server_errors or tally.unexpected or figures["log"])
    print("result:        " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the clients run (default 120)")
    parser.add_argument("--workers", type=int, default=24, help="concurrent clients (default 24)")
    parser.add_argument("--seed", type=int, default=8, help="seed of the operation mix")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-soak-") as workdir, ExitStack() as stack:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                tally, figures = runner.run(cancelled_by_signal(soak(args, stack, Path(workdir))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted; stopping servers", file=sys.stderr)
            return 130
    return report(tally, figures)


if __name__ == "__main__":
    sys.exit(main())
