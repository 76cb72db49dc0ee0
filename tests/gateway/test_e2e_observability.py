"""The gateway's access log, metrics and admin endpoints, on a real gateway process in front of moto.

A scripted boto3 workload (PUT, GET, a multipart upload, an SSE-C PUT, a missing key, a forged signature)
moves the counters of /metrics by exactly its requests and writes exactly one access-log line per request;
readiness follows the upstream and the remote key service going down and coming back, without restarting
the gateway; the admin endpoints answer without a signature and only on the admin listener.
"""
from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from bench.support import start_moto as start_plain_moto
from common.accesslog import GATEWAY_FIELDS
from tests.gateway.conftest import _config_toml, remote_kms_toml
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client
from tests.support.moto import MotoServer
from tests.support.observability import (access_lines, admin_url, delta, get, sample, scrape,
                                         wait_for_status)
from tests.support.process import VENV_BIN, Server, free_port, start_server
from tests.support.secrets import CUSTOMER_KEY, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

PART = 5 * 1024 * 1024
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
VOLATILE = ("time", "request_id", "duration_ms", "ttfb_ms")


@dataclass
class Observed:
    server: Server
    admin: str
    access_log: Path


@pytest.fixture(scope="module")
def observed(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    """A gateway on the session's moto with an admin listener (any port) and its access log in a file."""
    workdir = tmp_path_factory.mktemp("gateway-observed")
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", tls=None))
    access_log = workdir / "access.log"
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                          {"GATEWAY_ADMIN_LISTEN": "127.0.0.1:0", "GATEWAY_ACCESS_LOG": str(access_log)}, timeout=60)
    yield Observed(server, admin_url(server), access_log)
    assert server.stop() == 0, server.log()


@dataclass
class Workload:
    bucket: str
    request_ids: dict[str, str]
    lines: list[dict]


