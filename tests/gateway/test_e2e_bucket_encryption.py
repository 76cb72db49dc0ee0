"""Bucket default encryption through the S3 API (PutBucketEncryption / Get / Delete), end to end.

Real parts only: moto with IAM auth as the upstream, a standalone key service reached over the KMS API
(so the tests can create keys), two gateway processes sharing the gateway secret, boto3 and the aws CLI.
The gateways cache a bucket's configuration for TTL seconds (GATEWAY_BUCKET_CONFIG_TTL).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, remote_kms_toml
from tests.keyservice.conftest import kms_client, launch
from tests.support.clients import Endpoint, aws, s3_client, signed_request, upstream_keys
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server

TTL = 1.0
RECORD = ".s3gw/bucket-encryption"
PASSTHROUGH = f"plain-{uuid.uuid4().hex[:12]}"
SSEC_KEY = os.urandom(32)
SSEC = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": SSEC_KEY}


def _config(moto: MotoServer, data_dir: Path, kms_url: str, default_key_arn: str) -> str:
    return remote_kms_toml(moto, data_dir, kms_url, default_key_arn, gateway_settings="allow_ssec_over_http = true",
                           tables=f'[buckets.{PASSTHROUGH}]\nencryption = "passthrough"\n')


def _start(workdir: Path, config: str) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gateway.toml").write_text(config)
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(workdir / "gateway.toml"),
                         "--listen", "127.0.0.1:0"], {"GATEWAY_BUCKET_CONFIG_TTL": str(TTL)}, cwd=workdir,
                        timeout=60)


@dataclass
class Setup:
    """Two gateways (a, b) on one upstream and one gateway secret, and the key service's keys."""

    a: Server
    b: Server
    kms: object
    default_arn: str  # the gateways' default_kms_key_id
    app_arn: str      # another CMK, also named by alias/bucket-app
    config_a: str
    workdir: Path

    def client(self, server: Server):
        return s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)


@pytest.fixture(scope="module")
def setup(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("bucket-encryption")
    keyservice = launch(workdir)
    servers: list[Server] = []
    try:
        kms = kms_client(keyservice.url)
        default_arn = kms.create_key(Description="gateway default")["KeyMetadata"]["Arn"]
        app_arn = kms.create_key(Description="bucket app")["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName="alias/bucket-app", TargetKeyId=app_arn)
        config_a = _config(moto, workdir / "a" / "data", keyservice.url, default_arn)
        servers.append(_start(workdir / "a", config_a))
        secret = workdir / "b" / "data" / "gateway.secret"
        secret.parent.mkdir(parents=True)
        secret.write_bytes((workdir / "a" / "data" / "gateway.secret").read_bytes())
        secret.chmod(0o600)
        servers.append(_start(workdir / "b", _config(moto, workdir / "b" / "data", keyservice.url, default_arn)))
        yield Setup(servers[0], servers[1], kms, default_arn, app_arn, config_a, workdir)
    finally:
        for server in servers:
            server.stop()
        keyservice.server.stop()


@pytest.fixture
def s3(setup: Setup):
    return setup.client(setup.a)


@pytest.fixture
def bucket(s3) -> str:
    name = f"enc-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def _kms_rule(key_id: str | None = None, bucket_key: bool = False, blocked: list[str] | None = None) -> dict:
    default = {"SSEAlgorithm": "aws:kms", **({"KMSMasterKeyID": key_id} if key_id else {})}
    rule: dict = {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": bucket_key}
    if blocked is not None:
        rule["BlockedEncryptionTypes"] = {"EncryptionType": blocked}
    return {"Rules": [rule]}


def _error(call) -> tuple[int, str]:
    with pytest.raises(ClientError) as error:
        call()
    return error.value.response["ResponseMetadata"]["HTTPStatusCode"], error.value.response["Error"]["Code"]


def _effective_default(setup: Setup) -> dict:
    return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                              "KMSMasterKeyID": setup.default_arn},
                       "BucketKeyEnabled": False}]}


