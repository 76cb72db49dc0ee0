"""The application around the handlers, in-process: request ids and S3 errors (middleware), start-up and
cleanup (cleanup contexts), and stalled bodies under the guarded runner `serve()` uses."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from common.connections import ConnectionGuard, GuardedAppRunner, ServerLimits
from common.serving import listen, serve_until_signal
from gateway.app import CONFIG_KEY, UPSTREAM_KEY, create_app, refusal_answer
from gateway.config import UpstreamConfig
from tests.gateway.inprocess.harness import gateway_config, inprocess, moto_upstream
from tests.support.clients import s3_client
from tests.support.process import free_port
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.slowclients import connect, read_response, seconds_until_closed, signed_head

REQUEST_TIMEOUT = b"<Code>RequestTimeout</Code>"


async def test_every_answer_carries_its_own_request_id_in_both_headers(gw, bucket):
    ok = await gw.send("PUT", f"/{bucket}/k", body=b"x")
    missing = await gw.send("GET", f"/{bucket}/absent")
    ids = [answer.headers["x-amz-request-id"] for answer in (ok, missing)]
    assert [answer.headers["x-amz-id-2"] for answer in (ok, missing)] == ids
    assert len(set(ids)) == 2 and all(len(i) == 16 for i in ids)


async def test_an_error_of_the_gateway_names_the_request_id_of_its_headers_and_the_resource(gw, bucket):
    await gw.put(bucket, "k", b"x")
    answer = await gw.send("GET", f"/{bucket}/k", "partNumber=0")
    assert answer.error() == (400, "InvalidArgument")
    assert answer.xml()["RequestId"] == answer.headers["x-amz-request-id"] == answer.headers["x-amz-id-2"]
    assert answer.xml()["Resource"] == f"/{bucket}/k"


async def test_an_unsigned_write_is_403_access_denied_with_a_request_id(gw, bucket):
    async with gw.client.session.put(gw.url(f"/{bucket}/k"), data=b"x") as response:
        body = await response.read()
    assert response.status == 403 and b"<Code>AccessDenied</Code>" in body
    assert f"<RequestId>{response.headers['x-amz-request-id']}</RequestId>".encode() in body


async def test_an_unreachable_upstream_is_503_service_unavailable_and_head_has_no_body(tmp_path, clean_environment):
    nothing_listens = UpstreamConfig(url=f"http://127.0.0.1:{free_port()}", access_key="a", secret_key="b")
    config = replace(gateway_config(nothing_listens, tmp_path / "data"), startup_checks=False)  # it went down
    async with inprocess(create_app(config)) as gw:
        answer = await gw.send("GET", "/bucket/k")
        assert answer.error() == (503, "ServiceUnavailable")
        assert answer.xml()["Message"] == "The upstream store cannot be reached"
        head = await gw.send("HEAD", "/bucket/k")
        assert (head.status, head.body) == (503, b"")


def _accepts(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as s:
        return s.connect_ex((parts.hostname, parts.port)) == 0


async def test_a_start_up_failing_half_way_stops_what_it_had_started(tmp_path, clean_environment, monkeypatch):
    """No upstream URL: a development upstream starts, then the upstream pool; the embedded key service
    then fails (a malformed root key). Both are stopped again and the failure propagates."""
    monkeypatch.setenv("KEYSERVICE_ROOT_KEY", "tooshort")
    app = create_app(gateway_config(UpstreamConfig(), tmp_path / "data"))
    with pytest.raises(ValueError, match="root key"):
        await serve_until_signal(web.AppRunner(app), "127.0.0.1", 0, None, logging.getLogger("test"))
    dev_url = app[CONFIG_KEY].upstream.url
    assert dev_url.startswith("http://127.0.0.1:") and not _accepts(dev_url)
    with pytest.raises(RuntimeError, match="Session is closed"):
        await app[UPSTREAM_KEY].request("GET", "/", [], {})


# ---------------------------------------------------------------- stalled bodies, under the guarded runner

STALLING = ServerLimits(body_timeout=0.5, body_min_rate=0)


@contextlib.asynccontextmanager
async def guarded(app: web.Application, limits: ServerLimits) -> AsyncIterator[str]:
    """``app`` served as `serve()` serves it (GuardedAppRunner, common.serving.listen); its URL."""
    runner = GuardedAppRunner(app, ConnectionGuard(limits, refusal_answer(), "gateway"), access_log=None)
    await runner.setup()
    try:
        yield await listen(runner, "127.0.0.1", 0, None)
    finally:
        await runner.cleanup()


def _stall(url: str, head: bytes) -> tuple[int, bytes, float | None]:
    """Send ``head`` and 10 of the 100000 body bytes it announces; the answer and the seconds until the
    connection was closed after it (None: still open 5 s later)."""
    with contextlib.closing(connect(url)) as sock:
        sock.sendall(head + b"x" * 10)
        status, _, body, _ = read_response(sock, 10)
        return status, body, seconds_until_closed(sock, 5)


async def _served_bucket(url: str) -> str:
    s3 = s3_client(url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    await asyncio.to_thread(s3.create_bucket, Bucket="stalled")
    return "stalled"


async def test_a_stalled_upload_is_answered_request_timeout_and_its_connection_closed(moto, tmp_path,
                                                                                       clean_environment):
    async with guarded(create_app(gateway_config(moto_upstream(moto), tmp_path / "data")), STALLING) as url:
        bucket = await _served_bucket(url)
        head = signed_head("PUT", url, f"/{bucket}/k", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                           {"Content-Length": "100000"})
        status, body, closed = await asyncio.to_thread(_stall, url, head)
    assert (status, REQUEST_TIMEOUT in body) == (400, True)
    assert closed is not None and closed < 1


async def test_a_stalled_presigned_upload_carrying_headers_in_its_query_has_its_connection_closed(
        moto, tmp_path, clean_environment):
    async with guarded(create_app(gateway_config(moto_upstream(moto), tmp_path / "data")), STALLING) as url:
        bucket = await _served_bucket(url)
        presigner = s3_client(url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, signature_version="s3")
        presigned = presigner.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "k", "ContentType": "text/plain"})
        parts = urlsplit(presigned)
        assert "content-type=" in parts.query  # SigV2 presigning moves it into the query
        head = (f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Content-Length: 100000\r\n\r\n").encode()
        status, body, closed = await asyncio.to_thread(_stall, url, head)
    assert (status, REQUEST_TIMEOUT in body) == (400, True)
    assert closed is not None and closed < 1


@pytest.mark.parametrize("method, query, operation", [
    ("GET", "torrent", "torrent"), ("HEAD", "torrent", "torrent"),
    ("POST", "select&select-type=2", "select")])
async def test_operations_that_would_hand_out_ciphertext_are_501_and_never_relayed(gw, bucket, method, query,
                                                                                 operation):
    await gw.put(bucket, "k", b"secret body")
    answer = await gw.send(method, f"/{bucket}/k", query)
    assert answer.status == 501
    if method != "HEAD":
        assert answer.xml()["Code"] == "NotImplemented"
        assert b"secret body" not in answer.body
