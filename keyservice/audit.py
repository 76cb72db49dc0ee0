"""The audit log: one JSON line per KMS call, and the filter behind ``keyservice audit``.

A record names who did what to which key and how it ended, like a CloudTrail event: the
encryption context is logged (it is not secret), but never plaintext, data keys, ciphertext
blobs or key material -- the record is built from an allow-list of fields, so a new secret
parameter cannot leak by accident.

Lines go through a buffered writer flushed once per event-loop tick (or at once when no loop
runs): a crash loses at most the calls of the current tick, and no call pays for an fsync.
"""
from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol


class AuditContext(Protocol):
    """The parts of ``service.CallContext`` a record reads."""

    principal_arn: str
    access_key: str | None
    source: str | None
    request_id: str
    key_arn: str | None


@functools.lru_cache(maxsize=1)
def _second_prefix(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` formatted once per second: strftime was a third of a record's cost."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def iso_time(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, as CloudTrail writes eventTime."""
    second = int(epoch)
    return f"{_second_prefix(second)}.{int((epoch - second) * 1000):03d}Z"


def build_record(ctx: AuditContext, operation: str, params: dict[str, Any], outcome: str,
                 epoch: float) -> dict[str, Any]:
    """The audit record of one call; only these fields, never a parameter value but the context."""
    return {
        "time": iso_time(epoch),
        "request_id": ctx.request_id,
        "principal": ctx.principal_arn,
        "access_key": ctx.access_key,
        "operation": operation,
        "key_arn": ctx.key_arn,
        "encryption_context": _encryption_context(params),
        "outcome": outcome,
        "source": ctx.source,
    }


def _encryption_context(params: dict[str, Any]) -> dict[str, str] | None:
    context = params.get("EncryptionContext") if isinstance(params, dict) else None
    if not isinstance(context, dict):
        return None
    return {str(k): str(v) for k, v in context.items()}


_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AuditLog:
    """Appends records to a JSON-lines file; ``close`` flushes and closes it."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8", buffering=1 << 16)
        self._clock = clock
        self._flush_pending = False

    def record(self, ctx: AuditContext, operation: str, params: dict[str, Any], outcome: str) -> None:
        """Write one line for a finished call (``outcome`` is "ok" or the error type)."""
        line = _ENCODER.encode(build_record(ctx, operation, params, outcome, self._clock()))
        self._file.write(line + "\n")
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._file.flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant; one without a zone is taken as UTC."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def matches(record: dict[str, Any], *, key: str | None = None, operation: str | None = None,
            since: datetime | None = None, until: datetime | None = None) -> bool:
    """Whether a record passes every given filter.

    ``key`` matches the full key ARN or its trailing key id; ``since`` is inclusive and
    ``until`` exclusive, so consecutive windows never count a call twice.
    """
    if operation is not None and record.get("operation") != operation:
        return False
    if key is not None:
        arn = record.get("key_arn") or ""
        if arn != key and not arn.endswith("/" + key):
            return False
    if since is not None or until is not None:
        when = parse_time(record["time"])
        if since is not None and when < since:
            return False
        if until is not None and when >= until:
            return False
    return True


def filter_lines(lines: Iterable[str], **filters: Any) -> Iterator[str]:
    """The lines (as written) whose records match; blank or torn lines are skipped."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and matches(record, **filters):
            yield line.rstrip("\n")