def _workload(s3, forged, bucket: str) -> dict[str, str]:
    """The scripted requests; the request id of each by name."""
    ids = {}
    ids["put"] = s3.put_object(Bucket=bucket, Key="small", Body=b"s" * 4096)["ResponseMetadata"]["RequestId"]
    got = s3.get_object(Bucket=bucket, Key="small")
    assert got["Body"].read() == b"s" * 4096
    ids["get"] = got["ResponseMetadata"]["RequestId"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=n,
                                                      Body=body)["ETag"]}
             for n, body in ((1, os.urandom(PART)), (2, os.urandom(1000)))]
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={"Parts": parts})
    ids["ssec"] = s3.put_object(Bucket=bucket, Key="ssec", Body=b"c" * 100, SSECustomerAlgorithm="AES256",
                                SSECustomerKey=CUSTOMER_KEY)["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="missing")
    ids["missing"] = missing.value.response["ResponseMetadata"]["RequestId"]
    with pytest.raises(ClientError) as refused:
        forged.list_objects_v2(Bucket=bucket)
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    ids["forged"] = refused.value.response["ResponseMetadata"]["RequestId"]
    return ids


@pytest.fixture(scope="module")
def workload(observed: Observed) -> Iterator[tuple[Workload, dict]]:
    """The workload run once, with the metrics scraped before and after and its access-log lines."""
    s3 = s3_client(observed.server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    forged = s3_client(observed.server.url, GATEWAY_ACCESS_KEY, "not-the-secret-key")
    bucket = f"observed-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    before, lines_before = scrape(observed.admin), len(access_lines(observed.access_log))
    ids = _workload(s3, forged, bucket)
    changed = delta(before, scrape(observed.admin))
    yield Workload(bucket, ids, access_lines(observed.access_log)[lines_before:]), changed


def _named(changed: dict, name: str) -> dict:
    return {labels: value for (metric, labels), value in changed.items() if metric == name}


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return sample("", **labels)[1]


def test_the_request_counters_move_by_exactly_the_workloads_requests(workload) -> None:
    _, changed = workload
    assert _named(changed, "s3gw_requests_total") == {
        _labels(operation="PutObject", status="200"): 2,
        _labels(operation="GetObject", status="200"): 1,
        _labels(operation="CreateMultipartUpload", status="200"): 1,
        _labels(operation="UploadPart", status="200"): 2,
        _labels(operation="CompleteMultipartUpload", status="200"): 1,
        _labels(operation="GetObject", status="404"): 1,
        _labels(operation="-", status="403"): 1,
    }
    assert _named(changed, "s3gw_errors_total") == {(("code", "NoSuchKey"),): 1,
                                                     (("code", "SignatureDoesNotMatch"),): 1}
    assert _named(changed, "s3gw_auth_rejections_total") == {(("reason", "SignatureDoesNotMatch"),): 1}
    assert _named(changed, "s3gw_request_duration_seconds_count") == {
        (("operation", op),): n for op, n in (("PutObject", 2), ("GetObject", 2), ("CreateMultipartUpload", 1),
                                              ("UploadPart", 2), ("CompleteMultipartUpload", 1), ("-", 1))}
    assert _named(changed, "s3gw_ttfb_seconds_count") == _named(changed, "s3gw_request_duration_seconds_count")
    assert "s3gw_requests_in_flight" not in {metric for metric, _ in changed}  # back to 0 when idle


def test_the_byte_counters_are_plaintext_bytes_and_agree_with_the_access_log(workload) -> None:
    work, changed = workload
    assert changed[sample("s3gw_received_bytes_total")] == sum(line["bytes_in"] for line in work.lines)
    assert changed[sample("s3gw_sent_bytes_total")] == sum(line["bytes_out"] for line in work.lines)
    parts = [line["bytes_in"] for line in work.lines if line["operation"] == "UploadPart"]
    assert parts == [PART, 1000]  # the parts' plaintext: no aws-chunked framing counted
    assert [line["bytes_out"] for line in work.lines if line["request_id"] == work.request_ids["get"]] == [4096]


def test_kms_calls_are_counted_once_in_metrics_and_on_the_requests_access_log_lines(workload) -> None:
    work, changed = workload
    from_lines: Counter[str] = Counter()
    for line in work.lines:
        from_lines.update(line["kms_calls"])
    assert {labels[0][1]: value for labels, value in _named(changed, "s3gw_kms_requests_total").items()} == \
        dict(from_lines)
    assert from_lines["GenerateDataKey"] >= 2 and from_lines["Decrypt"] >= 1
    assert _named(changed, "s3gw_kms_errors_total") == {}
    assert sum(_named(changed, "s3gw_upstream_request_duration_seconds_count").values()) >= len(work.lines) - 1


def test_each_request_has_one_access_log_line_with_exactly_its_fields(workload) -> None:
    work, _ = workload
    assert len(work.lines) == 9
    by_id = {line["request_id"]: line for line in work.lines}
    for line in work.lines:
        assert tuple(line) == GATEWAY_FIELDS
        assert TIME.fullmatch(line["time"]) and 0 < line["ttfb_ms"] <= line["duration_ms"], line
    stable = {name: {k: v for k, v in by_id[rid].items() if k not in VOLATILE}
              for name, rid in work.request_ids.items()}
    common = {"remote": "127.0.0.1", "access_key": GATEWAY_ACCESS_KEY, "bucket": work.bucket, "error": "",
              "bytes_in": 0, "bytes_out": 0, "kms_calls": {}, "sse": ""}
    assert stable["put"] == {**common, "method": "PUT", "operation": "PutObject", "key": "small", "status": 200,
                             "bytes_in": 4096, "kms_calls": {"GenerateDataKey": 1}, "sse": "aws:kms"}
    assert stable["get"] == {**common, "method": "GET", "operation": "GetObject", "key": "small", "status": 200,
                             "bytes_out": 4096, "kms_calls": {"Decrypt": 1}, "sse": "aws:kms"}
    assert stable["ssec"] == {**common, "method": "PUT", "operation": "PutObject", "key": "ssec", "status": 200,
                              "bytes_in": 100, "sse": "SSE-C"}
    del common["bytes_out"]  # an error's XML body
    assert {k: v for k, v in stable["missing"].items() if k != "bytes_out"} == {
        **common, "method": "GET", "operation": "GetObject", "key": "missing", "status": 404, "error": "NoSuchKey"}
    assert {k: v for k, v in stable["forged"].items() if k != "bytes_out"} == {
        **common, "access_key": "", "bucket": "", "method": "GET", "operation": "", "key": "", "status": 403,
        "error": "SignatureDoesNotMatch"}


def test_admin_endpoints_answer_without_a_signature(observed: Observed) -> None:
    assert get(f"{observed.admin}/health/live")[::2] == (200, "live\n")
    assert get(f"{observed.admin}/health/ready")[::2] == (200, "ready\n")
    status, content_type, body = get(f"{observed.admin}/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")
    assert "# TYPE s3gw_requests_total counter" in body and "process_resident_memory_bytes" in body


@pytest.mark.parametrize("path", ["/metrics", "/health/live", "/health/ready"])
def test_admin_endpoints_are_not_served_on_the_s3_listener(observed: Observed, path: str) -> None:
    """There the path is S3's (bucket ``metrics``, ``health``): an unsigned request, answered with an S3 error
    (moto with IAM auth answers anonymous requests with a 500)."""
    status, content_type, body = get(f"{observed.server.url}{path}")
    assert status != 200 and content_type == "application/xml", (status, body)
    assert body.startswith("<?xml") and "<Error><Code>" in body and "s3gw_" not in body


# ---- readiness: the gateway's own upstream (moto) and remote key service, stopped and restarted ----

@dataclass
class Dependencies:
    gateway: Server
    admin: str
    moto_port: int
    moto: Server
    keyservice_dir: Path
    keyservice_listen: str
    keyservice: object


@pytest.fixture
def dependencies(tmp_path: Path) -> Iterator[Dependencies]:
    """A gateway whose upstream (a moto of its own, no IAM: any key) and remote key service this test can
    stop and start again on the same ports; its admin listener set with ``--admin-listen``."""
    moto_port = free_port()
    moto = start_plain_moto(port=moto_port)
    listen = f"127.0.0.1:{free_port()}"
    (tmp_path / "ks").mkdir()
    keyservice = launch(tmp_path / "ks", listen=listen)
    deps = None
    try:
        key_arn = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]
        own_moto = MotoServer(moto, moto.url, "test", "test")
        config = tmp_path / "gateway.toml"
        config.write_text(remote_kms_toml(own_moto, tmp_path / "gw", keyservice.url, key_arn))
        gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen",
                                "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], {"GATEWAY_KMS_TIMEOUT": "1"},
                               timeout=60)
        deps = Dependencies(gateway, admin_url(gateway), moto_port, moto, tmp_path / "ks", listen, keyservice)
        yield deps
    finally:
        if deps is not None:
            assert deps.gateway.stop() == 0, deps.gateway.log()
            deps.moto.stop()
            deps.keyservice.server.stop()  # type: ignore[attr-defined]
        else:
            moto.stop()
            keyservice.server.stop()


