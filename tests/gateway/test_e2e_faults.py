"""Fault injection: the gateway behind fault proxies (tests/support/faultproxy.py) to moto and to a
standalone key service.

For each fault, what an S3 client sees is an S3 error or a cut connection, never wrong bytes: a GET
body a client receives without error is exactly the object, a truncated body is a connection error
(never a short 200), nothing half-written becomes visible upstream, and the same gateway serves
correctly again once the fault is gone (checked after every test).
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, IncompleteReadError, ResponseStreamingError

from gateway.objects.writing import SMALL_OBJECT_SIZE
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, start_gateway_with_remote_kms
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client, signed_request
from tests.support.faultproxy import DOWN, UP, Fault, FaultProxy, burst, reset, stall
from tests.support.moto import MotoServer
from tests.support.process import Server

READ_TIMEOUT = 2.0  # the gateway's upstream read timeout in these tests (default 60 s)
KMS_TIMEOUT = 3.0  # the gateway's bound on one key service call, retries included (default 5 s)
MIB = 1 << 20
UPSTREAM_ATTEMPTS = 2  # the gateway's tries of an idempotent upstream request here (default 3)
# Handler paths whose first upstream request is idempotent and retried (a HEAD, a GET, ListParts).
RETRIED_PATHS = ("get", "ranged get", "put", "complete", "copy")  # a small PUT is sent whole, as bytes
NO_RETRIES = {"total_max_attempts": 1}  # every fault must reach the test, not be retried away
# What a client sees when the gateway cuts a response short (a client read timeout is not one: the
# gateway must never leave a client waiting).
CUT = (IncompleteReadError, ResponseStreamingError, ConnectionClosedError)


@dataclass
class Faulty:
    """A gateway whose upstream and key service are each reached through a fault proxy."""

    gateway: Server
    upstream: FaultProxy
    kms: FaultProxy
    s3: object
    direct: object  # boto3 straight to moto, to see what the upstream holds
    bucket: str

    def clear(self) -> None:
        self.upstream.clear()
        self.kms.clear()


def _proxy_to(url: str) -> FaultProxy:
    parts = urlsplit(url)
    return FaultProxy(parts.hostname or "127.0.0.1", parts.port or 80).start()


@pytest.fixture(scope="module")
def faulty(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    workdir = tmp_path_factory.mktemp("faults")
    keyservice = launch(workdir)
    key_arn = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]
    upstream, kms = _proxy_to(moto.url), _proxy_to(keyservice.url)
    gateway = start_gateway_with_remote_kms(moto, workdir, kms.url, key_arn,
                                            # The bucket's encryption configuration is read once and kept,
                                            # so each path's first upstream request is its own.
                                            {"GATEWAY_KMS_TIMEOUT": str(KMS_TIMEOUT),
                                             "GATEWAY_BUCKET_CONFIG_TTL": "86400"}, upstream_url=upstream.url,
                                            upstream_settings=f"read_timeout = {READ_TIMEOUT}\nmax_attempts = {UPSTREAM_ATTEMPTS}")
    s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, read_timeout=30, connect_timeout=5,
                   retries=NO_RETRIES)
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.get_bucket_encryption(Bucket=bucket)  # caches the bucket's (default) encryption configuration
    try:
        direct = s3_client(moto.url, moto.access_key, moto.secret_key)
        yield Faulty(gateway, upstream, kms, s3, direct, bucket)
    finally:
        assert gateway.stop() == 0, gateway.log()
        upstream.stop()
        kms.stop()
        keyservice.server.stop()
    assert "Traceback" not in gateway.log(), gateway.log()


@pytest.fixture
def env(faulty: Faulty) -> Iterator[Faulty]:
    """Each test starts without faults and must leave a gateway that serves correctly without restart."""
    faulty.clear()
    yield faulty
    faulty.clear()
    key, body = f"recovered-{uuid.uuid4().hex[:8]}", os.urandom(200_000)
    faulty.s3.put_object(Bucket=faulty.bucket, Key=key, Body=body)
    assert faulty.s3.get_object(Bucket=faulty.bucket, Key=key)["Body"].read() == body


def _error(call: Callable[[], object]) -> tuple[int, str, dict[str, str]]:
    with pytest.raises(ClientError) as info:
        call()
    response = info.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], \
        response["ResponseMetadata"]["HTTPHeaders"]


def _read_or_cut(env: Faulty, key: str, **kwargs: object) -> bytes | None:
    """The GET body, or None when the transfer was cut (an S3 error is re-raised for the test)."""
    response = env.s3.get_object(Bucket=env.bucket, Key=key, **kwargs)
    try:
        return response["Body"].read()
    except CUT:
        return None


def _key() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ error bursts and their fidelity

def _every_path(env: Faulty) -> dict[str, Callable[[], object]]:
    """One call per handler path, each of whose first upstream request meets the burst."""
    stored = _key()
    env.s3.put_object(Bucket=env.bucket, Key=stored, Body=b"stored body")
    upload = env.s3.create_multipart_upload(Bucket=env.bucket, Key=_key())
    uid, mkey = upload["UploadId"], upload["Key"]
    etag = env.s3.upload_part(Bucket=env.bucket, Key=mkey, UploadId=uid, PartNumber=1, Body=b"p")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    return {
        "passthrough": lambda: env.s3.get_bucket_tagging(Bucket=env.bucket),
        "get": lambda: env.s3.get_object(Bucket=env.bucket, Key=stored),
        "ranged get": lambda: env.s3.get_object(Bucket=env.bucket, Key=stored, Range="bytes=1-3"),
        "put": lambda: env.s3.put_object(Bucket=env.bucket, Key=_key(), Body=b"new body"),
        "streamed put": lambda: env.s3.put_object(Bucket=env.bucket, Key=_key(),
                                                  Body=bytes(SMALL_OBJECT_SIZE + 1)),
        # sent once: a retry after a lost answer would meet its own first write (412 for a write that was made)
        "conditional put": lambda: env.s3.put_object(Bucket=env.bucket, Key=_key(), Body=b"new body",
                                                     IfNoneMatch="*"),
        "create upload": lambda: env.s3.create_multipart_upload(Bucket=env.bucket, Key=_key()),
        "upload part": lambda: env.s3.upload_part(Bucket=env.bucket, Key=mkey, UploadId=uid, PartNumber=2,
                                                  Body=b"q"),
        "complete": lambda: env.s3.complete_multipart_upload(Bucket=env.bucket, Key=mkey, UploadId=uid,
                                                             MultipartUpload=parts),
        "list": lambda: env.s3.list_objects_v2(Bucket=env.bucket),
        "copy": lambda: env.s3.copy_object(Bucket=env.bucket, Key=_key(),
                                           CopySource={"Bucket": env.bucket, "Key": stored}),
    }


def _tries(name: str) -> int:
    """Upstream answers a burst takes from a path: its first request is retried or not."""
    return UPSTREAM_ATTEMPTS if name in RETRIED_PATHS else 1


def test_upstream_503_slowdown_keeps_its_code_and_retry_after_on_every_path(env):
    """A burst as long as the gateway's retries reaches the client as the upstream's error. A ranged GET
    and a copy read the (source) metadata with a HEAD first, whose 503 has no body to name SlowDown: it
    is S3's other 503, ServiceUnavailable, with the Retry-After."""
    for name, call in _every_path(env).items():
        env.upstream.set(burst(UPSTREAM_ATTEMPTS, 503, retry_after="7"))
        answered = env.upstream.answered
        status, code, headers = _error(call)
        assert (name, env.upstream.answered) == (name, answered + _tries(name))  # the burst met this call
        env.upstream.clear()
        expected = "ServiceUnavailable" if name in ("ranged get", "copy") else "SlowDown"
        assert (name, status, code, headers.get("retry-after")) == (name, 503, expected, "7")


