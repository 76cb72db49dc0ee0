"""The multi-node deployment on loopback (config/docker-compose.multinode.yml, without Docker): one PostgreSQL,
two ``keyservice serve`` nodes on it, two ``gateway serve`` nodes sharing one gateway secret file and one
upstream (moto with IAM auth), and the test's own round-robin TCP balancer (tests/support/balancer.py) in front
of the gateways and another in front of the key services -- the gateways' one ``[kms] endpoint``, as HAProxy's
is in the compose file: RemoteKeyProvider takes one endpoint, so failing over to the other key service node is
the balancer's (a refused connection goes to the next node; a dropped one is retried by the gateway's KMS
client, 3 attempts within ``[kms] timeout``). test_e2e_multinode_haproxy.py runs the same tests behind HAProxy
running the compose file's balancer configurations.

What they show: a multipart upload whose parts alternate between the gateways completes and reads back
exactly; an object (SSE-KMS or SSE-C) written through one gateway reads through the other; a key disabled
through one key service node is refused by the other and through both gateways within the README's bound;
a key service node killed (SIGKILL) during a boto3 workload costs no failed client request.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import boto3
import pytest
from botocore.config import Config

from tests.gateway.conftest import remote_kms_toml
from tests.keyservice.conftest import KeyServiceProcess, kms_client, launch
from tests.support.balancer import RoundRobinBalancer
from tests.support.clients import refused_code, s3_client
from tests.support.moto import MotoServer
from tests.support.postgres import PostgresServer, postgres  # noqa: F401
from tests.support.process import VENV_BIN, Server, free_port, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.workers import wait_for

NOTIFY_BOUND = 2.0  # README ("The key store on PostgreSQL"): milliseconds; allowance for a loaded machine
DATA_KEY_MAX_AGE = 1.0  # the gateways' [kms] data_key_max_age here: how long a cached data key outlives a disable
PART = 5 * 1024 * 1024
SSE_C = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}


class Balancer(Protocol):
    """The test's own balancer or HAProxy: where clients connect, and how to stop it."""

    url: str

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Node:
    """A node as a balancer sees it: its compose service name, where it listens, its admin port."""

    name: str
    url: str
    admin_port: int


Balance = Callable[[str, list[Node]], Balancer]
"""Starts the balancer ``kind`` ("s3" or "kms") in front of ``nodes``."""


def own_balancer(kind: str, nodes: list[Node]) -> Balancer:
    """The test's own round-robin TCP balancer (tests/support/balancer.py)."""
    return RoundRobinBalancer.of_urls([node.url for node in nodes]).start()


