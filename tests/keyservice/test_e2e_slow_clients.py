"""``keyservice serve`` drops slow-header and idle connections, times out stalled bodies and caps its
connections, like the gateway (issue 8, item 3). Raw loopback sockets play the misbehaving clients."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.keyservice.conftest import KeyServiceProcess, launch, signed_call
from tests.support.slowclients import connect, dribble_until_closed, read_response, seconds_until_closed, send_paced

HEADER_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
BODY_TIMEOUT = 1.5
MIN_RATE = 100.0
LIMITS = {"KEYSERVICE_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "KEYSERVICE_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
          "KEYSERVICE_BODY_TIMEOUT": str(BODY_TIMEOUT), "KEYSERVICE_BODY_MIN_RATE": str(MIN_RATE)}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServiceProcess]:
    ks = launch(tmp_path_factory.mktemp("keyservice-limited"), env=LIMITS)
    yield ks
    assert ks.server.stop() == 0, ks.server.log()


def test_client_dribbling_its_headers_is_dropped_after_the_header_timeout_while_others_are_served(
        limited: KeyServiceProcess):
    slowloris = connect(limited.url)
    with contextlib.closing(slowloris), ThreadPoolExecutor(1) as pool:
        dribble = b"POST / HTTP/1.1\r\nHost: kms\r\nX-Slow: " + b"a" * 200
        closed_after = pool.submit(dribble_until_closed, slowloris, dribble, 0.1, HEADER_TIMEOUT + 10)
        status, _, result = signed_call(limited.url, "CreateKey", {"Description": "served meanwhile"})
        assert status == 200, result
        seconds = closed_after.result(timeout=HEADER_TIMEOUT + 20)
    assert seconds is not None, "the key service kept a connection whose headers never ended"
    assert HEADER_TIMEOUT - 0.2 <= seconds < HEADER_TIMEOUT + 5


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(limited: KeyServiceProcess):
    with contextlib.closing(connect(limited.url)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\n\r\n{}")
        status, _, body, _ = read_response(sock, 10)
        assert (status, json.loads(body)["__type"]) == (400, "MissingAuthenticationTokenException")
        seconds = seconds_until_closed(sock, IDLE_TIMEOUT + 10)
    assert seconds is not None, "the idle keep-alive connection was never closed"
    assert IDLE_TIMEOUT - 0.2 <= seconds < IDLE_TIMEOUT + 5


def test_stalled_request_body_gets_request_timeout_and_the_connection_is_closed(limited: KeyServiceProcess):
    with contextlib.closing(connect(limited.url)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: kms\r\nX-Amz-Target: TrentService.ListKeys\r\n"
                     b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 500\r\n\r\n{\"Limit\": ")
        status, _, body, seconds = read_response(sock, BODY_TIMEOUT + 20)
        assert (status, json.loads(body)["__type"]) == (408, "RequestTimeoutException")
        assert BODY_TIMEOUT - 0.2 <= seconds < BODY_TIMEOUT + 10
        assert seconds_until_closed(sock, 5) is not None, "the connection stays open after the timeout"


def test_request_body_dripping_below_the_minimum_rate_gets_request_timeout(limited: KeyServiceProcess):
    """A byte every 0.5 s never trips the 1.5 s per-read timeout but falls behind 100 bytes/s."""
    stop = threading.Event()
    with contextlib.closing(connect(limited.url)) as sock, ThreadPoolExecutor(1) as pool:
        try:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: kms\r\nX-Amz-Target: TrentService.ListKeys\r\n"
                         b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 500\r\n\r\n")
            drip = pool.submit(send_paced, sock, b" ", 0.5, 500, stop)
            status, _, body, seconds = read_response(sock, 20)
        finally:
            stop.set()
        assert (status, json.loads(body)["__type"]) == (408, "RequestTimeoutException")
        assert BODY_TIMEOUT <= seconds < 12
        assert drip.result(timeout=10) < 30


def test_connections_over_the_cap_get_throttled_and_one_log_line(tmp_path: Path):
    ks = launch(tmp_path, env={"KEYSERVICE_MAX_CONNECTIONS": "2"})
    try:
        held = [connect(ks.url) for _ in range(2)]
        with contextlib.ExitStack() as stack:
            for sock in held:
                stack.callback(sock.close)
            time.sleep(0.5)
            for _ in range(3):
                with contextlib.closing(connect(ks.url)) as extra:
                    extra.sendall(b"POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\n\r\n{}")
                    status, _, body, _ = read_response(extra, 10)
                assert (status, json.loads(body)["__type"]) == (400, "ThrottlingException")
            held.pop().close()
            time.sleep(0.5)
            assert signed_call(ks.url, "ListKeys", {})[0] == 200
    finally:
        assert ks.server.stop() == 0, ks.server.log()
    lines = [line for line in ks.server.log().splitlines() if "connection cap reached" in line]
    assert len(lines) == 1, ks.server.log()
    assert "keyservice: connection cap reached (max_connections=2)" in lines[0]
