"""``gateway rewrap s3://BUCKET[/PREFIX] --to-kms-key-id K``: move objects to another CMK without moving data.

An SSE-KMS (or SSE-S3) object's body is encrypted under its object key OK; only OK's seal names the
CMK (docs/FORMAT.md §1). So a rewrap opens OK with the old seal (one KMS Decrypt), seals the same OK
under a fresh data key of the target CMK (one GenerateDataKey, same encryption context), and
replaces the object's metadata upstream with a server-side copy of the object onto itself. No body
byte passes through the gateway, and the body stays valid.

* single-part objects: CopyObject onto itself with the metadata directive REPLACE;
* multipart objects: the upstream object must keep its parts (the gateway reads it part by part and
  checks the ``-k`` ETag against its manifest, which is sealed under OK and so unchanged), so it is
  copied onto itself as a multipart upload of UploadPartCopy's of the same byte ranges.

Every copy is pinned to the ETag the object was read with (x-amz-copy-source-if-match): an object
written meanwhile is skipped and reported, never overwritten with a stale seal. That holds only where the
upstream honours the header, so a run first tries it on a scratch object (``copies_are_pinned``): on an
upstream that copies anyway (Ceph RGW 16 does) a client's write racing a copy would get the old seal over
its new body, unreadable for good, so the run refuses unless told the writers are stopped
(``--writers-stopped``).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode
from uuid import uuid4

from common.files import write_atomically
from gateway.config import ConfigError, load_config
from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, Multipart
from gateway.crypto.multipart import PART_OVERHEAD
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.sse import CustomerKey, CustomerKeySeal, Seal, WrongCustomerKey
from gateway.datakeys import GATEWAY
from gateway.crypto.stream import IntegrityError
from gateway.objects.multipart import multipart_etag
from gateway.objects.store import ObjectStore
from gateway.objects.writing import object_headers
from gateway.s3client import ListEntry, ObjectChanged, ObjectHead, S3Client, UpstreamError
from gateway.reserved import RESERVED_KEY_PREFIX
from gateway.s3errors import S3Error
from gateway.tools.scan import Stored, Target, UsageError, quiet_logging, bounded, last_modified, listed, say, stat

# Headers a metadata-replacing copy must send again besides the object's own (objects/writing.py
# object_headers), or S3 resets them: storage class, the upstream's own at-rest encryption. Tags are kept
# by the copy itself (tagging directive COPY).
KEPT_HEADERS = ("x-amz-storage-class", "x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
                "x-amz-server-side-encryption-bucket-key-enabled")
PROGRESS_EVERY = 5.0  # seconds between plain progress lines
PROBE_PREFIX = RESERVED_KEY_PREFIX + "probes/"  # scratch objects of copies_are_pinned, removed at once

# Outcomes: what happened to each listed object.
REWRAPPED = "rewrapped"
ALREADY = "already-under-target"
OTHER_CMK = "other-cmk"  # --from-kms-key-id names another CMK
TOO_NEW = "newer-than-cutoff"
UNENCRYPTED = "unencrypted"
NEEDS_CUSTOMER_KEY = "needs-customer-key"
WRONG_CUSTOMER_KEY = "other-customer-key"  # --ssec-old-key is not this SSE-C object's key
CHANGED = "changed-during-rewrap"
FAILED = "failed"
SKIPPED = (NEEDS_CUSTOMER_KEY, WRONG_CUSTOMER_KEY, CHANGED, FAILED)  # outcomes that make the exit status 1


@dataclass(frozen=True)
class Options:
    target: Target
    to_key_id: str
    from_key_id: str | None = None
    older_than_days: float | None = None
    dry_run: bool = False
    resume: bool = False
    concurrency: int = 16
    report: Path | None = None
    customer_keys: tuple[CustomerKey, CustomerKey] | None = None  # SSE-C objects re-keyed from old to new
    writers_stopped: bool = False  # the operator says no client writes the target meanwhile


@dataclass
class Tally:
    """Counts per outcome, bytes rewrapped, and the objects skipped or failed (key, reason)."""

    counts: Counter[str] = field(default_factory=Counter)
    stored_bytes: int = 0
    problems: list[dict[str, str]] = field(default_factory=list)
    kms_calls: Counter[str] = field(default_factory=Counter)
    upstream_calls: Counter[str] = field(default_factory=Counter)

    def note(self, outcome: str, key: str, size: int = 0, reason: str = "") -> None:
        self.counts[outcome] += 1
        if outcome == REWRAPPED:
            self.stored_bytes += size
        if outcome in SKIPPED:
            self.problems.append({"key": key, "outcome": outcome, "reason": reason})

    @property
    def seen(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "stored_bytes": self.stored_bytes,
                "kms_calls": dict(self.kms_calls), "upstream_calls": dict(sorted(self.upstream_calls.items())),
                "problems": self.problems}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Tally":
        return cls(Counter(data["counts"]), data["stored_bytes"], list(data["problems"]),
                   Counter(data.get("kms_calls", {})), Counter(data.get("upstream_calls", {})))


class Checkpoint:
    """Where a run got to: the last key of the last listing page done, and the tally so far. Written
    atomically (a temporary file renamed over it) after each page, so a killed run resumes there; the
    objects of a page cut short are looked at again, which is harmless (a rewrapped one is then
    already under the target CMK)."""

    def __init__(self, data_dir: Path, options: Options) -> None:
        name = json.dumps([str(options.target), options.to_key_id, options.from_key_id, options.older_than_days])
        self.path = data_dir / "rewrap" / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.json"

    def load(self) -> tuple[str | None, Tally]:
        if not self.path.exists():
            return None, Tally()
        data = json.loads(self.path.read_text())
        return data["after"], Tally.from_json(data["tally"])

    def save(self, after: str, tally: Tally) -> None:
        write_atomically(self.path, json.dumps({"after": after, "tally": tally.as_json()}).encode())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Progress:
    """tqdm on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        self._last = time.monotonic()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(unit="obj", file=sys.stderr)

    def update(self, tally: Tally) -> None:
        if self._bar is not None:
            self._bar.n = tally.seen
            self._bar.set_postfix(rewrapped=tally.counts[REWRAPPED], skipped=sum(tally.counts[o] for o in SKIPPED))
            self._bar.refresh()
        elif time.monotonic() - self._last >= PROGRESS_EVERY:
            self._last = time.monotonic()
            say(f"rewrap: {tally.seen} objects looked at, {tally.counts[REWRAPPED]} rewrapped")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Rewrap:
    """One run over one target."""

    def __init__(self, store: ObjectStore, options: Options, to_arn: str, from_arn: str | None,
                 tally: Tally) -> None:
        self.store, self.client, self.options = store, store.client, options
        self.to_arn, self.from_arn = to_arn, from_arn
        self.tally = tally
        self.cutoff = (None if options.older_than_days is None
                       else datetime.now(timezone.utc) - timedelta(days=options.older_than_days))

    async def entry(self, entry: ListEntry) -> None:
        """Look at one listed object and rewrap it if it is selected; every outcome is tallied."""
        bucket = self.options.target.bucket
        modified = last_modified(entry.last_modified)
        if self.cutoff is not None and modified is not None and modified > self.cutoff:
            return self.tally.note(TOO_NEW, entry.key)
        try:
            self.tally.upstream_calls["HeadObject"] += 1
            stored = await stat(self.client, bucket, entry)
            outcome = self._selected(stored)
            if outcome is not None:
                return self.tally.note(outcome, entry.key, reason=_reason(outcome))
            if not self.options.dry_run:
                await self._rewrap(stored)
            self.tally.note(REWRAPPED, entry.key, stored.head.size)
        except ObjectChanged:
            self.tally.note(CHANGED, entry.key, reason="the object was written while it was being rewrapped")
        except (UpstreamError, S3Error, IntegrityError) as exc:
            self.tally.note(FAILED, entry.key, reason=f"{type(exc).__name__}: {exc}")

    def _selected(self, stored: Stored) -> str | None:
        """Why the object is not rewrapped (an outcome), or None when it is."""
        info = stored.info
        if info is None:
            return UNENCRYPTED
        if isinstance(info.seal, CustomerKeySeal):
            return self._customer_selected(stored.key, info.seal)
        if self.from_arn is not None and info.seal.kms_key_arn != self.from_arn:
            return OTHER_CMK
        if info.seal.kms_key_arn == self.to_arn:
            return ALREADY
        return None

    def _customer_selected(self, key: str, seal: CustomerKeySeal) -> str | None:
        """An SSE-C object is re-keyed only with both customer keys given, and when the old one is its key."""
        if self.options.customer_keys is None:
            return NEEDS_CUSTOMER_KEY
        old, new = self.options.customer_keys
        if self._fits(key, seal, new):
            return ALREADY
        return None if self._fits(key, seal, old) else WRONG_CUSTOMER_KEY

    def _fits(self, key: str, seal: CustomerKeySeal, customer_key: CustomerKey) -> bool:
        try:
            self.store.keys.customer.open(self.options.target.bucket, key, seal, customer_key)
        except WrongCustomerKey:
            return False
        return True

    async def _new_seal(self, key: str, seal: Seal) -> tuple[ObjectKey, Seal]:
        """OK and its new seal: Decrypt(old CMK) + GenerateDataKey(target CMK), or the new customer key's."""
        bucket = self.options.target.bucket
        if isinstance(seal, CustomerKeySeal):
            assert self.options.customer_keys is not None
            old, new = self.options.customer_keys
            object_key = self.store.keys.customer.open(bucket, key, seal, old)
            return object_key, self.store.keys.customer.reseal(bucket, key, object_key, new)
        kms = self.store.keys.kms
        object_key = await kms.open(bucket, key, seal, GATEWAY)
        resealed = await kms.reseal(bucket, key, object_key, seal, self.to_arn, GATEWAY)
        return object_key, resealed

    async def _rewrap(self, stored: Stored) -> None:
        """The new seal, then the metadata replaced in place."""
        bucket, info = self.options.target.bucket, stored.info
        assert info is not None
        object_key, seal = await self._new_seal(stored.key, info.seal)
        headers = replaced_headers(stored.head, EncryptionInfo(seal, info.layout))
        if isinstance(info.layout, Multipart):
            manifest = await self.store.manifests.load(bucket, info.layout.upload_tag, object_key, stored.head)
            self.tally.upstream_calls["GetObject(manifest)"] += 1
            sizes = [(part.number, part.size + PART_OVERHEAD) for part in manifest.parts]
            tags = await self.client.get_object_tagging(bucket, stored.key)  # a new upload starts untagged
            self.tally.upstream_calls["GetObjectTagging"] += 1
            if tags:
                headers["x-amz-tagging"] = urlencode(tags, quote_via=quote)
            await copy_multipart_in_place(self.client, bucket, stored.key, stored.head.etag, headers, sizes,
                                          self.tally.upstream_calls)
        else:
            await self.client.replace_metadata(bucket, stored.key, headers, if_match=stored.head.etag)
            self.tally.upstream_calls["CopyObject"] += 1


