"""Multipart upload and download throughput through the gateway, beside a direct upstream and a
plain proxy, and the gateway's memory while it encrypts and decrypts parts in parallel.

The servers are gateway_bench's (``bench.fast_upstream``, ``bench.passthrough_proxy`` and ``gateway
serve``, separate processes on loopback). The client is what most users run: boto3's transfer
manager (``upload_file``/``download_file``, 8 MiB parts, 10 in flight) from and to a file on tmpfs
(so the disk is not what is measured). Every download is checked against the source's SHA-256, and
the source stamps each MiB with its index, so a part or range served from the wrong place is caught.
With ``--rounds N`` the three paths take turns N times and every figure is the median over the rounds;
the gateway/proxy ratio is the median of each round's own ratio (on a shared machine the rounds move
together, so a ratio within one round is steadier than one between rounds).

    .venv/bin/python -m bench.multipart_bench [--size-mib 1024] [--rounds 1]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from bench.gateway_bench import Report
from bench.serving import cancelled_by_signal
from bench.support import (BUCKET, CLIENT_KEY, MIB, REGION, UPSTREAM_KEY, RssSampler, Target, percent,
                           start_bench_server, start_gateway)
from common.eventloop import new_event_loop

PARTS_IN_FLIGHT = 10
PART_SIZE = 8 * MIB
TRANSFER = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                          max_concurrency=PARTS_IN_FLIGHT)
RATIO_GOAL = 0.90  # gateway / pass-through proxy (the scale-out issue's goal; 0.60 before it)
RSS_GOAL = 250e6   # bytes
OPERATIONS = ("upload", "download")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class MultipartReport(Report):
    """gateway_bench's report, plus the CPU time the target's server used per GiB moved: on a
    shared 2-core machine it moves less with other load than the throughput does."""

    cpu: dict[tuple[str, str], float] = field(default_factory=dict)  # (target, op) -> CPU s per GiB
    copy: tuple[float, float] = (0.0, 0.0)  # the gateway's managed copy: MiB/s, CPU s/GiB
    rounds: list[dict[tuple[str, str], tuple[float, float]]] = field(default_factory=list)  # MiB/s, CPU s/GiB

    def next_round(self) -> None:
        self.rounds.append({})

    def settle(self) -> None:
        """Each figure: the median over the rounds."""
        for key in self.rounds[0]:
            self.throughput[key] = statistics.median(r[key][0] for r in self.rounds)
            self.cpu[key] = statistics.median(r[key][1] for r in self.rounds)

    def ratios(self, operation: str) -> list[float]:
        """gateway / pass-through within each round."""
        return [r[("gateway", operation)][0] / r[("passthrough", operation)][0] for r in self.rounds]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat`` utime and stime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def s3_client(target: Target):  # noqa: ANN201 (boto3 clients have no static type)
    """One connection per part in flight, and no retries: a failed request must fail the run, not
    slow it down unseen."""
    config = Config(s3={"addressing_style": "path"}, max_pool_connections=PARTS_IN_FLIGHT,
                    retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.session.Session().client("s3", endpoint_url=target.url, region_name=REGION,
                                          aws_access_key_id=target.credentials[0],
                                          aws_secret_access_key=target.credentials[1], config=config)


def scratch_parent(size: int) -> Path:
    """tmpfs if it holds the source, the download and the upstream's copy; else the temp dir."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 3 * size + 256 * MIB:
        return shm
    return Path(tempfile.gettempdir())


