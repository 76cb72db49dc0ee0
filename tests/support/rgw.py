"""A real S3 server for the end-to-end tests: Ceph's RADOS Gateway (RGW), started by tests/support/rgw.sh.

RGW 16.2 (Debian 12) runs as a one-node Ceph cluster (mon + OSD + radosgw) on loopback, here with the
memstore object store (RAM only, made anew at each start): about 15 s to start, 170 MB of RSS. The session
starts it once, in a temporary directory, and stops it at its end (SIGTERM to the script's supervisor, which
also stops by itself when the test process is gone: RGW_WATCH_PID).

If RGW cannot start (its Debian packages missing and not root to install them), the RGW tests fail: CI must
not pass without them. A developer opts out with ``S3GW_SKIP_RGW=1``: the RGW tests are then skipped.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import secrets

SCRIPT = Path(__file__).with_name("rgw.sh")
SKIP_ENV = "S3GW_SKIP_RGW"
ACCESS_KEY = "RGWTESTACCESSKEY0001"
SECRET_KEY = "rgw-test-secret-key-0000000000000000000001"
START_TIMEOUT = 240


@dataclass
class RgwServer:
    """A running RGW and its S3 user (the same attributes as tests.support.moto.MotoServer)."""

    url: str
    access_key: str
    secret_key: str
    supervisor: int
    datadir: Path
    startup_seconds: float = 0.0

    def create_user(self, uid: str) -> tuple[str, str]:
        """A further RGW user (radosgw-admin user create) with an S3 key pair of its own, registered for the
        secret scan: another owner of buckets and objects, for the tests of per-user upstream credentials."""
        access_key = f"RGW{secrets_token(uid)}"[:20].upper()
        secret_key = f"rgw-{uid}-secret-{secrets_token(uid + 'secret')}"
        subprocess.run(["radosgw-admin", "-c", str(self.datadir / "ceph.conf"), "-n", "client.admin", "user", "create",
                        "--uid", uid, "--display-name", uid, "--access-key", access_key, "--secret-key", secret_key],
                       check=True, capture_output=True, timeout=60)
        secrets.register(f"rgw user {uid} secret key", secret_key, signs=True)
        return access_key, secret_key

    def stop(self) -> None:
        """SIGTERM to the supervisor, which stops radosgw, the OSD and the mon; waits for them."""
        subprocess.run([str(SCRIPT), "stop", str(self.datadir)], check=False, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            os.kill(self.supervisor, 0)
        except ProcessLookupError:
            return
        os.kill(self.supervisor, signal.SIGTERM)


def secrets_token(seed: str) -> str:
    """A stable 32-hex-digit token of ``seed`` (a key that differs per user and per session)."""
    return hashlib.sha256(f"{seed}/{os.getpid()}".encode()).hexdigest()[:32]


def skipped() -> bool:
    return os.environ.get(SKIP_ENV, "") not in ("", "0")


def start_rgw(datadir: Path) -> RgwServer:
    """Start RGW (memstore) in ``datadir``; a failure to start fails the calling test (pytest.fail)."""
    env = {**os.environ, "RGW_OBJECTSTORE": "memstore", "RGW_ACCESS_KEY": ACCESS_KEY,
           "RGW_SECRET_KEY": SECRET_KEY, "RGW_WATCH_PID": str(os.getpid()),
           "RGW_START_TIMEOUT": str(START_TIMEOUT - 60)}
    started = time.monotonic()
    try:
        result = subprocess.run([str(SCRIPT), str(datadir)], env=env, capture_output=True, text=True,
                                timeout=START_TIMEOUT + 120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"Ceph RGW did not start ({exc}); set {SKIP_ENV}=1 to skip the RGW tests", pytrace=False)
    if result.returncode != 0:
        pytest.fail(f"Ceph RGW did not start (rc {result.returncode}): {result.stderr[-3000:]}\n"
                    f"set {SKIP_ENV}=1 to skip the RGW tests", pytrace=False)
    port, access_key, secret_key, pid = result.stdout.strip().splitlines()[-1].split()
    secrets.register("rgw upstream secret key", secret_key, signs=True)
    return RgwServer(url=f"http://127.0.0.1:{port}", access_key=access_key, secret_key=secret_key,
                     supervisor=int(pid), datadir=datadir, startup_seconds=round(time.monotonic() - started, 1))
