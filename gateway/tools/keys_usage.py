"""``gateway keys usage --key-id K [s3://BUCKET[/PREFIX] ...]``: what deleting CMK K would destroy.

Every SSE-KMS/SSE-S3 object's key is sealed under one data key of one CMK (docs/FORMAT.md §1), whose
ARN its metadata records; an object whose seal names K can only be read while K exists. This lists
them (count, bytes, with --list the keys) from listings and HEADs only, before a ScheduleKeyDeletion.

In a bucket whose versioning is (or was) on, every version is looked at, not only the current ones: an
older version is read by its version id as long as its seal's CMK exists, so deleting K destroys it as
surely as a current object. Those are counted apart ("older versions"; with --list, by version id).
Delete markers hold nothing and are not counted. An unversioned bucket is listed as before (ListObjectsV2)
and reported exactly as before.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway.config import ConfigError, load_config
from gateway.crypto.metadata import Multipart
from gateway.crypto.stream import IntegrityError
from gateway.objects.store import ObjectStore
from gateway.s3client import ListEntry, ObjectChanged, UpstreamError, VersionEntry
from gateway.s3errors import S3Error
from gateway.tools.scan import Target, UsageError, quiet_logging, bounded, listed, stat, versions_listed

CONCURRENCY = 16


@dataclass
class Usage:
    """Objects of one target whose seal names the CMK: their keys, stored and plaintext bytes; in a
    versioned bucket also its older (noncurrent) versions sealed under the CMK, by key and version id."""

    target: Target
    keys: list[str] = field(default_factory=list)
    plaintext_bytes: int = 0
    stored_bytes: int = 0
    unreadable: list[str] = field(default_factory=list)  # malformed metadata, or changed while looked at
    versioned: bool = False  # the bucket's versioning is (or was) on: every version was looked at
    noncurrent: list[tuple[str, str]] = field(default_factory=list)  # (key, version id)
    noncurrent_plaintext_bytes: int = 0

    def as_json(self, with_keys: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"target": str(self.target), "objects": len(self.keys),
                               "plaintext_bytes": self.plaintext_bytes, "stored_bytes": self.stored_bytes,
                               "not_examined": sorted(self.unreadable)}
        if self.versioned:
            out.update(noncurrent_versions=len(self.noncurrent),
                       noncurrent_plaintext_bytes=self.noncurrent_plaintext_bytes)
        if with_keys:
            out["keys"] = sorted(self.keys)
            if self.versioned:
                out["noncurrent"] = [{"key": key, "version_id": version_id}
                                     for key, version_id in sorted(self.noncurrent)]
        return out


async def usage_of(store: ObjectStore, key_arn: str, target: Target, *, page_size: int = 1000) -> Usage:
    """Scan ``target``: every object whose seal's CMK is ``key_arn``; in a bucket whose versioning is (or
    was) on, every version of every object (``page_size`` versions a listing page)."""
    usage = Usage(target, versioned=await store.client.bucket_versioning(target.bucket) is not None)

    async def look(entry: ListEntry) -> None:
        try:
            stored = await stat(store.client, target.bucket, entry)
        except (ObjectChanged, IntegrityError):
            usage.unreadable.append(_named(entry))
            return
        except UpstreamError as exc:
            if not (isinstance(entry, VersionEntry) and exc.not_found):
                raise
            # a version deleted since it was listed, or one the upstream cannot find by its listed id:
            # not counted, so named as not examined rather than passed over
            usage.unreadable.append(_named(entry))
            return
        info = stored.info
        if info is None or info.kms_key_arn != key_arn:
            return
        plaintext = (_listed_plaintext(entry) if isinstance(info.layout, Multipart)
                     else info.layout.plaintext_size)
        if isinstance(entry, VersionEntry) and not entry.is_latest:
            usage.noncurrent.append((entry.key, entry.version_id))
            usage.noncurrent_plaintext_bytes += plaintext
            return
        usage.keys.append(entry.key)
        usage.stored_bytes += stored.head.size
        usage.plaintext_bytes += plaintext

    pages = (versions_listed(store.client, target, page_size) if usage.versioned
             else listed(store.client, target))
    async for page in pages:
        await bounded(page, look, CONCURRENCY)
    return usage


def _named(entry: ListEntry) -> str:
    """How a not-examined entry is named: its key, and an older version's id."""
    if isinstance(entry, VersionEntry) and not entry.is_latest:
        return f"{entry.key} (version {entry.version_id})"
    return entry.key


def _listed_plaintext(entry: ListEntry) -> int:
    from gateway.objects.plaintext import listed_plaintext_size
    try:
        return listed_plaintext_size(entry.size, entry.etag)
    except ValueError:
        return 0