def replaced_headers(head: ObjectHead, info: EncryptionInfo) -> dict[str, str]:
    """The object's whole metadata set with its reserved headers re-encoded from ``info``: the client's
    x-amz-meta-* and the headers a replacing copy would otherwise reset."""
    kept = object_headers(head.headers)
    kept.update({name: head.headers[name] for name in KEPT_HEADERS if name in head.headers})
    return {**kept, **metadata.encode(info)}


async def copy_multipart_in_place(client: S3Client, bucket: str, key: str, etag: str, headers: dict[str, str],
                                  parts: list[tuple[int, int]], calls: Counter[str]) -> None:
    """Copy a multipart object onto itself part for part (same numbers, same byte ranges) under new
    metadata, every part pinned to ``etag``; the upload is aborted if anything fails. Same parts give
    the same ``-k`` ETag. Complete is pinned too (If-Match, S3's conditional write), so a write
    between the part copies and Complete is kept and this copy dropped."""
    upload_id = await client.create_multipart_upload(bucket, key, headers)
    calls["CreateMultipartUpload"] += 1
    try:
        copied, start = [], 0
        for number, size in parts:
            copied.append((number, await client.upload_part_copy(bucket, key, upload_id, number,
                                                                 source_range=(start, start + size - 1),
                                                                 if_match=etag)))
            calls["UploadPartCopy"] += 1
            start += size
        try:
            result = await client.complete_multipart_upload(bucket, key, upload_id, copied, if_match=etag)
        except UpstreamError as exc:
            if exc.precondition_failed:
                raise ObjectChanged(exc.status, exc.body, exc.headers) from None
            raise
        calls["CompleteMultipartUpload"] += 1
    except BaseException:
        await client.abort_multipart_upload(bucket, key, upload_id)
        raise
    # Ceph RGW 16 answers Complete with an empty ETag: the one S3 computes from the copied parts stands in.
    completed = result.etag.strip('"') or (multipart_etag([part_etag for _, part_etag in copied]) or "").strip('"')
    if completed != etag.strip('"'):
        raise IntegrityError(f"the copy's ETag {result.etag or completed} is not the object's {etag}")


