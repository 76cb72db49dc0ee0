"""Start the project's servers (and moto) as real child processes on loopback for tests.

Every server of this project prints ``listening on http(s)://HOST:PORT`` once it accepts
connections; tests start it with ``--listen 127.0.0.1:0`` and read the real port from that line.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LISTEN_LINE = re.compile(r"listening on (https?://[^\s]+)")
VENV_BIN = Path(sys.executable).parent
# Servers run at DEBUG unless a test asks otherwise, so the end-of-session scan for secrets
# (tests/conftest.py) covers everything they could ever log.
DEFAULT_LOG_LEVELS = {"GATEWAY_LOG_LEVEL": "DEBUG", "KEYSERVICE_LOG_LEVEL": "DEBUG"}
STARTED: list["Server"] = []
"""Every server the session started (moto included), whose output is scanned for secrets at the end."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for programs that cannot listen on port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass
class Server:
    """A running child process and the URL it printed."""

    proc: subprocess.Popen
    url: str
    output: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return "".join(self.output)


def _pump(proc: subprocess.Popen, sink: list[str], found: threading.Event, holder: list[str]) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        sink.append(line)
        if not found.is_set():
            m = LISTEN_LINE.search(line)
            if m:
                holder.append(m.group(1))
                found.set()
    found.set()


def start_server(args: list[str], env: dict[str, str] | None = None, timeout: float = 30.0,
                 cwd: str | os.PathLike | None = None) -> Server:
    """Run ``args`` (stdout+stderr merged) and wait for its ``listening on URL`` line."""
    full_env = dict(os.environ)
    full_env["PATH"] = f"{VENV_BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env["PYTHONUNBUFFERED"] = "1"
    for name, level in DEFAULT_LOG_LEVELS.items():
        full_env.setdefault(name, level)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=full_env, cwd=cwd, start_new_session=True)
    output: list[str] = []
    holder: list[str] = []
    found = threading.Event()
    threading.Thread(target=_pump, args=(proc, output, found, holder), daemon=True).start()
    if not found.wait(timeout) or not holder:
        proc.kill()
        proc.wait()
        STARTED.append(Server(proc=proc, url="", output=output))
        raise RuntimeError(f"{args[0]} did not start:\n{''.join(output)}")
    server = Server(proc=proc, url=holder[0], output=output)
    STARTED.append(server)
    return server