def test_a_short_upstream_burst_is_absorbed_by_the_retries_of_idempotent_requests(env):
    """One 503 or 500 (or an HTML error page) on a retried path: the gateway tries again and the client
    never sees it; a streamed upload or a forwarded request is never sent twice, so there it shows."""
    for fault in (burst(1, 503, retry_after="1"), burst(1, 500), burst(1, 502, html=True)):
        for name, call in _every_path(env).items():
            env.upstream.set(fault)
            answered = env.upstream.answered
            if name in RETRIED_PATHS and fault.burst.status != 502:
                call()
                assert (name, env.upstream.answered) == (name, answered + 1)  # the burst met it; the retry passed
            else:
                assert _error(call)[0] in (500, 503), name


def test_upstream_html_error_pages_become_s3_xml_errors_of_the_same_class_on_every_path(env):
    for status_in, expected in ((502, (503, "ServiceUnavailable")), (500, (500, "InternalError")),
                                (503, (503, "ServiceUnavailable"))):
        for name, call in _every_path(env).items():
            env.upstream.set(burst(UPSTREAM_ATTEMPTS, status_in, html=True, retry_after="1"))
            status, code, headers = _error(call)
            env.upstream.clear()  # what a path that is not retried left of the burst
            assert (name, status, code) == (name, *expected)
            assert headers.get("content-type") == "application/xml" and headers.get("retry-after") == "1"


