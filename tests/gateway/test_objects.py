"""The object layer on its own, as a command-line tool uses it: no aiohttp request, a real moto upstream.

Also the correctness items of issue 15: every read after the metadata read is pinned to the version
that was read (an overwrite in between fails the read instead of serving the other version's bytes),
and two Completes of one upload with different part lists leave the object readable as one of them.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.datakeys import GATEWAY
from gateway.bucketencryption import BucketEncryption
from gateway.bucketstate import BucketStates
from gateway.config import GatewayConfig
from gateway.crypto.sse import CustomerKey, CustomerKeyRequest, DataKey, ObjectKeys
from gateway.objects.multipart import RequestedPart
from gateway.objects.reading import ObjectRef
from gateway.objects.writing import SMALL_OBJECT_SIZE
from gateway.objects.store import ObjectStore
from gateway.s3client import S3Client, UpstreamError
from gateway.s3errors import S3Error
from gateway.upstream import Upstream, UpstreamTarget
from gateway.uploads import UploadTokens
from tests.support.faultproxy import FaultProxy, burst
from tests.support.moto import MotoServer

SECRET = hashlib.sha256(b"test_objects gateway secret").digest()
CUSTOMER_KEY = CustomerKey(hashlib.sha256(b"test_objects customer key").digest())
MIB = 1024 * 1024


class NoKms:
    """These tests use SSE-C and legacy objects only: a KMS call is a test bug."""

    async def generate_data_key(self, key_id, context, *, requester=None) -> DataKey:
        raise AssertionError("no KMS call expected")

    async def decrypt_data_key(self, ciphertext, context, *, requester=None) -> DataKey:
        raise AssertionError("no KMS call expected")


@pytest.fixture
async def store(moto: MotoServer, proxy: FaultProxy, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """The object layer over moto, reached through a fault proxy (no fault unless a test sets one)."""
    upstream = Upstream(UpstreamTarget(proxy.url, "us-east-1", moto.access_key, moto.secret_key))
    await upstream.start()
    client = S3Client(upstream)
    config = GatewayConfig(data_dir=tmp_path, allow_unencrypted_reads=True)
    states = BucketStates(upstream, SECRET)
    yield ObjectStore(config, client, ObjectKeys(NoKms(), SECRET), UploadTokens(SECRET), states,
                      BucketEncryption(upstream, SECRET, config))
    await upstream.close()


async def _chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset:offset + size]


async def _read(store: ObjectStore, ref: ObjectRef, span=None) -> bytes:
    async with store.reader.stat(ref, with_body=span is None) as stored:
        opened = await stored.open(CUSTOMER_KEY if stored.encrypted else None, requester=GATEWAY)
        return b"".join([chunk async for chunk in opened.chunks(span)])


async def _put_ssec(store: ObjectStore, bucket: str, key: str, data: bytes) -> None:
    await store.writer.put(bucket, key, {}, CustomerKeyRequest(CUSTOMER_KEY), _chunks(data), len(data), requester=GATEWAY)


async def test_an_object_written_by_the_layer_reads_back_whole_and_by_range(store, legacy_bucket) -> None:
    data = os.urandom(200_000)
    await _put_ssec(store, legacy_bucket, "a/b c+d", data)
    ref = ObjectRef(legacy_bucket, "a/b c+d")
    assert await _read(store, ref) == data
    assert await _read(store, ref, (65_000, 140_000)) == data[65_000:140_001]
    async with store.reader.stat(ref) as stored:
        assert stored.encrypted and stored.size == len(data)
        assert stored.etag.endswith('-1"')


async def test_a_small_unconditional_write_is_retried_after_a_503_and_stored_once_whole(store, legacy_bucket,
                                                                                        proxy) -> None:
    data = os.urandom(SMALL_OBJECT_SIZE)
    proxy.set(burst(1, 503))
    await _put_ssec(store, legacy_bucket, "small", data)
    assert proxy.answered == 1  # the burst met the first try; the retry went through
    proxy.clear()
    assert await _read(store, ObjectRef(legacy_bucket, "small")) == data


@pytest.mark.parametrize("condition", [{"if-match": '"0123"'}, {"If-None-Match": "*"}, {}])
async def test_conditional_and_large_writes_are_sent_once(store, legacy_bucket, proxy, condition) -> None:
    """A conditional write retried after a lost answer would meet its own first write (412 for a write that was
    made), and a streamed body cannot be sent twice: both reach the caller as the upstream's answer."""
    data = os.urandom(SMALL_OBJECT_SIZE if condition else SMALL_OBJECT_SIZE + 1)
    proxy.set(burst(1, 503))
    with pytest.raises(UpstreamError) as failed:
        await store.writer.put(legacy_bucket, "once", condition, CustomerKeyRequest(CUSTOMER_KEY), _chunks(data),
                               len(data), requester=GATEWAY)
    assert (failed.value.status, proxy.answered) == (503, 1)