def test_readiness_is_503_naming_the_upstream_while_it_is_down_and_200_once_it_is_back(dependencies) -> None:
    deps = dependencies
    ready = f"{deps.admin}/health/ready"
    assert get(ready)[::2] == (200, "ready\n")
    deps.moto.stop()
    body = wait_for_status(ready, 503)
    assert body == (f"not ready\nupstream: upstream http://127.0.0.1:{deps.moto_port} cannot be reached (Connection "
                    "refused); check upstream.url (GATEWAY_UPSTREAM_URL)\n")
    assert get(f"{deps.admin}/health/live")[0] == 200  # the process still serves
    deps.moto = start_plain_moto(port=deps.moto_port)
    assert wait_for_status(ready, 200) == "ready\n"


def test_readiness_is_503_naming_the_key_service_while_it_is_down_and_200_once_it_is_back(dependencies) -> None:
    deps = dependencies
    ready = f"{deps.admin}/health/ready"
    assert get(ready)[::2] == (200, "ready\n")
    assert deps.keyservice.server.stop() == 0  # type: ignore[attr-defined]
    body = wait_for_status(ready, 503)
    assert body == (f"not ready\nkey service: the key service at http://{deps.keyservice_listen} cannot be reached "
                    "within 1 s; check [kms] endpoint (GATEWAY_KMS_ENDPOINT)\n")
    deps.keyservice = launch(deps.keyservice_dir, data_dir=deps.keyservice.data_dir,  # type: ignore[attr-defined]
                             listen=deps.keyservice_listen)
    assert wait_for_status(ready, 200) == "ready\n"


def test_a_readiness_answer_is_reused_briefly_so_scrapes_do_not_hammer_the_upstream(observed: Observed) -> None:
    """Ten readiness checks in a row probe the upstream (a signed ListBuckets) at most twice."""
    before = scrape(observed.admin)
    for _ in range(10):
        assert get(f"{observed.admin}/health/ready")[0] == 200
    changed = delta(before, scrape(observed.admin))
    assert changed.get(sample("s3gw_upstream_request_duration_seconds_count", method="GET"), 0) <= 2