def test_html_error_page_body_is_replaced_by_s3_error_xml(env):
    """What reaches the client on the wire: S3's <Error> document with the gateway's request id."""
    env.upstream.set(burst(1, 502, html=True))
    response = signed_request("GET", f"{env.gateway.url}/{env.bucket}?tagging", GATEWAY_ACCESS_KEY,
                              GATEWAY_SECRET_KEY)
    request_id = response.headers["x-amz-request-id"]
    assert (response.status_code, response.headers["Content-Type"]) == (503, "application/xml")
    assert response.content == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code><Message>The upstream '
        b"store is unavailable. Please try again.</Message><Resource>/" + env.bucket.encode()
        + b"</Resource><RequestId>" + request_id.encode() + b"</RequestId></Error>")


def test_key_service_error_bursts_are_s3_errors_and_store_nothing(env):
    """500/503 bursts from the key service (S3-JSON or HTML): the SDK's own retries absorb a short
    burst; a long one is S3's error for it (an unavailable key service is a retryable 503), and the
    failed PUT leaves no object behind. (A long burst costs the SDK's whole retry schedule: one only.)"""
    for fault, expected in ((burst(1, 500), None), (burst(1, 503, html=True), None),
                            (burst(50, 503, html=True), (503, "ServiceUnavailable"))):
        key = _key()
        env.kms.set(fault)
        if expected is None:
            env.s3.put_object(Bucket=env.bucket, Key=key, Body=b"kms body")
            assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == b"kms body"
        else:
            assert _error(lambda: env.s3.put_object(Bucket=env.bucket, Key=key, Body=b"kms body"))[:2] == expected
            assert "Contents" not in env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key)
        env.kms.clear()


# ------------------------------------------------------------------ slow upstreams and key services

def test_slow_upstream_with_latency_and_bandwidth_limit_serves_exact_bytes(env):
    body = os.urandom(MIB + 12345)
    key = _key()
    env.upstream.set(Fault(latency=0.002, bandwidth=4 * MIB))
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=body)
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == body
    assert env.s3.get_object(Bucket=env.bucket, Key=key, Range="bytes=70000-900000")["Body"].read() == \
        body[70000:900001]


def test_listing_arriving_in_pieces_is_read_whole(env):
    """A listing body that arrives slowly, in many pieces, is rewritten whole (it used to be cut at
    the first piece: a truncated XML answer with status 200)."""
    prefix = f"list-{uuid.uuid4().hex[:6]}/" + "n" * 400
    keys = [f"{prefix}{i:03d}" for i in range(40)]
    for key in keys:
        env.direct.put_object(Bucket=env.bucket, Key=key, Body=b"")
    env.upstream.set(Fault(bandwidth=64 * 1024))
    listed = env.s3.list_objects_v2(Bucket=env.bucket, Prefix=prefix)
    assert [entry["Key"] for entry in listed["Contents"]] == keys


