"""``gateway migrate s3://BUCKET[/PREFIX]``: encrypt legacy (plaintext) objects in place (issue 9).

    inventory   list the prefix (the reserved ``.s3gw/`` keys skipped), HEAD each object and classify it:
                plaintext, encrypted (by mode and CMK) or unreadable metadata; --dry-run stops here.
                Unreadable objects are listed with what to do about them and make the exit status 1
    migrate     each plaintext object read through the object layer (one GET, the body streamed) and
                written back encrypted with If-Match on the ETag that GET saw, so an object changed
                meanwhile is never clobbered: the upstream answers 412 (404 if deleted) and the object
                is reported as changed, with whatever the other writer stored left intact. A 412 for an
                object whose ETag is still the one read (Ceph RGW 16 in versioned buckets) is a failure:
                that upstream cannot rewrite it safely
    verify      the stored object read back through the object layer; its plaintext SHA-256 must equal
                the one computed while copying before the object counts as done
    checkpoint  after every batch, atomically, in data_dir: each key done with the ETag of its verified
                encrypted object; --resume takes a listed key as done only while its listed ETag is still
                that one (anything else is HEADed and classified again). An object whose write landed but
                whose batch was not checkpointed is found encrypted by the inventory HEAD and counted as
                such: nothing is ever encrypted twice
    mark        a whole bucket migrated with no plaintext left (a fresh listing, every unknown object
                HEADed) is recorded as holding no plaintext; the bucket is listed once more after the mark
                is written, and an object that is not known encrypted then withdraws the mark again.
                Every reason a bucket is not marked is said in the summary and the report

Tags are read before the write; a tag change between that read and the write is not seen (tags do not
change the ETag). Object ACLs are not carried over. Memory stays constant per object: bodies are streamed,
never held.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from common.files import write_atomically
from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.checksums import ALGORITHMS, CHECKSUM_HEADER_PREFIX, new_hasher
from gateway.crypto import metadata
from gateway.crypto.checksum import FULL_OBJECT, ObjectChecksum
from gateway.bucketencryption import BucketDefaults
from gateway.bucketstate import STATE_KEY
from gateway.crypto.sse import KmsRequest, KmsSeal, SseMode
from gateway.datakeys import GATEWAY
from gateway.crypto.stream import IntegrityError
from gateway.objects.reading import ObjectReader, ObjectRef, UnencryptedReads
from gateway.objects.store import ObjectStore
from gateway.objects.writing import object_headers
from gateway.s3client import ObjectHead, UpstreamError
from gateway.s3errors import S3Error
from gateway.tools import scan
from gateway.tools.rewrap import KEPT_HEADERS
from gateway.tools.scan import Target, UsageError

PLAINTEXT = "plaintext"
UNREADABLE = "unreadable"
EARLIER = "migrated earlier"
BATCH = 16  # objects per checkpoint: a killed run redoes at most this many HEADs, never a write
PLAIN_PROGRESS_SECONDS = 5.0
MARKED_FLAG = "--plaintext-in-marked-bucket"
REFUSED_UNCHANGED = ("the upstream refused a conditional write (If-Match) although the object had not changed "
                     "(Ceph RGW 16 does so in versioned buckets), so it cannot be migrated safely on this upstream; "
                     "left as it is")
ACL_NOTE = ("object ACLs are not carried over: a migrated object has the upstream's default ACL for a new object "
            "(README, gateway migrate)")


def add_parser(sub: Any) -> None:
    """The ``migrate`` subcommand, added to the gateway's command line (gateway/cli.py)."""
    parser = sub.add_parser("migrate", help="encrypt legacy plaintext objects in place")
    parser.add_argument("target", help="s3://BUCKET[/PREFIX]")
    parser.add_argument("--config", help="TOML settings file (GATEWAY_* environment variables override it)")
    parser.add_argument("--dry-run", action="store_true", help="inventory and report only; write nothing")
    parser.add_argument("--concurrency", type=_positive, default=4, help="objects migrated at once (default 4)")
    parser.add_argument("--kms-key-id", help="CMK to encrypt with (default: the bucket's or gateway's)")
    parser.add_argument("--resume", action="store_true", help="skip the objects a previous run checkpointed")
    parser.add_argument("--report", help="JSON report file (default: in data_dir/migrate/)")
    parser.add_argument(MARKED_FLAG, action="store_true", dest="plaintext_in_marked_bucket",
                        help="in a bucket marked as holding no plaintext, take objects without gateway metadata "
                             "as legacy plaintext written straight to the upstream and migrate them (the gateway "
                             "otherwise takes them for encrypted objects whose metadata was stripped, and refuses "
                             "them); only when you know that is what they are")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _same_etag(one: str | None, other: str | None) -> bool:
    return one is not None and other is not None and one.strip().strip('"') == other.strip().strip('"')