class UnpinnedCopies(Exception):
    """The upstream ignores x-amz-copy-source-if-match, and the operator did not say writers are stopped."""


async def copies_are_pinned(client: S3Client, bucket: str) -> bool:
    """Whether the upstream refuses a copy whose x-amz-copy-source-if-match names another ETag than the
    source's (S3 and moto answer 412; Ceph RGW 16 copies anyway). Tried on a scratch object under the
    gateway's reserved keys, which is deleted again, every version of it the trial made included."""
    key = f"{PROBE_PREFIX}copy-condition-{uuid4().hex}"
    versions = [(await client.put_object(bucket, key, b"probe", 5, {})).version_id]
    try:
        copied = await client.replace_metadata(bucket, key, {"x-amz-meta-probe": "copied"},
                                               if_match='"00000000000000000000000000000000"')
        versions.append(copied.version_id)
        return False
    except ObjectChanged:
        return True
    finally:
        for version_id in dict.fromkeys(versions):  # None (an unversioned bucket): one plain delete
            await client.delete_object(bucket, key, version_id=version_id)


def unpinned_message(target: Target) -> str:
    return (f"the upstream ignores x-amz-copy-source-if-match (Ceph RGW 16 does), so a client writing an object "
            f"of {target} while it is rewrapped would find its write unreadable for good (its new body under "
            f"the old seal). Stop every writer to {target} (clients of the gateway and anything writing "
            f"straight to the upstream), then run again with --writers-stopped")


