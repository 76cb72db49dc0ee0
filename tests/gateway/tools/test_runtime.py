"""The object layer started for a command-line tool, as `gateway serve` starts it for its handlers."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from gateway.datakeys import GATEWAY
from gateway.config import ConfigError, GatewayConfig, UpstreamConfig
from gateway.crypto.sse import KmsRequest
from gateway.objects.reading import ObjectRef
from gateway.tools.runtime import object_store


async def _one(data: bytes):
    yield data


async def test_a_tool_writes_and_reads_encrypted_objects_with_the_gateways_settings(moto, upstream_s3, tmp_path,
                                                                                   monkeypatch):
    for name in ("KEYSERVICE_DATA_DIR", "GATEWAY_KMS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"tool-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    config = GatewayConfig(data_dir=tmp_path, upstream=UpstreamConfig(url=moto.url, access_key=moto.access_key,
                                                                       secret_key=moto.secret_key))
    async with object_store(config) as store:
        await store.writer.put(bucket, "k", {}, KmsRequest(), _one(b"tool data"), 9, requester=GATEWAY)
        async with store.reader.stat(ObjectRef(bucket, "k"), with_body=True) as stored:
            opened = await stored.open(None, requester=GATEWAY)
            assert b"".join([c async for c in opened.chunks()]) == b"tool data"
    assert upstream_s3.head_object(Bucket=bucket, Key="k")["Metadata"]["x-gw-m"] == "aws:kms"


async def test_a_tool_needs_a_real_upstream(tmp_path):
    with pytest.raises(ConfigError, match="upstream.url"):
        async with object_store(replace(GatewayConfig(data_dir=tmp_path))):
            pass
