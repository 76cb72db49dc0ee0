"""A real PostgreSQL server for the key store tests, started by the test session itself.

Debian's postgresql package puts the server binaries in /usr/lib/postgresql/VERSION/bin (initdb, pg_ctl,
postgres, createdb): the session initdb's a throw-away cluster in a temporary directory (password auth
over loopback TCP), starts it on a free loopback port, and stops it at its end. A watchdog started with
it stops the server by itself when the test process is gone (killed, crashed), as RGW's supervisor does
(tests/support/rgw.py). The server refuses to run as root: as root, the cluster is owned by and run as
the ``postgres`` user (or ``nobody``). Where the binaries are missing the PostgreSQL tests are skipped,
saying so (scripts/test installs them).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import secrets

USER = "keyservice"
PASSWORD = "pg-test-password-" + uuid.uuid4().hex
MISSING = ("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH: "
           "install Debian's postgresql package (scripts/test does)")


def server_bin() -> Path | None:
    """The directory holding initdb and pg_ctl (the newest Debian version first), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if os.access(Path(candidate) / "initdb", os.X_OK) and os.access(Path(candidate) / "pg_ctl", os.X_OK):
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _version(path: str) -> int:
    digits = Path(path).parent.name
    return int(digits) if digits.isdigit() else 0


@dataclass
class PostgresServer:
    """A running throw-away cluster; ``create_database`` gives each test a database of its own."""

    bin: Path
    datadir: Path
    port: int
    watchdog: subprocess.Popen[bytes]
    run_as: list[str]

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = "ks_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the cluster's superuser; its output (unaligned, tuples only)."""
        result = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                 "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database, "-c", sql],
                                env={**os.environ, "PGPASSWORD": PASSWORD}, capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout

    def dump(self, url: str) -> bytes:
        """pg_dump of the database ``url`` names (schema and data, plain SQL; bytea as hex)."""
        result = subprocess.run([str(self.bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                                 url.rsplit("/", 1)[1]], env={**os.environ, "PGPASSWORD": PASSWORD},
                                capture_output=True, timeout=60, check=True)
        return result.stdout

    def stop(self) -> None:
        subprocess.run(self.run_as + [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120, check=False)
        self.watchdog.kill()
        self.watchdog.wait()


def start_postgres(workdir: Path) -> PostgresServer:
    """initdb a cluster in ``workdir`` and start it on a free loopback port (RuntimeError if it fails)."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise FileNotFoundError(MISSING)
    secrets.register("postgresql test password", PASSWORD)
    run_as = _unprivileged(workdir)
    datadir, sockets = workdir / "data", workdir / "sock"
    sockets.mkdir()
    pwfile = workdir / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if run_as:
        shutil.chown(sockets, run_as[2])
        shutil.chown(pwfile, run_as[2])
    _check(run_as + [str(bin_dir / "initdb"), "-D", str(datadir), "-U", USER, f"--pwfile={pwfile}",
                     "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"])
    for attempt in range(3):  # a free port may be taken by another process before the server binds it
        port = _free_port()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on"
        try:
            _check(run_as + [str(bin_dir / "pg_ctl"), "-D", str(datadir), "-o", options, "-l",
                             str(workdir / "log"), "-w", "-t", "60", "start"], workdir / "log")
            break
        except RuntimeError:
            if attempt == 2:
                raise
    # Stops the server once this process is gone, however it ended (a new session: not killed with us).
    watch = (f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
             f"{' '.join(run_as)} {bin_dir / 'pg_ctl'} -D {datadir} -m immediate stop")
    watchdog = subprocess.Popen(["sh", "-c", watch], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return PostgresServer(bin_dir, datadir, port, watchdog, run_as)


def _unprivileged(workdir: Path) -> list[str]:
    """As root (the server refuses to run so), the prefix running a command as an ordinary user who is
    given ``workdir``; else nothing."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        shutil.chown(workdir, user)
        workdir.chmod(0o700)
        parent = workdir.parent
        while parent != parent.parent:  # the user must reach it
            parent.chmod(parent.stat().st_mode | 0o001)
            parent = parent.parent
        return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root with neither a postgres nor a nobody user to run PostgreSQL as")


def _check(command: list[str], log: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        extra = log.read_text()[-2000:] if log is not None and log.exists() else ""
        program = next(Path(c).name for c in command if c.startswith("/"))
        raise RuntimeError(f"{program} failed (rc {result.returncode}): {result.stderr[-2000:]} {extra}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster for the session; skipped, saying why, where the server binaries are
    missing. Import it into a conftest or test module to use it."""
    if server_bin() is None:
        pytest.skip(MISSING)
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.stop()
