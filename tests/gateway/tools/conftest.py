"""Fixtures of the key tools' tests: a standalone key service with CMKs A and B, a gateway on it writing
objects under A (single-part and multipart, with metadata), and the tools run as real processes."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, remote_kms_toml, start_gateway_with_remote_kms
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client
from tests.support.process import VENV_BIN

MIB = 1024 * 1024
SMALL = {"docs/a.txt": b"alpha " * 100, "docs/b.bin": os.urandom(70_000), "docs/empty": b"",
         "other/c.txt": b"outside the prefix"}
MULTIPART_KEY = "docs/big.bin"
MULTIPART_BODY = os.urandom(5 * MIB) + os.urandom(1234)


def tool_config(path: Path, moto, kms_url: str, default_key: str = "") -> Path:
    """The settings a tool reads: moto upstream, the shared key service, the gateway's secret (SSE-C check
    values are keyed with it), its own data dir, the gateway's default CMK (checked at start)."""
    path.write_text(remote_kms_toml(moto, path.parent / "tool-data", kms_url, default_key, client=False,
                                    gateway_settings=f'secret_file = "{path.parent / "gw" / "gateway.secret"}"'))
    return path


def gateway_tool(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gateway"), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                       if not k.startswith(("GATEWAY_", "KEYSERVICE_"))})


def _world(upstream, tmp_path: Path):
    """A key service with CMKs A and B, a gateway on ``upstream`` writing under A, a bucket of objects written
    through it."""
    (tmp_path / "ks").mkdir()
    keyservice = launch(tmp_path / "ks")
    kms = kms_client(keyservice.url)
    key_a = kms.create_key()["KeyMetadata"]["Arn"]
    key_b = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/rewrap-b", TargetKeyId=key_b)
    gateway = start_gateway_with_remote_kms(upstream, tmp_path, keyservice.url, key_a,
                                            env={"GATEWAY_ALLOW_SSEC_OVER_HTTP": "true"})
    s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    bucket = f"rewrap-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for key, body in SMALL.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a,
                      Metadata={"owner": "team-x"}, ContentType="text/x-test")
    upload = s3.create_multipart_upload(Bucket=bucket, Key=MULTIPART_KEY, ServerSideEncryption="aws:kms",
                                        SSEKMSKeyId=key_a, Metadata={"owner": "team-y"})
    parts = []
    for number, (start, end) in enumerate([(0, 5 * MIB), (5 * MIB, len(MULTIPART_BODY))], start=1):
        etag = s3.upload_part(Bucket=bucket, Key=MULTIPART_KEY, UploadId=upload["UploadId"], PartNumber=number,
                              Body=MULTIPART_BODY[start:end])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=MULTIPART_KEY, UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": parts})
    config = tool_config(tmp_path / "tool.toml", upstream, keyservice.url, key_a)
    try:
        yield type("World", (), dict(keyservice=keyservice, kms=kms, key_a=key_a, key_b=key_b, gateway=gateway,
                                     s3=s3, bucket=bucket, config=config, tmp_path=tmp_path))
    finally:
        assert gateway.stop() == 0, gateway.log()
        assert keyservice.server.stop() == 0


@pytest.fixture
def world(moto, tmp_path):
    yield from _world(moto, tmp_path)


@pytest.fixture
def rgw_world(rgw, tmp_path):
    """The same world with Ceph RGW as the upstream."""
    yield from _world(rgw, tmp_path)


def bodies() -> dict[str, bytes]:
    return {**{key: body for key, body in SMALL.items() if key.startswith("docs/")}, MULTIPART_KEY: MULTIPART_BODY}