@dataclass
class Cluster:
    """The running nodes and the balancers in front of them."""

    keyservices: list[KeyServiceProcess]
    keyservice_nodes: list[Node]
    keyservice_env: dict[str, str]
    gateways: list[Server]
    kms_balancer: Balancer
    s3_balancer: Balancer
    workdir: Path

    def s3(self, url: str | None = None, **config: object):
        """A boto3 client to one gateway (``url``) or through the balancer, without retries."""
        return s3_client(url or self.s3_balancer.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, **config)

    def served_by(self, request_id: str) -> int:
        """Which gateway (0 or 1) answered the request ``request_id`` (by their access logs, on stdout)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = [n for n, gateway in enumerate(self.gateways) if request_id in gateway.log()]
            if found:
                [index] = found
                return index
            time.sleep(0.02)
        raise AssertionError(f"request {request_id} is in no gateway's access log")

    def start_keyservice(self, index: int) -> KeyServiceProcess:
        """Key service node ``index`` (again) on its own ports and data directory."""
        node = self.keyservice_nodes[index]
        env = {**self.keyservice_env, "KEYSERVICE_ADMIN_LISTEN": f"127.0.0.1:{node.admin_port}"}
        return launch(self.workdir / node.name, env=env, listen=node.url.removeprefix("http://"))


def start_cluster(moto: MotoServer, postgres: PostgresServer, workdir: Path,  # noqa: F811
                  balance: Balance) -> Cluster:
    """Two key service nodes on one PostgreSQL database (the same root key: conftest's ROOT_KEY_B64), the
    balancer "kms" in front of them, two gateways with one secret file whose KMS is that balancer, and the
    balancer "s3" in front of the gateways."""
    keyservice_env = {"KEYSERVICE_STORE_URL": postgres.create_database()}
    nodes = [Node(f"keyservice-{n}", f"http://127.0.0.1:{free_port()}", free_port()) for n in (1, 2)]
    cluster = Cluster([], nodes, keyservice_env, [], None, None, workdir)  # type: ignore[arg-type]
    for index, node in enumerate(nodes):
        (workdir / node.name).mkdir()
        cluster.keyservices.append(cluster.start_keyservice(index))
    cluster.kms_balancer = balance("kms", nodes)
    key_arn = kms_client(nodes[0].url).create_key(Description="multinode")["KeyMetadata"]["Arn"]
    secret_file = workdir / "gateway.secret"
    secret_file.write_bytes(os.urandom(32))  # one secret for every gateway node, as the compose file's volume
    admin_ports = [free_port(), free_port()]
    cluster.gateways = [_start_gateway(moto, workdir / f"gateway-{n + 1}", cluster.kms_balancer.url, key_arn,
                                       secret_file, admin_ports[n]) for n in range(2)]
    cluster.s3_balancer = balance("s3", [Node(f"gateway-{n + 1}", gateway.url, admin_ports[n])
                                         for n, gateway in enumerate(cluster.gateways)])
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    cluster.s3_balancer.stop()
    for gateway in cluster.gateways:
        assert gateway.stop() == 0, gateway.log()
    cluster.kms_balancer.stop()
    for ks in cluster.keyservices:
        ks.server.stop()


@pytest.fixture(scope="module")
def cluster(moto: MotoServer, postgres: PostgresServer,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(moto, postgres, tmp_path_factory.mktemp("multinode"), own_balancer)
    yield cluster
    stop_cluster(cluster)


def _start_gateway(moto: MotoServer, workdir: Path, kms_url: str, key_arn: str, secret_file: Path,
                   admin_port: int) -> Server:
    workdir.mkdir()
    config = workdir / "gateway.toml"
    config.write_text(remote_kms_toml(
        moto, workdir / "data", kms_url, key_arn,
        gateway_settings=f'secret_file = "{secret_file}"\nallow_ssec_over_http = true\n'
                         f'admin_listen = "127.0.0.1:{admin_port}"',
        kms_settings=f"data_key_max_age = {DATA_KEY_MAX_AGE}"))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                        cwd=workdir, timeout=60)


def new_bucket(cluster: Cluster) -> str:
    name = f"multinode-{uuid.uuid4().hex[:12]}"
    cluster.s3().create_bucket(Bucket=name)
    return name


def close_each_connection(client) -> None:
    """Every request of ``client`` on a connection of its own (``Connection: close``, added after signing),
    so the balancer's per-connection round robin sends consecutive requests to alternate gateways."""
    client.meta.events.register("before-send.s3", lambda request, **_: request.headers.__setitem__(
        "Connection", "close"))


@pytest.mark.parametrize("sse", [{}, SSE_C], ids=["sse-kms", "sse-c"])
def test_a_multipart_upload_whose_parts_alternate_between_the_gateways_reads_back_exactly(cluster, sse):
    bucket = new_bucket(cluster)
    one, two = (cluster.s3(gateway.url) for gateway in cluster.gateways)
    parts = [os.urandom(PART) for _ in range(3)] + [os.urandom(1234)]
    upload_id = one.create_multipart_upload(Bucket=bucket, Key="alternating", **sse)["UploadId"]
    etags = [(two if number % 2 == 0 else one).upload_part(
        Bucket=bucket, Key="alternating", UploadId=upload_id, PartNumber=number + 1, Body=body, **sse)["ETag"]
        for number, body in enumerate(parts)]
    listed = one.list_parts(Bucket=bucket, Key="alternating", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(n + 1, len(body)) for n, body in enumerate(parts)]
    two.complete_multipart_upload(Bucket=bucket, Key="alternating", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": etag} for n, etag in enumerate(etags)]}, **sse)
    whole = b"".join(parts)
    for client in (one, two):
        assert client.get_object(Bucket=bucket, Key="alternating", **sse)["Body"].read() == whole
        ranged = client.get_object(Bucket=bucket, Key="alternating", Range=f"bytes={PART - 10}-{PART + 9}", **sse)
        assert ranged["Body"].read() == whole[PART - 10:PART + 10]


def test_a_multipart_upload_through_the_balancer_one_connection_per_request_uses_both_gateways(cluster):
    bucket = new_bucket(cluster)
    client = cluster.s3()
    close_each_connection(client)
    parts = [os.urandom(PART) for _ in range(4)]
    answers = [client.create_multipart_upload(Bucket=bucket, Key="balanced")]
    upload_id = answers[0]["UploadId"]
    answers += [client.upload_part(Bucket=bucket, Key="balanced", UploadId=upload_id, PartNumber=n + 1, Body=body)
                for n, body in enumerate(parts)]
    answers.append(client.complete_multipart_upload(Bucket=bucket, Key="balanced", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": answer["ETag"]} for n, answer in enumerate(answers[1:])]}))
    served = [cluster.served_by(answer["ResponseMetadata"]["RequestId"]) for answer in answers]
    assert all(a != b for a, b in zip(served, served[1:])), served  # round robin: strictly alternating
    got = client.get_object(Bucket=bucket, Key="balanced")
    assert got["Body"].read() == b"".join(parts) and got["ServerSideEncryption"] == "aws:kms"


@pytest.mark.parametrize("sse", [{}, SSE_C], ids=["sse-kms", "sse-c"])
def test_an_object_written_through_one_gateway_reads_through_the_other(cluster, sse):
    bucket = new_bucket(cluster)
    one, two = (cluster.s3(gateway.url) for gateway in cluster.gateways)
    one.put_object(Bucket=bucket, Key="from-one", Body=b"written by one", **sse)
    two.put_object(Bucket=bucket, Key="from-two", Body=b"written by two", **sse)
    assert two.get_object(Bucket=bucket, Key="from-one", **sse)["Body"].read() == b"written by one"
    assert one.get_object(Bucket=bucket, Key="from-two", **sse)["Body"].read() == b"written by two"
    if sse:  # the SSE-C check value is keyed by the shared gateway secret: a wrong key is refused by both
        wrong = {**sse, "SSECustomerKey": "w" * 32}
        assert refused_code(lambda: two.get_object(Bucket=bucket, Key="from-one", **wrong)) == "AccessDenied"


def test_a_key_disabled_through_one_key_service_node_is_refused_by_the_other_and_through_both_gateways(cluster):
    ks_one, ks_two = (kms_client(ks.url) for ks in cluster.keyservices)
    arn = ks_one.create_key(Description="to disable")["KeyMetadata"]["Arn"]
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": arn}
    bucket = new_bucket(cluster)
    gateways = [cluster.s3(gateway.url) for gateway in cluster.gateways]
    wait_for(lambda: refused_code(lambda: ks_two.encrypt(KeyId=arn, Plaintext=b"x")) is None,
             "the new key on the other key service node", NOTIFY_BOUND)
    for n, client in enumerate(gateways):
        client.put_object(Bucket=bucket, Key=f"before-{n}", Body=b"before", **sse)
        assert client.get_object(Bucket=bucket, Key=f"before-{n}")["Body"].read() == b"before"  # data key cached

    ks_one.disable_key(KeyId=arn)
    wait_for(lambda: refused_code(lambda: ks_two.encrypt(KeyId=arn, Plaintext=b"x")) == "DisabledException",
             "the disable on the other key service node", NOTIFY_BOUND)
    for n, client in enumerate(gateways):  # a write asks for a new data key: refused as soon as both nodes know
        assert refused_code(lambda: client.put_object(Bucket=bucket, Key="after", Body=b"x", **sse)) == (
            "KMS.DisabledException")
        # a read may use its cached data key for data_key_max_age more (README: "What the nodes share")
        wait_for(lambda: refused_code(lambda: client.get_object(Bucket=bucket, Key=f"before-{n}")) == (
            "KMS.DisabledException"), f"the disable through gateway {n + 1}", NOTIFY_BOUND + DATA_KEY_MAX_AGE)

    ks_two.enable_key(KeyId=arn)
    wait_for(lambda: all(refused_code(lambda: c.get_object(Bucket=bucket, Key="before-0")) is None
                         for c in gateways), "the enable through both gateways", NOTIFY_BOUND)


def test_a_key_service_node_killed_during_a_workload_costs_no_client_request(cluster):
    """boto3 with its default retries (legacy mode, 5 attempts) through the balancer; writes and reads of
    SSE-KMS objects, each needing the key service (no Bucket Key; reads of objects another gateway wrote need
    a Decrypt). The killed node is started again at the end, for the module's other tests."""
    bucket = new_bucket(cluster)
    client = boto3.client("s3", endpoint_url=cluster.s3_balancer.url, region_name="us-east-1",
                          aws_access_key_id=GATEWAY_ACCESS_KEY, aws_secret_access_key=GATEWAY_SECRET_KEY,
                          config=Config(s3={"addressing_style": "path"}))  # the SDK's default retries
    close_each_connection(client)  # requests alternate between the gateways
    failures: list[BaseException] = []
    written: dict[str, str] = {}
    stop = threading.Event()

    def workload(worker: int) -> None:
        count = 0
        while not stop.is_set():
            key, body = f"w{worker}-{count}", os.urandom(4096 + count)
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body)
                assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
            except BaseException as exc:  # noqa: BLE001 -- every failure is the test's finding
                failures.append(exc)
                return
            written[key] = hashlib.sha256(body).hexdigest()
            count += 1

    survivor = cluster.keyservices[1]
    workers = [threading.Thread(target=workload, args=(n,)) for n in range(3)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    cluster.keyservices[0].server.kill()
    killed_at, audited_at = len(written), len(survivor.audit_records())
    try:
        time.sleep(4.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
        cluster.keyservices[0] = cluster.start_keyservice(0)
    assert failures == []
    assert len(written) > killed_at + 10  # the workload went on after the kill
    data_key_calls = {"GenerateDataKey", "Decrypt"}
    assert any(r["operation"] in data_key_calls for r in cluster.keyservices[0].audit_records())  # used before
    assert any(r["operation"] in data_key_calls for r in survivor.audit_records()[audited_at:])  # the only one after
    reader = cluster.s3(cluster.gateways[1].url)
    for key, digest in written.items():
        assert hashlib.sha256(reader.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digest
