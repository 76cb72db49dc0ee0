"""Legacy reads never hold one upstream connection while waiting for another.

An object without gateway metadata needs its bucket's state (gateway/bucketstate.py) before it is served;
when that is not cached, it is looked up with no upstream response open, so a gateway whose pool has a
single connection serves legacy GETs and ranged GETs (no 503 SlowDown after the pool wait), one with two
(the least any copy works with) legacy copy sources, and concurrent legacy reads of one bucket share one
bucket-state read.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.bucketstate import STATE_KEY
from tests.gateway.conftest import _config_toml
from tests.support.clients import s3_client
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

BIG = bytes(range(256)) * (32 * 1024)  # 8 MiB: far more than the socket buffers hold
LOOKUP_LINE = "reading its state record"


def _start(moto: MotoServer, workdir: Path, env: dict[str, str]) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", None))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                        env={"GATEWAY_LOG_LEVEL": "DEBUG", **env}, cwd=workdir, timeout=60)


@pytest.fixture(scope="module")
def single(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with one pooled upstream connection, waiting at most 3 s for it."""
    server = _start(moto, tmp_path_factory.mktemp("gateway-pool-1"),
                    {"GATEWAY_UPSTREAM_POOL_SIZE": "1", "GATEWAY_UPSTREAM_POOL_WAIT": "3"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pair(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with two pooled upstream connections: a copy streams its source (one connection) into
    the destination's PUT (another), whatever the source, so that is the least a copy can work with."""
    server = _start(moto, tmp_path_factory.mktemp("gateway-pool-2"),
                    {"GATEWAY_UPSTREAM_POOL_SIZE": "2", "GATEWAY_UPSTREAM_POOL_WAIT": "3"})
    yield server
    server.stop()


def _legacy_object(upstream_s3, body: bytes = BIG) -> str:
    """A fresh bucket created directly upstream (nothing cached about it) holding a plaintext object."""
    bucket = f"legacy-pool-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="old", Body=body)
    return bucket


def _client(server: Server):
    return s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, read_timeout=30)


def _lookups(server: Server, bucket: str) -> int:
    return server.log().count(f"bucket {bucket}: {LOOKUP_LINE} {STATE_KEY}")


def test_a_legacy_get_with_a_pool_of_one_is_served(single, upstream_s3):
    bucket = _legacy_object(upstream_s3)
    answer = _client(single).get_object(Bucket=bucket, Key="old")
    assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Body"].read() == BIG) == (200, True)
    assert _lookups(single, bucket) == 1


def test_a_legacy_ranged_get_with_a_pool_of_one_is_served(single, upstream_s3):
    bucket = _legacy_object(upstream_s3)
    answer = _client(single).get_object(Bucket=bucket, Key="old", Range="bytes=1000-4999999")
    assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Body"].read() == BIG[1000:5000000]) == (206, True)


def test_a_legacy_part_number_get_with_a_pool_of_one_is_served(single, upstream_s3):
    bucket = _legacy_object(upstream_s3)
    answer = _client(single).get_object(Bucket=bucket, Key="old", PartNumber=1)
    assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Body"].read() == BIG) in ((200, True), (206, True))


def test_a_legacy_copy_source_with_a_pool_of_two_is_copied(pair, upstream_s3):
    bucket = _legacy_object(upstream_s3)
    s3 = _client(pair)
    answer = s3.copy_object(Bucket=bucket, Key="new", CopySource={"Bucket": bucket, "Key": "old"})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == BIG
    assert _lookups(pair, bucket) == 1
    assert upstream_s3.head_object(Bucket=bucket, Key="new")["Metadata"]  # stored encrypted


def test_concurrent_legacy_gets_with_a_cold_cache_make_one_bucket_state_read(pair, upstream_s3):
    bucket = _legacy_object(upstream_s3, b"small legacy object")
    s3 = _client(pair)

    def read(_: int) -> bytes:
        return s3.get_object(Bucket=bucket, Key="old")["Body"].read()

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(read, range(32))) == [b"small legacy object"] * 32
    assert _lookups(pair, bucket) == 1
