"""Start the project's servers (and moto) as real child processes on loopback for tests.

Every server of this project prints ``listening on http(s)://HOST:PORT`` once it accepts
connections; tests start it with ``--listen 127.0.0.1:0`` and read the real port from that line.
The process handling is the benches' (``bench/support.py``); what is the tests' own is the log
level and the register of started servers for the secret scan.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from bench.support import VENV_BIN, Server, ServerDidNotStart, free_port, wait_for_port  # noqa: F401  (re-exported)
from bench.support import start_server as start_child

# Servers run at DEBUG unless a test asks otherwise, so the end-of-session scan for secrets
# (tests/conftest.py) covers everything they could ever log.
DEFAULT_LOG_LEVELS = {"GATEWAY_LOG_LEVEL": "DEBUG", "KEYSERVICE_LOG_LEVEL": "DEBUG"}
# One process per server unless a test asks for workers (--workers N; the default is one per core).
DEFAULT_WORKERS = {"GATEWAY_WORKERS": "1", "KEYSERVICE_WORKERS": "1"}
STARTED: list[Server] = []
"""Every server the session started (moto included), whose output is scanned for secrets at the end."""


def start_server(args: list[str], env: dict[str, str] | None = None, timeout: float = 30.0,
                 cwd: str | os.PathLike | None = None) -> Server:
    """Run ``args`` (stdout+stderr merged) and wait for its ``listening on URL`` line."""
    levels = {name: level for name, level in {**DEFAULT_LOG_LEVELS, **DEFAULT_WORKERS}.items()
              if name not in os.environ}
    return registered(lambda: start_child(args, {**levels, **(env or {})}, timeout, cwd))


def registered(start: Callable[[], Server]) -> Server:
    """``start()``'s server, put in STARTED for the secret scan, also when it fails to start."""
    try:
        server = start()
    except ServerDidNotStart as failed:
        STARTED.append(failed.server)
        raise
    STARTED.append(server)
    return server
