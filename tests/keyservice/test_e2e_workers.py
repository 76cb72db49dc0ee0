"""``keyservice serve --workers 2`` on one SQLite store: both workers serve, a key created or disabled
through one is served or refused by every worker within the bound (README: "Workers"), a killed worker
is replaced, and SIGTERM stops them all."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.keyservice.conftest import launch, signed_headers, write_config
from tests.support.observability import admin_url, sample, scrape
from tests.support.workers import no_orphans, served_by, wait_for, worker_pids

BOUND = 2.0  # README: 0.5 s polling plus the reload; allowance for a loaded machine


def call(url: str, action: str, params: dict) -> tuple[int, dict]:
    """One KMS call on a connection of its own (so the kernel hands it to either worker)."""
    body = json.dumps(params).encode()
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=signed_headers(url, body, f"TrentService.{action}"))
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def error_type(answer: tuple[int, dict]) -> str | None:
    status, body = answer
    return None if status == 200 else body.get("__type")


def both_workers_answer(ks, url: str, action: str, params: dict, expect: str | None) -> None:
    """Calls on fresh connections until each of the two workers has answered ``action`` -- every answer
    being ``expect`` (an error type, or None for success)."""
    since = len(ks.server.output)

    def seen_on_both() -> bool:
        assert error_type(call(url, action, params)) == expect
        return len(set(served_by(ks.server, action, since=since))) == 2
    wait_for(seen_on_both, f"{action} answered by both workers", 30)


def known_to_both_workers(ks, key_id: str) -> None:
    """Encrypt with the key until each worker has done so once (the bound itself is the first test's)."""
    since = len(ks.server.output)
    wait_for(lambda: call(ks.url, "Encrypt", {"KeyId": key_id, "Plaintext": "eA=="}) is None
             or len(set(served_by(ks.server, "Encrypt", 200, since))) == 2, "the key on both workers", 30)


def test_two_workers_serve_one_store_and_see_each_others_key_changes_within_the_bound(tmp_path: Path) -> None:
    ks = launch(tmp_path, env={"KEYSERVICE_WORKERS": "2"})
    try:
        assert len(worker_pids(ks.server)) == 2
        status, created = call(ks.url, "CreateKey", {"Description": "made on one worker"})
        assert status == 200
        key_id = created["KeyMetadata"]["KeyId"]
        # Encrypt is answered from the worker's memory: only the change feed can have told the other worker.
        # Once the bound has passed, every answer of either worker must be the new one.
        time.sleep(BOUND)
        both_workers_answer(ks, ks.url, "Encrypt", {"KeyId": key_id, "Plaintext": "eA=="}, None)

        assert call(ks.url, "DisableKey", {"KeyId": key_id})[0] == 200
        time.sleep(BOUND)
        both_workers_answer(ks, ks.url, "Encrypt", {"KeyId": key_id, "Plaintext": "eA=="}, "DisabledException")
    finally:
        pids = worker_pids(ks.server)
        assert ks.server.stop() == 0, ks.server.log()
    no_orphans(pids)
    assert ks.server.log().count("listening on http://") == 1


def test_a_killed_worker_is_replaced_and_calls_keep_succeeding(tmp_path: Path) -> None:
    ks = launch(tmp_path, env={"KEYSERVICE_WORKERS": "2"})
    try:
        key_id = call(ks.url, "CreateKey", {})[1]["KeyMetadata"]["KeyId"]
        known_to_both_workers(ks, key_id)
        before = worker_pids(ks.server)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(ks.server)) == 2 and victim not in worker_pids(ks.server),
                 "a replacement worker", 10)
        for _ in range(20):
            assert error_type(call(ks.url, "Encrypt", {"KeyId": key_id, "Plaintext": "eA=="})) is None
        assert f"(pid {victim}) exited (killed by SIGKILL): starting another" in ks.server.log()
    finally:
        pids = worker_pids(ks.server)
        assert ks.server.stop() == 0, ks.server.log()
    no_orphans(pids)


def test_metrics_count_every_workers_calls_whichever_worker_answers_the_scrape(tmp_path: Path) -> None:
    ks = launch(tmp_path, env={"KEYSERVICE_WORKERS": "2", "KEYSERVICE_ADMIN_LISTEN": "127.0.0.1:0"})
    try:
        admin = admin_url(ks.server)
        key_id = call(ks.url, "CreateKey", {})[1]["KeyMetadata"]["KeyId"]
        known_to_both_workers(ks, key_id)
        before = scrape(admin)[sample("kms_requests_total", operation="Encrypt", status="200")]
        since = len(ks.server.output)
        for _ in range(30):
            assert error_type(call(ks.url, "Encrypt", {"KeyId": key_id, "Plaintext": "eA=="})) is None
        wait_for(lambda: len(served_by(ks.server, "Encrypt", 200, since)) == 30, "30 access log lines", 5)
        assert len(set(served_by(ks.server, "Encrypt", 200, since))) == 2  # both workers took some
        for _ in range(6):  # each scrape on a connection of its own: either worker answers, with the same sums
            samples = scrape(admin)
            assert samples[sample("kms_requests_total", operation="Encrypt", status="200")] == before + 30
            assert samples[sample("kms_requests_in_flight")] == 0
    finally:
        pids = worker_pids(ks.server)
        assert ks.server.stop() == 0, ks.server.log()
    no_orphans(pids)


def test_a_worker_that_cannot_start_stops_the_start_with_its_one_line_and_status(tmp_path: Path) -> None:
    config = write_config(tmp_path / "keyservice.toml")
    result = subprocess.run([sys.executable, "-m", "keyservice", "serve", "--config", str(config), "--listen",
                             "127.0.0.1:0", "--workers", "2"],
                            env={**os.environ, "KEYSERVICE_DATA_DIR": str(tmp_path / "data"),
                                 "KEYSERVICE_ROOT_KEY_FILE": str(tmp_path / "missing.key")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "listening on" not in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("keyservice: ")]
    assert len(errors) == 1 and "missing.key" in errors[0], result.stderr


def test_a_port_in_use_is_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    config = write_config(tmp_path / "keyservice.toml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "keyservice", "serve", "--config", str(config), "--listen",
                                 f"127.0.0.1:{port}", "--workers", "2"],
                                env={**os.environ, "KEYSERVICE_DATA_DIR": str(tmp_path / "data")},
                                capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip().splitlines()[-1] == (
        f"keyservice: cannot listen on 127.0.0.1:{port}: Address already in use (another process listens there: "
        "stop it or choose another address with --listen)")
    assert not (tmp_path / "data").exists()  # nothing was started


def test_a_due_deletion_is_made_once_though_every_worker_runs_maintenance(tmp_path: Path) -> None:
    ks = launch(tmp_path, env={"KEYSERVICE_WORKERS": "2"})  # purge_interval 0.2 s in the test config
    try:
        key_id = call(ks.url, "CreateKey", {})[1]["KeyMetadata"]["KeyId"]
        assert call(ks.url, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7})[0] == 200
        time.sleep(BOUND)  # both workers hold the key as pending deletion
        ks.advance_clock(8 * 86400)
        wait_for(lambda: all(error_type(call(ks.url, "DescribeKey", {"KeyId": key_id})) == "NotFoundException"
                             for _ in range(8)), "the key gone on every worker", 10)
        time.sleep(1)  # several more maintenance rounds of each worker
    finally:
        pids = worker_pids(ks.server)
        assert ks.server.stop() == 0, ks.server.log()
    no_orphans(pids)
    assert ks.server.log().count(f"key/{key_id} destroyed after its deletion waiting period") == 1, ks.server.log()