async def test_a_legacy_object_reads_as_it_is_stored(store, legacy_bucket, upstream_s3) -> None:
    upstream_s3.put_object(Bucket=legacy_bucket, Key="old", Body=b"legacy bytes")
    ref = ObjectRef(legacy_bucket, "old")
    assert await _read(store, ref) == b"legacy bytes"
    assert await _read(store, ref, (2, 6)) == b"gacy "


@pytest.mark.parametrize("stored_as", ["legacy", "encrypted"])
async def test_a_ranged_read_after_an_overwrite_fails_instead_of_mixing_versions(store, legacy_bucket, upstream_s3,
                                                                                 stored_as) -> None:
    """The metadata read saw version 1; version 2 (the other kind: ciphertext where plaintext was, or
    the reverse) lands before the body is read: the read is refused, never served."""
    if stored_as == "legacy":
        upstream_s3.put_object(Bucket=legacy_bucket, Key="k", Body=b"x" * 1000)
    else:
        await _put_ssec(store, legacy_bucket, "k", b"x" * 1000)
    async with store.reader.stat(ObjectRef(legacy_bucket, "k")) as stored:
        opened = await stored.open(CUSTOMER_KEY if stored.encrypted else None, requester=GATEWAY)
        if stored_as == "legacy":
            await _put_ssec(store, legacy_bucket, "k", b"y" * 1000)
        else:
            upstream_s3.put_object(Bucket=legacy_bucket, Key="k", Body=b"y" * 1000)
        with pytest.raises(S3Error) as caught:
            _ = [chunk async for chunk in opened.chunks((10, 20))]
    assert (caught.value.code, caught.value.status) == ("InternalError", 500)
    assert caught.value.message == "The object changed while it was being read; retry."


async def test_a_legacy_part_read_after_an_overwrite_fails(store, legacy_bucket, upstream_s3) -> None:
    upstream_s3.put_object(Bucket=legacy_bucket, Key="k", Body=b"x" * 1000)
    async with store.reader.stat(ObjectRef(legacy_bucket, "k")) as stored:
        await _put_ssec(store, legacy_bucket, "k", b"y" * 1000)
        with pytest.raises(S3Error) as caught:
            async with stored.pinned_get(part_number=1):
                pass
    assert caught.value.message == "The object changed while it was being read; retry."


async def _upload_two_parts(store: ObjectStore, bucket: str, key: str) -> tuple[object, list[str], list[bytes]]:
    created = await store.uploads.create(bucket, key, {}, CustomerKeyRequest(CUSTOMER_KEY), requester=GATEWAY)
    upload = store.tokens.parse_upload_id(bucket, key, created.upload_id)
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    etags = [await store.uploads.put_part(bucket, key, upload, number, _chunks(data), len(data), CUSTOMER_KEY, {}, requester=GATEWAY)
             for number, data in enumerate(parts, 1)]
    return upload, etags, parts


async def test_racing_completes_with_different_part_lists_leave_one_readable_object(store, legacy_bucket) -> None:
    upload, etags, parts = await _upload_two_parts(store, legacy_bucket, "mp")
    both = [RequestedPart(1, etags[0], {}), RequestedPart(2, etags[1], {})]
    first_only = [RequestedPart(1, etags[0], {})]
    outcomes = await asyncio.gather(store.uploads.complete(legacy_bucket, "mp", upload, both, CUSTOMER_KEY, requester=GATEWAY),
                                    store.uploads.complete(legacy_bucket, "mp", upload, first_only, CUSTOMER_KEY, requester=GATEWAY),
                                    return_exceptions=True)
    succeeded = [index for index, outcome in enumerate(outcomes) if not isinstance(outcome, BaseException)]
    assert len(succeeded) == 1, outcomes
    expected = b"".join(parts) if succeeded == [0] else parts[0]
    assert await _read(store, ObjectRef(legacy_bucket, "mp")) == expected


