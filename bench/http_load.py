"""A lean HTTP/1.1 load client for the benches: keep-alive connections driven by asyncio protocols, each
answer parsed by httptools (the C parser uvicorn uses), one request in flight per connection.

Why not aiohttp's client: on a small machine the bench's clients share the cores with the server they
measure. aiohttp's client costs about 75 µs of CPU per request (its session, request and response objects,
its timers and tracing); this one about 20 µs (writing the request is one ``transport.write``, reading the
answer is the parser's C callbacks), so the cores go to the server, as they would with a load generator on
another machine. It speaks only what the benches send: a request with a known-length body (or none) and
an answer with a ``Content-Length`` or chunked body; no HEAD (the parser would wait for the body the
answer's ``Content-Length`` announces).

    connection = await HttpConnection.open("127.0.0.1", 8080)
    answer = await connection.request("POST", "/", "127.0.0.1:8080", headers, body)
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Mapping

import httptools


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection, one request at a time. An answer the server marks ``Connection: close``
    (or a server that closes) leaves it closed: ``request`` then raises ConnectionError."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> "HttpConnection":
        _, connection = await asyncio.get_running_loop().create_connection(cls, host, port)
        return connection

    async def request(self, method: str, target: str, host: str, headers: Mapping[str, str],
                      body: bytes = b"") -> Answer:
        """Send one request (``target``: the encoded path and query) and wait for its whole answer."""
        if method == "HEAD":
            raise ValueError("HEAD is not supported: its answer's Content-Length announces no body")
        if self.closed or self._transport is None:
            raise ConnectionError("the connection is closed")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment] - uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparsable answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"the server closed the connection: {exc}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if not self._parser.should_keep_alive():
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)
        self._waiter = None

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._waiter = None
