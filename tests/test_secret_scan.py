"""The session-end scan (tests/conftest.py) reports a server whose output holds a registered secret."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import scan_started_servers
from tests.support import process
from tests.support.process import Server
from tests.support.secrets import CUSTOMER_KEY, GATEWAY_SECRET_KEY


def test_the_scan_names_the_server_and_the_secret_it_leaked(monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    leaky = Server(proc=proc, url="", output=[f"DEBUG botocore: secret={GATEWAY_SECRET_KEY}\n",
                                              f"key {CUSTOMER_KEY.hex()}\n"])
    clean = Server(proc=proc, url="", output=["INFO gateway: listening\n"])
    monkeypatch.setattr(process, "STARTED", [leaky, clean])
    monkeypatch.setattr("tests.conftest.STARTED", [leaky, clean])
    found = scan_started_servers()
    assert len(found) == 1
    assert "gateway client secret key" in found[0] and "customer key" in found[0]


def test_the_scan_covers_access_log_lines_on_a_servers_stdout(monkeypatch):
    """Both servers write their access log to stdout by default, so the session scan reads it: a line whose
    fields held a customer key (base64, as an SSE-C header carries it) would be reported."""
    import base64
    import json

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    line = json.dumps({"operation": "PutObject", "key": base64.b64encode(CUSTOMER_KEY).decode(), "status": 200})
    server = Server(proc=proc, url="", output=["listening on http://127.0.0.1:1\n", line + "\n"])
    monkeypatch.setattr(process, "STARTED", [server])
    monkeypatch.setattr("tests.conftest.STARTED", [server])
    found = scan_started_servers()
    assert len(found) == 1 and "customer key" in found[0]