async def targets_of(store: ObjectStore, arguments: list[str]) -> list[Target]:
    """The targets named, or every bucket the upstream lists."""
    if arguments:
        return [Target.parse(argument) for argument in arguments]
    return [Target(bucket) for bucket in await store.client.list_buckets()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-id", required=True, help="the CMK (id, ARN or alias)")
    parser.add_argument("targets", nargs="*", metavar="s3://BUCKET[/PREFIX]",
                        help="where to look (default: every bucket)")
    parser.add_argument("--list", action="store_true", help="name every object")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--record", action="store_true",
                        help=f"note the result on the key (tag {USAGE_TAG}): the key service warns in its audit "
                             "log when the key is then scheduled for deletion")
    parser.add_argument("--config", help="the gateway's TOML settings file")


def main(args: argparse.Namespace) -> int:
    """Exit 0 after a full scan, 1 when some objects could not be examined, 2 for a usage error."""
    from common.eventloop import run
    from gateway.tools.runtime import object_store
    try:
        for argument in args.targets:
            Target.parse(argument)
        config = load_config(args.config, os.environ)
        quiet_logging(config)
    except (UsageError, ConfigError) as exc:
        print(f"gateway keys usage: {exc}", file=sys.stderr)
        return 2

    async def go() -> tuple[str, list[Usage]]:
        async with object_store(config) as store:
            key_arn = await store.keys.kms.key_arn(args.key_id)
            usages = [await usage_of(store, key_arn, target) for target in await targets_of(store, args.targets)]
            if args.record:
                # every version of a versioned bucket is looked at: only a scan of some buckets or
                # prefixes (or objects not examined, which usage_note counts) leaves anything unseen
                complete = not args.targets
                await store.keys.kms.tag_key(key_arn, {USAGE_TAG: usage_note(usages, complete)})
            return key_arn, usages
    try:
        key_arn, usages = run(go())
    except (S3Error, UpstreamError, ConfigError, IntegrityError) as exc:  # IntegrityError: a listing that never ends
        print(f"gateway keys usage: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"key_arn": key_arn, "objects": sum(len(u.keys) for u in usages),
                              "plaintext_bytes": sum(u.plaintext_bytes for u in usages)}
    if any(u.versioned for u in usages):
        report.update(noncurrent_versions=sum(len(u.noncurrent) for u in usages),
                      noncurrent_plaintext_bytes=sum(u.noncurrent_plaintext_bytes for u in usages))
    report["targets"] = [u.as_json(args.list) for u in usages]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_human(report, args.list)
    return 1 if any(u.unreadable for u in usages) else 0


USAGE_TAG = "s3gw:usage"  # read by the key service at ScheduleKeyDeletion (keyservice/management.py)


def usage_note(usages: list[Usage], complete: bool) -> str:
    """The tag value: counts, bytes, where, when (a KMS tag value holds at most 256 characters). A scan
    that could not see everything (some buckets or prefixes only, objects not examined) says "at least",
    so a zero from it never reads as "nothing needs this key".

    When a versioned bucket was scanned, its older versions are counted in with the objects and named
    apart after them (``3 objects, 9 bytes (3 of them older versions, 9 bytes)``): the key service warns
    of a deletion unless the note starts with "0 objects" (keyservice/management.py), so that must mean
    no current object and no older version either."""
    objects, size = sum(len(u.keys) for u in usages), sum(u.plaintext_bytes for u in usages)
    unexamined = sum(len(u.unreadable) for u in usages)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if any(u.versioned for u in usages):
        older, older_size = sum(len(u.noncurrent) for u in usages), sum(u.noncurrent_plaintext_bytes for u in usages)
        found = (f"{objects + older} objects, {size + older_size} bytes "
                 f"({older} of them older versions, {older_size} bytes")
        count = f"{found})" if complete and not unexamined else f"at least {found}; {unexamined} not examined)"
    else:
        count = f"{objects} objects, {size} bytes" if complete and not unexamined else (
            f"at least {objects} objects, {size} bytes ({unexamined} not examined)")
    where = ", ".join(str(u.target) for u in usages)
    note = f"{count} in {where} (gateway keys usage, {when})"
    return note if len(note) <= 256 else f"{count} (gateway keys usage, {when})"


def _print_human(report: dict[str, Any], with_keys: bool) -> None:
    older = (f" and {report['noncurrent_versions']} older versions ({report['noncurrent_plaintext_bytes']} bytes)"
             if "noncurrent_versions" in report else "")
    print(f"{report['key_arn']}: {report['objects']} objects ({report['plaintext_bytes']} bytes){older} can only be "
          f"read with this key")
    for target in report["targets"]:
        older = (f" and {target['noncurrent_versions']} older versions, {target['noncurrent_plaintext_bytes']} bytes"
                 if "noncurrent_versions" in target else "")
        print(f"  {target['target']}: {target['objects']} objects, {target['plaintext_bytes']} bytes{older}")
        for key in target.get("keys", []) if with_keys else []:
            print(f"    {key}")
        for version in target.get("noncurrent", []) if with_keys else []:
            print(f"    {version['key']} (older version {version['version_id']})")
        for key in target["not_examined"]:
            print(f"    not examined (changed or malformed metadata): {key}")
