"""The pieces of common/ behind both servers' access log and readiness: line formats, destinations, the
redaction every line still passes, and the readiness cache."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from common.accesslog import GATEWAY_FIELDS, KEYSERVICE_FIELDS, PIPE_BUF, AccessLog, RequestRecord, \
    check_destination, check_format, json_line, text_line
from common.admin import Readiness
from tests.support.secrets import GATEWAY_SECRET_KEY


def _record(**fields) -> RequestRecord:
    base = dict(started=1796044110.5, remote="10.0.0.7", method="PUT", request_id="REQ1", access_key="AKID",
                operation="PutObject", bucket="photos", key="2026/a b.jpg", status=200, bytes_in=4096,
                duration=0.0125, kms_calls={"GenerateDataKey": 1}, sse="aws:kms")
    base.update(fields)
    record = RequestRecord(**base)
    record.ttfb = 0.01
    return record


def test_a_json_line_has_the_servers_fields_in_order() -> None:
    line = json.loads(json_line(_record(), GATEWAY_FIELDS))
    assert line == {"time": "2026-11-30T13:08:30.500Z", "request_id": "REQ1", "remote": "10.0.0.7",
                    "access_key": "AKID", "method": "PUT", "operation": "PutObject", "bucket": "photos",
                    "key": "2026/a b.jpg", "status": 200, "error": "", "bytes_in": 4096, "bytes_out": 0,
                    "duration_ms": 12.5, "ttfb_ms": 10.0, "kms_calls": {"GenerateDataKey": 1}, "sse": "aws:kms"}
    assert tuple(json.loads(json_line(_record(), KEYSERVICE_FIELDS))) == KEYSERVICE_FIELDS


def test_a_key_with_a_newline_cannot_forge_a_second_line_in_either_format() -> None:
    record = _record(key='evil\n{"status":200}')
    assert "\n" not in json_line(record, GATEWAY_FIELDS) and "\n" not in text_line(record, GATEWAY_FIELDS)


def test_a_text_line_quotes_a_key_with_spaces_and_dashes_empty_fields() -> None:
    assert text_line(_record(error="", sse=""), GATEWAY_FIELDS) == (
        '2026-11-30T13:08:30.500Z REQ1 10.0.0.7 AKID PUT PutObject photos "2026/a b.jpg" 200 - 4096 0 12.5 10.0 '
        'GenerateDataKey:1 -')


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_destination_is_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(ValueError, match="GATEWAY_ACCESS_LOG must be stdout, stderr, off or a file path"):
        check_destination("GATEWAY_ACCESS_LOG", value)


def test_an_unknown_format_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="KEYSERVICE_ACCESS_LOG_FORMAT must be one of json, text, got 'xml'"):
        check_format("KEYSERVICE_ACCESS_LOG_FORMAT", "xml")


def test_a_file_destination_gets_one_line_per_record_and_a_configured_secret_is_redacted(tmp_path: Path) -> None:
    """The fields never hold a secret; should one turn up (a client naming an object after its secret key),
    the line still passes the server log's redaction."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "json", GATEWAY_FIELDS, "gateway", [GATEWAY_SECRET_KEY])
    log.write(_record())
    log.write(_record(key=f"named-{GATEWAY_SECRET_KEY}"))
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["key"] for line in lines] == ["2026/a b.jpg", "named-[redacted]"]


def test_stdout_is_the_stream_in_effect_when_a_line_is_written(capsys) -> None:
    log = AccessLog("stdout", "text", ("operation", "status"), "gateway")
    log.write(_record())
    log.close()
    assert capsys.readouterr().out == "PutObject 200\n"


def _pipe_stream(monkeypatch) -> tuple[object, list[int], int]:
    """sys.stdout replaced by a real pipe's write end; the sizes of the os.write calls made on it."""
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    monkeypatch.setattr("sys.stdout", stream)
    sizes: list[int] = []
    real_write = os.write

    def recording_write(fd: int, data) -> int:
        if fd == write_fd:
            sizes.append(len(data))
        return real_write(fd, data)
    monkeypatch.setattr("common.accesslog.os.write", recording_write)
    return stream, sizes, read_fd


def _drain(stream, read_fd: int) -> str:
    stream.close()
    with os.fdopen(read_fd, "rb") as pipe:
        return pipe.read().decode()


