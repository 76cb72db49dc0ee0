"""Slow, idle and surplus clients cannot starve the gateway (issue 8, item 3).

A gateway with small limits (set through GATEWAY_* variables) in front of moto; misbehaving clients
are raw loopback sockets (tests/support/slowclients.py), well-behaved ones boto3. Timeouts are a few
seconds and the assertions leave seconds of margin, for a loaded 2-core machine.
"""
from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _config_toml
from tests.support.clients import s3_client, upstream_keys
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server
from tests.support.slowclients import (connect, dribble_until_closed, read_response, seconds_until_closed,
                                       send_paced, signed_head, stalled_upload)

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
BODY_TIMEOUT = 4.0
SEND_TIMEOUT = 2.0
POOL_SIZE = 4
POOL_WAIT = 1.0
REQUEST_TIMEOUT_MESSAGE = ("Your socket connection to the server was not read from or written to within the "
                           "timeout period. Idle connections will be closed.")
LIMITS = {"GATEWAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "GATEWAY_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
          "GATEWAY_BODY_TIMEOUT": str(BODY_TIMEOUT), "GATEWAY_SEND_TIMEOUT": str(SEND_TIMEOUT),
          "GATEWAY_UPSTREAM_POOL_SIZE": str(POOL_SIZE), "GATEWAY_UPSTREAM_POOL_WAIT": str(POOL_WAIT)}


def start_limited_gateway(moto: MotoServer, workdir: Path, env: dict[str, str]) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", None))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                        env=env, cwd=workdir, timeout=60)


