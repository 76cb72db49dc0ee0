"""Which UploadId the gateway issued for each upstream multipart upload, for ListMultipartUploads.

An encrypting upload's UploadId carries its encryption metadata (gateway/uploads.py), which the upstream
keeps with the upload but never shows again before Complete: ListMultipartUploads lists only the
upstream's own ids, which the gateway must refuse for part data (it could not encrypt under them). So
at CreateMultipartUpload the issued id is written to a small reserved object named after the upstream
id, and a listing maps each upstream id back to it: a client can find its uploads and resume them.

The record holds nothing secret (the id is what the client already holds, authenticated by its MAC when
used); a record that is missing (an upload made before this version, or its write failed) leaves the
upstream's id in the listing, which still aborts the upload. Records are deleted when the upload is
completed or aborted through the gateway; one left by an upload that expired upstream is a small orphan
under ``.s3gw/`` (hidden, removed by DeleteBucket).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable

import aiohttp

from gateway.reserved import RESERVED_KEY_PREFIX
from gateway.s3client import BodyTooLarge, S3Client, UpstreamError
from gateway.uploads import LruCache

log = logging.getLogger("gateway.uploads")
RECORD_PREFIX = RESERVED_KEY_PREFIX + "uploads/"
_MAX_RECORD = 16 * 1024
_CONCURRENT_READS = 32


def record_key(upstream_id: str) -> str:
    """The record's key: a digest of the upstream id (any characters an upstream uses stay out of the key)."""
    return RECORD_PREFIX + hashlib.sha256(upstream_id.encode()).hexdigest()


class UploadRecords:
    """The issued ids of uploads in progress, stored upstream and cached (an id never changes once issued)."""

    def __init__(self, client: S3Client, cache_size: int = 8192) -> None:
        self._client = client
        self._cache: LruCache[tuple[str, str], str] = LruCache(cache_size)

    async def record(self, bucket: str, upstream_id: str, client_id: str) -> None:
        """Best effort: a failure only leaves the upstream's id in listings (logged)."""
        body = client_id.encode()
        try:
            await self._client.put_object(bucket, record_key(upstream_id), body, len(body),
                                          {"content-type": "text/plain"})
        except (UpstreamError, aiohttp.ClientError) as exc:
            log.warning("bucket %s: the record of upload %s could not be written (%s); ListMultipartUploads "
                        "will show its upstream id", bucket, upstream_id, exc)
            return
        self._cache.put((bucket, upstream_id), client_id)

    async def issued(self, bucket: str, upstream_ids: Iterable[str]) -> dict[str, str]:
        """The issued id of each upstream id that has a record (read ``_CONCURRENT_READS`` at a time)."""
        found: dict[str, str] = {}
        missing = []
        for upstream_id in upstream_ids:
            cached = self._cache.get((bucket, upstream_id))
            if cached is not None:
                found[upstream_id] = cached
            else:
                missing.append(upstream_id)
        gate = asyncio.Semaphore(_CONCURRENT_READS)

        async def read(upstream_id: str) -> None:
            async with gate:
                try:
                    _, body = await self._client.get_small(bucket, record_key(upstream_id), limit=_MAX_RECORD)
                except (UpstreamError, BodyTooLarge):
                    return  # no record (or none readable): the upstream's id stays
            client_id = body.decode("utf-8", "replace").strip()
            if client_id:
                found[upstream_id] = client_id
                self._cache.put((bucket, upstream_id), client_id)
        await asyncio.gather(*(read(upstream_id) for upstream_id in missing))
        return found

    async def forget(self, bucket: str, upstream_id: str) -> None:
        """The upload is completed or aborted: its record goes (best effort)."""
        self._cache.pop((bucket, upstream_id))
        try:
            await self._client.delete_object(bucket, record_key(upstream_id))
        except (UpstreamError, aiohttp.ClientError) as exc:
            log.info("bucket %s: the record of finished upload %s stays (%s)", bucket, upstream_id, exc)
