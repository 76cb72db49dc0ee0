"""bench/http_load.py, the benches' lean load client, against a real aiohttp server on loopback: what it
reads back is exactly what the server sent, over one kept-alive connection, and a closing server is
noticed instead of waited for."""
from __future__ import annotations

import pytest
from aiohttp import web

from bench.http_load import HttpConnection


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if request.path == "/chunked":
        response = web.StreamResponse(status=207)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"first,", b"second,", body):
            await response.write(piece)
        await response.write_eof()
        return response
    if request.path == "/close":
        return web.Response(status=503, body=b"bye", headers={"Connection": "close"})
    return web.Response(status=200, body=request.method.encode() + b" " + body,
                        headers={"X-Seen-Host": request.headers["Host"], "X-Seen-Target": request.raw_path})


@pytest.fixture
async def server_port():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_answers_come_back_whole_over_one_kept_alive_connection(server_port: int) -> None:
    connection = await HttpConnection.open("127.0.0.1", server_port)
    host = f"127.0.0.1:{server_port}"
    try:
        first = await connection.request("POST", "/a?x=1", host, {"X-Amz-Target": "T.Op"}, b"payload")
        second = await connection.request("GET", "/b", host, {})
        chunked = await connection.request("PUT", "/chunked", host, {}, b"third")
    finally:
        connection.close()
    assert (first.status, first.body, first.headers["x-seen-host"], first.headers["x-seen-target"]) == (
        200, b"POST payload", host, "/a?x=1")
    assert (second.status, second.body) == (200, b"GET ")
    assert (chunked.status, chunked.body) == (207, b"first,second,third")


async def test_an_answer_that_closes_the_connection_leaves_it_closed(server_port: int) -> None:
    connection = await HttpConnection.open("127.0.0.1", server_port)
    answer = await connection.request("GET", "/close", f"127.0.0.1:{server_port}", {})
    assert (answer.status, answer.body, connection.closed) == (503, b"bye", True)
    with pytest.raises(ConnectionError, match="the connection is closed"):
        await connection.request("GET", "/", f"127.0.0.1:{server_port}", {})


async def test_head_is_refused_before_anything_is_sent(server_port: int) -> None:
    connection = await HttpConnection.open("127.0.0.1", server_port)
    try:
        with pytest.raises(ValueError, match="HEAD is not supported"):
            await connection.request("HEAD", "/", f"127.0.0.1:{server_port}", {})
    finally:
        connection.close()
