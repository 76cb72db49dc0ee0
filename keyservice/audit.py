"""The audit log: one JSON line per KMS call, and the filter behind ``keyservice audit``.

A record names who did what to which key and how it ended, like a CloudTrail event: the
encryption context is logged (it is not secret), but never plaintext, data keys, ciphertext
blobs or key material -- the record is built from an allow-list of fields, so a new secret
parameter cannot leak by accident.

Every record is on disk (written and fsync'd) before the call it describes answers: the API layer
refuses a cryptographic operation whose record cannot be made durable (``audit_on_failure``).
Concurrent calls share one write+fsync (group commit) made in a worker thread.

A batch that fails part-way (a short write, a failed fsync) is cut off again: the file is truncated
back to where the batch began, so no line of a call that was then refused stays in the log. Every line
in the file is true; a call whose record could not be kept has none (the API layer logs it). Writers
take an exclusive ``flock`` around write+fsync+truncate, so processes sharing one log never cut off
each other's lines.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from common.files import PRIVATE_FILE, private_dir
from keyservice.params import shown

log = logging.getLogger(__name__)


class AuditContext(Protocol):
    """The parts of ``service.CallContext`` a record reads."""

    principal_arn: str
    access_key: str | None
    source: str | None
    request_id: str
    key_arn: str | None
    warning: str | None


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
    record = {
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
    warning = getattr(ctx, "warning", None)
    if warning:
        record["warning"] = warning
    return record


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

    No caller waits forever: a batch's future is settled by the outcome of its write (even when the
    committer task is cancelled meanwhile: the thread cannot be stopped, so its callers learn what it
    did), and batches not yet written when the committer is cancelled or the log is closed fail with
    ``AuditUnavailable``.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        private_dir(path.parent)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)  # only a regular file can be cut back
        self._clock = clock
        self._pending: _Batch | None = None
        self._committer: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None  # the worker-thread write in flight
        self._lock = threading.Lock()  # one write at a time, even from a cancelled committer's thread
        self._torn = False  # a failed batch could not be cut off: start the next on a new line
        self._closed = False

    async def append(self, ctx: AuditContext, operation: str, params: dict[str, Any], outcome: str) -> None:
        """Write one record for a finished call (``outcome`` is "ok" or the error type) and return
        once it is on disk; raises ``AuditUnavailable`` when it could not be written or synced."""
        if self._closed:
            raise AuditUnavailable(errno.EBADF, f"audit log {self.path} is closed")
        line = _ENCODER.encode(build_record(ctx, operation, params, outcome, self._clock())) + "\n"
        if self._pending is None:
            self._pending = _Batch(asyncio.get_running_loop().create_future())
            self._pending.done.add_done_callback(_retrieve)
        batch = self._pending
        batch.lines.append(line.encode())
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_all())
            self._committer.add_done_callback(self._committer_done)
        await asyncio.shield(batch.done)  # one cancelled caller must not fail the batch

    async def _commit_all(self) -> None:
        """Commit batches until none is waiting (started in a later tick, so a tick's records share one)."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending is not None:
                batch, self._pending = self._pending, None
                # run_in_executor's future is no task: cancelling the committer (or the loop's shutdown
                # cancelling every task) leaves it, and the batch's callers get the write's real outcome
                work = loop.run_in_executor(None, self._write_durably, b"".join(batch.lines))
                work.add_done_callback(functools.partial(self._settle, batch))
                self._writing = work
                await asyncio.wait([work])
        finally:
            self._committer = None

    def _settle(self, batch: _Batch, work: asyncio.Future[None]) -> None:
        if self._writing is work:
            self._writing = None
        if batch.done.done():
            return
        exc = None if work.cancelled() else work.exception()
        if work.cancelled():
            batch.done.set_exception(AuditUnavailable(errno.ECANCELED, f"audit log {self.path}: write cancelled"))
        elif isinstance(exc, OSError):
            batch.done.set_exception(AuditUnavailable(exc.errno, f"audit log {self.path}: {exc.strerror}"))
        elif exc is not None:
            batch.done.set_exception(AuditUnavailable(errno.EIO, f"audit log {self.path}: {exc!r}"))
        else:
            batch.done.set_result(None)

    def _committer_done(self, task: asyncio.Task[None]) -> None:
        """A committer cancelled (even before it ran) leaves no batch unanswered."""
        if self._committer is task:
            self._committer = None
        if self._committer is not None:
            return  # a newer committer has taken over what is pending
        if task.cancelled():
            self._fail_pending("the audit committer was cancelled")
        elif task.exception() is not None:
            self._fail_pending(f"the audit committer failed: {task.exception()!r}")

    def _fail_pending(self, why: str) -> None:
        batch, self._pending = self._pending, None
        if batch is not None and not batch.done.done():
            batch.done.set_exception(AuditUnavailable(errno.ECANCELED, f"audit log {self.path}: {why}"))

    def _write_durably(self, data: bytes) -> None:
        """Append ``data`` and fsync it, all or nothing: on failure the file is cut back to its length
        before, so no line of this batch stays behind to claim a call that was then refused."""
        with self._lock:
            if self._fd < 0:
                raise OSError(errno.EBADF, "closed")
            with _exclusive(self._fd, self._regular):
                if self._torn:
                    data = b"\n" + data
                start = os.lseek(self._fd, 0, os.SEEK_END) if self._regular else 0
                try:
                    view = memoryview(data)
                    while view:
                        view = view[_write(self._fd, view):]
                    _sync(self._fd)
                except OSError:
                    if self._regular:
                        self._cut_back(start)
                    else:  # a pipe or device cannot be cut back: at least start the next on a new line
                        self._torn = True
                    raise
                self._torn = False

    def _cut_back(self, start: int) -> None:
        try:
            os.ftruncate(self._fd, start)
        except OSError as exc:
            # the batch's lines (some maybe whole) stay: the API layer still refuses their calls
            self._torn = True
            log.error("audit log %s: a failed batch could not be cut off (%s); records of refused calls "
                      "may remain after byte %d", self.path, exc.strerror, start)
            return
        try:
            _sync(self._fd)  # make the cut durable now; else the next batch's sync does
        except OSError:
            pass

    async def close(self) -> None:
        """Let the batches waiting finish, then close the file; anything left fails."""
        self._closed = True
        while self._committer is not None:
            committer = self._committer
            await asyncio.wait([committer])
            if self._committer is committer:  # cancelled before it ran: its callback has not run yet
                self._committer = None
        while self._writing is not None:  # a cancelled committer's write still in its thread
            await asyncio.wait([self._writing])
        self._fail_pending("the audit log was closed")
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class _exclusive:
    """flock the log for one batch (processes may share it); a file system without locks writes unlocked."""

    def __init__(self, fd: int, regular: bool) -> None:
        self.fd = fd if regular else -1

    def __enter__(self) -> None:
        if self.fd < 0:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                raise
            self.fd = -1

    def __exit__(self, *exc_info: object) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's failure as seen even when every waiter was cancelled (no asyncio warning)."""
    if not future.cancelled():
        future.exception()


def _write(fd: int, data: memoryview) -> int:
    """os.write (a seam for tests simulating a disk that fills up part-way)."""
    return os.write(fd, data)


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
