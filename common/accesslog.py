"""The access log of both servers: one structured line per request, JSON lines or a human format.

Each line says who asked for what and how it went (``RequestRecord``: time, request id, remote address,
access key, operation, bucket and key, status, error code, plaintext bytes in and out, duration and time
to first byte, the KMS calls the request made, its SSE mode), written once the answer went out. The
fields are chosen, never copied from the request: no header, signature, secret, data key or customer key
can reach a line, and the line still passes the same redacting filter as the server log (common/logsetup.py)
as a last line of defence.

The destination is ``stdout`` (the default, as container platforms collect it), ``stderr``, a file path
(appended to, reopened when logrotate moves it) or ``off``. A writer of its own, not a logger: the server
log level never silences it, and several servers in one test process never share one.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from common.connections import RateLimitedLog
from common.logsetup import RedactingFilter

FORMATS = ("json", "text")
_JSON = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps with options makes one per call
REOPEN_CHECK = 1.0  # seconds between checks that a file destination was not moved away (logrotate)
OFF = "off"
PIPE_BUF = select.PIPE_BUF  # bytes a pipe writes in one piece, never interleaved (POSIX: >= 512; Linux 4096)
STREAMS = ("stdout", "stderr")
# The fields of a line, in order; each server picks those that mean something for it.
GATEWAY_FIELDS = ("time", "request_id", "remote", "access_key", "method", "operation", "bucket", "key", "status",
                  "error", "bytes_in", "bytes_out", "duration_ms", "ttfb_ms", "kms_calls", "sse")
KEYSERVICE_FIELDS = ("time", "request_id", "remote", "access_key", "operation", "status", "error", "bytes_in",
                     "bytes_out", "duration_ms", "ttfb_ms")


@dataclass(slots=True)
class RequestRecord:
    """What one request did, filled in as it goes (common/observe.py starts it, the server's pipeline
    names its operation and caller, the key provider counts its KMS calls) and written once it is done."""

    started: float                     # time.time() when the request arrived
    remote: str = ""
    method: str = ""
    request_id: str = ""
    access_key: str = ""               # the caller's access key once authenticated (never a secret)
    operation: str = ""                # the S3 operation (gateway/s3request.py) or the KMS action
    bucket: str = ""
    key: str = ""
    status: int = 0
    error: str = ""                    # the S3 error code or KMS error type of an error answer
    auth_rejection: str = ""           # why authentication refused the request (its error code)
    bytes_in: int = 0                  # request body, plaintext (aws-chunked framing excluded)
    bytes_out: int = 0                 # response body, plaintext
    duration: float = 0.0              # seconds until the whole answer was written
    ttfb: float | None = None          # seconds until the answer's headers were ready to go
    kms_calls: dict[str, int] = field(default_factory=dict)  # key provider calls by KMS operation
    sse: str = ""                      # SSE-C, aws:kms, AES256, or empty
    prepared_at: float | None = None   # time.perf_counter() when the answer's headers were ready (not printed)

    def count_kms_call(self, operation: str) -> None:
        self.kms_calls[operation] = self.kms_calls.get(operation, 0) + 1


def check_destination(name: str, value: str) -> str:
    """``stdout``, ``stderr``, ``off`` or a file path; ValueError naming the setting for an empty one."""
    if not value.strip():
        raise ValueError(f"{name} must be stdout, stderr, off or a file path, got {value!r}")
    return value


def check_format(name: str, value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"{name} must be one of {', '.join(FORMATS)}, got {value!r}")
    return value


def _iso(instant: float) -> str:
    """UTC, ISO 8601 with milliseconds: 2026-11-30T13:08:30.500Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(instant)) + f".{int(instant % 1 * 1000):03d}Z"


def _values(record: RequestRecord) -> dict[str, object]:
    """Every field's value for a line (the fields a server does not print are simply not asked for)."""
    return {"time": _iso(record.started), "request_id": record.request_id, "remote": record.remote,
            "access_key": record.access_key, "method": record.method, "operation": record.operation,
            "bucket": record.bucket, "key": record.key, "status": record.status, "error": record.error,
            "bytes_in": record.bytes_in, "bytes_out": record.bytes_out,
            "duration_ms": round(record.duration * 1000, 3),
            "ttfb_ms": None if record.ttfb is None else round(record.ttfb * 1000, 3),
            "kms_calls": record.kms_calls, "sse": record.sse, "worker": os.getpid()}