# ------------------------------------------------------------ inventory

@dataclass
class Entry:
    key: str
    size: int
    etag: str
    klass: str
    reason: str = ""  # why an unreadable object is, and what to do about it


def classify(head: ObjectHead) -> str:
    """plaintext, ``MODE`` or ``MODE:CMK-ARN`` for an encrypted object, or unreadable metadata."""
    try:
        info = metadata.decode(head.headers)
    except (IntegrityError, ValueError):
        return UNREADABLE
    if info is None:
        return PLAINTEXT
    seal = info.seal
    if isinstance(seal, KmsSeal):
        return f"{seal.mode.value}:{seal.kms_key_arn}"
    return SseMode.CUSTOMER.value


def unreadable_reason(head: ObjectHead) -> str:
    """Why the gateway cannot read an object (its reserved metadata does not decode) and what to do."""
    names = sorted({name.lower() for name in head.headers if metadata.is_reserved(name)})
    try:
        metadata.decode(head.headers)
        problem = "it changed as it was read"
    except (IntegrityError, ValueError) as exc:
        problem = str(exc)
    return (f"its metadata uses names the gateway reserves ({', '.join(names)}) but is no gateway metadata "
            f"({problem}): the gateway refuses to serve it and migrate left it as it is. If it is legacy plaintext, "
            "copy it onto itself straight at the upstream with that metadata renamed (outside x-amz-meta-x-gw-*), "
            "then run migrate again; if the gateway encrypted it, its metadata is damaged: restore the object")


async def listed(store: ObjectStore, target: Target) -> AsyncIterator[tuple[str, int, str]]:
    """Every (key, size, ETag) under the prefix, the gateway's reserved keys left out."""
    async for page in scan.listed(store.client, target):
        for entry in page:
            yield entry.key, entry.size, entry.etag


async def inventory(store: ObjectStore, target: Target, done: Mapping[str, str | None],
                    concurrency: int) -> list[Entry]:
    """Every object classified by a HEAD, in key order. A key a previous run finished is not HEADed again
    while its listed ETag is the one checkpointed (the encrypted object verified then); with another ETag
    (rewritten since) or none known (an older checkpoint) it is HEADed like any other."""
    limit = asyncio.Semaphore(concurrency * 2)

    async def one(key: str, size: int, etag: str) -> Entry:
        if _same_etag(done.get(key), etag):
            return Entry(key, size, etag, EARLIER)
        async with limit:
            try:
                head = await store.client.head_object(target.bucket, key)
            except UpstreamError as exc:
                if exc.not_found:  # deleted since it was listed
                    return Entry(key, 0, etag, "gone")
                raise
        klass = classify(head)
        return Entry(key, head.size, head.etag, klass, unreadable_reason(head) if klass == UNREADABLE else "")
    found = [item async for item in listed(store, target)]
    return [entry for entry in await asyncio.gather(*(one(*item) for item in found)) if entry.klass != "gone"]


def tally(entries: list[Entry]) -> dict[str, dict[str, int]]:
    """Objects and bytes per class (a plaintext object's bytes are its size; an encrypted one's stored size)."""
    classes: dict[str, dict[str, int]] = {}
    for entry in entries:
        counts = classes.setdefault(entry.klass, {"objects": 0, "bytes": 0})
        counts["objects"] += 1
        counts["bytes"] += entry.size
    return dict(sorted(classes.items()))


def is_encrypted_class(klass: str) -> bool:
    return klass not in (PLAINTEXT, UNREADABLE, EARLIER)


# ------------------------------------------------------------ one object

@dataclass
class Outcome:
    key: str
    status: str  # done | changed | failed | encrypted (found encrypted when it was read) | unreadable
    size: int = 0
    reason: str = ""
    sha256: str = ""
    etag: str = ""  # the upstream's ETag of the encrypted object (done, encrypted)


