"""Audit records: fields, no secrets, flushing, and the ``keyservice audit`` filter."""
import asyncio
import errno
import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from keyservice import audit as audit_module
from keyservice.audit import AuditLog, AuditUnavailable, build_record, filter_lines, iso_time, parse_time

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@dataclass
class Ctx:
    principal_arn: str = "arn:aws:iam::111122223333:user/alice"
    access_key: str | None = "AKIAALICE"
    source: str | None = "127.0.0.1"
    request_id: str = "req-1"
    key_arn: str | None = ARN


def test_record_has_exactly_the_documented_fields() -> None:
    params = {"KeyId": "alias/x", "Plaintext": b"secret", "EncryptionContext": {"app": "x"}}
    record = build_record(Ctx(), "Encrypt", params, "ok", 1_700_000_000.25)
    assert record == {
        "time": "2023-11-14T22:13:20.250Z", "request_id": "req-1",
        "principal": "arn:aws:iam::111122223333:user/alice", "access_key": "AKIAALICE",
        "operation": "Encrypt", "key_arn": ARN, "encryption_context": {"app": "x"},
        "outcome": "ok", "source": "127.0.0.1",
    }


async def test_log_never_contains_binary_parameters(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    secret = b"TOP-SECRET-PLAINTEXT"
    await audit.append(Ctx(), "Encrypt", {"Plaintext": secret, "CiphertextBlob": b"BLOBBLOB",
                                           "PrivateKeyPlaintext": b"PRIVKEY"}, "ok")
    await audit.close()
    text = (tmp_path / "audit.log").read_text()
    assert "TOP-SECRET" not in text and "BLOBBLOB" not in text and "PRIVKEY" not in text
    assert json.loads(text)["operation"] == "Encrypt"


async def test_concurrent_records_are_durable_on_return_and_share_one_commit(tmp_path: Path,
                                                                             monkeypatch) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    syncs = []
    real_sync = audit_module._sync
    monkeypatch.setattr(audit_module, "_sync", lambda fd: (syncs.append(fd), real_sync(fd)))
    await asyncio.gather(*(audit.append(Ctx(request_id=f"r{i}"), "Decrypt", {}, "ok") for i in range(50)))
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(50)]
    assert len(syncs) == 1
    await audit.close()


async def test_a_record_that_cannot_be_written_raises_and_the_next_line_starts_clean(tmp_path: Path) -> None:
    full = AuditLog(Path("/dev/full"))
    with pytest.raises(AuditUnavailable) as info:
        await full.append(Ctx(), "Decrypt", {}, "ok")
    assert info.value.errno == errno.ENOSPC
    await full.close()
    audit = AuditLog(tmp_path / "audit.log")
    audit._torn = True  # as after a write that failed half-way
    await audit.append(Ctx(request_id="after"), "Decrypt", {}, "ok")
    await audit.close()
    assert [json.loads(line)["request_id"] for line in
            (tmp_path / "audit.log").read_text().splitlines() if line] == ["after"]


def _lines() -> list[str]:
    records = [
        ("2026-01-01T00:00:00.000Z", "Encrypt", ARN),
        ("2026-01-02T00:00:00.000Z", "Decrypt", ARN),
        ("2026-01-03T00:00:00.000Z", "Decrypt", "arn:aws:kms:us-east-1:111122223333:key/other"),
        ("2026-01-04T00:00:00.000Z", "CreateKey", None),
    ]
    return [json.dumps({"time": t, "operation": op, "key_arn": arn}) + "\n" for t, op, arn in records]


def test_filter_by_operation_key_and_window() -> None:
    lines = _lines()
    assert len(list(filter_lines(lines, operation="Decrypt"))) == 2
    assert len(list(filter_lines(lines, key="1234abcd-12ab-34cd-56ef-1234567890ab"))) == 2
    assert len(list(filter_lines(lines, key=ARN, operation="Decrypt"))) == 1
    window = list(filter_lines(lines, since=parse_time("2026-01-02T00:00:00Z"),
                               until=parse_time("2026-01-04T00:00:00Z")))
    assert [json.loads(x)["time"][:10] for x in window] == ["2026-01-02", "2026-01-03"]


