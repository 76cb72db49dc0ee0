"""The key service's access log, metrics and admin endpoints, on a real ``keyservice serve`` process.

A scripted KMS workload (CreateKey, GenerateDataKey, Decrypt, a DescribeKey of a missing key, a forged
signature) moves the counters of /metrics by exactly its calls and writes one access-log line per call,
while the audit log stays what it was: one record per call that reached the API.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from common.accesslog import KEYSERVICE_FIELDS
from tests.keyservice.conftest import ROOT, kms_client, launch
from tests.support.observability import access_lines, admin_url, delta, get, scrape

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def _named(changed: dict, name: str) -> dict:
    return {labels: value for (metric, labels), value in changed.items() if metric == name}


def test_a_kms_workload_moves_the_metrics_by_its_calls_and_logs_one_line_each(tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    ks = launch(tmp_path, env={"KEYSERVICE_ADMIN_LISTEN": "127.0.0.1:0", "KEYSERVICE_ACCESS_LOG": str(access_log)})
    try:
        admin = admin_url(ks.server)
        kms = kms_client(ks.url)
        before = scrape(admin)
        key_arn = kms.create_key()["KeyMetadata"]["Arn"]
        data_key = kms.generate_data_key(KeyId=key_arn, KeySpec="AES_256")
        assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
        with pytest.raises(ClientError) as missing:
            kms.describe_key(KeyId="alias/missing")
        assert missing.value.response["Error"]["Code"] == "NotFoundException"
        with pytest.raises(ClientError) as forged:
            kms_client(ks.url, (ROOT[0], "not-the-secret-key")).list_keys()
        assert forged.value.response["Error"]["Code"] == "InvalidSignatureException"
        changed = delta(before, scrape(admin))
        assert get(f"{admin}/health/live")[::2] == (200, "live\n")
        assert get(f"{admin}/health/ready")[::2] == (200, "ready\n")
    finally:
        assert ks.server.stop() == 0, ks.server.log()

    assert _named(changed, "kms_requests_total") == {
        _labels(operation="CreateKey", status="200"): 1, _labels(operation="GenerateDataKey", status="200"): 1,
        _labels(operation="Decrypt", status="200"): 1, _labels(operation="DescribeKey", status="400"): 1,
        _labels(operation="-", status="400"): 1}
    assert _named(changed, "kms_errors_total") == {_labels(code="NotFoundException"): 1,
                                                   _labels(code="InvalidSignatureException"): 1}
    assert _named(changed, "kms_auth_rejections_total") == {_labels(reason="InvalidSignatureException"): 1}
    lines = access_lines(access_log)
    assert changed[("kms_received_bytes_total", ())] == sum(line["bytes_in"] for line in lines)
    assert changed[("kms_sent_bytes_total", ())] == sum(line["bytes_out"] for line in lines)

    assert [tuple(line) for line in lines] == [KEYSERVICE_FIELDS] * 5
    assert all(TIME.fullmatch(line["time"]) and 0 < line["ttfb_ms"] <= line["duration_ms"] for line in lines)
    assert [(line["access_key"], line["operation"], line["status"], line["error"], line["remote"])
            for line in lines] == [
        (ROOT[0], "CreateKey", 200, "", "127.0.0.1"), (ROOT[0], "GenerateDataKey", 200, "", "127.0.0.1"),
        (ROOT[0], "Decrypt", 200, "", "127.0.0.1"), (ROOT[0], "DescribeKey", 400, "NotFoundException", "127.0.0.1"),
        ("", "", 400, "InvalidSignatureException", "127.0.0.1")]
    assert lines[3]["request_id"] == missing.value.response["ResponseMetadata"]["RequestId"]
    # The audit log stays separate and complete: every call that reached the API, the refused one too.
    assert [(r["operation"], r["outcome"]) for r in ks.audit_records()][-4:] == [
        ("CreateKey", "ok"), ("GenerateDataKey", "ok"), ("Decrypt", "ok"), ("DescribeKey", "NotFoundException")]


def test_without_an_admin_listener_there_is_no_admin_line_and_the_access_log_can_be_off(tmp_path: Path) -> None:
    ks = launch(tmp_path, env={"KEYSERVICE_ACCESS_LOG": "off"})
    try:
        kms_client(ks.url).list_keys()
    finally:
        assert ks.server.stop() == 0
    assert "admin listening on" not in ks.server.log() and '"operation"' not in ks.server.log()


def test_the_text_format_on_stdout_gives_one_human_line_per_call(tmp_path: Path) -> None:
    ks = launch(tmp_path, env={"KEYSERVICE_ACCESS_LOG_FORMAT": "text"})
    try:
        kms_client(ks.url).list_keys()
    finally:
        assert ks.server.stop() == 0
    [line] = [line for line in ks.server.log().splitlines() if " ListKeys " in line]
    fields = line.split(" ")
    assert TIME.fullmatch(fields[0]) and fields[2:7] == ["127.0.0.1", ROOT[0], "ListKeys", "200", "-"], line
    assert len(fields) == len(KEYSERVICE_FIELDS) and int(fields[7]) == 2 and int(fields[8]) > 0, line
