"""The upstream S3 store: a pooled aiohttp client whose every request is re-signed with SigV4.

The client's signature cannot be forwarded (the gateway changes bodies and headers, and the
upstream has its own credentials), so each request is signed afresh (``common.sigv4_signing``: signs
byte for byte as botocore's S3SigV4Auth, which its tests check, at a fifth of the cost). Bodies are
streamed, so the payload is declared ``UNSIGNED-PAYLOAD`` unless the body passes through unchanged
with a known SHA-256.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Mapping, Protocol
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from common.connections import RateLimitedLog
from common.sigv4 import UNSIGNED_PAYLOAD
from common.sigv4_signing import SigV4Signer, host_of
from gateway.s3errors import S3Error, invalid_argument, slow_down

log = logging.getLogger("gateway.upstream")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "expect",
})
# Client-signature material and body framing that is ours to terminate, never the upstream's.
CLIENT_ONLY = frozenset({
    "authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token",
    "x-amz-decoded-content-length", "x-amz-trailer",
    "x-forwarded-proto", "x-forwarded-for", "accept-encoding",
})
# Query parameters of presigned URLs and SDK routing hints, not S3 parameters.
AUTH_QUERY = frozenset({
    "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires", "x-amz-signedheaders",
    "x-amz-signature", "x-amz-security-token", "awsaccesskeyid", "signature", "expires", "x-id",
})


class UpstreamMeter(Protocol):
    """What measures the upstream requests (gateway/observability.py): an answer's latency to its headers, or
    the failure of a request that got none."""

    def answered(self, method: str, seconds: float, status: int) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


@dataclass(frozen=True)
class UpstreamTarget:
    url: str
    region: str
    access_key: str
    secret_key: str


def forwardable_headers(headers: Mapping[str, str], drop: Iterable[str] = ()) -> dict[str, str]:
    """The client headers that still mean something upstream (minus ``drop``, lower-case names).

    A value holding bytes that are not UTF-8 (aiohttp hands them over surrogate-escaped; a signature over them
    verifies) cannot be sent on: it is 400 InvalidArgument naming the header, before anything is written."""
    skip = HOP_BY_HOP | CLIENT_ONLY | {d.lower() for d in drop}
    out: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname in skip:
            continue
        if not value.isascii():
            _check_utf8(lname, value)
        if lname == "content-encoding":
            value = ",".join(v for v in (p.strip() for p in value.split(",")) if v and v != "aws-chunked")
            if not value:
                continue
        out[lname] = value
    return out


def _check_utf8(name: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(f"The value of the header {name} is not valid UTF-8.", name) from None


def upstream_query(query: Iterable[tuple[str, str]]) -> str:
    """A canonically encoded query string without presign parameters, so both signers agree on it."""
    pairs = sorted((k, v) for k, v in query if k.lower() not in AUTH_QUERY)
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


async def _queued(session: aiohttp.ClientSession, context: SimpleNamespace, params: Any) -> None:
    context.trace_request_ctx.queued = True


def _queue_tracer() -> aiohttp.TraceConfig:
    """Marks a request's trace context when it had to queue for a pooled connection, so a connect
    timeout can be told apart: waiting for the pool (SlowDown) or an upstream slow to accept."""
    tracer = aiohttp.TraceConfig()
    tracer.on_connection_queued_start.append(_queued)
    return tracer


class Upstream:
    """One connection pool to the upstream, shared by every handler.

    The pool holds ``pool_size`` connections; a request waits at most ``pool_wait`` seconds for one
    (aiohttp's connect timeout, which also bounds opening a new connection) and is then answered with
    ``503 SlowDown``, so a pool held by stalled clients delays others by that much, never forever.
    """

    def __init__(self, target: UpstreamTarget, *, pool_size: int = 100, pool_wait: float = 10.0,
                 read_timeout: float = 60.0, meter: UpstreamMeter | None = None) -> None:
        self.target = target
        self._meter = meter  # the metrics' (gateway/observability.py), when collected
        self._base = target.url.rstrip("/")
        base = urlsplit(self._base)
        self._host, self._base_path = host_of(base.scheme, base.netloc), base.path
        self._signer = SigV4Signer(target.access_key, target.secret_key, target.region)
        self._session: aiohttp.ClientSession | None = None
        self._pool_size = pool_size
        self._pool_wait = pool_wait
        self._read_timeout = read_timeout
        self._busy_log = RateLimitedLog(log)
        self.anonymous = False

    def unsigned(self) -> "Upstream":
        """This pool for requests sent unsigned (an anonymous client's: the upstream's own public-access
        rules decide, never the gateway's credential). Made after ``start``; only the original is closed."""
        view = copy.copy(self)
        view.anonymous = True
        return view

    def signed_as(self, access_key: str, secret_key: str) -> "Upstream":
        """This pool for requests signed with another upstream credential (a client's own upstream user,
        ``upstream_access_key`` of its ``[[gateway.credentials]]`` entry): the upstream's users, bucket
        policies, ACLs and object ownership then apply to that client. Same connections, same limits;
        made after ``start``; only the original is closed."""
        view = copy.copy(self)
        view.target = replace(self.target, access_key=access_key, secret_key=secret_key)
        view._signer = SigV4Signer(access_key, secret_key, self.target.region)
        view.anonymous = False
        return view

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._pool_size, ttl_dns_cache=300)
        # No total limit (objects are big), but a bound on silence: a half-open upstream fails the request.
        timeout = aiohttp.ClientTimeout(total=None, connect=self._pool_wait, sock_connect=10,
                                        sock_read=self._read_timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                              skip_auto_headers=("Accept-Encoding", "User-Agent",
                                                                 "Content-Type"),
                                              trace_configs=[_queue_tracer()])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _signed(self, method: str, raw_path: str, query: str, headers: Mapping[str, str],
                payload_hash: str) -> dict[str, str]:
        """Headers (with Authorization) for ``method`` of ``raw_path?query`` on this upstream, signed for its
        credentials (as they are, for an unsigned view)."""
        # the Host header is sent as signed: aiohttp would send the configured URL's host as it is written
        # (upper case, a non-ASCII name), which is not what SigV4 signs
        headers = {**headers, "Host": self._host}
        if self.anonymous:
            return headers
        return self._signer.sign_parts(method, self._host, self._base_path + raw_path, query, headers, payload_hash)

    async def request(self, method: str, raw_path: str, query: Iterable[tuple[str, str]],
                      headers: Mapping[str, str], *, body: AsyncIterable[bytes] | bytes | None = None,
                      content_length: int | None = None,
                      payload_hash: str = UNSIGNED_PAYLOAD) -> aiohttp.ClientResponse:
        """Send a re-signed request; the caller reads and releases the response."""
        assert self._session is not None, "Upstream.start() was not awaited"
        qs = upstream_query(query)
        url = f"{self._base}{raw_path}" + (f"?{qs}" if qs else "")
        signed = self._signed(method, raw_path, qs, headers, payload_hash)
        if content_length is not None:
            signed["Content-Length"] = str(content_length)
        trace = SimpleNamespace(queued=False)
        kwargs: dict[str, Any] = {"headers": signed, "allow_redirects": False, "trace_request_ctx": trace}
        if body is not None:
            kwargs["data"] = body if isinstance(body, (bytes, bytearray)) else await primed(body)
        if self._meter is None:
            return await self._send(method, url, kwargs, trace)
        began = time.perf_counter()
        try:
            response = await self._send(method, url, kwargs, trace)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # an S3Error (SlowDown) is the gateway's own
            self._meter.failed(exc)
            raise
        self._meter.answered(method, time.perf_counter() - began, response.status)
        return response

    async def _send(self, method: str, url: str, kwargs: dict[str, Any], trace: SimpleNamespace
                    ) -> aiohttp.ClientResponse:
        """The request on the pool: waiting too long for a connection is SlowDown, a body that failed its
        own way raises that failure."""
        assert self._session is not None
        try:
            return await self._session.request(method, URL(url, encoded=True), **kwargs)
        except aiohttp.ConnectionTimeoutError:
            if not trace.queued:
                raise
            self._busy_log.note("upstream pool busy: all %d connections in use for %ss; answering SlowDown",
                                self._pool_size, self._pool_wait)
            raise slow_down() from None
        except aiohttp.ClientConnectionError as exc:
            if isinstance(exc.__cause__, S3Error):  # the body stream failed (e.g. RequestTimeout): that is
                raise exc.__cause__ from None      # the answer, not an upstream failure
            raise


async def primed(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """``body`` once its first piece exists: a streamed request takes a pooled upstream connection only
    when it has something to send, so clients that stall before their first byte (or, under
    encryption, before their first whole segment) hold no upstream connection while they stall.
    A failure of the body before its first piece (e.g. RequestTimeout) is raised here, before any
    upstream request is made."""
    chunks = aiter(body)
    first = await anext(chunks, None)

    async def rest() -> AsyncIterator[bytes]:
        if first is not None:
            yield first
        async for chunk in chunks:
            yield chunk
    return rest()


async def read_up_to(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """An upstream body, or its first ``limit`` bytes and a little more when it is longer.

    ``StreamReader.read(n)`` returns whatever is buffered, not n bytes: a body arriving in several
    pieces (a slow or busy upstream) must be read block by block to its end, or a truncated body
    (a listing, a record) is parsed.
    """
    blocks: list[bytes] = []
    size = 0
    while size <= limit and (block := await response.content.readany()):
        blocks.append(block)
        size += len(block)
    return b"".join(blocks)
