"""Watching each request of a server: the middleware that feeds the access log and the metrics.

``Observer.middleware`` is the outermost middleware of both servers. It starts a ``RequestRecord`` and
makes it the current one (a context variable, so the pipeline and the key provider can add to it without
being handed it: ``current()``), lets the handler answer, writes the answer out itself -- so the record's
duration, status and bytes are those of the answer as sent, not as returned -- and then hands the record to
the access log and the metrics. What it cannot see from the response (operation, caller) the server notes
on the record as it learns it; what only the server can read from an answer (its error code, SSE mode) a
``describe`` function of the server's adds at the end.
"""
from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable

from aiohttp import web

from common.accesslog import AccessLog, RequestRecord
from common.metrics import HttpMetrics

CLIENT_CLOSED = 499  # the status of a request whose client went away before its answer (nginx's convention)
_CURRENT: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar("request_record", default=None)

Describe = Callable[[RequestRecord, web.BaseRequest, web.StreamResponse], None]


def current() -> RequestRecord | None:
    """The record of the request being handled, None outside of one (start-up, tools, no observer)."""
    return _CURRENT.get()


class Observer:
    """The access log and metrics of one server, fed by its middleware; either may be off (None)."""

    def __init__(self, access_log: AccessLog | None, metrics: HttpMetrics | None, describe: Describe | None,
                 request_id_header: str) -> None:
        self.access_log = access_log
        self.metrics = metrics
        self._describe = describe
        self._id_header = request_id_header

    @web.middleware
    async def middleware(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        """Answer through ``handler`` and write the answer out, then log and count the request."""
        record = RequestRecord(started=time.time(), remote=request.remote or "", method=request.method)
        token = _CURRENT.set(record)
        begun = time.perf_counter()
        if self.metrics is not None:
            self.metrics.in_flight += 1
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:  # the client went away: aiohttp's own finishing of the answer notes it quietly
                record.status = CLIENT_CLOSED
            return response
        except web.HTTPException as exc:  # aiohttp's own answers (its router's): they go out as they are
            response = exc
            raise
        except (ConnectionError, asyncio.CancelledError):
            record.status = CLIENT_CLOSED
            raise
        except Exception:  # not the servers' way (they render every failure), but aiohttp answers it with a 500
            record.status = 500
            raise
        finally:
            _CURRENT.reset(token)
            record.duration = time.perf_counter() - begun
            if self.metrics is not None:
                self.metrics.in_flight -= 1
            self._finish(record, request, response, begun)

    def _finish(self, record: RequestRecord, request: web.BaseRequest, response: web.StreamResponse | None,
                begun: float) -> None:
        """Complete the record from the answer, then log and count it."""
        if response is not None:
            if not record.status:
                record.status = response.status
            record.request_id = response.headers.get(self._id_header, "")
            record.bytes_out = _body_bytes(request, response, record.status)
            record.ttfb = None if record.prepared_at is None else record.prepared_at - begun
            if self._describe is not None:
                self._describe(record, request, response)
        else:
            record.ttfb = None if record.prepared_at is None else record.prepared_at - begun
        record.bytes_in = _plaintext_bytes_in(request)
        if self.metrics is not None:
            self.metrics.observe(record)
        if self.access_log is not None:
            self.access_log.write(record)

    async def mark_first_byte(self, request: web.Request, response: web.StreamResponse) -> None:
        """An ``on_response_prepare`` hook (registered last): the moment the answer's headers go out, and its
        request id (kept should the client go away before the handler returns its answer)."""
        record = _CURRENT.get()
        if record is not None and record.prepared_at is None:
            record.prepared_at = time.perf_counter()
            record.request_id = response.headers.get(self._id_header, "")


def _body_bytes(request: web.BaseRequest, response: web.StreamResponse, status: int) -> int:
    """The answer's body bytes: its Content-Length once the whole answer went out (a HEAD's: none); 0 when the
    client went away before the end (how much it got is not known)."""
    if request.method == "HEAD" or response.status in (204, 304) or status == CLIENT_CLOSED:
        return 0
    length = response.content_length
    if length is not None:
        return length
    return response.body_length  # streamed without a length: what was written (chunk framing included)


def _plaintext_bytes_in(request: web.BaseRequest) -> int:
    """The request body's plaintext bytes: the decoded length of an aws-chunked body (its chunk
    signatures are not data; at most what was read), else the bytes read."""
    read = request.content.total_bytes
    decoded = request.headers.get("x-amz-decoded-content-length")
    if decoded is not None and decoded.isdigit():
        return min(int(decoded), read)
    return read