def write_source(path: Path, size: int) -> str:
    """``size`` bytes (whole MiB): one random MiB, each copy stamped with its index; its SHA-256."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for index in range(size // MIB):
            chunk = index.to_bytes(8, "little") + block[8:]
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def timed(report: MultipartReport, target: Target, pid: int, operation: str, action: Callable[[], object]) -> None:
    cpu, start = cpu_seconds(pid), time.perf_counter()
    action()
    report.rounds[-1][(target.name, operation)] = (report.size / MIB / (time.perf_counter() - start),
                                                   (cpu_seconds(pid) - cpu) / (report.size / (1 << 30)))


def round_trip(report: MultipartReport, target: Target, pid: int, source: Path, source_sha: str,
               sampler: RssSampler | None) -> None:
    """Upload ``source``, download it next to it, check it, delete both copies. ``pid`` is the
    target's server process; with a sampler (the gateway's, first round only), record its peak RSS in
    each direction and make the managed copy."""
    client = s3_client(target)
    key, download = f"multipart-{target.name}", source.with_name(f"download-{target.name}")
    phases = {"upload": lambda: client.upload_file(str(source), BUCKET, key, Config=TRANSFER),
              "download": lambda: client.download_file(BUCKET, key, str(download), Config=TRANSFER)}
    for operation, action in phases.items():
        if sampler is not None:
            sampler.reset()
        timed(report, target, pid, operation, action)
        if sampler is not None:
            report.rss.append((f"peak sampled during {operation}", sampler.peak()))
    try:
        if sha256_of(download) != source_sha:
            raise RuntimeError(f"{target.name}: the downloaded file differs from the source")
        if sampler is not None:
            copy_through_gateway(report, target, pid, key, download, source_sha, sampler)
    finally:
        download.unlink(missing_ok=True)
        client.delete_object(Bucket=BUCKET, Key=key)
    figures = report.rounds[-1]
    print(f"  {target.name:<12} upload {figures[(target.name, 'upload')][0]:8.1f} MiB/s   "
          f"download {figures[(target.name, 'download')][0]:8.1f} MiB/s   sha256 ok", flush=True)


def copy_through_gateway(report: MultipartReport, target: Target, pid: int, key: str, download: Path,
                         source_sha: str, sampler: RssSampler) -> None:
    """The transfer manager's managed copy (UploadPartCopy of 8 MiB ranges, 10 in flight): each part is
    decrypted from the source and re-encrypted by the gateway. Checked by downloading the copy."""
    client, copy_key = s3_client(target), f"{key}-copy"
    sampler.reset()
    timed(report, target, pid, "copy", lambda: client.copy({"Bucket": BUCKET, "Key": key}, BUCKET, copy_key,
                                                             Config=TRANSFER))
    report.copy = report.rounds[-1].pop((target.name, "copy"))
    report.rss.append(("peak sampled during copy", sampler.peak()))
    try:
        client.download_file(BUCKET, copy_key, str(download), Config=TRANSFER)
        if sha256_of(download) != source_sha:
            raise RuntimeError("the gateway's copy differs from the source")
    finally:
        client.delete_object(Bucket=BUCKET, Key=copy_key)


async def measure(args: argparse.Namespace, stack: ExitStack, workdir: Path, scratch: Path) -> MultipartReport:
    report = MultipartReport(size=args.size_mib * MIB)
    source = scratch / "source"
    source_sha = write_source(source, report.size)
    upstream_server = start_bench_server(stack, "fast_upstream")
    direct = Target("direct", upstream_server.url, UPSTREAM_KEY)
    proxy_server = start_bench_server(stack, "passthrough_proxy", "--upstream", direct.url)
    proxy = Target("passthrough", proxy_server.url, UPSTREAM_KEY)
    gateway_server = start_gateway(stack, workdir / "gw", direct)
    gateway = Target("gateway", gateway_server.url, CLIENT_KEY)
    await asyncio.to_thread(s3_client(direct).create_bucket, Bucket=BUCKET)
    sampler = RssSampler(gateway_server.proc.pid)
    report.rss.append(("at start", sampler.status("VmRSS")))
    print(f"{args.size_mib} MiB file, {PART_SIZE // MIB} MiB parts, {PARTS_IN_FLIGHT} in flight:", flush=True)
    sampler.start()
    try:
        for number in range(args.rounds):
            if args.rounds > 1:
                print(f" round {number + 1} of {args.rounds}", flush=True)
            report.next_round()
            for target, server in ((direct, upstream_server), (proxy, proxy_server), (gateway, gateway_server)):
                watched = sampler if target is gateway and number == 0 else None
                await asyncio.to_thread(round_trip, report, target, server.proc.pid, source, source_sha, watched)
        report.settle()
        report.rss.append(("VmHWM (whole run)", sampler.status("VmHWM")))
    finally:
        await sampler.stop()
    return report


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_report(report: MultipartReport) -> None:
    t = report.throughput
    over = f", median of {len(report.rounds)} rounds" if len(report.rounds) > 1 else ""
    print(f"\n== {report.size / MIB:.0f} MiB multipart, boto3 transfer manager (MiB/s{over}) ==")
    print(f"| {'op':<8} | {'direct':>8} | {'passthrough':>11} | {'gateway':>8} | gw/passthrough | gw/direct |")
    for op in OPERATIONS:
        gw = t[("gateway", op)]
        print(f"| {op:<8} | {t[('direct', op)]:8.1f} | {t[('passthrough', op)]:11.1f} | {gw:8.1f} | "
              f"{statistics.median(report.ratios(op)):>14.1%} | {percent(gw, t[('direct', op)]):>9} |")
    print("\nCPU seconds per GiB used by the target's server (direct: the upstream; else the proxy or gateway):")
    print(f"| {'op':<8} | {'direct':>8} | {'passthrough':>11} | {'gateway':>8} |")
    for op in OPERATIONS:
        print(f"| {op:<8} | " + " | ".join(f"{report.cpu[(name, op)]:{width}.2f}" for name, width in
                                           (("direct", 8), ("passthrough", 11), ("gateway", 8))) + " |")
    print(f"\ngateway managed copy (UploadPartCopy, decrypt + re-encrypt): {report.copy[0]:.1f} MiB/s, "
          f"{report.copy[1]:.2f} CPU s/GiB")
    print("\n== gateway memory during the multipart phases ==")
    for phase, size in report.rss:
        print(f"  {phase:<34} {size / 1e6:7.1f} MB")
    print()
    for op in OPERATIONS:
        ratios = report.ratios(op)
        ratio = statistics.median(ratios)
        spread = f" (rounds: {min(ratios):.0%}-{max(ratios):.0%})" if len(ratios) > 1 else ""
        print(f"multipart gateway/proxy >= {RATIO_GOAL:.0%} ({op}): {ratio:.0%}{spread} "
              f"{_verdict(ratio >= RATIO_GOAL)}")
    peak = max(size for _, size in report.rss)
    print(f"RSS < {RSS_GOAL / 1e6:.0f} MB with {PARTS_IN_FLIGHT} parts in flight: {peak / 1e6:.1f} MB "
          f"{_verdict(peak < RSS_GOAL)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file moved (MiB)")
    parser.add_argument("--rounds", type=int, default=1, help="times the three paths take turns (medians)")
    args = parser.parse_args()
    size = args.size_mib * MIB
    with (tempfile.TemporaryDirectory(prefix="multipart-bench-") as workdir,
          tempfile.TemporaryDirectory(prefix="multipart-bench-", dir=scratch_parent(size)) as scratch):
        try:
            # The servers stop before the loop closes: closing it waits for the transfer's thread,
            # which then fails at once instead of running to the end.
            with asyncio.Runner(loop_factory=new_event_loop) as runner, ExitStack() as stack:
                report = runner.run(cancelled_by_signal(measure(args, stack, Path(workdir), Path(scratch))))
        except (asyncio.CancelledError, KeyboardInterrupt):
            print("interrupted; stopping servers", file=sys.stderr)
            return 130
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