async def test_a_retried_complete_with_the_same_parts_goes_ahead(store, legacy_bucket) -> None:
    upload, etags, parts = await _upload_two_parts(store, legacy_bucket, "mp2")
    both = [RequestedPart(1, etags[0], {}), RequestedPart(2, etags[1], {})]
    layout = upload.info.layout
    object_key = await store.uploads.upload_key(legacy_bucket, "mp2", upload, CUSTOMER_KEY, GATEWAY)
    stored = {p.number: p for p in await store.client.list_parts(legacy_bucket, "mp2", upload.upstream_id)}
    manifest = store.uploads._checked_manifest(upload, both, stored)
    await store.manifests.create(legacy_bucket, layout.upload_tag, object_key, manifest)  # a Complete that died
    await store.uploads.complete(legacy_bucket, "mp2", upload, both, CUSTOMER_KEY, requester=GATEWAY)
    assert await _read(store, ObjectRef(legacy_bucket, "mp2")) == b"".join(parts)


async def test_a_complete_whose_manifest_is_already_there_with_other_parts_is_refused(store, legacy_bucket) -> None:
    upload, etags, parts = await _upload_two_parts(store, legacy_bucket, "mp3")
    layout = upload.info.layout
    object_key = await store.uploads.upload_key(legacy_bucket, "mp3", upload, CUSTOMER_KEY, GATEWAY)
    stored = {p.number: p for p in await store.client.list_parts(legacy_bucket, "mp3", upload.upstream_id)}
    first_only = [RequestedPart(1, etags[0], {})]
    await store.manifests.create(legacy_bucket, layout.upload_tag, object_key,
                                 store.uploads._checked_manifest(upload, first_only, stored))
    both = [RequestedPart(1, etags[0], {}), RequestedPart(2, etags[1], {})]
    with pytest.raises(S3Error) as caught:
        await store.uploads.complete(legacy_bucket, "mp3", upload, both, CUSTOMER_KEY, requester=GATEWAY)
    assert (caught.value.code, caught.value.status) == ("InvalidPart", 400)
    assert "different list of parts" in caught.value.message


NO_SUCH_UPLOAD = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code><Message>The specified '
                  b"upload does not exist.</Message></Error>")


async def test_a_complete_whose_answer_was_lost_succeeds_when_the_object_is_made_of_its_parts(
        store, legacy_bucket, monkeypatch) -> None:
    """The upstream completed the upload but the answer was lost; the retry finds NoSuchUpload (S3's and
    Ceph's answer; moto's is a 500 page, so the lost answer is played here). The object is there, made
    of exactly these parts: the Complete succeeds with its ETag. When the object is something else,
    NoSuchUpload stands."""
    upload, etags, parts = await _upload_two_parts(store, legacy_bucket, "mp4")
    both = [RequestedPart(1, etags[0], {}), RequestedPart(2, etags[1], {})]
    real_complete = store.client.complete_multipart_upload

    async def completed_then_lost(*args, **kwargs):
        await real_complete(*args, **kwargs)
        raise UpstreamError(404, NO_SUCH_UPLOAD)
    monkeypatch.setattr(store.client, "complete_multipart_upload", completed_then_lost)
    completed = await store.uploads.complete(legacy_bucket, "mp4", upload, both, CUSTOMER_KEY, requester=GATEWAY)
    async with store.reader.stat(ObjectRef(legacy_bucket, "mp4")) as stored:
        assert (completed.result.etag, stored.size) == (stored.head.etag, len(b"".join(parts)))
    assert await _read(store, ObjectRef(legacy_bucket, "mp4")) == b"".join(parts)

    other, other_etags, _ = await _upload_two_parts(store, legacy_bucket, "mp5")
    await _put_ssec(store, legacy_bucket, "mp5", b"another object")

    async def lost(*args, **kwargs):
        raise UpstreamError(404, NO_SUCH_UPLOAD)
    monkeypatch.setattr(store.client, "complete_multipart_upload", lost)
    with pytest.raises(UpstreamError) as caught:
        await store.uploads.complete(legacy_bucket, "mp5", other, [RequestedPart(1, other_etags[0], {}),
                                                                   RequestedPart(2, other_etags[1], {})], CUSTOMER_KEY, requester=GATEWAY)
    assert (caught.value.status, caught.value.code) == (404, "NoSuchUpload")


