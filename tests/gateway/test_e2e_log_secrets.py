"""At DEBUG, no server writes a secret: not a data key, a customer key, a secret key or a SigV4 signing key.

The gateway runs at GATEWAY_LOG_LEVEL=DEBUG in front of a standalone key service at KEYSERVICE_LOG_LEVEL=DEBUG
(reached through GATEWAY_KMS_ENDPOINT, so the gateway's KMS calls go through botocore, whose DEBUG logging
prints response bodies). After SSE-KMS and SSE-C traffic (and a request with a bad signature), the test
recovers the actual plaintext data key of an object it wrote, by calling the key service's Decrypt on the
wrapped key in the object's upstream metadata (docs/FORMAT.md §2), and looks for it and every other secret in
the output of the gateway, the key service and the upstream, in both servers' access logs (written to files
here) and in their /metrics.
"""
from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

from botocore.exceptions import ClientError

from gateway.crypto import metadata
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _config_toml
from tests.keyservice.conftest import ROOT, kms_client, launch
from tests.support.clients import s3_client
from tests.support.moto import MotoServer
from tests.support.observability import access_lines, admin_url, get
from tests.support.process import VENV_BIN, start_server
from tests.support.secrets import CUSTOMER_KEY, leaks, signing_key

DATA_KEY_FIELD = metadata.RESERVED_PREFIX.removeprefix("x-amz-meta-") + "d"


def _recover_data_key(upstream_s3, kms, bucket: str, key: str) -> bytes:
    """The object's plaintext data key: KMS Decrypt of its wrapped key W under the object's context."""
    stored = upstream_s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    wrapped = metadata.unb64u(stored[DATA_KEY_FIELD])
    context = {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{key}"}
    return kms.decrypt(CiphertextBlob=wrapped, EncryptionContext=context)["Plaintext"]


def _traffic(s3, bucket: str) -> None:
    """SSE-KMS and SSE-C writes and reads, a multipart upload, a copy, and a request signed with a wrong key."""
    body = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="kms", Body=body)
    assert s3.get_object(Bucket=bucket, Key="kms")["Body"].read() == body
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": CUSTOMER_KEY}
    s3.put_object(Bucket=bucket, Key="ssec", Body=body, **ssec)
    assert s3.get_object(Bucket=bucket, Key="ssec", **ssec)["Body"].read() == body
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "ssec"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=CUSTOMER_KEY)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=body)["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == body
    forged = s3_client(s3.meta.endpoint_url, GATEWAY_ACCESS_KEY, "not-the-secret-key")
    try:
        forged.get_object(Bucket=bucket, Key="kms")
        raise AssertionError("a request signed with a wrong key was accepted")
    except ClientError as err:
        assert err.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_no_server_logs_a_data_key_customer_key_secret_key_or_signing_key_at_debug(
        moto: MotoServer, upstream_s3, tmp_path: Path):
    access_logs = {"gateway": tmp_path / "gateway-access.log", "key service": tmp_path / "keyservice-access.log"}
    keyservice = launch(tmp_path, env={"KEYSERVICE_LOG_LEVEL": "DEBUG", "KEYSERVICE_ADMIN_LISTEN": "127.0.0.1:0",
                                       "KEYSERVICE_ACCESS_LOG": str(access_logs["key service"])})
    gateway = None
    try:
        kms = kms_client(keyservice.url)
        key_arn = kms.create_key(Description="log secrets CMK")["KeyMetadata"]["Arn"]
        config = tmp_path / "gateway.toml"
        config.write_text(_config_toml(moto, tmp_path / "gw", tls=None))
        gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen",
                                "127.0.0.1:0"], env={
            "GATEWAY_LOG_LEVEL": "DEBUG", "GATEWAY_KMS_ENDPOINT": keyservice.url, "GATEWAY_KMS_REGION": "us-east-1",
            "GATEWAY_KMS_ACCESS_KEY": ROOT[0], "GATEWAY_KMS_SECRET_KEY": ROOT[1],
            "GATEWAY_DEFAULT_KMS_KEY_ID": key_arn, "GATEWAY_ADMIN_LISTEN": "127.0.0.1:0",
            "GATEWAY_ACCESS_LOG": str(access_logs["gateway"])}, timeout=60)
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"log-secrets-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        _traffic(s3, bucket)
        data_key = _recover_data_key(upstream_s3, kms, bucket, "kms")
        metrics = {f"{name} metrics": get(f"{admin_url(server)}/metrics")[2]
                   for name, server in (("gateway", gateway), ("key service", keyservice.server))}
    finally:
        if gateway is not None:
            assert gateway.stop() == 0, gateway.log()
        assert keyservice.server.stop() == 0, keyservice.server.log()
    assert len(data_key) == 32
    secrets = {"the object's data key": data_key, "SSE-C key": CUSTOMER_KEY,
               "client secret key": GATEWAY_SECRET_KEY.encode(), "upstream secret key": moto.secret_key.encode(),
               "KMS secret key": ROOT[1].encode()}
    outputs = {"gateway": gateway.log(), "key service": keyservice.server.log(), "upstream": moto.server.log(),
               **{f"{name} access log": path.read_text() for name, path in access_logs.items()}, **metrics}
    # the access logs saw the SSE-C and SSE-KMS traffic (the scan below is not of empty files)
    assert {line["sse"] for line in access_lines(access_logs["gateway"])} >= {"SSE-C", "aws:kms"}
    assert {"GenerateDataKey", "Decrypt"} <= {line["operation"] for line in access_lines(access_logs["key service"])}
    assert "DEBUG" in outputs["gateway"] or outputs["gateway"], "the gateway wrote nothing at all"
    assert {name: leaks(text, secrets) for name, text in outputs.items()} == {name: [] for name in outputs}


def test_the_leak_scan_finds_a_data_key_and_a_signing_key_in_every_form():
    """The scan the test above relies on: base64, hex and bytes repr of a key, and a derived signing key."""
    key = os.urandom(32)
    signing = signing_key(GATEWAY_SECRET_KEY, "20260101", "us-east-1", "s3")
    for text in (base64.b64encode(key).decode(), key.hex(), repr(key), signing.hex()):
        assert leaks(f"... {text} ...", {"key": key, "signing": signing})
