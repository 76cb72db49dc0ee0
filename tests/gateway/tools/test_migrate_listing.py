"""Listings through a running gateway stay exact before, during and after `gateway migrate` encrypts a
mixed bucket in place (the gateway and the tool share one standalone key service, as the README says)."""
from __future__ import annotations

import os
import subprocess
import uuid

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, start_gateway_with_remote_kms
from tests.gateway.tools.conftest import tool_config
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client
from tests.support.process import VENV_BIN

SIZES = [0, 1, 19, 1000, 65_536, 65_552, 200_000]


def test_a_listing_during_the_migration_shows_every_object_at_its_real_size_and_after_it_too(moto, upstream_s3,
                                                                                          tmp_path):
    (tmp_path / "ks").mkdir()
    keyservice = launch(tmp_path / "ks")
    key = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]
    gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key)
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"mixed-{uuid.uuid4().hex[:12]}"
        upstream_s3.create_bucket(Bucket=bucket)
        expected = {}
        for index in range(60):
            size = SIZES[index % len(SIZES)]
            upstream_s3.put_object(Bucket=bucket, Key=f"legacy/{index:03d}", Body=os.urandom(size))
            expected[f"legacy/{index:03d}"] = size
        s3.put_object(Bucket=bucket, Key="new/encrypted", Body=b"e" * 1000)
        expected["new/encrypted"] = 1000

        def listed() -> dict[str, int]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return {c["Key"]: c["Size"] for page in pages for c in page.get("Contents", [])}

        assert listed() == expected
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KEYSERVICE_"))}
        tool = subprocess.Popen([str(VENV_BIN / "gateway"), "migrate", f"s3://{bucket}", "--concurrency", "2",
                                 "--kms-key-id", key,
                                 "--config", str(tool_config(tmp_path / "tool.toml", moto, keyservice.url))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        listings = 0
        while tool.poll() is None:
            assert listed() == expected
            listings += 1
        out, err = tool.communicate()
        assert tool.returncode == 0, out + err
        assert listings >= 1
        assert listed() == expected
        assert all(upstream_s3.head_object(Bucket=bucket, Key=k)["Metadata"].get("x-gw-v") == "1" for k in expected)
    finally:
        assert gateway.stop() == 0, gateway.log()
        keyservice.server.stop()
