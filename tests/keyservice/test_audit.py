"""Audit records: fields, no secrets, flushing, and the ``keyservice audit`` filter."""
import asyncio
import errno
import json
import subprocess
import sys
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