def _reason(outcome: str) -> str:
    return {NEEDS_CUSTOMER_KEY: "an SSE-C object: its customer key is needed to re-key it",
            WRONG_CUSTOMER_KEY: "an SSE-C object under another customer key than --ssec-old-key"}.get(outcome, "")


def customer_keys(old: Path | None, new: Path | None) -> tuple[CustomerKey, CustomerKey] | None:
    """Both SSE-C key files read, or None; one without the other is a usage error."""
    if old is None and new is None:
        return None
    if old is None or new is None:
        raise UsageError("--ssec-old-key and --ssec-new-key go together")
    return _customer_key(old), _customer_key(new)


def _customer_key(path: Path) -> CustomerKey:
    """32 raw bytes, or their base64 (as the x-amz-server-side-encryption-customer-key header has it)."""
    try:
        raw = path.read_bytes()
        return CustomerKey(raw if len(raw) == 32 else base64.b64decode(raw.strip(), validate=True))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a 32-byte customer key ({exc})") from None


async def run_rewrap(store: ObjectStore, options: Options, data_dir: Path) -> tuple[Tally, float]:
    """Rewrap the target page by page (checkpointed); the tally and the seconds it took."""
    kms = store.keys.kms
    to_arn = await kms.key_arn(options.to_key_id)
    from_arn = None if options.from_key_id is None else await kms.key_arn(options.from_key_id)
    if not (options.dry_run or options.writers_stopped) and not await copies_are_pinned(store.client,
                                                                                         options.target.bucket):
        raise UnpinnedCopies(unpinned_message(options.target))
    checkpoint = Checkpoint(data_dir, options)
    after, tally = checkpoint.load() if options.resume else (None, Tally())
    run = Rewrap(store, options, to_arn, from_arn, tally)
    progress = Progress(enabled=True)
    started = time.monotonic()
    calls = store.keys.kms.data_keys.calls
    try:
        async for page in listed(store.client, options.target, after):
            before = calls.copy()
            await bounded(page, run.entry, options.concurrency)
            tally.kms_calls.update(calls - before)  # what the key service was asked (the cache spares some)
            progress.update(tally)
            if page and not options.dry_run:
                checkpoint.save(page[-1].key, tally)
    finally:
        progress.close()
    if not options.dry_run:
        checkpoint.remove()
    return tally, time.monotonic() - started


