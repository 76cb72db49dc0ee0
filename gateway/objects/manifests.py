"""The sealed manifests of multipart objects (docs/FORMAT.md §4), stored next to them upstream.

A manifest is written once, before the upstream Complete, with a conditional create
(``If-None-Match: *``): two Completes of one upload that race with different part lists cannot leave
the object with the other one's manifest. The loser finds the manifest there, opens it, and goes on
only if it lists exactly its own parts (a retried Complete); otherwise it is refused, and the object,
if any, stays readable. Manifests never change once written, so they are cached by tag and object key.
"""
from __future__ import annotations

import logging

from gateway.crypto.multipart import Manifest, open_manifest, part_count_from_etag, seal_manifest
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import IntegrityError
from gateway.reserved import MANIFEST_PREFIX
from gateway.s3client import ObjectHead, S3Client, UpstreamError
from gateway.s3errors import S3Error, invalid_part
from gateway.uploads import LruCache

log = logging.getLogger("gateway.objects")
MANIFEST_LIMIT = 1024 * 1024


def manifest_key(tag: str) -> str:
    return MANIFEST_PREFIX + tag


class Manifests:
    """Reads (cached) and conditional writes of manifests."""

    def __init__(self, client: S3Client, cache_size: int = 256) -> None:
        self._client = client
        self._cache: LruCache[tuple[str, str, bytes], Manifest] = LruCache(cache_size)

    @staticmethod
    def _cache_key(bucket: str, tag: str, object_key: ObjectKey) -> tuple[str, str, bytes]:
        """A cached manifest serves only objects with the object key it was opened (or sealed) under: the
        tag in an object's metadata is not authenticated, so it alone must not pick a manifest."""
        return bucket, tag, object_key.fingerprint

    async def load(self, bucket: str, tag: str, object_key: ObjectKey, head: ObjectHead) -> Manifest:
        """The object's manifest, checked against the stored size and part count (IntegrityError)."""
        cache_key = self._cache_key(bucket, tag, object_key)
        manifest = self._cache.get(cache_key)
        if manifest is None:
            manifest = open_manifest(object_key, tag, await self._read(bucket, tag))
            self._cache.put(cache_key, manifest)
        if manifest.stored_size != head.size or len(manifest.parts) != part_count_from_etag(head.etag):
            raise IntegrityError("the stored object does not have the parts its manifest names")
        return manifest

    async def _read(self, bucket: str, tag: str) -> bytes:
        try:
            _, body = await self._client.get_small(bucket, manifest_key(tag), limit=MANIFEST_LIMIT)
        except UpstreamError as exc:
            if exc.status in (403, 404):
                raise IntegrityError(f"the manifest is missing (upstream answered {exc.status})") from None
            raise exc.s3_error() from None
        return body

    async def create(self, bucket: str, tag: str, object_key: ObjectKey, manifest: Manifest) -> None:
        """Store the manifest unless one is there; one that is must list exactly these parts."""
        sealed = seal_manifest(object_key, tag, manifest)
        try:
            await self._client.put_object(bucket, manifest_key(tag), sealed, len(sealed),
                                          {"content-type": "application/octet-stream"}, if_none_match="*")
        except UpstreamError as exc:
            if exc.status != 412:
                log.error("storing manifest %s/%s failed: %s %s", bucket, tag, exc.status, exc.code)
                raise exc.s3_error() from None
            existing = await self._existing(bucket, tag, object_key)
            if existing != manifest:
                raise completed_differently() from None
        self._cache.put(self._cache_key(bucket, tag, object_key), manifest)

    async def _existing(self, bucket: str, tag: str, object_key: ObjectKey) -> Manifest | None:
        """The manifest another Complete of this upload stored (None if it does not open)."""
        try:
            return open_manifest(object_key, tag, await self._read(bucket, tag))
        except IntegrityError as exc:
            log.error("the manifest %s/%s in the way does not open: %s", bucket, tag, exc)
            return None


def completed_differently() -> S3Error:
    """A Complete whose upload was (being) completed with another part list: the object stays as that
    one made it, so this one must not go ahead."""
    return invalid_part("This upload was already completed, or is being completed, with a different list of "
                        "parts; complete it with the same parts or start a new upload.")
