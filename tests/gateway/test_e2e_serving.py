"""How the gateway is started: the one-command development set-up (environment only, generated root
key, local development upstream), and a gateway that calls a standalone key service over the KMS API."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, start_gateway_with_remote_kms
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import s3_client
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, start_server


FORM = "application/x-www-form-urlencoded"


def test_gateway_with_no_upstream_and_no_root_key_runs_a_dev_setup_from_the_environment_alone(tmp_path: Path):
    data_dir = tmp_path / "data"
    env = {"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_LISTEN": "127.0.0.1:0",
           "GATEWAY_ACCESS_KEY": GATEWAY_ACCESS_KEY, "GATEWAY_SECRET_KEY": GATEWAY_SECRET_KEY}
    for name in [n for n in os.environ if n.startswith(("GATEWAY_", "KEYSERVICE_"))]:
        env[name] = ""
    server = start_server([str(VENV_BIN / "gateway"), "serve"], env=env, timeout=60)
    try:
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        s3.create_bucket(Bucket="quickstart")
        s3.put_object(Bucket="quickstart", Key="hello.txt", Body=b"hello, encrypted world")
        assert s3.get_object(Bucket="quickstart", Key="hello.txt")["Body"].read() == b"hello, encrypted world"
        # A form Content-Type (urllib's default for a body) must not make the dev upstream drop the body.
        s3.put_object(Bucket="quickstart", Key="form", Body=b"a=1&b=2", ContentType=FORM)
        got = s3.get_object(Bucket="quickstart", Key="form")
        assert (got["Body"].read(), got["ContentType"]) == (b"a=1&b=2", FORM)
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "development upstream (moto)" in log
    assert "WARNING: no root key configured" in log
    assert (data_dir / "keyservice" / "root.key").stat().st_mode & 0o077 == 0


def test_gateway_encrypts_with_a_standalone_key_service_over_the_kms_api(moto: MotoServer, tmp_path: Path):
    keyservice = launch(tmp_path)
    gateway = None
    try:
        kms = kms_client(keyservice.url)
        key_arn = kms.create_key(Description="gateway CMK")["KeyMetadata"]["Arn"]
        gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_arn)
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"remote-kms-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        put = s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 70_000)
        assert put["ServerSideEncryption"] == "aws:kms"
        assert put["SSEKMSKeyId"] == key_arn
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x" * 70_000
        operations = [record["operation"] for record in keyservice.audit_records()]
        assert operations.count("GenerateDataKey") == 1
        assert operations.count("Decrypt") == 1
    finally:
        if gateway is not None:
            assert gateway.stop() == 0, gateway.log()
        assert keyservice.server.stop() == 0, keyservice.server.log()


def test_two_gateways_sharing_a_secret_and_a_key_service_serve_one_multipart_upload(moto: MotoServer, tmp_path: Path):
    """The production shape of several gateway processes: nothing shared but the gateway secret, the key
    service and the upstream. One GenerateDataKey for the whole upload, one Decrypt per process: b's GET
    reuses the data key its UploadPart unwrapped (the data-key cache), a's GET unwraps it once."""
    keyservice = launch(tmp_path)
    gateways = []
    try:
        key_arn = kms_client(keyservice.url).create_key(Description="shared CMK")["KeyMetadata"]["Arn"]
        (tmp_path / "a").mkdir()
        gateways.append(start_gateway_with_remote_kms(moto, tmp_path / "a", keyservice.url, key_arn))
        secret = tmp_path / "b" / "gw" / "gateway.secret"
        secret.parent.mkdir(parents=True)
        secret.write_bytes((tmp_path / "a" / "gw" / "gateway.secret").read_bytes())
        gateways.append(start_gateway_with_remote_kms(moto, tmp_path / "b", keyservice.url, key_arn))
        a, b = (s3_client(g.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY) for g in gateways)
        bucket = f"two-gw-{uuid.uuid4().hex[:12]}"
        a.create_bucket(Bucket=bucket)
        parts = [os.urandom(5 * 1024 * 1024), os.urandom(1000)]
        upload = a.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
        done = [{"PartNumber": n, "ETag": client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=n,
                                                             Body=data)["ETag"]}
                for n, (client, data) in enumerate(zip((b, a), parts), 1)]
        b.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload, MultipartUpload={"Parts": done})
        for client in (a, b):
            assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"".join(parts)
        operations = [record["operation"] for record in keyservice.audit_records()]
        assert (operations.count("GenerateDataKey"), operations.count("Decrypt")) == (1, 2)
    finally:
        for gateway in gateways:
            assert gateway.stop() == 0, gateway.log()
        assert keyservice.server.stop() == 0, keyservice.server.log()
