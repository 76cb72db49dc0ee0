"""gateway/s3client.py against the real moto server the suite starts, and through the fault proxy
(tests/support/faultproxy.py) for 500/503 bursts, a 200 carrying an <Error>, and cut connections."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.crypto.stream import IntegrityError
from gateway.s3client import (RETRY_AFTER_CAP, BodyTooLarge, CompleteResult, ListEntry, ObjectChanged, S3Client, StoredPart,
                              UpstreamError, object_path)
from gateway.s3errors import S3Error
from gateway.upstream import Upstream, UpstreamTarget
from tests.support.faultproxy import NO_FAULT, Fault, FaultProxy, burst
from tests.support.moto import MotoServer
from tests.support.process import free_port

MIB = 1 << 20
BODY = bytes(range(256)) * 40  # 10,240 bytes
ODD_KEYS = ["with space", "plus+sign", "100%", "what?", "hash#tag", "ünïcödé/日本語", "~tilde/and/slash",
            "dir//double", "ctrl\x01char", " leading and trailing ", "amp&=;", "emoji🙂"]


def quoted_md5(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


async def streamed(data: bytes, piece: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start:start + piece]


async def inject(proxy: FaultProxy, fault: Fault = NO_FAULT) -> None:
    """Set ``fault``, then let this loop see the connections the proxy closed, so the pool does not hand
    out a dead kept-alive connection (which would cost an attempt the test does not count)."""
    proxy.set(fault)
    await asyncio.sleep(0.05)


def cut_next(proxy: FaultProxy, request_line: str, times: int) -> list[None]:
    """Cut the connection of each of the next ``times`` requests starting with ``request_line`` (closed
    before forwarding them); the list returned grows by one per cut."""
    cuts: list[None] = []

    def cut() -> None:
        cuts.append(None)
        if len(cuts) < times:
            proxy.before(request_line.encode(), cut)
        proxy.clear()
    proxy.before(request_line.encode(), cut)
    return cuts


def _upstream(url: str, moto: MotoServer, **settings: float) -> Upstream:
    return Upstream(UpstreamTarget(url, "us-east-1", moto.access_key, moto.secret_key), **settings)  # type: ignore[arg-type]


@pytest.fixture
async def client(moto: MotoServer) -> AsyncIterator[S3Client]:
    upstream = _upstream(moto.url, moto)
    await upstream.start()
    yield S3Client(upstream)
    await upstream.close()


@pytest.fixture
async def proxied(moto: MotoServer, proxy: FaultProxy) -> AsyncIterator[S3Client]:
    """A client reaching moto through the fault proxy: a fresh pool, so no kept-alive connection
    from another test can meet (or dodge) a fault."""
    proxy.clear()
    upstream = _upstream(proxy.url, moto)
    await upstream.start()
    yield S3Client(upstream, backoff=0.01)
    await upstream.close()
    proxy.clear()


@pytest.fixture
def stored(upstream_s3, legacy_bucket) -> tuple[str, str]:
    """An object stored straight into moto (never through the client under test)."""
    upstream_s3.put_object(Bucket=legacy_bucket, Key="stored", Body=BODY, ContentType="text/plain",
                           Metadata={"colour": "blue"})
    return legacy_bucket, "stored"


# ------------------------------------------------------------------ objects


async def test_head_object_reports_the_stored_object_exactly(client, upstream_s3, stored):
    bucket, key = stored
    head = await client.head_object(bucket, key)
    direct = upstream_s3.head_object(Bucket=bucket, Key=key)["ResponseMetadata"]["HTTPHeaders"]
    assert (head.etag, head.size, head.last_modified, head.version_id) == (
        quoted_md5(BODY), len(BODY), direct["last-modified"], None)
    assert (head.headers["Content-Type"], head.headers["x-amz-meta-colour"]) == ("text/plain", "blue")


async def test_head_and_get_of_a_missing_key_or_bucket_are_not_found(client, legacy_bucket):
    with pytest.raises(UpstreamError) as head_err:
        await client.head_object(legacy_bucket, "missing")
    assert (head_err.value.status, head_err.value.code, head_err.value.body, head_err.value.not_found) == (
        404, None, b"", True)
    assert (head_err.value.s3_error().code, head_err.value.s3_error().status) == ("NotFound", 404)
    with pytest.raises(UpstreamError) as get_err:
        await client.get_small(legacy_bucket, "missing")
    assert (get_err.value.status, get_err.value.code, get_err.value.not_found) == (404, "NoSuchKey", True)
    assert (get_err.value.s3_error().code, get_err.value.s3_error().status) == ("NoSuchKey", 404)
    with pytest.raises(UpstreamError) as bucket_err:
        await client.get_small(f"{legacy_bucket}-gone", "missing")
    assert (bucket_err.value.status, bucket_err.value.code) == (404, "NoSuchBucket")


async def test_get_object_streams_the_whole_body_in_chunks_of_at_most_256_kib(client, upstream_s3, legacy_bucket):
    data = bytes(range(256)) * 4096 * 3  # 3 MiB
    upstream_s3.put_object(Bucket=legacy_bucket, Key="big", Body=data)
    async with client.get_object(legacy_bucket, "big") as got:
        chunks = [chunk async for chunk in got.chunks()]
    assert (got.status, got.head.size, got.head.etag) == (200, len(data), quoted_md5(data))
    assert b"".join(chunks) == data and max(len(c) for c in chunks) <= 256 * 1024


async def test_a_ranged_get_is_a_206_of_those_bytes_and_reports_the_whole_size(client, stored):
    bucket, key = stored
    async with client.get_object(bucket, key, byte_range=(100, 1123)) as got:
        assert (got.status, got.head.size, got.head.etag) == (206, len(BODY), quoted_md5(BODY))
        assert await got.read(2048) == BODY[100:1124]
    async with client.get_object(bucket, key, byte_range=(len(BODY) - 10, len(BODY) + 100)) as tail:
        assert (tail.status, await tail.read(2048)) == (206, BODY[-10:])


async def test_a_range_past_the_end_is_invalid_range(client, stored):
    bucket, key = stored
    with pytest.raises(UpstreamError) as err:
        async with client.get_object(bucket, key, byte_range=(len(BODY), len(BODY) + 5)):
            pass
    assert (err.value.status, err.value.code, err.value.s3_error().status) == (416, "InvalidRange", 416)


async def test_a_pinned_get_of_the_same_version_reads_it(client, stored):
    bucket, key = stored
    head = await client.head_object(bucket, key)
    async with client.get_object(bucket, key, byte_range=(0, 9), if_match=head.etag) as got:
        assert await got.read(100) == BODY[:10]
    got_head, body = await client.get_small(bucket, key, if_match=head.etag)
    assert (got_head.etag, got_head.size, got_head.last_modified, body) == (head.etag, len(BODY), head.last_modified,
                                                                            BODY)


@pytest.mark.parametrize("byte_range", [None, (0, 9)])
async def test_a_pinned_get_after_an_overwrite_is_object_changed(client, upstream_s3, stored, byte_range):
    bucket, key = stored
    head = await client.head_object(bucket, key)
    upstream_s3.put_object(Bucket=bucket, Key=key, Body=b"another version")
    with pytest.raises(ObjectChanged) as err:
        async with client.get_object(bucket, key, byte_range=byte_range, if_match=head.etag):
            pass
    assert (err.value.status, err.value.code) == (412, "PreconditionFailed")
    assert (err.value.s3_error().code, err.value.s3_error().message, err.value.s3_error().status) == (
        "InternalError", "The object changed while it was being read; retry.", 500)
    with pytest.raises(ObjectChanged):
        await client.get_small(bucket, key, if_match=head.etag)


async def test_a_read_is_never_pinned_to_an_empty_etag(client, stored):
    with pytest.raises(IntegrityError):
        await client.get_small(*stored, if_match="")


async def test_get_small_and_read_refuse_a_body_longer_than_the_limit(client, stored):
    bucket, key = stored
    with pytest.raises(BodyTooLarge) as err:
        await client.get_small(bucket, key, limit=len(BODY) - 1)
    assert (err.value.s3_error().code, err.value.s3_error().status) == ("InternalError", 500)
    async with client.get_object(bucket, key) as got:
        with pytest.raises(BodyTooLarge):
            await got.read(100)
    head, body = await client.get_small(bucket, key, limit=len(BODY))
    assert (head.size, body) == (len(BODY), BODY)


async def test_put_object_of_bytes_and_of_a_stream_store_exactly_that(client, upstream_s3, legacy_bucket):
    put = await client.put_object(legacy_bucket, "bytes", BODY, len(BODY), {"content-type": "text/plain",
                                                                        "x-amz-meta-a": "1"})
    streamed_put = await client.put_object(legacy_bucket, "stream", streamed(BODY), len(BODY), {})
    assert (put.etag, put.version_id, streamed_put.etag) == (quoted_md5(BODY), None, quoted_md5(BODY))
    stored = upstream_s3.get_object(Bucket=legacy_bucket, Key="bytes")
    assert (stored["Body"].read(), stored["ContentType"], stored["Metadata"]) == (BODY, "text/plain", {"a": "1"})
    assert upstream_s3.get_object(Bucket=legacy_bucket, Key="stream")["Body"].read() == BODY


async def test_a_bytes_body_must_be_the_length_it_is_sent_as(client, legacy_bucket):
    with pytest.raises(ValueError):
        await client.put_object(legacy_bucket, "k", BODY, len(BODY) + 1, {})


async def test_conditional_puts_fail_with_412_when_their_condition_is_false(client, upstream_s3, stored):
    bucket, key = stored
    with pytest.raises(UpstreamError) as exists:
        await client.put_object(bucket, key, b"x", 1, {}, if_none_match="*")
    with pytest.raises(UpstreamError) as other:
        await client.put_object(bucket, key, b"x", 1, {}, if_match=quoted_md5(b"not it"))
    assert (exists.value.precondition_failed, other.value.precondition_failed) == (True, True)
    assert upstream_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == BODY
    created = await client.put_object(bucket, "fresh", b"new", 3, {}, if_none_match="*")
    replaced = await client.put_object(bucket, key, b"y", 1, {}, if_match=quoted_md5(BODY))
    assert (created.etag, replaced.etag) == (quoted_md5(b"new"), quoted_md5(b"y"))


async def test_versions_are_reported_and_addressable(client, upstream_s3, legacy_bucket):
    upstream_s3.put_bucket_versioning(Bucket=legacy_bucket, VersioningConfiguration={"Status": "Enabled"})
    first = await client.put_object(legacy_bucket, "v", b"first", 5, {})
    second = await client.put_object(legacy_bucket, "v", b"second", 6, {})
    assert None not in (first.version_id, second.version_id) and first.version_id != second.version_id
    head = await client.head_object(legacy_bucket, "v", version_id=first.version_id)
    assert (head.version_id, head.size) == (first.version_id, 5)
    async with client.get_object(legacy_bucket, "v", version_id=first.version_id) as got:
        assert (got.head.version_id, await got.read(10)) == (first.version_id, b"first")
    await client.delete_object(legacy_bucket, "v", version_id=second.version_id)
    assert (await client.get_small(legacy_bucket, "v"))[1] == b"first"


async def test_delete_object_removes_it_and_a_missing_key_is_no_error(client, stored):
    bucket, key = stored
    await client.delete_object(bucket, key)
    await client.delete_object(bucket, key)
    with pytest.raises(UpstreamError) as err:
        await client.head_object(bucket, key)
    assert err.value.not_found


async def test_get_object_tagging_lists_the_tags_in_order(client, upstream_s3, stored):
    bucket, key = stored
    assert await client.get_object_tagging(bucket, key) == []
    upstream_s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [
        {"Key": "b k", "Value": "v=1+2"}, {"Key": "a", "Value": ""}]})
    assert await client.get_object_tagging(bucket, key) == [("b k", "v=1+2"), ("a", "")]


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_keys_with_odd_characters_round_trip(client, upstream_s3, legacy_bucket, key):
    put = await client.put_object(legacy_bucket, key, BODY, len(BODY), {})
    assert [o["Key"] for o in upstream_s3.list_objects_v2(Bucket=legacy_bucket)["Contents"]] == [key]
    assert (await client.head_object(legacy_bucket, key)).etag == put.etag
    assert (await client.get_small(legacy_bucket, key))[1] == BODY
    page = await client.list_objects_v2(legacy_bucket, prefix=key[:4])
    assert [entry.key for entry in page.entries] == [key]
    upstream_s3.put_object_tagging(Bucket=legacy_bucket, Key=key, Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert await client.get_object_tagging(legacy_bucket, key) == [("k", "v")]
    await client.delete_object(legacy_bucket, key)
    assert upstream_s3.list_objects_v2(Bucket=legacy_bucket)["KeyCount"] == 0


def test_object_paths_quote_everything_but_slash_and_tilde():
    assert object_path("b", "a b/+%?#~ü") == "/b/a%20b/%2B%25%3F%23~%C3%BC"


# ------------------------------------------------------------------ multipart uploads


async def test_a_multipart_upload_from_create_to_complete(client, upstream_s3, legacy_bucket):
    first, last = bytes([1]) * (5 * MIB), b"the last part"
    upload_id = await client.create_multipart_upload(legacy_bucket, "mp", {"content-type": "text/plain",
                                                                        "x-amz-meta-m": "v"})
    part1 = await client.upload_part(legacy_bucket, "mp", upload_id, 1, first, len(first))
    part2 = await client.upload_part(legacy_bucket, "mp", upload_id, 2, streamed(last), len(last))
    assert (part1.etag, part2.etag) == (quoted_md5(first), quoted_md5(last))
    assert await client.list_parts(legacy_bucket, "mp", upload_id) == [
        StoredPart(1, quoted_md5(first).strip('"'), len(first)), StoredPart(2, quoted_md5(last).strip('"'), len(last))]
    done = await client.complete_multipart_upload(legacy_bucket, "mp", upload_id,
                                                  [(1, part1.etag), (2, part2.etag.strip('"'))])
    digest = hashlib.md5(hashlib.md5(first).digest() + hashlib.md5(last).digest()).hexdigest()
    assert (done.etag, done.version_id) == (f'"{digest}-2"', None)
    stored = upstream_s3.get_object(Bucket=legacy_bucket, Key="mp")
    assert (stored["Body"].read(), stored["ETag"], stored["Metadata"]) == (first + last, done.etag, {"m": "v"})


async def test_list_parts_reads_every_page(client, legacy_bucket):
    """Numbers without gaps: moto pages by list index, not by part number, and misreports IsTruncated
    after a gap."""
    upload_id = await client.create_multipart_upload(legacy_bucket, "paged", {})
    for number in (1, 2, 3, 4, 5):
        await client.upload_part(legacy_bucket, "paged", upload_id, number, bytes([number]), 1)
    parts = await client.list_parts(legacy_bucket, "paged", upload_id, page_size=2)
    assert [(p.number, p.etag, p.size) for p in parts] == [
        (n, hashlib.md5(bytes([n])).hexdigest(), 1) for n in (1, 2, 3, 4, 5)]


async def test_an_aborted_upload_is_gone(client, legacy_bucket):
    upload_id = await client.create_multipart_upload(legacy_bucket, "aborted", {})
    await client.upload_part(legacy_bucket, "aborted", upload_id, 1, b"x", 1)
    await client.abort_multipart_upload(legacy_bucket, "aborted", upload_id)
    with pytest.raises(UpstreamError) as err:
        await client.list_parts(legacy_bucket, "aborted", upload_id)
    assert (err.value.status, err.value.code, err.value.not_found) == (404, "NoSuchUpload", True)


async def test_complete_naming_a_part_never_uploaded_is_invalid_part(client, legacy_bucket):
    upload_id = await client.create_multipart_upload(legacy_bucket, "k", {})
    await client.upload_part(legacy_bucket, "k", upload_id, 1, b"x", 1)
    with pytest.raises(UpstreamError) as err:
        await client.complete_multipart_upload(legacy_bucket, "k", upload_id, [(1, quoted_md5(b"y"))])
    assert (err.value.status, err.value.code, err.value.s3_error().code) == (400, "InvalidPart", "InvalidPart")


async def test_abort_of_a_missing_upload_is_no_such_upload(client, legacy_bucket):
    with pytest.raises(UpstreamError) as err:
        await client.abort_multipart_upload(legacy_bucket, "k", "no-such-upload")
    assert (err.value.status, err.value.code, err.value.not_found) == (404, "NoSuchUpload", True)


# ------------------------------------------------------------------ listing


async def test_list_objects_v2_pages_with_tokens_and_decodes_keys(client, upstream_s3, legacy_bucket):
    keys = sorted(["a/1", "a/2", "b", "c\x01d", "d e+f%"])
    for key in keys:
        upstream_s3.put_object(Bucket=legacy_bucket, Key=key, Body=key.encode())
    seen: list[ListEntry] = []
    token = None
    while True:
        page = await client.list_objects_v2(legacy_bucket, continuation_token=token, max_keys=2)
        seen.extend(page.entries)
        if not page.truncated:
            assert page.next_token is None
            break
        token = page.next_token
    assert [(e.key, e.size, e.etag) for e in seen] == [(k, len(k), quoted_md5(k.encode())) for k in keys]
    assert all(e.last_modified.endswith("Z") for e in seen)
    after = await client.list_objects_v2(legacy_bucket, start_after="b")
    assert [e.key for e in after.entries] == ["c\x01d", "d e+f%"]
    grouped = await client.list_objects_v2(legacy_bucket, delimiter="/")
    assert ([e.key for e in grouped.entries], grouped.common_prefixes) == (["b", "c\x01d", "d e+f%"], ["a/"])


# ------------------------------------------------------------------ retries


def retries_logged(caplog: pytest.LogCaptureFixture) -> int:
    return sum("retrying in" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("fault", [burst(2, 503), burst(2, 500), burst(2, 503, html=True)],
                         ids=["503 SlowDown", "500 InternalError", "503 HTML"])
async def test_head_get_and_put_of_bytes_succeed_after_a_burst_of_server_errors(proxied, proxy, upstream_s3,
                                                                               stored, fault):
    bucket, key = stored
    await inject(proxy, fault)
    assert (await proxied.head_object(bucket, key)).size == len(BODY)
    await inject(proxy, fault)
    async with proxied.get_object(bucket, key, byte_range=(1, 3)) as got:
        assert await got.read(10) == BODY[1:4]
    await inject(proxy, fault)
    assert (await proxied.put_object(bucket, "new", b"bytes", 5, {})).etag == quoted_md5(b"bytes")
    assert upstream_s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"bytes"
    assert proxy.answered == 6


async def test_list_and_multipart_calls_succeed_after_a_burst(proxied, proxy, legacy_bucket):
    upload_id = await proxied.create_multipart_upload(legacy_bucket, "mp", {})
    for call in (lambda: proxied.upload_part(legacy_bucket, "mp", upload_id, 1, b"part", 4),
                 lambda: proxied.list_parts(legacy_bucket, "mp", upload_id),
                 lambda: proxied.list_objects_v2(legacy_bucket),
                 lambda: proxied.complete_multipart_upload(legacy_bucket, "mp", upload_id, [(1, quoted_md5(b"part"))]),
                 lambda: proxied.get_object_tagging(legacy_bucket, "mp"),
                 lambda: proxied.delete_object(legacy_bucket, "mp")):
        await inject(proxy, burst(2, 503))
        answered = proxy.answered
        await call()
        assert proxy.answered == answered + 2
    assert (await proxied.list_objects_v2(legacy_bucket)).entries == []


async def test_a_connection_cut_before_the_answer_is_retried(proxied, proxy, caplog, upstream_s3, stored):
    """Two cuts in a row: aiohttp itself sends an idempotent request once more when its connection is
    cut (ClientSession's retry of persistent connections), so the client's own retry meets the second."""
    caplog.set_level(logging.DEBUG, "gateway.s3client")
    bucket, key = stored
    for number, (line, call) in enumerate((("HEAD", lambda: proxied.head_object(bucket, key)),
                                           ("GET", lambda: proxied.get_small(bucket, key)),
                                           ("PUT", lambda: proxied.put_object(bucket, key, b"replaced", 8, {}))),
                                          start=1):
        cuts = cut_next(proxy, f"{line} /{bucket}/{key} HTTP/1.1", 2)
        await call()
        assert (line, len(cuts), retries_logged(caplog)) == (line, 2, number)
    assert upstream_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"replaced"


async def test_a_streamed_put_is_sent_once_whatever_happens(proxied, proxy, caplog, upstream_s3, legacy_bucket):
    caplog.set_level(logging.DEBUG, "gateway.s3client")
    await inject(proxy, burst(3, 503))
    with pytest.raises(UpstreamError) as err:
        await proxied.put_object(legacy_bucket, "s", streamed(BODY), len(BODY), {})
    assert (err.value.status, err.value.code, proxy.answered) == (503, "SlowDown", 1)
    await inject(proxy)
    connections = proxy.connections
    cuts = cut_next(proxy, f"PUT /{legacy_bucket}/s?", 3)
    with pytest.raises(aiohttp.ClientError):
        await proxied.upload_part(legacy_bucket, "s", "any-upload", 1, streamed(BODY), len(BODY))
    assert (len(cuts), proxy.connections, retries_logged(caplog)) == (1, connections + 1, 0)
    assert upstream_s3.list_objects_v2(Bucket=legacy_bucket)["KeyCount"] == 0


async def test_client_errors_are_not_retried(proxied, proxy, caplog, stored):
    caplog.set_level(logging.DEBUG, "gateway.s3client")
    await inject(proxy, burst(3, 403, html=True))
    with pytest.raises(UpstreamError) as err:
        await proxied.get_small(*stored)
    assert (err.value.status, proxy.answered) == (403, 1)
    await inject(proxy)
    with pytest.raises(UpstreamError):
        await proxied.head_object(stored[0], "missing")
    assert retries_logged(caplog) == 0


async def test_attempts_are_bounded_and_the_last_error_is_raised(proxied, proxy, caplog, stored):
    caplog.set_level(logging.DEBUG, "gateway.s3client")
    await inject(proxy, burst(5, 503))
    with pytest.raises(UpstreamError) as err:
        await proxied.head_object(*stored)
    assert (err.value.status, proxy.answered, retries_logged(caplog)) == (503, 3, 2)
    assert [r.levelname for r in caplog.records if "giving up after 3 attempts" in r.getMessage()] == ["WARNING"]
    single = S3Client(proxied.upstream, max_attempts=1)
    with pytest.raises(UpstreamError):
        await single.head_object(*stored)
    assert proxy.answered == 4


async def test_retry_after_is_honoured_up_to_its_cap(proxied, proxy, stored):
    for retry_after, least, most in (("0", 0.0, 0.5), ("30", RETRY_AFTER_CAP, RETRY_AFTER_CAP + 0.9)):
        await inject(proxy, burst(1, 503, retry_after=retry_after))
        started = time.monotonic()
        await proxied.head_object(*stored)
        assert least <= time.monotonic() - started < most


async def test_complete_answering_200_with_an_error_raises_that_error_and_is_retried(proxied, proxy, legacy_bucket):
    """The fault proxy's 200 burst is S3's failure inside a 200 (<Error><Code>InternalError</Code>)."""
    upload_id = await proxied.create_multipart_upload(legacy_bucket, "mp", {})
    part = await proxied.upload_part(legacy_bucket, "mp", upload_id, 1, b"part", 4)
    await inject(proxy, burst(3, 200))
    with pytest.raises(UpstreamError) as err:
        await proxied.complete_multipart_upload(legacy_bucket, "mp", upload_id, [(1, part.etag)])
    assert (err.value.status, err.value.code, proxy.answered) == (200, "InternalError", 3)
    assert (err.value.s3_error().code, err.value.s3_error().status) == ("InternalError", 500)
    await inject(proxy, burst(1, 200))
    done = await proxied.complete_multipart_upload(legacy_bucket, "mp", upload_id, [(1, part.etag)])
    assert isinstance(done, CompleteResult) and done.etag.endswith('-1"')


async def test_the_gateways_own_pool_exhaustion_is_never_retried(moto, caplog, upstream_s3, legacy_bucket):
    """A GET whose body is left unread holds the pool's one connection (a small body read whole by
    aiohttp would free it)."""
    caplog.set_level(logging.DEBUG, "gateway.s3client")
    stored = (legacy_bucket, "big")
    upstream_s3.put_object(Bucket=legacy_bucket, Key="big", Body=bytes(8 * MIB))
    upstream = _upstream(moto.url, moto, pool_size=1, pool_wait=0.3)
    await upstream.start()
    try:
        client = S3Client(upstream)
        async with client.get_object(*stored):  # holds the only connection
            started = time.monotonic()
            with pytest.raises(S3Error) as err:
                await client.head_object(*stored)
            assert (err.value.code, retries_logged(caplog)) == ("SlowDown", 0)
            assert time.monotonic() - started < 0.6
    finally:
        await upstream.close()


async def test_an_unreachable_upstream_is_the_connection_error_after_the_last_attempt(moto, caplog):
    caplog.set_level(logging.DEBUG, "gateway.s3client")
    upstream = _upstream(f"http://127.0.0.1:{free_port()}", moto)
    await upstream.start()
    try:
        with pytest.raises(aiohttp.ClientConnectorError):
            await S3Client(upstream, backoff=0.01).head_object("b", "k")
        assert retries_logged(caplog) == 2
    finally:
        await upstream.close()


async def test_a_signed_as_view_signs_with_its_own_credential_over_the_same_pool(moto, legacy_bucket):
    """Upstream.signed_as: the view's requests carry the other credential (moto refuses a key it does not
    know), the original's still the gateway's, and both go over one connection pool."""
    upstream = _upstream(moto.url, moto)
    await upstream.start()
    try:
        view = upstream.signed_as("AKIAUNKNOWNUSER00001", "not-a-known-secret")
        assert view._session is upstream._session
        assert view.target.access_key == "AKIAUNKNOWNUSER00001" and upstream.target.access_key == moto.access_key
        with pytest.raises(UpstreamError) as refused:
            await S3Client(view, max_attempts=1).head_object(legacy_bucket, "any")
        assert refused.value.status == 403
        with pytest.raises(UpstreamError) as missing:
            await S3Client(upstream).head_object(legacy_bucket, "any")
        assert missing.value.status == 404
    finally:
        await upstream.close()