# ------------------------------------------------------------------ round trips


def test_get_answers_the_effective_default_before_a_put_and_again_after_delete(setup, s3, bucket):
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == _effective_default(setup)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    deleted = s3.delete_bucket_encryption(Bucket=bucket)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == _effective_default(setup)
    again = s3.delete_bucket_encryption(Bucket=bucket)  # nothing to delete: still 204, as S3
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_boto3_put_is_echoed_by_get_as_sent_and_never_reaches_the_upstream(s3, bucket, upstream_s3):
    sent = _kms_rule("alias/bucket-app", bucket_key=True, blocked=["NONE"])
    put = s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=sent)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == sent
    assert _error(lambda: upstream_s3.get_bucket_encryption(Bucket=bucket)) == (
        404, "ServerSideEncryptionConfigurationNotFoundError")


def test_a_header_less_put_is_encrypted_under_the_buckets_cmk(setup, s3, bucket, upstream_s3):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    put = s3.put_object(Bucket=bucket, Key="legacy-app", Body=b"no SSE header")
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", setup.app_arn)
    head = s3.head_object(Bucket=bucket, Key="legacy-app")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", setup.app_arn)
    assert upstream_s3.head_object(Bucket=bucket, Key="legacy-app")["Metadata"]["x-gw-a"] == setup.app_arn
    assert s3.get_object(Bucket=bucket, Key="legacy-app")["Body"].read() == b"no SSE header"
    # The request's headers still win over the bucket's configuration.
    named = s3.put_object(Bucket=bucket, Key="named", Body=b"x", ServerSideEncryption="aws:kms",
                          SSEKMSKeyId=setup.default_arn)
    assert named["SSEKMSKeyId"] == setup.default_arn


def test_an_sse_s3_default_makes_header_less_writes_aes256(s3, bucket):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    assert s3.put_object(Bucket=bucket, Key="k", Body=b"sse-s3")["ServerSideEncryption"] == "AES256"
    head = s3.head_object(Bucket=bucket, Key="k")
    assert (head["ServerSideEncryption"], "SSEKMSKeyId" in head) == ("AES256", False)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    assert upload["ServerSideEncryption"] == "AES256"
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload["UploadId"])
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "k"})
    assert s3.head_object(Bucket=bucket, Key="copy")["ServerSideEncryption"] == "AES256"


def test_aws_cli_put_get_delete_round_trip(setup, bucket, tmp_path):
    endpoint = Endpoint(setup.a.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, tmp_path)
    document = json.dumps(_kms_rule(setup.app_arn, bucket_key=True, blocked=["SSE-C"]))
    code, _, err = aws(endpoint, "--debug", "s3api", "put-bucket-encryption", "--bucket", bucket,
                       "--server-side-encryption-configuration", document)
    assert code == 0, err
    assert "x-amz-checksum-crc32" in err and "Content-MD5" not in err  # botocore >= 1.36's form
    code, out, err = aws(endpoint, "s3api", "get-bucket-encryption", "--bucket", bucket)
    assert code == 0, err
    assert json.loads(out)["ServerSideEncryptionConfiguration"] == json.loads(document)
    code, _, err = aws(endpoint, "s3api", "delete-bucket-encryption", "--bucket", bucket)
    assert code == 0, err
    code, out, err = aws(endpoint, "s3api", "get-bucket-encryption", "--bucket", bucket)
    assert json.loads(out)["ServerSideEncryptionConfiguration"] == _effective_default(setup)


# ------------------------------------------------------------------ errors


def _raw_put(setup: Setup, bucket: str, body: bytes, headers: dict[str, str] | None = None):
    """PutBucketEncryption with any body, signed, with the Content-MD5 older clients send."""
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    return signed_request("PUT", f"{setup.a.url}/{bucket}?encryption", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                          body=body, headers={"Content-MD5": md5, **(headers or {})})