@pytest.fixture(scope="module")
def limited(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_limited_gateway(moto, tmp_path_factory.mktemp("gateway-limited"), LIMITS)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
def client(limited: Server):
    return s3_client(limited.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, read_timeout=30)


@pytest.fixture
def limited_bucket(client) -> str:
    name = f"slow-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    return name


def xml_code(body: bytes) -> tuple[str, str]:
    code = re.search(rb"<Code>(.*?)</Code>", body)
    message = re.search(rb"<Message>(.*?)</Message>", body)
    return (code.group(1).decode() if code else "", message.group(1).decode() if message else "")


def test_client_dribbling_its_headers_is_dropped_after_the_header_timeout_while_others_are_served(
        limited: Server, client, limited_bucket: str):
    slowloris = connect(limited.url)
    with contextlib.closing(slowloris), ThreadPoolExecutor(1) as pool:
        dribble = b"GET / HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 200
        closed_after = pool.submit(dribble_until_closed, slowloris, dribble, 0.1, HEADER_TIMEOUT + 10)
        client.put_object(Bucket=limited_bucket, Key="k", Body=b"served meanwhile")
        assert client.get_object(Bucket=limited_bucket, Key="k")["Body"].read() == b"served meanwhile"
        seconds = closed_after.result(timeout=HEADER_TIMEOUT + 20)
    assert seconds is not None, "the server kept a connection whose headers never ended"
    assert HEADER_TIMEOUT - 0.2 <= seconds < HEADER_TIMEOUT + 5


def test_connection_that_never_sends_a_request_is_closed_after_the_header_timeout(limited: Server):
    with contextlib.closing(connect(limited.url)) as silent:
        seconds = seconds_until_closed(silent, HEADER_TIMEOUT + 10)
    assert seconds is not None and HEADER_TIMEOUT - 0.2 <= seconds < HEADER_TIMEOUT + 5
    # at DEBUG (as the tests run their servers) the gateway says why, under its own namespace
    assert " DEBUG gateway.connections: gateway: closing a connection that sent no complete request headers" \
        in limited.log()


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(limited: Server):
    with contextlib.closing(connect(limited.url)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
        status, headers, body, _ = read_response(sock, 10)
        assert (status, xml_code(body)[0]) == (403, "AccessDenied")
        assert headers.get("connection", "").lower() != "close"
        seconds = seconds_until_closed(sock, IDLE_TIMEOUT + 10)
    assert seconds is not None, "the idle keep-alive connection was never closed"
    assert IDLE_TIMEOUT - 0.2 <= seconds < IDLE_TIMEOUT + 5


def test_kept_alive_connection_dribbling_its_next_request_is_dropped_after_the_header_timeout(limited: Server):
    with contextlib.closing(connect(limited.url)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert read_response(sock, 10)[0] == 403
        time.sleep(IDLE_TIMEOUT / 2)
        dribble = b"GET / HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 200
        seconds = dribble_until_closed(sock, dribble, 0.1, HEADER_TIMEOUT + 10)
    assert seconds is not None and HEADER_TIMEOUT - 0.2 <= seconds < HEADER_TIMEOUT + 5


def test_upload_that_keeps_sending_slowly_outlives_the_header_and_idle_timeouts(limited: Server, client,
                                                                               limited_bucket: str):
    pieces = 6
    path = f"/{limited_bucket}/slow-but-steady"
    with contextlib.closing(connect(limited.url)) as sock:
        sock.sendall(signed_head("PUT", limited.url, path, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                                 {"Content-Length": str(pieces * 100)}))
        for _ in range(pieces):  # 3 s in all: longer than the header and idle timeouts
            time.sleep(0.5)
            sock.sendall(b"y" * 100)
        status, _, body, _ = read_response(sock, 30)
    assert status == 200, body
    assert client.get_object(Bucket=limited_bucket, Key="slow-but-steady")["Body"].read() == b"y" * 600


def test_stalled_put_body_gets_request_timeout_and_nothing_is_stored_upstream(limited: Server, limited_bucket: str,
                                                                               upstream_s3):
    with contextlib.closing(stalled_upload(limited.url, f"/{limited_bucket}/stalled", GATEWAY_ACCESS_KEY,
                                           GATEWAY_SECRET_KEY)) as sock:
        status, _, body, seconds = read_response(sock, BODY_TIMEOUT + 20)
        assert (status, xml_code(body)) == (400, ("RequestTimeout", REQUEST_TIMEOUT_MESSAGE))
        assert BODY_TIMEOUT - 0.2 <= seconds < BODY_TIMEOUT + 10
        assert seconds_until_closed(sock, 5) is not None, "the connection stays open after RequestTimeout"
    assert upstream_keys(upstream_s3, limited_bucket) == []


def test_stalled_form_upload_gets_request_timeout_and_nothing_is_stored_upstream(limited: Server, client,
                                                                                  limited_bucket: str, upstream_s3):
    """A browser form upload (POST object) whose file stops arriving: RequestTimeout as a PUT gets it."""
    fields = client.generate_presigned_post(limited_bucket, "stalled-form")["fields"]
    form = b"".join(f'--b0\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in fields.items())
    form += b'--b0\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n' + b"x" * 1000
    netloc = urlsplit(limited.url).netloc
    with contextlib.closing(connect(limited.url)) as sock:
        sock.sendall(f"POST /{limited_bucket} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: multipart/form-data; "
                     f"boundary=b0\r\nContent-Length: {len(form) + 1_000_000}\r\n\r\n".encode() + form)
        status, _, body, seconds = read_response(sock, BODY_TIMEOUT + 20)
        assert (status, xml_code(body)) == (400, ("RequestTimeout", REQUEST_TIMEOUT_MESSAGE))
        assert BODY_TIMEOUT - 0.2 <= seconds < BODY_TIMEOUT + 10
        assert seconds_until_closed(sock, 5) is not None, "the connection stays open after RequestTimeout"
    assert upstream_keys(upstream_s3, limited_bucket) == []


def test_stalled_body_of_a_passed_through_request_gets_request_timeout(limited: Server, client,
                                                                      limited_bucket: str):
    path = f"/{limited_bucket}?tagging"
    with contextlib.closing(stalled_upload(limited.url, path, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                                           length=4000, sent=20)) as sock:
        status, _, body, _ = read_response(sock, BODY_TIMEOUT + 20)
    assert (status, xml_code(body)) == (400, ("RequestTimeout", REQUEST_TIMEOUT_MESSAGE))
    with pytest.raises(ClientError) as no_tags:
        client.get_bucket_tagging(Bucket=limited_bucket)
    assert no_tags.value.response["Error"]["Code"] == "NoSuchTagSet"


def test_stalled_upload_part_gets_request_timeout_and_no_part_is_stored_upstream(limited: Server, client,
                                                                                  limited_bucket: str, upstream_s3):
    upload_id = client.create_multipart_upload(Bucket=limited_bucket, Key="mp")["UploadId"]
    path = f"/{limited_bucket}/mp?partNumber=1&uploadId={upload_id}"
    with contextlib.closing(stalled_upload(limited.url, path, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)) as sock:
        status, _, body, _ = read_response(sock, BODY_TIMEOUT + 20)
    assert (status, xml_code(body)) == (400, ("RequestTimeout", REQUEST_TIMEOUT_MESSAGE))
    uploads = upstream_s3.list_multipart_uploads(Bucket=limited_bucket)["Uploads"]
    assert len(uploads) == 1
    parts = upstream_s3.list_parts(Bucket=limited_bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"])
    assert parts.get("Parts", []) == []


@contextlib.contextmanager
def stalled_uploads_timing_out(server: Server, bucket: str, prefix: str, count: int, *, sent: int) -> Iterator[None]:
    """``count`` signed PUTs that send ``sent`` bytes and stall while the body runs; afterwards each must
    have been answered 400 RequestTimeout. Their sockets are closed whatever happens."""
    stalled = [stalled_upload(server.url, f"/{bucket}/{prefix}-{i}", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                              sent=sent) for i in range(count)]
    try:
        yield
        for sock in stalled:
            status, _, body, _ = read_response(sock, BODY_TIMEOUT + 20)
            assert (status, xml_code(body)[0]) == (400, "RequestTimeout")
    finally:
        for sock in stalled:
            sock.close()


def test_stalled_uploads_holding_the_whole_pool_get_others_slow_down_and_the_gateway_recovers(
        limited: Server, client, limited_bucket: str, upstream_s3):
    # Past the first 64 KiB encryption segment, so each stalled PUT is streaming upstream when it stalls.
    with stalled_uploads_timing_out(limited, limited_bucket, "stalled", POOL_SIZE, sent=200_000):
        time.sleep(1.0)  # each stalled PUT now holds a pooled upstream connection
        start = time.monotonic()
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=limited_bucket, Key="meanwhile", Body=b"m")
        waited = time.monotonic() - start
        assert refused.value.response["Error"]["Code"] == "SlowDown"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert waited < POOL_WAIT + 2.5, f"SlowDown took {waited:.1f}s, the pool wait is {POOL_WAIT}s"
    client.put_object(Bucket=limited_bucket, Key="after", Body=b"served again")
    assert client.get_object(Bucket=limited_bucket, Key="after")["Body"].read() == b"served again"
    assert upstream_keys(upstream_s3, limited_bucket) == ["after"]


def test_uploads_stalled_before_their_first_segment_hold_no_upstream_connection(
        limited: Server, client, limited_bucket: str, upstream_s3):
    """A PUT takes a pooled upstream connection only once it has a whole encrypted segment to send, so
    twice as many uploads as the pool has connections, stalled after 1,000 bytes, leave others served
    at once; each stalled one still gets RequestTimeout and stores nothing."""
    with stalled_uploads_timing_out(limited, limited_bucket, "early", 2 * POOL_SIZE, sent=1000):
        time.sleep(1.0)
        start = time.monotonic()
        client.put_object(Bucket=limited_bucket, Key="meanwhile", Body=b"m")
        assert client.get_object(Bucket=limited_bucket, Key="meanwhile")["Body"].read() == b"m"
        assert time.monotonic() - start < POOL_WAIT, "a request waited for the pool behind stalled uploads"
    assert upstream_keys(upstream_s3, limited_bucket, "early-") == []


# A minimum average body rate (body_min_rate): a body may keep the gateway waiting body_timeout +
# received / body_min_rate seconds in all, whatever the pauses between its bytes.
RATED_BODY_TIMEOUT = 2.0
MIN_RATE = 100.0


@pytest.fixture(scope="module")
def rated(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"GATEWAY_BODY_TIMEOUT": str(RATED_BODY_TIMEOUT), "GATEWAY_BODY_MIN_RATE": str(MIN_RATE),
           "GATEWAY_UPSTREAM_POOL_SIZE": str(POOL_SIZE), "GATEWAY_UPSTREAM_POOL_WAIT": str(POOL_WAIT)}
    server = start_limited_gateway(moto, tmp_path_factory.mktemp("gateway-rated"), env)
    yield server
    assert server.stop() == 0, server.log()


def test_bodies_dripping_a_byte_every_half_second_get_request_timeout_and_release_the_pool(
        rated: Server, moto: MotoServer, upstream_s3):
    """One byte every 0.5 s never trips the 2 s per-read timeout, but falls behind 100 bytes/s after
    about 2.5 s; as many drips as the pool has connections are all cut off, nothing is stored, and
    the gateway serves others again."""
    client = s3_client(rated.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, read_timeout=30)
    bucket = f"drip-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    socks = [connect(rated.url) for _ in range(POOL_SIZE)]
    stop = threading.Event()
    with ThreadPoolExecutor(POOL_SIZE) as pool:
        try:
            for i, sock in enumerate(socks):
                sock.sendall(signed_head("PUT", rated.url, f"/{bucket}/drip-{i}", GATEWAY_ACCESS_KEY,
                                         GATEWAY_SECRET_KEY, {"Content-Length": "1000"}))
            start = time.monotonic()
            drips = [pool.submit(send_paced, sock, b"d", 0.5, 1000, stop) for sock in socks]
            for sock in socks:
                status, _, body, _ = read_response(sock, 20)
                assert (status, xml_code(body)) == (400, ("RequestTimeout", REQUEST_TIMEOUT_MESSAGE))
                assert seconds_until_closed(sock, 5) is not None, "the connection stays open after RequestTimeout"
            seconds = time.monotonic() - start
        finally:
            stop.set()  # before the pool waits for its threads
            for sock in socks:
                sock.close()
        sent = [drip.result(timeout=10) for drip in drips]
    assert RATED_BODY_TIMEOUT <= seconds < 15, f"the drips were cut off after {seconds:.1f}s"
    assert max(sent) < 40, sent  # the per-read timeout alone would have let them drip all 1000 bytes
    assert "DEBUG gateway.connections: gateway: request body slower than body_min_rate=100 bytes/s" in rated.log()
    assert upstream_keys(upstream_s3, bucket) == []
    client.put_object(Bucket=bucket, Key="after", Body=b"served again")
    assert upstream_keys(upstream_s3, bucket) == ["after"]


def test_a_steady_upload_above_the_minimum_rate_is_never_cut_off(rated: Server):
    """75 bytes every 0.5 s (150 bytes/s) for 5 s: far longer than the body timeout, never cut off."""
    client = s3_client(rated.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, read_timeout=30)
    bucket = f"steady-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    pieces = 10
    with contextlib.closing(connect(rated.url)) as sock:
        sock.sendall(signed_head("PUT", rated.url, f"/{bucket}/steady", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                                 {"Content-Length": str(pieces * 75)}))
        assert send_paced(sock, b"s" * 75, 0.5, pieces) == pieces
        status, _, body, _ = read_response(sock, 30)
    assert status == 200, body
    assert client.get_object(Bucket=bucket, Key="steady")["Body"].read() == b"s" * pieces * 75


def test_reader_that_stops_reading_is_cut_off_after_the_send_timeout_and_frees_its_upstream_connection(
        limited: Server, client, limited_bucket: str):
    size = 24 * 1024 * 1024
    client.put_object(Bucket=limited_bucket, Key="big", Body=b"z" * size)
    readers = [connect(limited.url, rcvbuf=4096) for _ in range(POOL_SIZE)]
    try:
        for sock in readers:
            sock.sendall(signed_head("GET", limited.url, f"/{limited_bucket}/big", GATEWAY_ACCESS_KEY,
                                     GATEWAY_SECRET_KEY))
        time.sleep(SEND_TIMEOUT + 3)  # nobody reads: the gateway's writes stall
        for sock in readers:
            received = 0
            deadline = time.monotonic() + 20
            with contextlib.suppress(ConnectionResetError, TimeoutError):
                while time.monotonic() < deadline and (chunk := sock.recv(1 << 20)):
                    received += len(chunk)
            assert received < size, "the gateway kept sending to a client that had stopped reading"
            assert time.monotonic() < deadline
    finally:
        for sock in readers:
            sock.close()
    start = time.monotonic()
    assert len(client.get_object(Bucket=limited_bucket, Key="big")["Body"].read()) == size
    assert time.monotonic() - start < 20


def test_connections_over_the_cap_get_slow_down_and_one_log_line(moto: MotoServer, tmp_path: Path):
    server = start_limited_gateway(moto, tmp_path, {"GATEWAY_MAX_CONNECTIONS": "3"})
    try:
        held = [connect(server.url) for _ in range(3)]
        with contextlib.ExitStack() as stack:
            for sock in held:
                stack.callback(sock.close)
            time.sleep(0.5)
            for _ in range(3):
                with contextlib.closing(connect(server.url)) as extra:
                    extra.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
                    status, headers, body, _ = read_response(extra, 10)
                assert (status, xml_code(body)) == (503, ("SlowDown", "Please reduce your request rate."))
                assert headers["connection"].lower() == "close"
            held.pop().close()
            time.sleep(0.5)
            assert s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY).list_buckets()["Buckets"] is not None
    finally:
        assert server.stop() == 0, server.log()
    lines = [line for line in server.log().splitlines() if "connection cap reached" in line]
    assert len(lines) == 1, server.log()
    assert "gateway: connection cap reached (max_connections=3)" in lines[0]


def test_one_address_over_its_connection_cap_gets_slow_down_while_other_addresses_are_served(
        moto: MotoServer, tmp_path: Path):
    server = start_limited_gateway(moto, tmp_path, {"GATEWAY_MAX_CONNECTIONS_PER_IP": "2"})
    try:
        held = [connect(server.url) for _ in range(2)]  # from 127.0.0.1
        with contextlib.ExitStack() as stack:
            for sock in held:
                stack.callback(sock.close)
            time.sleep(0.5)
            with contextlib.closing(connect(server.url)) as extra:
                extra.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
                status, headers, body, _ = read_response(extra, 10)
            assert (status, xml_code(body)) == (503, ("SlowDown", "Please reduce your request rate."))
            assert headers["connection"].lower() == "close"
            address = urlsplit(server.url)
            other = socket.create_connection((address.hostname, address.port), timeout=10,
                                             source_address=("127.0.0.2", 0))
            with contextlib.closing(other):
                other.sendall(b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n")
                assert read_response(other, 10)[0] == 403  # served (unsigned): another address
            held.pop().close()
            time.sleep(0.5)
            assert s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY).list_buckets()["Buckets"] is not None
    finally:
        assert server.stop() == 0, server.log()
    lines = [line for line in server.log().splitlines() if "per-address connection cap reached" in line]
    assert len(lines) == 1 and "max_connections_per_ip=2, latest 127.0.0.1" in lines[0], server.log()