def json_line(record: RequestRecord, fields: Iterable[str]) -> str:
    """One JSON object per line (non-ASCII escaped, so a key's bytes cannot break the line)."""
    values = _values(record)
    return _JSON.encode({name: values[name] for name in fields})


def text_line(record: RequestRecord, fields: Iterable[str]) -> str:
    """The same fields space-separated for a human: ``-`` for an empty one, a key quoted when it holds a
    space or a quote, KMS calls as ``Operation:count``."""
    values = _values(record)
    out = []
    for name in fields:
        value = values[name]
        if name == "kms_calls":
            value = ",".join(f"{op}:{n}" for op, n in record.kms_calls.items())
        elif name == "key" and value and any(c in str(value) for c in ' "\\\n\r\t'):
            value = json.dumps(value)
        out.append("-" if value in ("", None) else str(value))
    return " ".join(out)


def write_lines(stream: TextIO, lines: list[str]) -> None:
    """Write whole lines straight to the stream's file descriptor, in writes of at most PIPE_BUF bytes
    that each end a line: the workers of ``--workers N`` share one stdout pipe (or append to one file),
    and a write that size is never interleaved with another process's, so no line is torn. Bypassing
    the stream's own buffer also keeps a line from costing a system call of its own where Python's
    stdout is unbuffered (``PYTHONUNBUFFERED``, usual in containers). A stream without a descriptor
    (a test's capture) gets the text as it is."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        stream.write("".join(lines))
        stream.flush()
        return
    stream.flush()  # what print() may have left in the stream's buffer goes first
    for batch in _batches(lines):
        view = memoryview(batch)
        while view:
            view = view[os.write(fd, view):]


def _batches(lines: list[str]) -> Iterator[bytes]:
    """The lines, UTF-8, joined into pieces of at most PIPE_BUF bytes (a longer line is a piece alone)."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode("utf-8", "backslashreplace")
        if batch and size + len(data) > PIPE_BUF:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(data)
        size += len(data)
    if batch:
        yield b"".join(batch)


class AccessLog:
    """Writes a ``RequestRecord`` as one line to the configured destination.

    Not through ``logging``: a line is already formatted, and a logger's record, filter and handler
    machinery cost several times what formatting does on every request. A file is opened for appending and
    reopened when its path no longer names it (logrotate moved it), checked at most once a second."""

    def __init__(self, destination: str, fmt: str, fields: Iterable[str], name: str,
                 secrets: Iterable[str] = ()) -> None:
        from common import workers
        # A worker of ``--workers N`` names itself (its pid, as the server log's "worker N (pid P)" lines do).
        self.fields = tuple(fields) + (("worker",) if workers.INHERITED is not None else ())
        self._format = json_line if fmt == "json" else text_line
        self._redactor = RedactingFilter(secrets)
        self._destination = destination
        self._file: TextIO | None = None if destination in STREAMS else self._open()
        self._checked = time.monotonic()
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._failures = RateLimitedLog(logging.getLogger(f"{name}.accesslog"))

    def write(self, record: RequestRecord) -> None:
        """Queue the record's line; the lines of one event-loop turn go out together at its end (at once
        outside an event loop): one write call for a burst instead of one per request."""
        self._pending.append(self._redactor.redact(self._format(record, self.fields)) + "\n")
        if self._flush_scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush)
            self._flush_scheduled = True
        except RuntimeError:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        lines, self._pending = self._pending, []
        stream = getattr(sys, self._destination) if self._destination in STREAMS else self._file
        if lines and stream is not None:  # a file destination has none once closed
            try:
                write_lines(stream, lines)
            except (OSError, ValueError) as exc:  # a full disk or a closed stream costs the lines, never a request
                self._failures.note("access log %s: lines could not be written: %s", self._destination, exc)
        if self._file is not None and time.monotonic() - self._checked >= REOPEN_CHECK:
            self._reopen_if_moved()

    def close(self) -> None:
        self._flush()
        if self._file is not None:
            self._file.close()  # flushes what is written
            self._file = None

    def _open(self) -> TextIO:
        return open(self._destination, "a", encoding="utf-8")  # noqa: SIM115 - kept open, closed by close()

    def _reopen_if_moved(self) -> None:
        self._checked = time.monotonic()
        assert self._file is not None
        try:
            moved = os.stat(self._destination).st_ino != os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            self._file.close()
            self._file = self._open()