async def test_the_lines_of_one_loop_turn_go_out_in_few_writes_each_whole_lines_within_pipe_buf(monkeypatch) -> None:
    """Workers share one stdout pipe: a write of at most PIPE_BUF bytes is never interleaved with another
    process's, so each write holds whole lines only, and a burst costs a few writes, not one per line."""
    stream, sizes, read_fd = _pipe_stream(monkeypatch)
    log = AccessLog("stdout", "json", GATEWAY_FIELDS, "gateway")
    for n in range(40):
        log.write(_record(key=f"object-{n:03d}"))
    assert sizes == []  # nothing before the turn ends
    await asyncio.sleep(0)
    text = _drain(stream, read_fd)
    lines = text.splitlines()
    assert [json.loads(line)["key"] for line in lines] == [f"object-{n:03d}" for n in range(40)]
    assert all(size <= PIPE_BUF for size in sizes) and sum(sizes) == len(text.encode())
    line_size = len(lines[0]) + 1
    assert len(sizes) == -(-40 // (PIPE_BUF // line_size))  # as few writes as whole lines allow
    ends = [sum(sizes[:i + 1]) for i in range(len(sizes))]
    assert all(text.encode()[end - 1:end] == b"\n" for end in ends)


def test_a_line_longer_than_pipe_buf_is_one_write_of_its_own_and_print_output_stays_first(monkeypatch) -> None:
    stream, sizes, read_fd = _pipe_stream(monkeypatch)
    print("listening on http://127.0.0.1:1", file=stream)  # buffered in the stream: it must go out first
    log = AccessLog("stdout", "text", ("operation", "key"), "gateway")
    log._pending.append("Short -\n")  # noqa: SLF001 - two lines queued in one turn, written together
    log.write(_record(operation="Long", key="k" * (PIPE_BUF + 10)))
    text = _drain(stream, read_fd)
    assert text.splitlines() == ["listening on http://127.0.0.1:1", "Short -", "Long " + "k" * (PIPE_BUF + 10)]
    assert sizes == [len("Short -\n"), PIPE_BUF + 16]


def test_a_key_that_is_not_valid_unicode_is_written_escaped_not_lost(tmp_path: Path) -> None:
    """A key decoded with surrogate escapes (bytes that are not UTF-8) cannot be encoded as it is: the text
    format writes it backslash-escaped rather than dropping the line."""
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "text", ("operation", "key"), "gateway")
    log.write(_record(key="caf\udce9"))
    log.close()
    assert path.read_text() == "PutObject caf\\udce9\n"


class _Probe:
    def __init__(self, answers: list[str | None]) -> None:
        self.answers = answers
        self.calls = 0

    async def __call__(self) -> str | None:
        self.calls += 1
        await asyncio.sleep(0.01)
        return self.answers[min(self.calls, len(self.answers)) - 1]


async def test_readiness_is_probed_once_for_concurrent_checks_and_reused_within_its_ttl() -> None:
    now = [100.0]
    probe = _Probe([None, "down"])
    readiness = Readiness({"upstream": probe}, ttl=1.5, clock=lambda: now[0])
    assert await asyncio.gather(*(readiness.problems() for _ in range(5))) == [[]] * 5
    now[0] += 1.4
    assert await readiness.problems() == [] and probe.calls == 1
    now[0] += 0.2
    assert await readiness.problems() == ["upstream: down"] and probe.calls == 2


async def test_a_probe_that_raises_or_hangs_reports_its_dependency_as_down() -> None:
    async def raises() -> str | None:
        raise OSError("connection refused\nsecond line")

    async def hangs() -> str | None:
        await asyncio.sleep(10)
        return None

    readiness = Readiness({"a": raises, "b": hangs}, timeout=0.05)
    assert await readiness.problems() == ["a: OSError: connection refused", "b: no answer within 0.05 s"]


def test_a_file_moved_away_by_logrotate_is_reopened_at_its_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("common.accesslog.REOPEN_CHECK", 0.0)
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "text", ("operation",), "gateway")
    log.write(_record(operation="First"))  # written, then the path is found unchanged
    path.rename(tmp_path / "access.log.1")
    log.write(_record(operation="Second"))  # still to the moved file, whose move is then noticed
    log.write(_record(operation="Third"))
    log.close()
    assert ((tmp_path / "access.log.1").read_text(), path.read_text()) == ("First\nSecond\n", "Third\n")


@pytest.mark.parametrize("text", [
    "SECRETACCESSKEY=abcdefgh", "aws_Secret_Access_Key: abcdefgh", "PLAINTEXT: 'abcdefgh'",
    "X-Amz-Server-Side-Encryption-Customer-Key: abcdefgh", "Signature=" + "ab" * 32, "canonicalrequest abcdefgh",
    "Signing Key: abcdefgh"])
def test_the_log_redaction_still_catches_every_pattern_in_any_case_after_its_word_check(text: str) -> None:
    """The redaction looks for each pattern's words before running it (access-log lines hold none): a word in
    upper or mixed case still runs its pattern."""
    from common.logsetup import RedactingFilter
    assert "abcdefgh" not in RedactingFilter().redact(text) and "abab" not in RedactingFilter().redact(text)