def _code(response) -> tuple[int, str]:
    import xml.etree.ElementTree as ET
    return response.status_code, ET.fromstring(response.content).findtext("Code")


NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
KMS_RULE = "<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm>" \
           "</ApplyServerSideEncryptionByDefault></Rule>"


@pytest.mark.parametrize("body,expected", [
    (b"not xml", (400, "MalformedXML")),
    (f"<ServerSideEncryptionConfiguration {NS}></ServerSideEncryptionConfiguration>".encode(), (400, "MalformedXML")),
    (f"<ServerSideEncryptionConfiguration {NS}>{KMS_RULE}{KMS_RULE}</ServerSideEncryptionConfiguration>".encode(),
     (400, "MalformedXML")),
    (f"<ServerSideEncryptionConfiguration {NS}><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>rot13"
     "</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>".encode(),
     (400, "MalformedXML")),
    (f"<ServerSideEncryptionConfiguration {NS}><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256"
     "</SSEAlgorithm><KMSMasterKeyID>alias/bucket-app</KMSMasterKeyID></ApplyServerSideEncryptionByDefault>"
     "</Rule></ServerSideEncryptionConfiguration>".encode(), (400, "InvalidArgument")),
    (f"<ServerSideEncryptionConfiguration {NS}><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms"
     "</SSEAlgorithm><KMSMasterKeyID>alias/no-such-key</KMSMasterKeyID></ApplyServerSideEncryptionByDefault>"
     "</Rule></ServerSideEncryptionConfiguration>".encode(), (400, "KMS.NotFoundException")),
    (f"<ServerSideEncryptionConfiguration {NS}><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms"
     "</SSEAlgorithm><KMSMasterKeyID>no key id at all</KMSMasterKeyID></ApplyServerSideEncryptionByDefault>"
     "</Rule></ServerSideEncryptionConfiguration>".encode(), (400, "KMS.NotFoundException")),
    (f"<ServerSideEncryptionConfiguration {NS}><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>"
     "aws:kms:dsse</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>"
     "</ServerSideEncryptionConfiguration>".encode(), (400, "InvalidArgument")),
])
def test_invalid_configurations_get_s3s_error_and_change_nothing(setup, s3, bucket, body, expected):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    assert _code(_raw_put(setup, bucket, body)) == expected
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == \
        _kms_rule("alias/bucket-app")


def test_a_nonexistent_key_is_400_kms_not_found_through_boto3(s3, bucket):
    rule = _kms_rule("arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000")
    assert _error(lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=rule)) == (
        400, "KMS.NotFoundException")


def test_content_md5_and_checksum_mismatches_are_refused(setup, s3, bucket):
    body = f"<ServerSideEncryptionConfiguration {NS}>{KMS_RULE}</ServerSideEncryptionConfiguration>".encode()
    assert _raw_put(setup, bucket, body).status_code == 200  # Content-MD5, as older clients send it
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert _code(_raw_put(setup, bucket, body, {"Content-MD5": wrong_md5})) == (400, "BadDigest")
    assert _code(_raw_put(setup, bucket, body, {"Content-MD5": "not-md5"})) == (400, "InvalidDigest")
    crc = base64.b64encode(b"\0\0\0\0").decode()
    response = signed_request("PUT", f"{setup.a.url}/{bucket}?encryption", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                              body=body, headers={"x-amz-checksum-crc32": crc})
    assert _code(response) == (400, "BadDigest")


def test_all_three_on_a_missing_bucket_are_404_no_such_bucket(s3):
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    rule = _kms_rule()
    assert _error(lambda: s3.put_bucket_encryption(Bucket=missing, ServerSideEncryptionConfiguration=rule)) == (
        404, "NoSuchBucket")
    assert _error(lambda: s3.get_bucket_encryption(Bucket=missing)) == (404, "NoSuchBucket")
    assert _error(lambda: s3.delete_bucket_encryption(Bucket=missing)) == (404, "NoSuchBucket")


