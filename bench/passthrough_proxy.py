"""The baseline the gateway's throughput goal is stated against: a plain aiohttp reverse proxy.

It does what any aiohttp proxy must (one pooled ClientSession, request and response bodies streamed
with ``iter_chunked(1 MiB)``) and nothing the gateway adds: no signature checks, no re-signing, no
crypto. Headers are forwarded as they are (the benchmark upstream does not verify signatures), so
the gap between this proxy and the gateway is the gateway's own work.

    .venv/bin/python -m bench.passthrough_proxy --upstream http://127.0.0.1:PORT --listen 127.0.0.1:0
"""
from __future__ import annotations

import argparse
from typing import AsyncIterator, Mapping

import aiohttp
from aiohttp import web
from yarl import URL

from bench.serving import serve_until_signalled
from common.eventloop import run

CHUNK = 1 << 20
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


def _forward(headers: Mapping[str, str]) -> dict[str, str]:
    """End-to-end headers only: the connection-level ones belong to each hop."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


class PassthroughProxy:
    """Forward every request to one upstream over a pooled session, bodies streamed both ways."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def start(self, _app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=300),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"))

    async def close(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        headers = _forward(request.headers)
        body = None
        if request.content_length or request.headers.get("Transfer-Encoding"):
            body = _body(request)
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with self.session.request(request.method, url, headers=headers, data=body,
                                        allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, headers=_forward(upstream.headers))
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
            await response.write_eof()
            return response


async def serve(host: str, port: int, upstream: str) -> None:
    proxy = PassthroughProxy(upstream)
    app = web.Application(client_max_size=0)
    app.on_startup.append(proxy.start)
    app.on_cleanup.append(proxy.close)
    app.router.add_route("*", "/{path:.*}", proxy.handle)
    await serve_until_signalled(app, host, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="the S3 endpoint to forward to")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    run(serve(host, int(port), args.upstream))


if __name__ == "__main__":
    main()
