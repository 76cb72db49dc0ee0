"""The sealed manifests of multipart objects (docs/FORMAT.md §4), stored next to them upstream.

A manifest is written once, before the upstream Complete, with a conditional create
(``If-None-Match: *``): two Completes of one upload that race with different part lists cannot leave
the object with the other one's manifest. The loser finds the manifest there, opens it, and goes on
only if it lists exactly its own parts (a retried Complete); otherwise it is refused, and the object,
if any, stays readable. Manifests never change once written, so they are cached by tag and object key.

Two overlapping conditional PUTs of one key get 409 ConditionalRequestConflict from AWS (not 412): the
loser waits and tries again, and then meets the winner's manifest. An upstream that cannot write
conditionally (501, or 400 NotImplemented) gets an unconditional PUT, logged as the loss of that
guarantee: a Complete still works there, as it did before manifests were conditional.

A manifest once written is the upload's: a later Complete with other parts is refused even when the
first never completed upstream (the gateway cannot tell "never will" from "not yet"); such an upload
is aborted and uploaded again.
"""
from __future__ import annotations

import asyncio
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
CONFLICT_ATTEMPTS = 5
CONFLICT_PAUSE = 0.1  # seconds, doubled after each 409
_UNCONDITIONAL_CODES = (None, "NotImplemented")


def manifest_key(tag: str) -> str:
    return MANIFEST_PREFIX + tag


class Manifests:
    """Reads (cached) and conditional writes of manifests."""

    def __init__(self, client: S3Client, cache_size: int = 256) -> None:
        self._client = client
        self._cache: LruCache[tuple[str, str, bytes], Manifest] = LruCache(cache_size)
        self.conditional = True  # False once the upstream refused If-None-Match on PUT

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
            # 403: the requester's own upstream user may not read it (a bucket policy that leaves ``.s3gw/``
            # out): its AccessDenied, as for the object. 404: the object names a manifest that is not there.
            if exc.status == 404:
                raise IntegrityError(f"the manifest is missing (upstream answered {exc.status})") from None
            raise exc.s3_error() from None
        return body

    async def create(self, bucket: str, tag: str, object_key: ObjectKey, manifest: Manifest) -> None:
        """Store the manifest unless one is there; one that is must list exactly these parts."""
        sealed = seal_manifest(object_key, tag, manifest)
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                await self._put(bucket, tag, sealed, conditional=self.conditional)
                break
            except UpstreamError as exc:
                if exc.status == 409 and attempt < CONFLICT_ATTEMPTS - 1:
                    await asyncio.sleep(CONFLICT_PAUSE * 2 ** attempt)  # another Complete's write in flight
                    continue
                if exc.status in (400, 501) and exc.code in _UNCONDITIONAL_CODES and self.conditional:
                    self._no_conditional_writes(exc)
                    await self._put(bucket, tag, sealed, conditional=False)
                    break
                if not exc.precondition_failed:
                    log.error("storing manifest %s/%s failed: %s %s", bucket, tag, exc.status, exc.code)
                    raise
                if await self._existing(bucket, tag, object_key) != manifest:
                    raise completed_differently() from None
                break
        self._cache.put(self._cache_key(bucket, tag, object_key), manifest)

    async def _put(self, bucket: str, tag: str, sealed: bytes, *, conditional: bool) -> None:
        await self._client.put_object(bucket, manifest_key(tag), sealed, len(sealed),
                                      {"content-type": "application/octet-stream"},
                                      if_none_match="*" if conditional else None)

    def _no_conditional_writes(self, exc: UpstreamError) -> None:
        """The upstream refuses If-None-Match on PUT: from now on manifests are written unconditionally."""
        self.conditional = False
        log.error("the upstream refused a conditional PUT (%s %s): manifests are written unconditionally from "
                  "now on, so two Completes of one upload racing with different parts could leave an object "
                  "that does not read", exc.status, exc.code or "")

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