# ------------------------------------------------------------------ the record


def test_the_record_is_neither_listed_nor_readable_nor_writable_by_clients(s3, bucket, upstream_s3):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule())
    assert RECORD in upstream_keys(upstream_s3, bucket, reserved=True)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []
    assert _error(lambda: s3.get_object(Bucket=bucket, Key=RECORD)) == (403, "AccessDenied")
    assert _error(lambda: s3.put_object(Bucket=bucket, Key=RECORD, Body=b"{}")) == (403, "AccessDenied")
    assert _error(lambda: s3.delete_object(Bucket=bucket, Key=RECORD)) == (403, "AccessDenied")


def test_a_second_gateway_sees_a_change_within_the_ttl_and_the_first_at_once(setup, bucket):
    a, b = setup.client(setup.a), setup.client(setup.b)
    assert b.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == _effective_default(setup)
    a.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    assert a.put_object(Bucket=bucket, Key="a", Body=b"x")["SSEKMSKeyId"] == setup.app_arn  # at once
    time.sleep(TTL + 0.2)
    assert b.put_object(Bucket=bucket, Key="b", Body=b"x")["SSEKMSKeyId"] == setup.app_arn
    a.delete_bucket_encryption(Bucket=bucket)
    time.sleep(TTL + 0.2)
    assert b.put_object(Bucket=bucket, Key="c", Body=b"x")["SSEKMSKeyId"] == setup.default_arn


def test_the_configuration_survives_a_restart(setup, moto, bucket):
    setup.client(setup.a).put_bucket_encryption(Bucket=bucket,
                                                ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    restarted = _start(setup.workdir / "a", setup.config_a)  # same data dir, so the same gateway secret
    try:
        fresh = setup.client(restarted)
        assert fresh.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == \
            _kms_rule("alias/bucket-app")
        assert fresh.put_object(Bucket=bucket, Key="k", Body=b"x")["SSEKMSKeyId"] == setup.app_arn
    finally:
        assert restarted.stop() == 0, restarted.log()


def test_a_forged_record_fails_closed_and_a_put_replaces_it(setup, s3, bucket, upstream_s3):
    upstream_s3.put_object(Bucket=bucket, Key=RECORD,
                           Body=b'{"algorithm":"aws:kms","kms_key_id":null,"v":1}\nAAAA\n')
    b = setup.client(setup.b)  # gateway b has cached nothing for this bucket
    assert _error(lambda: b.put_object(Bucket=bucket, Key="k", Body=b"x")) == (500, "InternalError")
    assert _error(lambda: b.get_bucket_encryption(Bucket=bucket)) == (500, "InternalError")
    assert upstream_keys(upstream_s3, bucket) == []
    b.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    assert b.put_object(Bucket=bucket, Key="k", Body=b"x")["SSEKMSKeyId"] == setup.app_arn
    assert "is not authentic" in setup.b.log()


def test_delete_bucket_removes_the_configuration_with_the_bucket(setup, s3, bucket):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule("alias/bucket-app"))
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"] == _effective_default(setup)


# ------------------------------------------------------------------ SSE-C blocked


