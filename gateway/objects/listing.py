"""What a listing shows of each object, exactly: its plaintext size and client ETag, or as it is stored.

A listing entry gives a stored size and an upstream ETag; whether the object is one the gateway
encrypted (whose plaintext size and ETag differ) or one it did not (a legacy object, or any object in a
pass-through bucket) is in its metadata, which a listing does not carry. So for each entry:

    size impossible for a ciphertext of its ETag's shape     -> stored as it is (no request)
    bucket known to hold no plaintext (gateway/bucketstate)  -> encrypted (no request)
    seen before (cache by bucket, key, version, ETag, size)  -> as found then (no request)
    otherwise                                                -> HEAD it (pinned to that ETag), concurrently

A listing is never wrong: an entry the gateway cannot classify (the HEAD fails) fails the listing,
except an object that is gone or forbidden by now, which is shown as the upstream listed it. The
cache holds only facts that cannot change (an object with this key, version, ETag and size), so a
repeated listing costs nothing.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from gateway.bucketstate import BucketStates
from gateway.crypto import metadata
from gateway.crypto.metadata import SingleStream
from gateway.crypto.stream import IntegrityError
from gateway.etag import client_etag
from gateway.objects.plaintext import listed_plaintext_size
from gateway.s3client import ObjectChanged, S3Client, UpstreamError
from gateway.uploads import LruCache

log = logging.getLogger("gateway.objects")
CACHE_SIZE = 100_000
CONCURRENCY = 32  # HEADs in flight for one listing page


@dataclass(frozen=True)
class ListedObject:
    """One object entry of an upstream listing."""

    key: str
    version_id: str | None
    size: int
    etag: str


@dataclass(frozen=True)
class Shown:
    """What the listing shows of an encrypted object (a legacy one is shown as stored)."""

    size: int
    etag: str


class ListingTerms:
    """Classifies listing entries, with the fewest upstream requests that make them exact."""

    def __init__(self, client: S3Client, states: BucketStates, passthrough: Callable[[str], bool],
                 cache_size: int = CACHE_SIZE) -> None:
        self._client = client
        self._states = states
        self._passthrough = passthrough
        self._cache: LruCache[tuple[str, str, str | None, str, int], Shown] = LruCache(cache_size)
        self.heads = 0  # HEADs made, for tests and benches

    async def shown(self, bucket: str, entries: Sequence[ListedObject]) -> list[Shown | None]:
        """For each entry, its plaintext terms, or None to show it as the upstream listed it."""
        results: list[Shown | None] = [None] * len(entries)
        unknown: list[int] = []
        no_plaintext: bool | None = None
        for index, entry in enumerate(entries):
            computed = _from_listing(entry)
            if computed is None:
                continue  # no ciphertext has this size: stored as it is
            cached = self._cache.get(self._key(bucket, entry))
            if cached is not None:
                results[index] = None if cached is _AS_STORED else cached
                continue
            if no_plaintext is None:
                no_plaintext = await self._holds_no_plaintext(bucket)
            if no_plaintext and entry.version_id is None:  # a version may predate the bucket's mark
                results[index] = computed
            else:
                unknown.append(index)
        if unknown:
            limit = asyncio.Semaphore(CONCURRENCY)
            found = await asyncio.gather(*(self._classify(bucket, entries[i], limit) for i in unknown))
            for index, shown in zip(unknown, found):
                results[index] = shown
        return results

    async def _holds_no_plaintext(self, bucket: str) -> bool:
        """The bucket's mark, which a pass-through bucket ignores (its objects are stored as sent)."""
        if self._passthrough(bucket):
            return False
        return await self._states.holds_no_plaintext(bucket)

    @staticmethod
    def _key(bucket: str, entry: ListedObject) -> tuple[str, str, str | None, str, int]:
        return bucket, entry.key, entry.version_id, entry.etag.strip().strip('"'), entry.size

    async def _classify(self, bucket: str, entry: ListedObject, limit: asyncio.Semaphore) -> Shown | None:
        """HEAD the entry's object (that version, that ETag) and read its gateway metadata."""
        async with limit:
            self.heads += 1
            try:
                head = await self._client.head_object(bucket, entry.key, version_id=entry.version_id,
                                                      if_match=entry.etag or None)
            except ObjectChanged:
                return None  # overwritten since the listing: this entry is gone, as it was listed
            except UpstreamError as exc:
                if exc.status in (403, 404):
                    return None  # deleted (or hidden) since the listing: shown as listed
                raise
        try:
            info = metadata.decode(head.headers)
        except (IntegrityError, ValueError) as exc:
            log.error("listing %s/%s: its gateway metadata is unreadable (%s); listed as stored", bucket,
                      entry.key, exc)
            return None
        shown = None if info is None else _from_info(entry, info)
        self._cache.put(self._key(bucket, entry), _AS_STORED if shown is None else shown)
        return shown


_AS_STORED = Shown(-1, "")  # cached: the object is shown as it is stored


def _from_listing(entry: ListedObject) -> Shown | None:
    """The entry's terms were it encrypted, from the listing alone; None when no ciphertext has its size."""
    try:
        return Shown(listed_plaintext_size(entry.size, entry.etag), client_etag(entry.etag))
    except ValueError:
        return None


def _from_info(entry: ListedObject, info: metadata.EncryptionInfo) -> Shown | None:
    if isinstance(info.layout, SingleStream):
        computed = _from_listing(entry)
        if computed is None or computed.size != info.layout.plaintext_size:
            log.error("listing: %s has gateway metadata whose size does not fit its stored size", entry.key)
            return None
        return computed
    return _from_listing(entry)
