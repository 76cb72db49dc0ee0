"""gateway/probes.py against real servers: the session's moto (IAM auth) as the upstream, a standalone
``keyservice serve`` as the remote key service. Each probe is None while healthy, one line naming what failed
otherwise, stays within its bound against a server that never answers, and may be asked again and again (it
recovers when the server does)."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import probes
from gateway.kms import RemoteKeyProvider
from gateway.probes import probe_key_provider, probe_upstream
from gateway.upstream import Upstream, UpstreamTarget
from tests.keyservice.conftest import ROOT, kms_client, launch
from tests.support.moto import MotoServer
from tests.support.process import free_port


async def started(url: str, access_key: str, secret_key: str, region: str = "us-east-1") -> Upstream:
    upstream = Upstream(UpstreamTarget(url, region, access_key, secret_key))
    await upstream.start()
    return upstream


@pytest.fixture
async def healthy(moto: MotoServer) -> AsyncIterator[Upstream]:
    upstream = await started(moto.url, moto.access_key, moto.secret_key)
    yield upstream
    await upstream.close()


async def test_a_healthy_upstream_is_none_every_time_it_is_asked(healthy):
    assert [await probe_upstream(healthy) for _ in range(5)] == [None] * 5


async def test_a_refused_upstream_credential_is_named(moto):
    upstream = await started(moto.url, moto.access_key, "not-the-secret")
    try:
        assert await probe_upstream(upstream) == (
            f"upstream {moto.url} refused the gateway's credential (SignatureDoesNotMatch): check "
            "upstream.access_key and upstream.secret_key (GATEWAY_UPSTREAM_ACCESS_KEY, GATEWAY_UPSTREAM_SECRET_KEY)")
    finally:
        await upstream.close()


async def test_an_upstream_that_never_answers_is_reported_within_the_bound(monkeypatch):
    monkeypatch.setattr(probes, "PROBE_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts into its backlog, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        upstream = await started(url, "AKID", "secret")
        try:
            began = time.monotonic()
            reason = await probe_upstream(upstream)
            elapsed = time.monotonic() - began
        finally:
            await upstream.close()
    assert reason == f"upstream {url} did not answer within 0.5 s; check upstream.url (GATEWAY_UPSTREAM_URL)"
    assert elapsed < 1.5


def test_a_refused_signing_region_names_the_region_setting():
    """AWS S3's answer to a request signed for another region than the bucket's or endpoint's."""
    upstream = Upstream(UpstreamTarget("https://s3.eu-west-1.amazonaws.com", "us-east-1", "AKID", "secret"))
    body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AuthorizationHeaderMalformed</Code><Message>The "
            b"authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message>"
            b"<Region>eu-west-1</Region></Error>")
    assert probes._judged(upstream, 400, body) == (
        "upstream https://s3.eu-west-1.amazonaws.com refused the gateway's signing region 'us-east-1' "
        "(AuthorizationHeaderMalformed: The authorization header is malformed; the region 'us-east-1' is wrong; "
        "expecting 'eu-west-1'); check upstream.region (GATEWAY_UPSTREAM_REGION)")


def test_access_denied_to_list_buckets_is_a_valid_credential():
    upstream = Upstream(UpstreamTarget("https://s3.amazonaws.com", "us-east-1", "AKID", "secret"))
    body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
    assert probes._judged(upstream, 403, body) is None


async def test_a_remote_key_service_is_none_while_it_answers_and_named_while_it_is_down(tmp_path: Path):
    listen = f"127.0.0.1:{free_port()}"
    keyservice = launch(tmp_path, listen=listen)
    key_arn = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]
    provider = RemoteKeyProvider(keyservice.url, "us-east-1", *ROOT, key_arn, timeout=2.0)
    await provider.start()
    try:
        assert await probe_key_provider(provider) is None
        assert keyservice.server.stop() == 0
        assert await probe_key_provider(provider) == (f"the key service at {keyservice.url} cannot be reached "
                                                      "within 2 s; check [kms] endpoint (GATEWAY_KMS_ENDPOINT)")
        back = launch(tmp_path, data_dir=keyservice.data_dir, listen=listen)
        try:
            assert await probe_key_provider(provider) is None
        finally:
            assert back.server.stop() == 0
    finally:
        await provider.close()


def test_a_bucket_list_longer_than_what_is_read_is_still_an_s3_answer():
    upstream = Upstream(UpstreamTarget("http://127.0.0.1:9000", "us-east-1", "AKID", "secret"))
    buckets = "".join(f"<Bucket><Name>bucket-{i:06d}</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate>"
                      "</Bucket>" for i in range(5000))
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/'
            f'2006-03-01/"><Owner><ID>x</ID></Owner><Buckets>{buckets}</Buckets></ListAllMyBucketsResult>').encode()
    assert probes._judged(upstream, 200, body[:probes._BODY_LIMIT + 100]) is None
    assert probes._judged(upstream, 200, b"<html><body>hello</body></html>") == (
        "upstream http://127.0.0.1:9000 answered a signed ListBuckets with 200 and a body that is not an S3 answer; "
        "is upstream.url an S3 endpoint?")


async def test_an_upstream_pool_held_by_other_requests_is_reported_without_waiting_for_the_upstream():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        upstream = Upstream(UpstreamTarget(url, "us-east-1", "AKID", "secret"), pool_size=1, pool_wait=0.3)
        await upstream.start()
        holder = asyncio.create_task(upstream.request("GET", "/held", [], {}))  # never answered: holds the pool
        try:
            await asyncio.sleep(0.2)
            assert await probe_upstream(upstream) == (
                f"upstream {url}: every pooled connection is in use (upstream.pool_size); the probe was not sent")
        finally:
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
            await upstream.close()