def summary(options: Options, tally: Tally, seconds: float) -> dict[str, Any]:
    rate = tally.counts[REWRAPPED] / seconds if seconds > 0 else 0.0
    return {"target": str(options.target), "to_kms_key_id": options.to_key_id, "dry_run": options.dry_run,
            "seconds": round(seconds, 3), "rewrapped_per_second": round(rate, 1), **tally.as_json()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway rewrap", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="s3://BUCKET[/PREFIX]")
    parser.add_argument("--to-kms-key-id", required=True, help="the CMK to seal under (id, ARN or alias)")
    parser.add_argument("--from-kms-key-id", help="only objects sealed under this CMK (id, ARN or alias)")
    parser.add_argument("--older-than", type=float, metavar="DAYS", help="only objects last modified before")
    parser.add_argument("--dry-run", action="store_true", help="count what would be rewrapped; change nothing")
    parser.add_argument("--resume", action="store_true", help="go on from the checkpoint of an earlier run")
    parser.add_argument("--concurrency", type=int, default=16, help="objects at a time (default 16)")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--ssec-old-key", type=Path, metavar="FILE",
                        help="re-key SSE-C objects from this customer key (32 bytes, raw or base64) ...")
    parser.add_argument("--ssec-new-key", type=Path, metavar="FILE", help="... to this one")
    parser.add_argument("--writers-stopped", action="store_true",
                        help="no client writes the target during the run: needed where the upstream ignores "
                             "x-amz-copy-source-if-match (Ceph RGW 16)")
    parser.add_argument("--config", help="the gateway's TOML settings file")


def main(args: argparse.Namespace) -> int:
    """Exit 0 when every selected object is under the target CMK, 1 when some were skipped or
    failed, 2 for a usage or configuration error."""
    from common.eventloop import run
    from gateway.tools.runtime import object_store
    try:
        if args.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        options = Options(Target.parse(args.target), args.to_kms_key_id, args.from_kms_key_id, args.older_than,
                          args.dry_run, args.resume, args.concurrency, args.report,
                          customer_keys(args.ssec_old_key, args.ssec_new_key), args.writers_stopped)
        config = load_config(args.config, os.environ)
        quiet_logging(config)
    except (UsageError, ConfigError) as exc:
        print(f"gateway rewrap: {exc}", file=sys.stderr)
        return 2

    async def go() -> tuple[Tally, float]:
        async with object_store(config) as store:
            return await run_rewrap(store, options, config.data_dir)
    try:
        tally, seconds = run(go())
    except (S3Error, UpstreamError, ConfigError, UnpinnedCopies) as exc:
        print(f"gateway rewrap: {exc}", file=sys.stderr)
        return 2
    report = summary(options, tally, seconds)
    _print_summary(report)
    if options.report is not None:
        options.report.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(tally.counts[outcome] for outcome in SKIPPED) else 0


def _print_summary(report: dict[str, Any]) -> None:
    verb = "would rewrap" if report["dry_run"] else "rewrapped"
    counts = report["counts"]
    print(f"{report['target']}: {verb} {counts.get(REWRAPPED, 0)} objects ({report['stored_bytes']} bytes) "
          f"to {report['to_kms_key_id']} in {report['seconds']} s ({report['rewrapped_per_second']}/s)")
    for outcome, count in counts.items():
        if outcome != REWRAPPED:
            print(f"  {outcome}: {count}")
    for problem in report["problems"]:
        print(f"  {problem['outcome']}: {problem['key']}: {problem['reason']}")


if __name__ == "__main__":
    sys.exit(main(_parser().parse_args()))
