"""Bucket operations that must know about the gateway's reserved keys (manifests, the bucket state, under ``.s3gw/``).

CreateBucket of an encrypting bucket writes its state record (the bucket holds no plaintext).

DeleteObjects may not name reserved keys (a client could otherwise delete a manifest and make an object
unreadable). DeleteBucket first removes the manifests a bucket holds once nothing else is left in it,
so emptying a bucket through the gateway and deleting it works as on S3 (``aws s3 rb --force``).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from gateway.bucketencryption import CONFIG_KEY
from gateway.bucketstate import STATE_KEY
from gateway.checksums import STRIPPED_HEADERS
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import (error_answer, forward, read_error_body, read_small, relay, response_headers,
                                       send_checked_body)
from gateway.handlers.request_body import read_body
from gateway.objects.store import ObjectStore
from gateway.sseheaders import SSE_HEADERS
from gateway.reserved import is_reserved_key, reserved_key_denied
from gateway.s3errors import from_upstream, parse_s3_error, service_unavailable
from gateway.s3xml import S3_NS, children, parse_request, parse_response, text, xml_text
from gateway.upstream import forwardable_headers

log = logging.getLogger("gateway.buckets")
MAX_DELETE_BODY = 2 * 1024 * 1024
MAX_CREATE_BUCKET_BODY = 64 * 1024
_DELETE_BATCH = 1000
RECORD_ATTEMPTS = 3  # writes of the bucket state record (CreateBucket, a failed DeleteBucket)
RECORD_RETRY_PAUSE = 0.2  # seconds, times the attempt number


async def delete_objects(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Refuse a batch naming a reserved key; forward the batch rebuilt from what was checked (so the
    upstream cannot read the client's XML differently)."""
    objects, quiet = parse_delete(await read_body(ctx, MAX_DELETE_BODY))
    if any(is_reserved_key(key) for key, _ in objects):
        raise reserved_key_denied()
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *STRIPPED_HEADERS))
    upstream = await _post_delete(gw, ctx, objects, quiet, headers)
    async with upstream:
        return await relay(ctx, upstream)


def parse_delete(body: bytes) -> tuple[list[tuple[str, str | None]], bool]:
    """A DeleteObjects body: the (key, version id or None) of each Object, and Quiet; anything
    that is not such a document is S3's MalformedXML."""
    root = parse_request(body, "Delete")
    objects = [(text(item, "Key") or "", text(item, "VersionId")) for item in children(root, "Object")]
    return objects, (text(root, "Quiet") or "").strip().lower() == "true"


def delete_body(objects: list[tuple[str, str | None]], quiet: bool) -> bytes:
    """The DeleteObjects document for the upstream, naming exactly the keys ``parse_delete`` read."""
    entries = "".join(f"<Object><Key>{xml_text(key)}</Key>"
                      + (f"<VersionId>{xml_text(version)}</VersionId>" if version else "") + "</Object>"
                      for key, version in objects)
    return f"<Delete><Quiet>{str(quiet).lower()}</Quiet>{entries}</Delete>".encode()


async def _post_delete(gw: Gateway, ctx: RequestContext, objects: list[tuple[str, str | None]], quiet: bool,
                       headers: dict[str, str]) -> aiohttp.ClientResponse:
    """An upstream DeleteObjects of ``objects`` (key, version), with the Content-MD5 S3 requires."""
    body = delete_body(objects, quiet)
    return await send_checked_body(gw, ctx, "POST", [("delete", "")], body, headers)


async def _reserved_versions(gw: Gateway, ctx: RequestContext) -> list[tuple[str, str | None]] | None:
    """Every (key, version) under the reserved prefix, or None when the bucket holds anything else."""
    found: list[tuple[str, str | None]] = []
    markers: list[tuple[str, str]] = []
    while True:
        upstream = await ctx.upstream(gw).request("GET", ctx.raw_path, [("versions", ""), *markers], {})
        async with upstream:
            body = await read_small(upstream)
            if upstream.status != 200:
                raise from_upstream(upstream.status, body, upstream.headers)
        root = parse_response(body)
        for entry in (*children(root, "Version"), *children(root, "DeleteMarker")):
            key = text(entry, "Key") or ""
            if not is_reserved_key(key):
                return None
            # "null" is named too: in a bucket whose versioning is (or was) on, a DELETE without a version id
            # only adds a delete marker over the null version, and the bucket never empties
            found.append((key, text(entry, "VersionId") or None))
        if (text(root, "IsTruncated") or "").lower() != "true":
            return found
        markers = [("key-marker", text(root, "NextKeyMarker") or ""),
                   ("version-id-marker", text(root, "NextVersionIdMarker") or "")]


