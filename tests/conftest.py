"""Suite-wide guard: no server the suite started may have written a secret the suite gave it.

Runs at the end of every session (CI runs the whole suite through scripts/test): the output of each
server tests/support/process.py started is scanned for every secret in tests/support/secrets.py, in
every form (text, base64, hex, bytes repr, derived SigV4 signing keys), and for strings that only a
leak of signing input or a KMS response body would print. Any hit fails the session.
"""
from __future__ import annotations

import pytest

from tests.support.process import STARTED
from tests.support.secrets import leaks


def scan_started_servers() -> list[str]:
    """One line per server whose output holds a secret: its command and what leaked."""
    found = []
    for server in STARTED:
        hits = leaks(server.log())
        if hits:
            found.append(f"{' '.join(map(str, server.proc.args))}: {', '.join(hits)}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    found = scan_started_servers()
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "secrets found in server output:\n  " + "\n  ".join(found)
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
