"""``gateway serve --workers 2`` in front of moto, with its embedded key service on one SQLite store: both
workers serve requests (the access log's ``worker`` field), a key disabled through the gateway's KMS
endpoint is refused by every worker within the bound (README: "Workers"), the parts of one multipart upload
served by different workers complete, a killed worker is replaced while requests keep succeeding, and
SIGTERM stops every worker."""
from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.gateway.conftest import _config_toml
from tests.support.clients import refused_code, s3_client
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.workers import no_orphans, served_by, wait_for, worker_of_next, worker_pids

BOUND = 2.0  # README: 0.5 s polling plus the reload; allowance for a loaded machine
PART = 5 * 1024 * 1024


def start_workers(moto: MotoServer, workdir: Path) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", None))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0",
                         "--workers", "2"], cwd=workdir, timeout=60)


@pytest.fixture(scope="module")
def workers_gateway(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_workers(moto, tmp_path_factory.mktemp("gateway-workers"))
    yield server
    pids = worker_pids(server)
    assert server.stop() == 0, server.log()
    no_orphans(pids)


def fresh_s3(server: Server):
    """A client of its own: its first request opens a new connection, which either worker may accept."""
    return s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)


def until_both_workers(server: Server, operation: str, attempt) -> None:
    """``attempt()`` (which asserts its outcome) on fresh connections until each of the two workers has
    answered ``operation`` in the access log."""
    since = len(server.output)

    def both() -> bool:
        attempt()
        return len(set(served_by(server, operation, since=since))) == 2
    wait_for(both, f"{operation} answered by both workers", 60)


def test_both_workers_serve_requests_and_the_listening_line_is_printed_once(workers_gateway: Server) -> None:
    assert len(worker_pids(workers_gateway)) == 2
    bucket = f"workers-{uuid.uuid4().hex[:12]}"
    fresh_s3(workers_gateway).create_bucket(Bucket=bucket)
    names: list[str] = []

    def put() -> None:
        names.append(f"obj-{len(names)}")
        fresh_s3(workers_gateway).put_object(Bucket=bucket, Key=names[-1], Body=names[-1].encode())
    until_both_workers(workers_gateway, "PutObject", put)
    for name in names:
        assert fresh_s3(workers_gateway).get_object(Bucket=bucket, Key=name)["Body"].read() == name.encode()
    assert set(served_by(workers_gateway, "PutObject", 200)) <= worker_pids(workers_gateway)
    assert workers_gateway.log().count("listening on http://") == 1


def test_a_key_disabled_through_the_kms_endpoint_is_refused_by_every_worker_within_the_bound(
        workers_gateway: Server) -> None:
    kms = boto3.client("kms", endpoint_url=workers_gateway.url, region_name="us-east-1",
                       aws_access_key_id=GATEWAY_ACCESS_KEY, aws_secret_access_key=GATEWAY_SECRET_KEY,
                       config=Config(retries={"total_max_attempts": 1}))
    bucket = f"workers-kms-{uuid.uuid4().hex[:12]}"
    fresh_s3(workers_gateway).create_bucket(Bucket=bucket)
    arn = kms.create_key(Description="made through one worker")["KeyMetadata"]["Arn"]
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn}

    def put_code() -> str | None:
        return refused_code(lambda: fresh_s3(workers_gateway).put_object(Bucket=bucket, Key="k", Body=b"x", **sse))

    def put_succeeds() -> None:
        assert put_code() is None

    def put_refused() -> None:
        assert put_code() == "KMS.DisabledException"
    # Once the bound has passed, every answer of either worker must be the new one.
    time.sleep(BOUND)
    until_both_workers(workers_gateway, "PutObject", put_succeeds)
    kms.disable_key(KeyId=arn)
    time.sleep(BOUND)
    until_both_workers(workers_gateway, "PutObject", put_refused)


def test_the_parts_of_one_upload_served_by_different_workers_complete(workers_gateway: Server) -> None:
    bucket = f"workers-mpu-{uuid.uuid4().hex[:12]}"
    fresh_s3(workers_gateway).create_bucket(Bucket=bucket)
    upload = fresh_s3(workers_gateway).create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    first = os.urandom(PART)
    since = len(workers_gateway.output)
    etag1 = fresh_s3(workers_gateway).upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1,
                                                  Body=first)["ETag"]
    first_worker = worker_of_next(workers_gateway, "UploadPart", since)
    etags: list[str] = []

    def second_part_elsewhere() -> bool:  # part 2 uploaded again until another worker took it
        mark = len(workers_gateway.output)
        etags.append(fresh_s3(workers_gateway).upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=2,
                                                           Body=b"the last part")["ETag"])
        return worker_of_next(workers_gateway, "UploadPart", mark) != first_worker
    wait_for(second_part_elsewhere, "part 2 on the other worker", 60)
    fresh_s3(workers_gateway).complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag1}, {"PartNumber": 2, "ETag": etags[-1]}]})
    body = fresh_s3(workers_gateway).get_object(Bucket=bucket, Key="big")["Body"].read()
    assert body == first + b"the last part"


def test_a_killed_worker_is_replaced_requests_keep_succeeding_and_sigterm_stops_every_worker(
        moto: MotoServer, tmp_path: Path) -> None:
    server = start_workers(moto, tmp_path)
    try:
        bucket = f"workers-kill-{uuid.uuid4().hex[:12]}"
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, retries={"max_attempts": 3})
        s3.create_bucket(Bucket=bucket)
        victim = min(worker_pids(server))
        os.kill(victim, signal.SIGKILL)
        for i in range(20):  # the SDK's retries absorb a connection the dead worker held
            s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"still served")
            assert fresh_s3(server).get_object(Bucket=bucket, Key=f"k{i}")["Body"].read() == b"still served"
        wait_for(lambda: len(worker_pids(server)) == 2 and victim not in worker_pids(server),
                 "a replacement worker", 10)
        assert f"(pid {victim}) exited (killed by SIGKILL): starting another" in server.log()
    finally:
        pids = worker_pids(server)
        assert server.stop() == 0, server.log()
    no_orphans(pids)
    assert "SIGTERM received: stopping 2 workers" in server.log()


def test_workers_stop_when_their_parent_is_killed(moto: MotoServer, tmp_path: Path) -> None:
    server = start_workers(moto, tmp_path)
    pids = worker_pids(server)
    assert len(pids) == 2
    server.kill()  # SIGKILL: the parent cannot pass anything on
    no_orphans(pids, timeout=15)


def test_the_development_upstream_is_served_by_one_worker_so_no_object_goes_missing(tmp_path):
    """With no upstream configured the development upstream lives in the memory of the process that starts it:
    several workers would each have their own, and a bucket made through one would be missing through another."""
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n[[gateway.credentials]]\n'
                      f'access_key = "{GATEWAY_ACCESS_KEY}"\nsecret_key = "{GATEWAY_SECRET_KEY}"\n')
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0",
                           "--workers", "2"], cwd=tmp_path, timeout=60)
    try:
        fresh_s3(server).create_bucket(Bucket="dev-bucket")
        fresh_s3(server).put_object(Bucket="dev-bucket", Key="k", Body=b"kept")
        for _ in range(6):  # new connections: any worker would take them
            assert fresh_s3(server).get_object(Bucket="dev-bucket", Key="k")["Body"].read() == b"kept"
        assert "one worker serves (workers = 2 ignored)" in server.log()
    finally:
        assert server.stop() == 0, server.log()