async def _delete_batch(gw: Gateway, ctx: RequestContext, batch: list[tuple[str, str | None]]) -> None:
    upstream = await _post_delete(gw, ctx, batch, True, {})
    async with upstream:
        answer = await read_small(upstream)
        if upstream.status != 200 or b"<Error>" in answer:
            raise from_upstream(upstream.status, answer, upstream.headers)


async def delete_bucket(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Remove the reserved keys of a bucket holding nothing else, then DeleteBucket. When the upstream
    refuses that (an object raced in: 409 BucketNotEmpty; 403; 5xx) the bucket survives, so its state record
    is written back, byte for byte as it was, before the client hears the answer."""
    bucket, objects = ctx.s3.bucket, ctx.objects(gw)
    reserved = await _reserved_versions(gw, ctx) or []
    record = await objects.bucket_states.read_stored(bucket) if STATE_KEY in (key for key, _ in reserved) else None
    encryption = (await objects.bucket_encryption.read_stored(bucket)
                  if CONFIG_KEY in (key for key, _ in reserved) else None)
    for start in range(0, len(reserved), _DELETE_BATCH):
        await _delete_batch(gw, ctx, reserved[start:start + _DELETE_BATCH])
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *STRIPPED_HEADERS))
    upstream = await ctx.upstream(gw).request("DELETE", ctx.raw_path, ctx.query, headers)
    async with upstream:
        if upstream.status < 300:
            objects.bucket_states.forget(bucket)
            objects.bucket_encryption.forget(bucket)
            return await relay(ctx, upstream)
        status, answer_headers, body = upstream.status, upstream.headers.copy(), await read_error_body(upstream)
    if record is not None:
        await _restore_record(objects, bucket, record, status)
    if encryption is not None:
        await _restore_encryption(objects, bucket, encryption, status)
    return error_answer(ctx.request, ctx.request_id, status, answer_headers, body)


async def _restore_record(objects: ObjectStore, bucket: str, record: bytes, status: int) -> None:
    await _write_back(bucket, status, lambda: objects.bucket_states.write_stored(bucket, record),
                      f"state record {STATE_KEY}",
                      "Gateways that have not cached the bucket's state will serve objects without gateway metadata "
                      "there as plaintext (allow_unencrypted_reads).")


async def _restore_encryption(objects: ObjectStore, bucket: str, record: bytes, status: int) -> None:
    """The bucket's encryption configuration (gateway/bucketencryption.py) written back as it was."""
    await _write_back(bucket, status, lambda: objects.bucket_encryption.write_stored(bucket, record),
                      f"encryption configuration {CONFIG_KEY}",
                      "Writes without SSE headers get the TOML defaults until PutBucketEncryption is sent again.")


async def _write_back(bucket: str, status: int, write: Callable[[], Awaitable[None]], what: str,
                      if_lost: str) -> None:
    """A reserved record DeleteBucket removed before the upstream refused it, written back (retried); ``if_lost``
    says in the log what follows when even that fails."""
    try:
        await _with_retries(write)
    except Exception as exc:
        log.error("bucket %s: DeleteBucket failed upstream (%s) after the gateway removed its %s, and writing it "
                  "back failed: %s. %s", bucket, status, what, exc, if_lost)
    else:
        log.info("bucket %s: DeleteBucket failed upstream (%s); its %s was written back", bucket, status, what)


async def _with_retries(write: Callable[[], Awaitable[None]]) -> None:
    """``write``, tried RECORD_ATTEMPTS times with a short pause between; the last failure is raised."""
    for attempt in range(RECORD_ATTEMPTS):
        try:
            return await write()
        except Exception:
            if attempt == RECORD_ATTEMPTS - 1:
                raise
            await asyncio.sleep(RECORD_RETRY_PAUSE * (attempt + 1))


async def create_bucket(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """CreateBucket; an encrypting bucket's state record (it holds no plaintext, gateway/bucketstate.py) is
    written before the client hears of the bucket, so no request can find the bucket without it.

    The record is written after a 200, and after 409 BucketAlreadyOwnedByYou (a retry outside us-east-1),
    when the bucket holds nothing but reserved keys and no record yet. If it cannot be written (after
    RECORD_ATTEMPTS tries), the bucket exists but is unprotected: the answer is 503 ServiceUnavailable, never
    a success, and a retried CreateBucket writes it (see README, "bucket state")."""
    if gw.config.bucket_policy(ctx.s3.bucket).encryption == "passthrough":
        return await forward(gw, ctx)
    body = await read_body(ctx, MAX_CREATE_BUCKET_BODY) if ctx.request.body_exists else b""
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *STRIPPED_HEADERS))
    upstream = await ctx.upstream(gw).request("PUT", ctx.raw_path, ctx.query, headers, body=body or None,
                                              content_length=len(body) if body else None,
                                              payload_hash=hashlib.sha256(body).hexdigest())
    async with upstream:  # read whole before the record is written: no connection held meanwhile
        status, answer_headers = upstream.status, upstream.headers.copy()
        answer = await read_small(upstream, limit=MAX_CREATE_BUCKET_BODY)
    owned = status == 409 and (error_code(answer) == "BucketAlreadyOwnedByYou")
    if status == 200 or owned:
        try:
            await _with_retries(lambda: _record_no_plaintext(gw, ctx))
        except Exception as exc:
            log.error("bucket %s: created, but recording that it holds no plaintext failed %d times (%s); "
                      "answering 503 so the client retries CreateBucket", ctx.s3.bucket, RECORD_ATTEMPTS, exc)
            raise service_unavailable("The bucket exists, but the gateway could not record that it holds only "
                                      "encrypted objects. Please retry CreateBucket.") from None
    if status >= 400:
        return error_answer(ctx.request, ctx.request_id, status, answer_headers, answer)
    response = web.Response(status=status, body=answer, headers=response_headers(answer_headers))
    return response


