"""Malformed unauthenticated requests: each is refused and logged on one line, never with a traceback,
by the gateway and by a standalone key service alike (a port scan must not flood the log)."""
from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.keyservice.conftest import launch
from tests.support.process import Server

GARBAGE = {
    "tls hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),
    "garbage request line": b"GARBAGE\r\n\r\n",
    "binary noise": bytes(range(256)) * 4,
    "invalid percent-encoding": b"GET /%zz%%/a%G1?x=%E0%A4%A HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad header line": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    "bad content-length": b"PUT /b/k HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "control characters in the path": b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad chunk size": b"PUT /b/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "header too long": b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
    "body cut short": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort",
}


def _send(url: str, payload: bytes) -> bytes:
    """Send ``payload``, then read what comes back (bounded) and close."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                block = conn.recv(65536)
            except OSError:
                break
            if not block:
                break
            answer += block
        return answer


def _assert_refused_on_one_line_each(server: Server, url: str) -> None:
    before = len(server.output)
    for name, payload in GARBAGE.items():
        answer = _send(url, payload)
        assert answer == b"" or answer.startswith(b"HTTP/1."), name
        assert not answer.startswith(b"HTTP/1.1 2") and not answer.startswith(b"HTTP/1.0 2"), name
    time.sleep(0.5)  # let the last lines reach the pump
    log = "".join(line for line in server.output[before:] if not line.startswith("{"))  # not access-log lines
    assert "Traceback" not in log, log
    assert len(log.splitlines()) <= len(GARBAGE), log


def test_gateway_logs_malformed_requests_on_one_line_without_traceback(gateway):
    _assert_refused_on_one_line_each(gateway.server, gateway.url)


@pytest.fixture
def standalone_keyservice(tmp_path):
    keyservice = launch(tmp_path)
    yield keyservice
    assert keyservice.server.stop() == 0


def test_keyservice_logs_malformed_requests_on_one_line_without_traceback(standalone_keyservice):
    _assert_refused_on_one_line_each(standalone_keyservice.server, standalone_keyservice.url)