def test_filter_skips_torn_and_blank_lines() -> None:
    lines = _lines() + ["", '{"time": "2026-01-05T00:0', "[1]\n"]
    assert len(list(filter_lines(lines))) == 4


def test_parse_time_treats_naive_as_utc() -> None:
    assert parse_time("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"


def test_audit_command_prints_matching_lines(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("".join(_lines()))
    out = subprocess.run([sys.executable, "-m", "keyservice", "audit", str(log), "--operation",
                          "Decrypt", "--since", "2026-01-02T12:00:00Z"],
                         capture_output=True, text=True, check=True).stdout
    assert [json.loads(x)["time"] for x in out.splitlines()] == ["2026-01-03T00:00:00.000Z"]


def test_audit_command_reports_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "keyservice", "audit", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cannot read" in proc.stderr


# --- a batch that fails part-way, and a committer that is cancelled -----------------------------------

def _records(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def _disk_full_after(monkeypatch, limit: int) -> list[int]:
    """Writes succeed for ``limit`` bytes in all, then fail with ENOSPC (the rest of the batch is lost)."""
    written = [0]
    real_write = audit_module._write

    def write(fd: int, data: memoryview) -> int:
        room = limit - written[0]
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        done = real_write(fd, data[:room])
        written[0] += done
        return done

    monkeypatch.setattr(audit_module, "_write", write)
    return written


@pytest.mark.parametrize("limit", [1, 150, 400])  # within the first line, just past it, past several
async def test_a_batch_that_fails_part_way_leaves_no_line_of_it(tmp_path: Path, monkeypatch, limit: int) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    await audit.append(Ctx(request_id="before"), "Decrypt", {}, "ok")
    written = _disk_full_after(monkeypatch, limit)
    results = await asyncio.gather(*(audit.append(Ctx(request_id=f"refused-{i}"), "Decrypt", {}, "ok")
                                     for i in range(4)), return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) and r.errno == errno.ENOSPC for r in results), results
    assert written[0] == limit  # complete lines did reach the file before the failure...
    assert _records(path) == ["before"]  # ...and were cut off again: the calls were refused
    monkeypatch.undo()
    await audit.append(Ctx(request_id="after"), "Decrypt", {}, "ok")
    await audit.close()
    assert _records(path) == ["before", "after"]


async def test_a_batch_whose_fsync_fails_is_cut_off_though_every_line_was_written(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    await audit.append(Ctx(request_id="before"), "Decrypt", {}, "ok")
    real_sync, calls = audit_module._sync, []

    def sync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error")
        real_sync(fd)

    monkeypatch.setattr(audit_module, "_sync", sync)
    results = await asyncio.gather(*(audit.append(Ctx(request_id=f"unsynced-{i}"), "Decrypt", {}, "ok")
                                     for i in range(3)), return_exceptions=True)
    assert [getattr(r, "errno", r) for r in results] == [errno.EIO] * 3
    assert _records(path) == ["before"]
    await audit.append(Ctx(request_id="after"), "Decrypt", {}, "ok")
    await audit.close()
    assert _records(path) == ["before", "after"]


async def test_a_batch_that_cannot_be_cut_off_is_logged_and_the_next_line_starts_clean(
        tmp_path: Path, monkeypatch, caplog) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    _disk_full_after(monkeypatch, 40)

    def ftruncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audit_module.os, "ftruncate", ftruncate)
    with pytest.raises(AuditUnavailable):
        await audit.append(Ctx(request_id="torn"), "Decrypt", {}, "ok")
    monkeypatch.undo()
    assert "could not be cut off" in caplog.text
    await audit.append(Ctx(request_id="after"), "Decrypt", {}, "ok")
    await audit.close()
    # the torn bytes stay (logged), and the next record still stands on a line of its own
    assert [json.loads(line)["request_id"] for line in filter_lines(path.read_text().splitlines())] == ["after"]


async def test_cancelling_the_committer_answers_every_waiting_caller(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    release, entered = threading.Event(), threading.Event()
    real_write = audit_module._write

    def slow_write(fd: int, data: memoryview) -> int:
        entered.set()
        release.wait(10)
        return real_write(fd, data)

    monkeypatch.setattr(audit_module, "_write", slow_write)
    in_flight = [asyncio.create_task(audit.append(Ctx(request_id=f"first-{i}"), "Decrypt", {}, "ok"))
                 for i in range(2)]
    await asyncio.to_thread(entered.wait, 5)  # the first batch is in the worker thread
    queued = [asyncio.create_task(audit.append(Ctx(request_id=f"second-{i}"), "Decrypt", {}, "ok"))
              for i in range(2)]
    await asyncio.sleep(0)
    assert audit._committer is not None
    audit._committer.cancel()
    # the batch not yet written fails at once; nobody waits forever
    done, _ = await asyncio.wait(queued, timeout=5)
    assert len(done) == 2 and all(isinstance(t.exception(), AuditUnavailable) for t in queued)
    assert not any(t.done() for t in in_flight)  # its write is still running: its outcome decides
    release.set()
    await asyncio.wait_for(asyncio.gather(*in_flight), 5)  # written and synced: they succeed
    await asyncio.wait_for(audit.close(), 5)
    assert _records(path) == ["first-0", "first-1"]


async def test_a_committer_cancelled_before_it_ran_and_close_leave_no_caller_waiting(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    caller = asyncio.create_task(audit.append(Ctx(request_id="never"), "Decrypt", {}, "ok"))
    await asyncio.sleep(0)  # append has queued its record and created the committer, which has not run
    assert audit._committer is not None
    audit._committer.cancel()
    with pytest.raises(AuditUnavailable):
        await asyncio.wait_for(caller, 5)
    await audit.append(Ctx(request_id="later"), "Decrypt", {}, "ok")  # a new committer takes over
    await asyncio.wait_for(audit.close(), 5)
    with pytest.raises(AuditUnavailable):
        await audit.append(Ctx(request_id="closed"), "Decrypt", {}, "ok")
    assert _records(path) == ["later"]


async def test_processes_sharing_a_log_never_cut_off_each_others_lines(tmp_path: Path, monkeypatch) -> None:
    """Two writers on one file (two open file descriptions, as two processes have): while one's batch
    is half-written the other waits for the lock, so cutting the failed batch off spares its line."""
    path = tmp_path / "audit.log"
    failing, other = AuditLog(path), AuditLog(path)
    half_written, release = threading.Event(), threading.Event()
    real_write = audit_module._write

    def write(fd: int, data: memoryview) -> int:
        if fd != failing._fd:
            return real_write(fd, data)
        if half_written.is_set():
            release.wait(10)
            raise OSError(errno.ENOSPC, "No space left on device")
        half_written.set()
        return real_write(fd, data[:100])

    monkeypatch.setattr(audit_module, "_write", write)
    refused = asyncio.create_task(failing.append(Ctx(request_id="refused"), "Decrypt", {}, "ok"))
    await asyncio.to_thread(half_written.wait, 5)
    kept = asyncio.create_task(other.append(Ctx(request_id="kept"), "Decrypt", {}, "ok"))
    await asyncio.sleep(0.2)
    assert not kept.done()  # waiting for the lock the failing batch holds
    release.set()
    with pytest.raises(AuditUnavailable):
        await asyncio.wait_for(refused, 5)
    await asyncio.wait_for(kept, 5)
    await failing.close()
    await other.close()
    assert _records(path) == ["kept"]