def test_slow_key_service_still_serves_exact_bytes(env):
    body, key = os.urandom(300_000), _key()
    env.kms.set(Fault(latency=0.2))
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=body)
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == body


# ------------------------------------------------------------------ resets mid-body

def test_get_reset_mid_body_is_a_cut_transfer_never_a_short_or_wrong_body(env):
    body, key = os.urandom(2 * MIB), _key()
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=body)
    outcomes = []
    for after in (500, 100_000, MIB + 7):
        env.upstream.set(reset(after, DOWN))
        for kwargs, expected in (({}, body), ({"Range": "bytes=1000-1999999"}, body[1000:2000000])):
            try:
                got = _read_or_cut(env, key, **kwargs)
            except ClientError as exc:  # reset before the answer's headers: an S3 error
                assert (exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]) == \
                    (503, "ServiceUnavailable")
                outcomes.append("error")
                continue
            assert got is None or got == expected, f"wrong bytes after a reset at {after}"
            outcomes.append("cut" if got is None else "whole")
    assert outcomes.count("cut") >= 2 and outcomes.count("error") >= 1, outcomes


def _assert_old_or_new(env: Faulty, key: str, old: bytes | None, new: bytes) -> None:
    """The upstream holds the old object or the complete new one, and the gateway serves its exact bytes."""
    listed = env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key).get("Contents", [])
    assert [entry["Key"] for entry in listed] == ([key] if listed else [])
    if not listed:
        assert old is None
        return
    got = env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read()
    assert got in ((old, new) if old is not None else (new,))


def test_put_reset_mid_body_leaves_the_old_object_or_the_whole_new_one(env):
    old, new = os.urandom(MIB), os.urandom(MIB)
    failed = 0
    for after, direction in ((300_000, UP), (MIB - 10, UP), (0, DOWN), (100, DOWN)):
        key = _key()
        env.s3.put_object(Bucket=env.bucket, Key=key, Body=old)
        env.upstream.set(reset(after, direction))
        try:
            env.s3.put_object(Bucket=env.bucket, Key=key, Body=new)
        except ClientError as exc:
            assert (exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]) == \
                (503, "ServiceUnavailable")
            failed += 1
        env.upstream.clear()
        _assert_old_or_new(env, key, old, new)
    assert failed == 4


def _upload(env: Faulty, key: str, parts: list[bytes]) -> tuple[str, list[dict]]:
    upload_id = env.s3.create_multipart_upload(Bucket=env.bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": env.s3.upload_part(Bucket=env.bucket, Key=key, UploadId=upload_id,
                                                         PartNumber=n, Body=data)["ETag"]}
            for n, data in enumerate(parts, 1)]
    return upload_id, done


def test_upload_part_reset_mid_body_fails_cleanly_and_the_part_can_be_sent_again(env):
    key, first, last = _key(), os.urandom(5 * MIB), os.urandom(300_000)
    upload_id, done = _upload(env, key, [first])
    env.upstream.set(reset(2 * MIB, UP))
    with pytest.raises((ClientError, *CUT)) as info:
        env.s3.upload_part(Bucket=env.bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=last * 10)
    if isinstance(info.value, ClientError):
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
    env.upstream.clear()
    assert "Contents" not in env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key)
    assert _error(lambda: env.s3.get_object(Bucket=env.bucket, Key=key))[:2] == (404, "NoSuchKey")
    done.append({"PartNumber": 2, "ETag": env.s3.upload_part(Bucket=env.bucket, Key=key, UploadId=upload_id,
                                                             PartNumber=2, Body=last)["ETag"]})
    env.s3.complete_multipart_upload(Bucket=env.bucket, Key=key, UploadId=upload_id,
                                     MultipartUpload={"Parts": done})
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == first + last


