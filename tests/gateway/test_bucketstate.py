"""The bucket state record (docs/FORMAT.md §5), checked against an independent reading of the document."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.bucketstate import RecordError, new_record, open_record, seal_record

SECRET = bytes(range(100, 132))


def _doc_mac(bucket: str, line: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"s3gw/v1/bucket-state/" + bucket.encode()).derive(SECRET)
    return hmac.new(key, line, hashlib.sha256).digest()


def test_a_sealed_record_is_one_json_line_and_its_b64u_hmac_as_documented():
    body = seal_record(SECRET, "photos", {"v": 1, "no_plaintext": True, "since": "2026-01-02T03:04:05Z"})
    line, tag, end = body.split(b"\n")
    assert (json.loads(line), end) == ({"v": 1, "no_plaintext": True, "since": "2026-01-02T03:04:05Z"}, b"")
    assert tag == base64.urlsafe_b64encode(_doc_mac("photos", line)).rstrip(b"=")
    assert open_record(SECRET, "photos", body).no_plaintext is True


def test_a_record_opens_only_for_its_own_bucket_and_secret():
    body = seal_record(SECRET, "photos", new_record())
    with pytest.raises(RecordError):
        open_record(SECRET, "photos2", body)
    with pytest.raises(RecordError):
        open_record(bytes(32), "photos", body)


def test_fields_of_later_versions_of_the_record_are_kept_and_an_unknown_version_is_refused():
    record = open_record(SECRET, "b", seal_record(SECRET, "b", {**new_record(), "migration": {"state": "x"}}))
    assert record.fields["migration"] == {"state": "x"}
    with pytest.raises(RecordError):
        open_record(SECRET, "b", seal_record(SECRET, "b", {"v": 2, "no_plaintext": True}))


@pytest.mark.parametrize("body", [b"", b"{}", b'{"v":1,"no_plaintext":false}\n!!!\n', b"\xff\n\xff"])
def test_malformed_records_are_refused(body):
    with pytest.raises(RecordError):
        open_record(SECRET, "b", body)


async def test_the_record_is_read_to_its_end_when_it_arrives_in_pieces():
    """StreamReader.read(n) returns what is buffered; the reader must take the body block by block to its
    end (gateway/upstream.py read_up_to), or a record arriving slowly would be cut and fail closed."""
    import asyncio

    from aiohttp import web

    from gateway.bucketstate import BucketStates
    from tests.support.scripted_upstream import scripted_upstream

    body = seal_record(SECRET, "photos", {**new_record(), "no_plaintext": False, "pad": "x" * 3000})

    async def piecewise(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(len(body))})
        await response.prepare(request)
        for start in range(0, len(body), 500):
            await response.write(body[start:start + 500])
            await asyncio.sleep(0.02)
        return response

    async with scripted_upstream(piecewise) as upstream:
        states = BucketStates(upstream, SECRET)
        assert await states.read_stored("photos") == body
        assert await states.holds_no_plaintext("photos") is False  # authentic, and says so: read whole


async def test_a_record_read_outlasts_a_short_503_burst_and_a_record_write_is_sent_once(moto, upstream_s3):
    """Reads go through the S3 client's retries; a write is sent once, because its callers
    (gateway/handlers/buckets.py) retry it themselves."""
    import asyncio
    import uuid

    from gateway.bucketstate import STATE_KEY, BucketStates
    from gateway.s3errors import S3Error
    from gateway.upstream import Upstream, UpstreamTarget
    from tests.support.faultproxy import FaultProxy, burst

    bucket = f"state-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key=STATE_KEY, Body=seal_record(SECRET, bucket, new_record()))
    proxy = FaultProxy("127.0.0.1", int(moto.url.rsplit(":", 1)[1])).start()
    upstream = Upstream(UpstreamTarget(proxy.url, "us-east-1", moto.access_key, moto.secret_key))
    await upstream.start()
    try:
        states = BucketStates(upstream, SECRET)
        proxy.set(burst(2, 503))
        assert (await states.holds_no_plaintext(bucket), proxy.answered) == (True, 2)
        proxy.set(burst(2, 503))
        await asyncio.sleep(0.05)  # the pool sees its kept-alive connection closed by the proxy
        with pytest.raises(S3Error) as err:
            await states.write_stored(bucket, b"anything")
        assert (err.value.code, err.value.status, proxy.answered) == ("SlowDown", 503, 3)
    finally:
        await upstream.close()
        proxy.stop()
