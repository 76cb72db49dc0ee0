"""The multi-node example's HAProxy configurations (config/multinode/*.cfg) run for real on loopback.

The file is the compose file's, with only what Docker provides replaced: each ``bind :PORT`` listens on
127.0.0.1 on a free port, each ``server NAME HOST:PORT`` is the test's node of that name on loopback (its
health check on the node's own admin port, as nodes on one host cannot share port numbers), and Docker's DNS
resolver is left out. Everything else -- mode, balancing, health checks, retries, redispatch, the monitor
URI -- is the file as shipped. Where Debian's haproxy package is missing the tests using it are skipped,
saying so (scripts/test installs it).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.process import free_port

MISSING = "haproxy not found on PATH: install Debian's haproxy package (scripts/test does)"
requires_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason=MISSING)


def loopback_config(text: str, binds: dict[int, int], servers: dict[str, tuple[int, int]]) -> str:
    """``text`` with ``bind :P`` on 127.0.0.1:binds[P], and ``server NAME ...`` at 127.0.0.1:servers[NAME][0]
    checked on port servers[NAME][1]; without Docker's resolver."""
    text = re.sub(r"^resolvers docker\n(?:[ \t]+\S.*\n)*", "", text, flags=re.MULTILINE)
    text = text.replace(" resolvers docker", "")
    text = re.sub(r"^(\s+)bind :(\d+)$", lambda m: f"{m[1]}bind 127.0.0.1:{binds[int(m[2])]}", text,
                  flags=re.MULTILINE)
    return re.sub(r"^(\s+)server (\S+) \S+$",
                  lambda m: f"{m[1]}server {m[2]} 127.0.0.1:{servers[m[2]][0]} port {servers[m[2]][1]}", text,
                  flags=re.MULTILINE)


class HAProxy:
    """``HAProxy(config_file, workdir, frontend_port, servers).start()``; ``.url`` (the frontend); ``.stop()``."""

    def __init__(self, config_file: Path, workdir: Path, frontend_port: int,
                 servers: dict[str, tuple[int, int]]) -> None:
        self.port, self._health_port = free_port(), free_port()
        config = loopback_config(config_file.read_text(), {frontend_port: self.port, 8404: self._health_port},
                                 servers)
        self.config_file = workdir / config_file.name
        self.config_file.write_text(config)
        self.log_file = workdir / (config_file.stem + ".log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> HAProxy:
        """Run it in the foreground (``-db``, its log to ``log_file``) until its monitor URI answers 200,
        which it does once one backend server is up."""
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config_file)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"haproxy did not become healthy: {self.log_file.read_text()[-2000:]}")
            time.sleep(0.1)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self._health_port}/health", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