def test_blocked_sse_c_writes_are_403_and_store_nothing_while_reads_still_work(s3, bucket, upstream_s3):
    s3.put_object(Bucket=bucket, Key="before", Body=b"sse-c before the block", **SSEC)
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule(blocked=["SSE-C"]))
    assert _error(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x", **SSEC)) == (403, "AccessDenied")
    assert _error(lambda: s3.create_multipart_upload(Bucket=bucket, Key="mp", **SSEC)) == (403, "AccessDenied")
    assert _error(lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "before"},
                                         CopySourceSSECustomerAlgorithm="AES256",
                                         CopySourceSSECustomerKey=SSEC_KEY, **SSEC)) == (403, "AccessDenied")
    assert upstream_keys(upstream_s3, bucket) == ["before"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3.get_object(Bucket=bucket, Key="before", **SSEC)["Body"].read() == b"sse-c before the block"
    # A copy out of the SSE-C object into a KMS object is no SSE-C write.
    s3.copy_object(Bucket=bucket, Key="kms-copy", CopySource={"Bucket": bucket, "Key": "before"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=SSEC_KEY)
    assert s3.head_object(Bucket=bucket, Key="kms-copy")["ServerSideEncryption"] == "aws:kms"


def test_an_sse_c_upload_begun_before_the_block_gets_no_further_parts(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", **SSEC)["UploadId"]
    s3.put_object(Bucket=bucket, Key="source", Body=b"copy source")
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=_kms_rule(blocked=["SSE-C"]))
    assert _error(lambda: s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"x",
                                         **SSEC)) == (403, "AccessDenied")
    assert _error(lambda: s3.upload_part_copy(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1,
                                              CopySource={"Bucket": bucket, "Key": "source"}, **SSEC)) == (
        403, "AccessDenied")
    assert s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)


# ------------------------------------------------------------------ pass-through buckets


def test_a_passthrough_bucket_forwards_the_calls_unchanged(s3, upstream_s3):
    upstream_s3.create_bucket(Bucket=PASSTHROUGH)
    assert _error(lambda: s3.get_bucket_encryption(Bucket=PASSTHROUGH)) == (
        404, "ServerSideEncryptionConfigurationNotFoundError")
    rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": False}]}
    s3.put_bucket_encryption(Bucket=PASSTHROUGH, ServerSideEncryptionConfiguration=rule)
    assert upstream_s3.get_bucket_encryption(Bucket=PASSTHROUGH)["ServerSideEncryptionConfiguration"] == rule
    assert s3.get_bucket_encryption(Bucket=PASSTHROUGH)["ServerSideEncryptionConfiguration"] == rule
    assert upstream_keys(upstream_s3, PASSTHROUGH, reserved=True) == []
    s3.delete_bucket_encryption(Bucket=PASSTHROUGH)
    assert _error(lambda: upstream_s3.get_bucket_encryption(Bucket=PASSTHROUGH)) == (
        404, "ServerSideEncryptionConfigurationNotFoundError")


# ------------------------------------------------------------------ DeleteBucket refused upstream


def test_a_delete_bucket_refused_upstream_writes_the_configuration_back(moto, proxy, upstream_s3, tmp_path):
    """An object races in between the gateway removing the reserved keys and the upstream DeleteBucket: the
    client gets 409 BucketNotEmpty and the configuration is back, byte for byte, and still applies."""
    from tests.gateway.conftest import _config_toml

    (tmp_path / "gateway.toml").write_text(_config_toml(moto, tmp_path / "data", None).replace(moto.url, proxy.url))
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(tmp_path / "gateway.toml"),
                           "--listen", "127.0.0.1:0"], cwd=tmp_path, timeout=60)
    try:
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"enc-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        record = upstream_s3.get_object(Bucket=bucket, Key=RECORD)["Body"].read()
        proxy.before(f"DELETE /{bucket} HTTP/1.1".encode(),
                     lambda: upstream_s3.put_object(Bucket=bucket, Key="raced", Body=b"raced in"))
        assert _error(lambda: s3.delete_bucket(Bucket=bucket)) == (409, "BucketNotEmpty")
        assert upstream_s3.get_object(Bucket=bucket, Key=RECORD)["Body"].read() == record
        assert f"bucket {bucket}: DeleteBucket failed upstream (409); its encryption configuration" in server.log()
        assert s3.put_object(Bucket=bucket, Key="after", Body=b"x")["ServerSideEncryption"] == "AES256"
    finally:
        assert server.stop() == 0, server.log()