def preserved_headers(head: ObjectHead, tags: list[tuple[str, str]]) -> dict[str, str]:
    """What the rewritten object must keep: content headers, user metadata, tags, storage class and the
    upstream's own at-rest encryption (rewrap's KEPT_HEADERS). Not its ACL."""
    headers = object_headers(head.headers)
    if tags:
        headers["x-amz-tagging"] = urlencode(tags, quote_via=quote)  # a space as %20, not +
    for name in KEPT_HEADERS:
        value = head.headers.get(name)
        if value and not (name == "x-amz-storage-class" and value == "STANDARD"):
            headers[name] = value
    return headers


class ChecksumMismatch(Exception):
    """The bytes read do not match the checksum the upstream keeps for them."""


def legacy_checksum(head: ObjectHead) -> ObjectChecksum | None:
    """A legacy object's own plaintext checksum, as the upstream answers it with x-amz-checksum-mode: a
    whole-object one (a composite ``value-N`` describes the upstream's parts, which the encrypted single-stream
    object will not have)."""
    if head.headers.get("x-amz-checksum-type", FULL_OBJECT).upper() != FULL_OBJECT:
        return None
    for algorithm in ALGORITHMS:
        value = head.headers.get(CHECKSUM_HEADER_PREFIX + algorithm, "")
        try:
            return ObjectChecksum(algorithm, FULL_OBJECT, base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return None


class _Hashing:
    """A plaintext stream passed through while its SHA-256 (and the checksum to carry over, if any) is taken;
    remembers a source read failure (the object changed under the pinned read), which the upload only sees
    as a broken body. The last chunk is held back until the carried checksum is verified, so bytes that do not
    match it cut the upload short: no encrypted object claims a checksum its plaintext does not have."""

    def __init__(self, chunks: AsyncIterator[bytes], carried: ObjectChecksum | None = None) -> None:
        self._chunks = chunks
        self._carried = carried
        self._check = new_hasher(carried.algorithm) if carried is not None else None
        self.digest = hashlib.sha256()
        self.failure: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        held: bytes | None = None
        try:
            async for chunk in self._chunks:
                self.digest.update(chunk)
                if self._check is not None:
                    self._check.update(chunk)
                if held is not None:
                    yield held
                held = chunk
            if self._check is not None and self._carried is not None \
                    and self._check.digest() != self._carried.digest:
                raise ChecksumMismatch(f"its bytes do not match its {self._carried.algorithm} checksum upstream")
            if held is not None:
                yield held
        except BaseException as exc:
            self.failure = exc
            raise


class _PlaintextAllowed(UnencryptedReads):
    """Unencrypted reads whatever the bucket's mark says (--plaintext-in-marked-bucket): the operator says the
    objects without gateway metadata there are legacy plaintext, not encrypted objects stripped of it."""

    def lookup_needed(self, bucket: str) -> bool:
        return False

    def check(self, bucket: str, no_plaintext: bool | None = None) -> None:
        super().check(bucket, False)


def plaintext_reader(store: ObjectStore) -> ObjectReader:
    """A reader of the store that reads objects without gateway metadata even in a marked bucket."""
    return ObjectReader(store.client, store.keys, store.manifests,
                        _PlaintextAllowed(store.config, store.bucket_states))


async def migrate_object(store: ObjectStore, bucket: str, entry: Entry, request: KmsRequest, *,
                         reader: ObjectReader | None = None) -> Outcome:
    """Encrypt one plaintext object in place, then verify it; never clobbers a newer version. The read
    is pinned to the version the inventory classified, so what is migrated is what was counted: an
    object changed since is reported (a later run migrates it), not silently taken as found. ``reader``:
    the one to read the legacy object with (default the store's)."""
    key = entry.key
    refused: UpstreamError | None = None
    try:
        async with (reader or store.reader).stat(ObjectRef(bucket, key), with_body=True,
                                                 headers={"If-Match": entry.etag,
                                                          "x-amz-checksum-mode": "ENABLED"}) as stored:
            if stored.encrypted:
                return Outcome(key, "encrypted", stored.size, etag=stored.head.etag)
            headers = preserved_headers(stored.head, await stored.tags())
            opened = await stored.open(None, requester=GATEWAY)
            carried = legacy_checksum(stored.head)
            source = _Hashing(opened.chunks(), carried)
            read_etag = stored.head.etag
            try:
                written = await store.writer.put(bucket, key, headers, request, source.__aiter__(), opened.size,
                                                 requester=GATEWAY, if_match=read_etag, checksum=carried)
            except UpstreamError as exc:
                if not (exc.precondition_failed or exc.not_found):
                    raise
                refused = exc
            except Exception:
                if _changed(source.failure):
                    return Outcome(key, "changed", opened.size, "changed while it was being read")
                if isinstance(source.failure, ChecksumMismatch):
                    return Outcome(key, "failed", opened.size, f"{source.failure}; left as it is")
                raise
            size, digest = opened.size, source.digest.hexdigest()
    except UpstreamError as exc:
        if exc.not_found or exc.precondition_failed:
            return Outcome(key, "changed", entry.size, "changed or deleted since the inventory; left as it is")
        return Outcome(key, "failed", reason=f"upstream {exc.status}: {exc}")
    except S3Error as exc:
        return Outcome(key, "failed", reason=f"{exc.code}: {exc.message}")
    if refused is not None:  # the read is over (its connection released): look at what is stored now
        return await _refused(store, bucket, key, size, read_etag, refused)
    return await verify(store, bucket, key, size, digest, written.result.etag)


async def _refused(store: ObjectStore, bucket: str, key: str, size: int, read_etag: str,
                   refusal: UpstreamError) -> Outcome:
    """The conditional write was refused (412) or the object is gone (404). Another writer's version is left
    as it stored it; a 412 for the very version read is the upstream refusing If-Match itself."""
    changed = Outcome(key, "changed", size, "changed meanwhile (the upstream refused the conditional write); "
                      "left as the other writer stored it")
    if not refusal.precondition_failed:
        return changed
    try:
        head = await store.client.head_object(bucket, key)
    except UpstreamError as exc:
        if exc.not_found:
            return changed
        return Outcome(key, "failed", size, f"the upstream refused the conditional write, and the HEAD after it "
                       f"failed (upstream {exc.status}); left as it is")
    if _same_etag(head.etag, read_etag):
        return Outcome(key, "failed", size, REFUSED_UNCHANGED)
    return changed


def _changed(failure: BaseException | None) -> bool:
    return isinstance(failure, S3Error) and "changed" in failure.message


async def verify(store: ObjectStore, bucket: str, key: str, size: int, digest: str, etag: str) -> Outcome:
    """Read the migrated object back (that version: If-Match) and compare its plaintext digest."""
    check = hashlib.sha256()
    try:
        async with store.reader.stat(ObjectRef(bucket, key), with_body=True) as stored:
            if stored.head.etag != etag:
                return Outcome(key, "changed", size, "overwritten right after it was migrated; not verified")
            opened = await stored.open(None, requester=GATEWAY)
            async for chunk in opened.chunks():
                check.update(chunk)
    except (UpstreamError, S3Error) as exc:
        return Outcome(key, "failed", size, f"verification read failed: {exc}")
    if check.hexdigest() != digest:
        return Outcome(key, "failed", size, "verification failed: the plaintext read back differs")
    return Outcome(key, "done", size, sha256=digest, etag=etag)


# ------------------------------------------------------------ checkpoint, report, progress

def state_name(target: Target) -> str:
    """A file name per bucket and prefix (the prefix hashed: it may hold any character)."""
    return f"{target.bucket}-{hashlib.sha256(target.prefix.encode()).hexdigest()[:16]}"


def write_json(path: Path, document: Any) -> None:
    write_atomically(path, json.dumps(document, indent=1, sort_keys=True).encode())


class Checkpoint:
    """The keys done so far, each with the upstream ETag of its verified encrypted object (None: not known,
    a checkpoint of an earlier version that kept keys only), and the listing position below which every
    object is finished."""

    def __init__(self, path: Path, target: Target, done: dict[str, str | None]) -> None:
        self.path = path
        self.target = target
        self.done = done
        self.position = ""

    @classmethod
    def load(cls, path: Path, target: Target, resume: bool) -> "Checkpoint":
        if not resume or not path.exists():
            return cls(path, target, {})
        try:
            document = json.loads(path.read_text())
        except ValueError as exc:
            raise UsageError(f"checkpoint {path} is unreadable ({exc}); run without --resume") from None
        if document.get("target") != str(target):
            raise UsageError(f"checkpoint {path} is for {document.get('target')}, not {target}")
        done = document.get("done", {})
        if isinstance(done, list):  # keys only: their ETags are unknown, so each is HEADed again
            return cls(path, target, {str(key): None for key in done})
        if not isinstance(done, dict):
            raise UsageError(f"checkpoint {path} is unreadable (its done keys are not a list or an object); "
                             "run without --resume")
        return cls(path, target, {str(key): None if etag is None else str(etag) for key, etag in done.items()})

    def save(self) -> None:
        write_json(self.path, {"target": str(self.target), "position": self.position,
                               "done": dict(sorted(self.done.items()))})


class Progress:
    """A tqdm bar (objects, bytes, rate, ETA) on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, objects: int, total_bytes: int, stream: TextIO) -> None:
        self.objects, self.total_bytes, self.stream = objects, total_bytes, stream
        self.count = self.bytes = 0
        self._bar = None
        self._last = time.monotonic()
        if stream.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=stream,
                             desc=f"0/{objects} objects")

    def advance(self, size: int) -> None:
        self.count += 1
        self.bytes += size
        if self._bar is not None:
            self._bar.set_description(f"{self.count}/{self.objects} objects", refresh=False)
            self._bar.update(size)
        elif time.monotonic() - self._last >= PLAIN_PROGRESS_SECONDS:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        print(f"processed {self.count}/{self.objects} objects, {self.bytes / 2**20:.1f}/"
              f"{self.total_bytes / 2**20:.1f} MiB", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.objects:
            self._line()


# ------------------------------------------------------------ the run

@dataclass
class Run:
    target: Target
    dry_run: bool
    inventory: dict[str, dict[str, int]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    earlier: int = 0
    found_encrypted: dict[str, int] = field(default_factory=lambda: {"objects": 0, "bytes": 0})
    marked_no_plaintext: bool = False  # the bucket is marked at the end of the run
    marked_before: bool = False  # it was marked when the run started (this run neither wrote nor withdrew it)
    not_marked: str = ""  # why the bucket is not marked (a whole-bucket run), or what is wrong in a marked one
    plaintext_left: bool = False  # the listing at the end found an object that is not known encrypted

    def of(self, status: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    @property
    def exit_code(self) -> int:
        return 1 if self.of("failed") or self.of("changed") or self.of("unreadable") or self.plaintext_left else 0

    def report(self) -> dict[str, Any]:
        def listing(status: str) -> list[dict[str, Any]]:
            return [{"key": o.key, "bytes": o.size, **({"reason": o.reason} if o.reason else {})}
                    for o in self.of(status)]
        counts = {status: {"objects": len(self.of(status)), "bytes": sum(o.size for o in self.of(status))}
                  for status in ("done", "changed", "failed", "unreadable")}
        found = self.of("encrypted")  # by the inventory's HEAD, or when it was read
        counts["encrypted"] = {"objects": self.found_encrypted["objects"] + len(found),
                               "bytes": self.found_encrypted["bytes"] + sum(o.size for o in found)}
        return {"target": str(self.target), "dry_run": self.dry_run, "inventory": self.inventory,
                "counts": {**counts, "migrated_earlier": self.earlier}, "done": listing("done"),
                "skipped": listing("changed"), "failed": listing("failed"), "unreadable": listing("unreadable"),
                "marked_no_plaintext": self.marked_no_plaintext, "marked_before": self.marked_before,
                "not_marked_reason": self.not_marked, "exit_code": self.exit_code}


async def migrate(store: ObjectStore, target: Target, *, dry_run: bool, concurrency: int, request: KmsRequest,
                  checkpoint: Checkpoint, say: Callable[[str], None], progress_stream: TextIO,
                  plaintext_in_marked_bucket: bool = False) -> Run:
    """Inventory, then (unless ``dry_run``) migrate, verify, checkpoint and mark the bucket."""
    run = Run(target, dry_run)
    try:
        run.marked_before = await store.bucket_states.holds_no_plaintext(target.bucket)
    except S3Error as exc:
        raise UsageError(f"bucket {target.bucket}: its state record {STATE_KEY} cannot be read ({exc.code}: "
                         f"{exc.message})") from None
    entries = await inventory(store, target, checkpoint.done, concurrency)
    run.inventory = tally(entries)
    run.earlier = sum(1 for entry in entries if entry.klass == EARLIER)
    encrypted = [entry for entry in entries if is_encrypted_class(entry.klass)]
    run.found_encrypted = {"objects": len(encrypted), "bytes": sum(entry.size for entry in encrypted)}
    run.outcomes.extend(Outcome(entry.key, "unreadable", entry.size, entry.reason)
                        for entry in entries if entry.klass == UNREADABLE)
    say(_inventory_text(target, run.inventory))
    if dry_run:
        if run.of("unreadable"):
            say("\n".join(f"  unreadable {o.key}: {o.reason}" for o in run.of("unreadable")))
        run.marked_no_plaintext = run.marked_before
        return run
    todo = [entry for entry in entries if entry.klass == PLAINTEXT]
    reader = plaintext_reader(store) if plaintext_in_marked_bucket else store.reader
    progress = Progress(len(todo), sum(entry.size for entry in todo), progress_stream)
    try:
        await _migrate_all(store, target, todo, concurrency, request, checkpoint, run, progress, reader)
    finally:
        progress.close()
    if run.marked_before and not plaintext_in_marked_bucket:
        for outcome in run.of("failed"):
            if outcome.reason.startswith("AccessDenied"):
                outcome.reason += (f"; bucket {target.bucket} is marked as holding no plaintext, where an object "
                                   "without gateway metadata looks like an encrypted one whose metadata was "
                                   f"stripped: if it is plaintext written straight to the upstream, run again with "
                                   f"{MARKED_FLAG}")
    await _mark(store, target, entries, run)
    return run


async def _mark(store: ObjectStore, target: Target, entries: list[Entry], run: Run) -> None:
    """Mark a whole bucket left with no plaintext (a mark found at the start stays as it is), then check
    the mark against one more listing; say why a bucket is not marked."""
    run.marked_no_plaintext = run.marked_before
    bucket = target.bucket
    if not target.whole_bucket:
        if not run.marked_before:
            run.not_marked = (f"only the prefix {target.prefix} was migrated; a bucket is marked only by a run over "
                              "all of it")
        return
    problems = [f"{len(run.of(status))} {name}" for status, name in
                (("changed", "skipped"), ("failed", "failed"), ("unreadable", "with unreadable metadata"))
                if run.of(status)]
    if problems:
        run.not_marked = (f"objects were left unmigrated ({', '.join(problems)}; listed above); the bucket is "
                          "marked only by a run that leaves none")
        return
    versioning = await store.client.bucket_versioning(bucket)
    if versioning is not None and (run.of("done") or not run.marked_before):
        run.not_marked = (f"bucket {bucket} has versioning ({versioning}), so the plaintext versions this migration "
                          "replaced are still stored as noncurrent versions. Find them with ListObjectVersions "
                          f"straight at the upstream (aws s3api list-object-versions --bucket {bucket}) and delete "
                          "them by version id, or let a NoncurrentVersionExpiration lifecycle rule remove them"
                          + ("" if run.marked_before else "; migrate does not mark a bucket with versioning"))
        return
    known = {entry.key: entry.etag for entry in entries if is_encrypted_class(entry.klass) or entry.klass == EARLIER}
    known.update({o.key: o.etag for o in run.outcomes if o.status in ("done", "encrypted")})
    left = await _not_known_encrypted(store, target, known)
    if left:
        run.plaintext_left = True
        again = f"run again with {MARKED_FLAG}" if run.marked_before else "run again"
        run.not_marked = (f"the final listing found {left}, written during the run (straight to the upstream, or "
                          "through a gateway that wrote it unencrypted); stop every writer that writes straight "
                          f"to the upstream and {again}")
        return
    if run.marked_before:
        return
    await store.bucket_states.record_no_plaintext(bucket)
    left = await _not_known_encrypted(store, target, known)
    if not left:
        run.marked_no_plaintext = True
        return
    run.plaintext_left = True
    try:
        await store.bucket_states.withdraw_no_plaintext(bucket)
        withdrawn = ("so the mark was withdrawn again (a gateway that read it meanwhile keeps refusing unencrypted "
                     "reads there until it restarts)")
    except S3Error as exc:
        run.marked_no_plaintext = True
        withdrawn = (f"and withdrawing the mark failed ({exc.code}: {exc.message}): delete {STATE_KEY} straight "
                     "at the upstream, then restart the gateways (README, gateway migrate)")
    run.not_marked = (f"the listing after the mark was written found {left}, written straight to the upstream "
                      f"during the run, {withdrawn}; stop every writer that writes straight to the upstream and "
                      "run again")


async def _migrate_all(store: ObjectStore, target: Target, todo: list[Entry], concurrency: int,
                       request: KmsRequest, checkpoint: Checkpoint, run: Run, progress: Progress,
                       reader: ObjectReader | None = None) -> None:
    """``concurrency`` objects at a time, a checkpoint after every BATCH objects."""
    for start in range(0, len(todo), BATCH):
        batch = todo[start:start + BATCH]
        limit = asyncio.Semaphore(concurrency)

        async def one(entry: Entry) -> Outcome:
            async with limit:
                try:
                    outcome = await migrate_object(store, target.bucket, entry, request, reader=reader)
                except Exception as exc:  # the key service refusing, a broken connection: this object only
                    outcome = Outcome(entry.key, "failed", entry.size, f"{type(exc).__name__}: {exc}")
            progress.advance(entry.size)
            return outcome
        outcomes = await asyncio.gather(*(one(entry) for entry in batch))
        run.outcomes.extend(outcomes)
        checkpoint.done.update({outcome.key: outcome.etag or None for outcome in outcomes
                                if outcome.status in ("done", "encrypted")})
        checkpoint.position = batch[-1].key
        checkpoint.save()


async def _not_known_encrypted(store: ObjectStore, target: Target, known: dict[str, str]) -> str:
    """A fresh listing: every object either listed with the ETag it is known encrypted by, or HEADed. The
    first one that is not encrypted (plaintext, unreadable metadata, or changed as we looked) is described;
    "" when there is none. The objects HEADed and found encrypted are added to ``known``."""
    async for key, _, etag in listed(store, target):
        if _same_etag(known.get(key), etag):
            continue
        try:
            head = await store.client.head_object(target.bucket, key)
        except UpstreamError as exc:
            if exc.not_found:
                continue  # deleted since the listing: nothing left to encrypt
            raise
        klass = classify(head)
        if klass == PLAINTEXT:
            return f"plaintext object {key}"
        if klass == UNREADABLE:
            return f"object {key} with unreadable metadata"
        if not _same_etag(head.etag, etag):
            return f"object {key} changing as it was checked"
        known[key] = head.etag
    return ""


def _inventory_text(target: Target, classes: Mapping[str, Mapping[str, int]]) -> str:
    lines = [f"inventory of {target}:"]
    lines += [f"  {name}: {counts['objects']} objects, {counts['bytes']} bytes" for name, counts in classes.items()]
    if not classes:
        lines.append("  no objects")
    return "\n".join(lines)


def summary(run: Run, report_path: Path) -> str:
    report = run.report()
    counts = report["counts"]
    lines = [f"migrated and verified {counts['done']['objects']} objects ({counts['done']['bytes']} bytes); "
             f"{counts['encrypted']['objects']} found already encrypted; "
             f"{counts['migrated_earlier']} migrated by an earlier run",
             f"skipped (changed meanwhile): {counts['changed']['objects']}; failed: {counts['failed']['objects']}; "
             f"unreadable: {counts['unreadable']['objects']}"]
    lines += [f"  skipped {item['key']}: {item['reason']}" for item in report["skipped"]]
    lines += [f"  failed {item['key']}: {item['reason']}" for item in report["failed"]]
    lines += [f"  unreadable {item['key']}: {item['reason']}" for item in report["unreadable"]]
    bucket = run.target.bucket
    if run.marked_before:
        lines.append(f"bucket {bucket} was marked as holding no plaintext before this run and stays marked"
                     + (f"; but {run.not_marked}" if run.not_marked else ""))
    elif run.marked_no_plaintext:
        lines.append(f"bucket {bucket} holds no plaintext now and is marked so: the gateway refuses "
                     "every unencrypted read there from now on")
    elif run.not_marked:
        lines.append(f"bucket {bucket} is not marked as holding no plaintext: {run.not_marked}")
    if counts["done"]["objects"]:
        lines.append(ACL_NOTE)
    lines.append(f"report: {report_path}")
    return "\n".join(lines)


def tool_config(config: GatewayConfig, bucket: str) -> GatewayConfig:
    """The tool reads legacy objects whatever ``allow_unencrypted_reads`` says for clients (that is its
    job); a bucket known to hold no plaintext still refuses them (stripped metadata, not plaintext),
    unless the operator says otherwise (--plaintext-in-marked-bucket)."""
    if config.bucket_policy(bucket).encryption == "passthrough":
        raise UsageError(f"bucket {bucket} is a pass-through bucket: the gateway does not encrypt it")
    return replace(config, allow_unencrypted_reads=True)


def kms_request(defaults: BucketDefaults, key_id: str | None) -> KmsRequest:
    """--kms-key-id, else the bucket's default encryption as a header-less PUT gets it (its S3 API
    configuration: SSE-S3 or SSE-KMS, its CMK and Bucket Key; else the TOML settings), else the gateway's
    default CMK. With a Bucket Key, a migration makes one KMS call per data_key_max_objects objects."""
    if key_id:
        return KmsRequest(key_id=key_id, bucket_key=defaults.bucket_key)
    mode = defaults.mode if defaults.mode is SseMode.S3 else SseMode.KMS
    return KmsRequest(mode=mode, key_id=defaults.kms_key_id or None, bucket_key=defaults.bucket_key)


def default_report_path(state_dir: Path, target: Target, dry_run: bool) -> Path:
    """A dry run's report has a name of its own: it never replaces a real run's."""
    return state_dir / (state_name(target) + (".dry-run.report.json" if dry_run else ".report.json"))


async def run_command(args: argparse.Namespace, config: GatewayConfig, target: Target) -> int:
    from gateway.tools.runtime import object_store
    if args.concurrency * 3 > config.upstream.pool_size:
        raise UsageError(f"--concurrency {args.concurrency} needs 3 upstream connections per object; "
                         f"upstream.pool_size is {config.upstream.pool_size}")
    state_dir = config.data_dir / "migrate"
    checkpoint = Checkpoint.load(state_dir / (state_name(target) + ".checkpoint.json"), target, args.resume)
    report_path = Path(args.report) if args.report else default_report_path(state_dir, target, args.dry_run)
    async with object_store(config) as store:
        await _check_bucket(store, target.bucket)
        try:
            defaults = await store.bucket_encryption.defaults(target.bucket)
        except S3Error as exc:
            raise UsageError(f"bucket {target.bucket}: its encryption configuration cannot be read ({exc.code}: "
                             f"{exc.message}); fix it with PutBucketEncryption through the gateway first") from None
        request = kms_request(defaults, args.kms_key_id)
        run = await migrate(store, target, dry_run=args.dry_run, concurrency=args.concurrency, request=request,
                            checkpoint=checkpoint, say=lambda text: print(text, flush=True),
                            progress_stream=sys.stderr,
                            plaintext_in_marked_bucket=getattr(args, "plaintext_in_marked_bucket", False))
    write_json(report_path, run.report())
    if not args.dry_run:
        print(summary(run, report_path), flush=True)
    return run.exit_code


async def _check_bucket(store: ObjectStore, bucket: str) -> None:
    """A bucket that is not there (or not ours to list) is a usage error, said before anything starts."""
    try:
        await store.client.list_objects_v2(bucket, max_keys=1)
    except UpstreamError as exc:
        reason = "does not exist" if exc.not_found else f"cannot be listed (upstream {exc.status})"
        raise UsageError(f"bucket {bucket} {reason}") from None


def main(args: argparse.Namespace) -> int:
    """The ``migrate`` subcommand: 0 all done, 1 some objects skipped, failed or unreadable (or plaintext found at
    the end of a whole-bucket run), 2 usage/config."""
    from common.eventloop import run
    from common.logsetup import configure_logging, parse_level
    from gateway.config import secrets_of
    from keyservice.embedded import ConfigError as KeyServiceConfigError
    from keyservice.store import StoreInUse
    try:
        target = Target.parse(args.target)
        config = tool_config(load_config(args.config, os.environ), target.bucket)
        configure_logging(parse_level(config.log_level), secrets_of(config))
        return run(run_command(args, config, target))
    except (UsageError, ConfigError, KeyServiceConfigError) as exc:
        print(f"gateway migrate: {exc}", file=sys.stderr)
        return 2
    except StoreInUse as exc:  # the gateway runs on this data_dir with its embedded key service
        print(f"gateway migrate: {exc}; stop the gateway while migrating", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gateway migrate: interrupted; run again with --resume to continue", file=sys.stderr)
        return 1
