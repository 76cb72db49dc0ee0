"""Misbehaving clients on raw loopback sockets: dribbled headers, stalled bodies, readers that stop.

Every wait is bounded by a deadline, and every socket is closed by the caller (``contextlib.closing``
or ``close_all``), so a server that never reacts fails the test instead of hanging it.
"""
from __future__ import annotations

import http.client
import socket
import threading
import time
from urllib.parse import urlsplit

from botocore.auth import UNSIGNED_PAYLOAD, S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "us-east-1"


class _UnsignedPayload(S3SigV4Auth):
    """Signs headers only, as SDKs do for streamed bodies."""

    def payload(self, request: AWSRequest) -> str:
        return UNSIGNED_PAYLOAD


def connect(url: str, rcvbuf: int | None = None) -> socket.socket:
    """A connected socket to ``url``'s host and port (``rcvbuf`` shrinks the receive buffer, for readers
    that must look stalled quickly)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect((parts.hostname, parts.port))
    return sock


def signed_head(method: str, url: str, path: str, access_key: str, secret_key: str,
                headers: dict[str, str] | None = None) -> bytes:
    """The request line and headers of a SigV4-signed (UNSIGNED-PAYLOAD) S3 request."""
    request = AWSRequest(method=method, url=url.rstrip("/") + path, headers=dict(headers or {}))
    request.headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
    _UnsignedPayload(Credentials(access_key, secret_key), "s3", REGION).add_auth(request)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(url).netloc}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def stalled_upload(url: str, path: str, access_key: str, secret_key: str, *, length: int = 1 << 20,
                   sent: int = 1000) -> socket.socket:
    """A signed PUT of ``length`` bytes that sends only ``sent`` of them and then stalls."""
    sock = connect(url)
    sock.sendall(signed_head("PUT", url, path, access_key, secret_key, {"Content-Length": str(length)}))
    sock.sendall(b"x" * sent)
    return sock


def read_response(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes, float]:
    """Status, headers (lower-case names), body and the seconds it took to arrive."""
    start = time.monotonic()
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body, time.monotonic() - start


def seconds_until_closed(sock: socket.socket, within: float) -> float | None:
    """Read (and drop) whatever arrives until the server closes the connection; the seconds that took,
    or None if it was still open after ``within`` seconds."""
    start = time.monotonic()
    deadline = start + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        except TimeoutError:
            return None
    return None


def dribble_until_closed(sock: socket.socket, data: bytes, interval: float, within: float) -> float | None:
    """Send ``data`` one byte every ``interval`` seconds (a slowloris client); the seconds until the
    server closed the connection, or None if it was still open after ``within`` seconds."""
    start = time.monotonic()
    for byte in data:
        if time.monotonic() - start > within:
            return None
        try:
            sock.sendall(bytes([byte]))
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        closed = seconds_until_closed(sock, interval)
        if closed is not None:
            return time.monotonic() - start
    return None


def send_paced(sock: socket.socket, piece: bytes, interval: float, count: int,
               stop: threading.Event | None = None) -> int:
    """Send ``piece`` ``count`` times, one every ``interval`` seconds (a drip, or a slow but steady
    upload), until ``stop`` is set or the server closes the connection; the pieces sent."""
    stop = stop or threading.Event()
    sent = 0
    for _ in range(count):
        if stop.wait(interval):
            break
        try:
            sock.sendall(piece)
        except OSError:
            break
        sent += 1
    return sent