def test_complete_reset_at_any_point_leaves_nothing_or_the_whole_object(env):
    """Complete is ListParts, the manifest PUT and the upstream Complete: a reset anywhere in them gives
    an error or success, the object is absent or whole, and a retried Complete finishes the job."""
    parts = [os.urandom(5 * MIB), os.urandom(1000)]
    key = _key()
    upload_id, done = _upload(env, key, parts)
    failures = []
    for after, direction in ((200, UP), (1500, UP), (2600, UP), (3600, UP), (0, DOWN), (1200, DOWN)):
        env.upstream.set(reset(after, direction))
        try:
            env.s3.complete_multipart_upload(Bucket=env.bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": done})
        except ClientError as exc:
            failures.append((exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]))
        env.upstream.clear()
        _assert_old_or_new(env, key, None, b"".join(parts))
        if env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key).get("KeyCount"):
            break
    # Every reset failed the Complete with a retryable 503; the one after the upstream completed the
    # upload (its answer lost) leaves the whole object, and a retry of it answers NoSuchUpload as S3 does.
    assert failures and set(failures) <= {(503, "ServiceUnavailable")}, failures
    assert env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read() == b"".join(parts)


# ------------------------------------------------------------------ half-open connections

def test_upstream_that_accepts_and_never_answers_fails_within_the_read_timeout(env):
    env.upstream.set(stall(0, UP))
    for call in (lambda: env.s3.put_object(Bucket=env.bucket, Key=_key(), Body=b"x" * 1000),
                 lambda: env.s3.head_object(Bucket=env.bucket, Key=_key()),
                 lambda: env.s3.list_objects_v2(Bucket=env.bucket)):
        started = time.monotonic()
        status, code, _ = _error(call)
        elapsed = time.monotonic() - started
        assert (status, code) in ((503, "ServiceUnavailable"), (503, "503"))
        assert READ_TIMEOUT - 0.5 < elapsed < READ_TIMEOUT + 10


def test_upstream_that_stops_mid_get_body_cuts_the_transfer_within_the_read_timeout(env):
    body, key = os.urandom(2 * MIB), _key()
    env.s3.put_object(Bucket=env.bucket, Key=key, Body=body)
    env.upstream.set(stall(MIB, DOWN))
    started = time.monotonic()
    assert _read_or_cut(env, key) is None
    assert time.monotonic() - started < READ_TIMEOUT + 10


def test_upstream_that_stops_reading_a_put_body_fails_it_and_stores_nothing(env):
    key = _key()
    env.upstream.set(stall(300_000, UP))
    started = time.monotonic()
    with pytest.raises((ClientError, *CUT)) as info:
        env.s3.put_object(Bucket=env.bucket, Key=key, Body=os.urandom(4 * MIB))
    assert time.monotonic() - started < READ_TIMEOUT + 15
    if isinstance(info.value, ClientError):
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
    env.upstream.clear()
    assert "Contents" not in env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key)


def test_key_service_reset_mid_answer_is_an_s3_error_and_stores_nothing(env):
    key = _key()
    env.kms.set(reset(50, DOWN))
    assert _error(lambda: env.s3.put_object(Bucket=env.bucket, Key=key, Body=b"x"))[:2] == \
        (503, "ServiceUnavailable")
    env.kms.clear()
    assert "Contents" not in env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key)


def test_key_service_that_never_answers_is_503_within_its_bound_and_stores_nothing(env):
    """Accepted and never answered, or silent halfway through its answer: the PUT is S3's retryable
    503 within the [kms] timeout, nothing is stored, and the next PUT works once it answers again."""
    for fault in (stall(0, UP), stall(40, DOWN)):
        key = _key()
        env.kms.set(fault)
        started = time.monotonic()
        assert _error(lambda: env.s3.put_object(Bucket=env.bucket, Key=key, Body=b"x"))[:2] == \
            (503, "ServiceUnavailable")
        assert time.monotonic() - started < KMS_TIMEOUT + 5
        env.kms.clear()
        assert "Contents" not in env.direct.list_objects_v2(Bucket=env.bucket, Prefix=key)
