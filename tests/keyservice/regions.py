"""Two ``keyservice serve`` processes of different regions on loopback, each the other's peer
(multi-region keys), for the key service's and the gateway's end-to-end tests."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.keyservice.conftest import ROOT, KeyServiceProcess, aws_kms, launch
from tests.support.process import free_port

HOME, AWAY = "us-east-1", "eu-west-1"
QUOTAS = {"CreateKey": 100, "RotateKeyOnDemand": 100}  # the tests make keys and versions faster than AWS allows


@dataclass
class Region:
    """One region's key service: where it listens and how to start it again on the same store."""

    name: str
    port: int
    workdir: Path
    env: dict[str, str]
    process: KeyServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Region":
        self.process = launch(self.workdir, quotas=QUOTAS, env=self.env, listen=f"127.0.0.1:{self.port}")
        return self

    def stop(self) -> None:
        assert self.process is not None
        assert self.process.server.stop() == 0, self.process.server.log()
        self.process = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.server.kill()
        self.process = None

    def kms(self, creds: tuple[str, str] = ROOT):
        return boto3.client("kms", endpoint_url=self.url, region_name=self.name, aws_access_key_id=creds[0],
                            aws_secret_access_key=creds[1],
                            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))

    def cli(self, *args: str) -> dict:
        done = aws_kms(self.url, *args, "--region", self.name)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}


def peer_env(region: str, port: int) -> dict[str, str]:
    """The KEYSERVICE_PEER_* variables naming the key service of ``region`` (its root credential)."""
    prefix = f"KEYSERVICE_PEER_{region.upper().replace('-', '_')}"
    return {f"{prefix}_ENDPOINT": f"http://127.0.0.1:{port}", f"{prefix}_ACCESS_KEY": ROOT[0],
            f"{prefix}_SECRET_KEY": ROOT[1]}


def start_regions(tmp_path: Path, names: list[str]) -> list[Region]:
    """One key service per region, each with every other as its peer."""
    ports = {name: free_port() for name in names}
    started = []
    for name in names:
        peers = {k: v for other in names if other != name for k, v in peer_env(other, ports[other]).items()}
        region = Region(name, ports[name], tmp_path / name, {"KEYSERVICE_REGION": name, **peers})
        region.workdir.mkdir()
        started.append(region.start())
    return started


def stop_regions(started: list[Region]) -> None:
    for region in started:
        if region.process is not None:
            region.stop()


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[list[Region]]:
    """HOME's and AWAY's key services (unpack as ``home, away = regions``)."""
    started = start_regions(tmp_path, [HOME, AWAY])
    yield started
    stop_regions(started)
