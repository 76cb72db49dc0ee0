"""Fixtures of the in-process handler tests: a gateway app per test on the session's moto."""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from tests.gateway.inprocess.harness import Gateway, gateway_config, inprocess, moto_upstream
from tests.support.moto import MotoServer


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GATEWAY_*/KEYSERVICE_* setting of the developer's shell reaches the embedded key service."""
    for name in [n for n in os.environ if n.startswith(("GATEWAY_", "KEYSERVICE_"))]:
        monkeypatch.delenv(name)


@pytest.fixture
async def gw(moto: MotoServer, tmp_path: Path, clean_environment: None) -> AsyncIterator[Gateway]:
    """The gateway app in-process (its start-up and cleanup run as under `serve`)."""
    async with inprocess(create_app(gateway_config(moto_upstream(moto), tmp_path / "data"))) as gateway:
        yield gateway


@pytest.fixture
async def bucket(gw: Gateway) -> str:
    """A fresh bucket, made through the in-process gateway (in place of tests/gateway/conftest.py's, which
    would start a gateway process)."""
    return await gw.new_bucket()
