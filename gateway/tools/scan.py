"""What the key tools (rewrap, keys usage) share: where they work, and each stored object's seal.

Both read only metadata: a listing, then one HEAD per object for its reserved headers. No body is
read, so their cost is per object, not per byte.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from common.logsetup import configure_logging
from gateway.config import GatewayConfig, secrets_of
from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo
from gateway.reserved import is_reserved_key
from gateway.s3client import ListEntry, ObjectHead, S3Client, VersionEntry

S3_SCHEME = "s3://"
T_in = TypeVar("T_in")


class UsageError(Exception):
    """A command line the tool cannot act on (exit status 2)."""


@dataclass(frozen=True)
class Target:
    """A bucket and a key prefix ("" for the whole bucket)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, value: str) -> "Target":
        """``s3://BUCKET[/PREFIX]``; anything else, or a prefix in the gateway's reserved keys, is a usage error."""
        if not value.startswith(S3_SCHEME) or not value[len(S3_SCHEME):].split("/", 1)[0]:
            raise UsageError(f"target {value!r} must be s3://BUCKET[/PREFIX]")
        bucket, _, prefix = value[len(S3_SCHEME):].partition("/")
        if is_reserved_key(prefix):
            raise UsageError(f"prefix {prefix!r} is reserved by the gateway")
        return cls(bucket, prefix)

    @property
    def whole_bucket(self) -> bool:
        return not self.prefix

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Stored:
    """One object as its HEAD describes it: ``info`` None for an object without gateway metadata."""

    key: str
    head: ObjectHead
    info: EncryptionInfo | None


async def listed(client: S3Client, target: Target, start_after: str | None = None
                 ) -> AsyncIterator[list[ListEntry]]:
    """The target's objects page by page (the gateway's own keys left out), after ``start_after``."""
    token: str | None = None
    while True:
        page = await client.list_objects_v2(target.bucket, prefix=target.prefix, continuation_token=token,
                                            start_after=None if token else start_after)
        yield [entry for entry in page.entries if not is_reserved_key(entry.key)]
        if not page.truncated or not page.next_token:
            return
        token = page.next_token


async def versions_listed(client: S3Client, target: Target, page_size: int = 1000
                          ) -> AsyncIterator[list[VersionEntry]]:
    """Every version of the target's objects (current and older, the gateway's own keys and delete markers
    left out), page by page."""
    key_marker: str | None = None
    version_marker: str | None = None
    while True:
        page = await client.list_object_versions(target.bucket, prefix=target.prefix, key_marker=key_marker,
                                                 version_id_marker=version_marker, max_keys=page_size)
        yield [entry for entry in page.versions if not is_reserved_key(entry.key)]
        if not page.truncated:
            return
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker


async def stat(client: S3Client, bucket: str, entry: ListEntry) -> Stored:
    """The object's HEAD pinned to the listed ETag (`ObjectChanged` if it changed since) and its seal;
    malformed gateway metadata raises IntegrityError. A listed version (`VersionEntry`) is HEADed by its
    version id: an older version is read as it is, not the current one."""
    version_id = entry.version_id if isinstance(entry, VersionEntry) else None
    head = await client.head_object(bucket, entry.key, version_id=version_id, if_match=entry.etag or None)
    return Stored(entry.key, head, metadata.decode(head.headers))


def last_modified(value: str | None) -> datetime | None:
    """A listing's ISO 8601 or a HEAD's HTTP date as an aware datetime; None if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


async def bounded(items: Iterable[T_in], work: Callable[[T_in], Awaitable[None]], concurrency: int) -> None:
    """``work(item)`` for every item, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T_in) -> None:
        async with gate:
            await work(item)
    await asyncio.gather(*(one(item) for item in items))


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def quiet_logging(config: GatewayConfig) -> None:
    """Warnings and errors only (a tool reports through its summary), the config's secrets redacted."""
    configure_logging(logging.WARNING, secrets_of(config))