async def get_bucket_location(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """The gateway's own region, not the upstream's: a client signs its next requests for the region this
    answer names, and the gateway checks signatures against its own (Ceph RGW answers its zonegroup,
    ``default``, for which s3cmd then signs and is refused). The upstream is still asked first, so a bucket
    that is not there, or a caller it refuses, gets the upstream's own error."""
    headers = forwardable_headers(ctx.request.headers, drop=(*SSE_HEADERS, *STRIPPED_HEADERS))
    upstream = await ctx.upstream(gw).request("GET", ctx.raw_path, ctx.query, headers)
    async with upstream:
        status, answer_headers = upstream.status, upstream.headers.copy()
        answer = await read_small(upstream, limit=MAX_CREATE_BUCKET_BODY)
    if status >= 400:
        return error_answer(ctx.request, ctx.request_id, status, answer_headers, answer)
    name = "" if gw.config.region == "us-east-1" else xml_text(gw.config.region)  # S3 names us-east-1 by no name
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{S3_NS}">{name}</LocationConstraint>'
    return web.Response(status=200, body=body.encode(), content_type="application/xml")


def error_code(body: bytes) -> str | None:
    root = parse_s3_error(body)
    return None if root is None else root.findtext("Code")


async def _record_no_plaintext(gw: Gateway, ctx: RequestContext) -> None:
    """Only for a bucket with nothing but the gateway's own keys and no record yet: in us-east-1 S3 answers
    200 to re-creating a bucket one owns, and its legacy objects must stay readable."""
    reserved = await _reserved_versions(gw, ctx)
    if reserved is None:
        log.info("bucket %s already holds objects: not recording it as free of plaintext", ctx.s3.bucket)
    elif STATE_KEY not in (key for key, _ in reserved):
        await ctx.objects(gw).bucket_states.record_no_plaintext(ctx.s3.bucket)
