"""The audit log: one JSON line per KMS call, and the filter behind ``keyservice audit``.

A record names who did what to which key and how it ended, like a CloudTrail event: the
encryption context is logged (it is not secret), but never plaintext, data keys, ciphertext
blobs or key material -- the record is built from an allow-list of fields, so a new secret
parameter cannot leak by accident.

Every record is on disk (written and fsync'd) before the call it describes answers: the API layer
refuses a cryptographic operation whose record cannot be made durable (``audit_on_failure``).
Concurrent calls share one write+fsync (group commit) made in a worker thread.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from keyservice.files import PRIVATE_FILE, private_dir
from keyservice.params import shown


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
    # a refused call's context may hold anything: never str() a nested value (it can recurse too deep)
    return {shown(k): shown(v) for k, v in context.items()}


_ENCODER = json.JSONEncoder(separators=(",", ":"))


class AuditUnavailable(OSError):
    """An audit record could not be made durable (written and fsync'd), e.g. the disk is full."""


@dataclass
class _Batch:
    """Records waiting for the next group commit, and the future their callers wait on."""

    done: asyncio.Future[None]
    lines: list[bytes] = field(default_factory=list)


class AuditLog:
    """Appends records to a JSON-lines file, each durable before ``append`` returns.

    Group commit: records appended while a write+fsync is in flight (or in the same loop tick) go
    out together in the next one, done in a worker thread so the event loop never blocks on the
    disk; concurrent callers share one fsync instead of queueing for one each.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        private_dir(path.parent)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        self._clock = clock
        self._pending: _Batch | None = None
        self._committer: asyncio.Task[None] | None = None
        self._torn = False  # a failed write may have left half a line: start the next on a new line

    async def append(self, ctx: AuditContext, operation: str, params: dict[str, Any], outcome: str) -> None:
        """Write one record for a finished call (``outcome`` is "ok" or the error type) and return
        once it is on disk; raises ``AuditUnavailable`` when it could not be written or synced."""
        line = _ENCODER.encode(build_record(ctx, operation, params, outcome, self._clock())) + "\n"
        if self._pending is None:
            self._pending = _Batch(asyncio.get_running_loop().create_future())
            self._pending.done.add_done_callback(_retrieve)
        batch = self._pending
        batch.lines.append(line.encode())
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_all())
        await asyncio.shield(batch.done)  # one cancelled caller must not fail the batch

    async def _commit_all(self) -> None:
        """Commit batches until none is waiting (started in a later tick, so a tick's records share one)."""
        try:
            while self._pending is not None:
                batch, self._pending = self._pending, None
                try:
                    await asyncio.to_thread(self._write_durably, b"".join(batch.lines))
                except OSError as exc:
                    batch.done.set_exception(AuditUnavailable(exc.errno, f"audit log {self.path}: {exc.strerror}"))
                else:
                    batch.done.set_result(None)
        finally:
            self._committer = None

    def _write_durably(self, data: bytes) -> None:
        if self._torn:
            data = b"\n" + data
        self._torn = True
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        _sync(self._fd)
        self._torn = False

    async def close(self) -> None:
        """Let the batch in flight finish, then close the file."""
        while self._committer is not None:
            await asyncio.shield(self._committer)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's failure as seen even when every waiter was cancelled (no asyncio warning)."""
    if not future.cancelled():
        future.exception()


def _sync(fd: int) -> None:
    """fdatasync where there is one (the data and the file size; no timestamps), else fsync."""
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


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
