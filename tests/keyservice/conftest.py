"""Fixtures and helpers for key service tests: a real ``keyservice serve`` process on loopback,
clients that talk to it (boto3, the aws CLI, raw SigV4-signed HTTP), and its audit log."""
from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from keyservice.clock import FakeClock
from keyservice.service import KeyService
from tests.keyservice.inprocess import START
from tests.support.postgres import postgres  # noqa: F401  (the session's PostgreSQL, for the store tests)
from tests.support.process import Server, VENV_BIN, start_server
from tests.support.secrets import (KEYSERVICE_ADMIN, KEYSERVICE_ALICE, KEYSERVICE_OTHER, KEYSERVICE_ROOT,
                                   KEYSERVICE_ROOT_KEY)

ACCOUNT = "111122223333"
REGION = "us-east-1"
ROOT = KEYSERVICE_ROOT
ALICE = KEYSERVICE_ALICE
ALICE_ARN = f"arn:aws:iam::{ACCOUNT}:user/alice"
ADMIN = KEYSERVICE_ADMIN
ADMIN_ARN = f"arn:aws:iam::{ACCOUNT}:user/admin"
OTHER_ACCOUNT = "444455556666"
OTHER = KEYSERVICE_OTHER
OTHER_ARN = f"arn:aws:iam::{OTHER_ACCOUNT}:root"
USERS = [(ROOT, None), (ALICE, ALICE_ARN), (ADMIN, ADMIN_ARN), (OTHER, OTHER_ARN)]
ROOT_KEY_B64 = base64.b64encode(KEYSERVICE_ROOT_KEY).decode()


@dataclass
class KeyServiceProcess:
    """A running key service and the files it uses."""

    server: Server
    data_dir: Path
    audit_log: Path
    clock_file: Path

    @property
    def url(self) -> str:
        return self.server.url

    def audit_records(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def advance_clock(self, seconds: float) -> None:
        """Move the server's key clock (KEYSERVICE_CLOCK_FILE) forward."""
        current = float(self.clock_file.read_text() or 0) if self.clock_file.exists() else 0.0
        self.clock_file.write_text(str(current + seconds))


def write_config(path: Path, quotas: dict[str, float] | None = None) -> Path:
    lines = ["[keyservice]", f'account_id = "{ACCOUNT}"', f'region = "{REGION}"', "purge_interval = 0.2", ""]
    for (access, secret), principal in USERS:
        lines += ["[[keyservice.credentials]]", f'access_key = "{access}"', f'secret_key = "{secret}"']
        lines += [f'principal = "{principal}"', ""] if principal else [""]
    if quotas:
        lines.append("[keyservice.quotas]")
        lines += [f"{name} = {rate}" for name, rate in quotas.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def launch(tmp_path: Path, quotas: dict[str, float] | None = None, data_dir: Path | None = None,
           env: dict[str, str] | None = None, listen: str = "127.0.0.1:0") -> KeyServiceProcess:
    """Start ``python -m keyservice serve`` (on a free port unless ``listen`` names one) with its own
    data dir and clock file."""
    config = write_config(tmp_path / "keyservice.toml", quotas)
    data_dir = data_dir or tmp_path / "data"
    clock_file = tmp_path / "clock-offset"
    full_env = {"KEYSERVICE_DATA_DIR": str(data_dir), "KEYSERVICE_ROOT_KEY": ROOT_KEY_B64,
                "KEYSERVICE_CLOCK_FILE": str(clock_file), **(env or {})}
    server = start_server([sys.executable, "-m", "keyservice", "serve", "--config", str(config),
                           "--listen", listen], full_env)
    return KeyServiceProcess(server, data_dir, data_dir / "audit.log", clock_file)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Where a test's key store lives: None (SQLite in its data dir), or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
async def svc(tmp_path: Path, store_url: str | None):
    """An in-process key service on a fake clock, with a fresh store (on each backend) and root key."""
    service = KeyService.open(tmp_path, os.urandom(32), clock=FakeClock(START), store_url=store_url)
    yield service
    await service.close()


@pytest.fixture
def keyservice(tmp_path: Path) -> Iterator[KeyServiceProcess]:
    ks = launch(tmp_path)
    yield ks
    assert ks.server.stop() == 0, ks.server.log()


def kms_client(url: str, creds: tuple[str, str] = ROOT, verify: str | bool | None = None):
    return boto3.client("kms", endpoint_url=url, region_name=REGION, aws_access_key_id=creds[0],
                        aws_secret_access_key=creds[1], verify=verify,
                        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))


def aws_kms(url: str, *args: str, creds: tuple[str, str] = ROOT) -> subprocess.CompletedProcess:
    """Run the real ``aws kms`` CLI with an isolated configuration."""
    env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1],
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_MAX_ATTEMPTS": "1",
           "AWS_EC2_METADATA_DISABLED": "true", "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([str(VENV_BIN / "aws"), "kms", *args, "--endpoint-url", url,
                           "--output", "json"], capture_output=True, text=True, env=env, timeout=60)


def signed_headers(url: str, body: bytes, target: str | None, creds: tuple[str, str] = ROOT,
                   extra: dict[str, str] | None = None) -> dict[str, str]:
    """SigV4 headers botocore would send for a KMS JSON call."""
    headers = {"Content-Type": "application/x-amz-json-1.1", **(extra or {})}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(*creds), "kms", REGION).add_auth(request)
    return dict(request.headers.items())


def raw_post(url: str, body: bytes, headers: dict[str, str], path: str = "/",
             method: str = "POST") -> tuple[int, dict[str, str], dict]:
    """Send bytes as they are; returns status, headers and the decoded JSON body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data)
    finally:
        conn.close()


def signed_call(url: str, operation: str, payload: dict | bytes,
                creds: tuple[str, str] = ROOT) -> tuple[int, dict[str, str], dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return raw_post(url, body, signed_headers(url, body, f"TrentService.{operation}", creds))