async def _manifest_of_two_parts(store: ObjectStore, bucket: str, key: str):
    upload, etags, parts = await _upload_two_parts(store, bucket, key)
    both = [RequestedPart(1, etags[0], {}), RequestedPart(2, etags[1], {})]
    object_key = await store.uploads.upload_key(bucket, key, upload, CUSTOMER_KEY, GATEWAY)
    stored = {p.number: p for p in await store.client.list_parts(bucket, key, upload.upstream_id)}
    return upload.info.layout.upload_tag, object_key, store.uploads._checked_manifest(upload, both, stored)


async def test_a_manifest_write_that_meets_409_from_a_concurrent_write_waits_and_goes_on(store, legacy_bucket, proxy):
    """AWS answers overlapping If-None-Match PUTs of one key with 409 ConditionalRequestConflict."""
    tag, object_key, manifest = await _manifest_of_two_parts(store, legacy_bucket, "c409")
    proxy.set(burst(2, 409))
    await store.manifests.create(legacy_bucket, tag, object_key, manifest)
    assert proxy.answered == 2
    proxy.clear()
    store.manifests._cache = type(store.manifests._cache)(8)  # read it back from the upstream
    assert await store.manifests._existing(legacy_bucket, tag, object_key) == manifest
    assert store.manifests.conditional


async def test_an_upstream_without_conditional_writes_gets_the_manifest_unconditionally(store, legacy_bucket,
                                                                                        proxy, caplog):
    tag, object_key, manifest = await _manifest_of_two_parts(store, legacy_bucket, "c501")
    proxy.set(burst(1, 501))
    await store.manifests.create(legacy_bucket, tag, object_key, manifest)
    proxy.clear()
    assert await store.manifests._existing(legacy_bucket, tag, object_key) == manifest
    assert not store.manifests.conditional
    assert "manifests are written unconditionally" in caplog.text


PRECONDITION_FAILED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At '
                       b"least one of the pre-conditions you specified did not hold</Message></Error>")


async def test_a_conditional_complete_whose_retry_meets_its_own_success_succeeds_and_another_object_stays_412(
        store, legacy_bucket, monkeypatch) -> None:
    """If-None-Match: * on Complete, the answer lost and the upstream's retry refused (412: the object now
    exists). The object is this upload's: success. Over another object the Complete is 412 before it is sent
    (Ceph RGW ignores the header on Complete), and the upstream is never asked."""
    upload, etags, parts = await _upload_two_parts(store, legacy_bucket, "cond1")
    both = [RequestedPart(1, etags[0], {}), RequestedPart(2, etags[1], {})]
    real_complete = store.client.complete_multipart_upload

    async def completed_then_refused(*args, **kwargs):
        await real_complete(*args, **kwargs)
        raise UpstreamError(412, PRECONDITION_FAILED)
    monkeypatch.setattr(store.client, "complete_multipart_upload", completed_then_refused)
    await store.uploads.complete(legacy_bucket, "cond1", upload, both, CUSTOMER_KEY, requester=GATEWAY,
                                 if_none_match="*")
    assert await _read(store, ObjectRef(legacy_bucket, "cond1")) == b"".join(parts)

    other, other_etags, _ = await _upload_two_parts(store, legacy_bucket, "cond2")
    await _put_ssec(store, legacy_bucket, "cond2", b"was there first")

    async def never(*args, **kwargs):
        raise AssertionError("the upstream's Complete was called")
    monkeypatch.setattr(store.client, "complete_multipart_upload", never)
    with pytest.raises(S3Error) as caught:
        await store.uploads.complete(legacy_bucket, "cond2", other, [RequestedPart(1, other_etags[0], {}),
                                                                    RequestedPart(2, other_etags[1], {})],
                                     CUSTOMER_KEY, requester=GATEWAY, if_none_match="*")
    assert (caught.value.status, caught.value.code) == (412, "PreconditionFailed")
