"""Key use authorized per requester, and Bucket Keys, through a gateway process on moto (IAM auth on).

Each client credential maps to a principal; the gateway calls its embedded key service on that principal's
behalf with kms:ViaService = s3.us-east-1.amazonaws.com, so key policies and grants decide who may write and
read under which CMK. The keys, policies and grants are made in the gateway's own key store before it starts
(the store allows one process at a time), with the key service's own API.
"""
from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from keyservice.config import KeyServiceConfig, build_api
from keyservice.service import CallContext
from tests.support.clients import s3_client, upstream_keys
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, start_server

ACCOUNT = "111122223333"
ROOT = f"arn:aws:iam::{ACCOUNT}:root"
APPS = {name: (f"AKIA{name.upper()}0000", f"{name}-secret-key-0123456789", f"arn:aws:iam::{ACCOUNT}:user/{name}")
        for name in ("app1", "app2", "reader")}
VIA_S3 = {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
ADMIN_ACTIONS = ["kms:Describe*", "kms:Get*", "kms:List*", "kms:Create*", "kms:Put*", "kms:Enable*", "kms:Disable*",
                 "kms:TagResource", "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
                 "kms:RevokeGrant"]


def _policy(user: str) -> str:
    """Administration for the account; encryption and decryption through S3 for ``user`` only."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": ROOT}, "Action": ADMIN_ACTIONS, "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": APPS[user][2]}, "Resource": "*", "Condition": VIA_S3,
         "Action": ["kms:GenerateDataKey", "kms:Decrypt"]},
    ]})


@dataclass
class KeyedGateway:
    url: str
    keys: dict[str, str]  # name -> key ARN
    audit_log: Path
    moto: MotoServer

    def client(self, name: str):
        access, secret, _ = APPS[name]
        return s3_client(self.url, access, secret)

    def audit(self, operation: str) -> list[dict]:
        records = [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]
        return [r for r in records if r["operation"] == operation and r["source"] == "gateway"]


async def _prepare_keys(config_path: Path, data_dir: Path) -> dict[str, str]:
    """Two keys, each usable through S3 by one application; the reader holds a Decrypt grant on key1."""
    config = KeyServiceConfig.load(config_path, {}, default_data_dir=data_dir / "keyservice")
    api = build_api(config)
    ctx = CallContext(principal_arn=ROOT, account_id=ACCOUNT, request_id=str(uuid.uuid4()))
    try:
        keys = {}
        for name, user in (("key1", "app1"), ("key2", "app2")):
            keys[name] = (await api.call("CreateKey", {"Policy": _policy(user)}, ctx))["KeyMetadata"]["Arn"]
        await api.call("CreateGrant", {"KeyId": keys["key1"], "GranteePrincipal": APPS["reader"][2],
                                       "Operations": ["Decrypt"]}, ctx)
    finally:
        await api.close()
    return keys


@pytest.fixture(scope="module")
def keyed_gateway(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedGateway]:
    import asyncio

    workdir = tmp_path_factory.mktemp("keyed-gateway")
    data_dir = workdir / "data"
    credentials = "".join(f'[[gateway.credentials]]\naccess_key = "{a}"\nsecret_key = "{s}"\nprincipal = "{p}"\n\n'
                          for a, s, p in APPS.values())
    config = workdir / "gateway.toml"
    config.write_text(f'''
[gateway]
data_dir = "{data_dir}"
region = "us-east-1"

{credentials}
[upstream]
url = "{moto.url}"
access_key = "{moto.access_key}"
secret_key = "{moto.secret_key}"

[keyservice]
account_id = "{ACCOUNT}"
''')
    keys = asyncio.run(_prepare_keys(config, data_dir))
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                          cwd=workdir, timeout=60)
    try:
        yield KeyedGateway(server.url, keys, data_dir / "keyservice" / "audit.log", moto)
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture
def shared_bucket(keyed_gateway: KeyedGateway) -> str:
    name = f"keyauth-{uuid.uuid4().hex[:12]}"
    keyed_gateway.client("app1").create_bucket(Bucket=name)
    return name


def _refused(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as error:
        call()
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def test_each_application_writes_and_reads_only_under_its_own_key(keyed_gateway, shared_bucket, upstream_s3):
    gw = keyed_gateway
    app1, app2 = gw.client("app1"), gw.client("app2")
    app1.put_object(Bucket=shared_bucket, Key="one", Body=b"app1 data", ServerSideEncryption="aws:kms",
                    SSEKMSKeyId=gw.keys["key1"])
    app2.put_object(Bucket=shared_bucket, Key="two", Body=b"app2 data", ServerSideEncryption="aws:kms",
                    SSEKMSKeyId=gw.keys["key2"])
    assert app1.get_object(Bucket=shared_bucket, Key="one")["Body"].read() == b"app1 data"
    assert app2.get_object(Bucket=shared_bucket, Key="two")["Body"].read() == b"app2 data"

    status, code, message = _refused(lambda: app2.put_object(Bucket=shared_bucket, Key="stolen", Body=b"x",
                                                             ServerSideEncryption="aws:kms",
                                                             SSEKMSKeyId=gw.keys["key1"]))
    assert (status, code) == (403, "AccessDenied")
    assert message.startswith(f"User: {APPS['app2'][2]} is not authorized to perform: kms:GenerateDataKey")
    assert "stolen" not in upstream_keys(upstream_s3, shared_bucket)
    status, code, message = _refused(lambda: app2.get_object(Bucket=shared_bucket, Key="one"))
    assert (status, code) == (403, "AccessDenied")
    assert f"User: {APPS['app2'][2]} is not authorized to perform: kms:Decrypt" in message
    assert _refused(lambda: app1.get_object(Bucket=shared_bucket, Key="two"))[:2] == (403, "AccessDenied")


def test_a_form_upload_uses_keys_as_the_forms_credential(keyed_gateway, shared_bucket, upstream_s3):
    """POST object: the requester is the credential that signed the form's policy."""
    gw = keyed_gateway
    sse = {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": gw.keys["key1"]}

    def post(name: str, key: str) -> requests.Response:
        signer = s3_client(gw.url, *APPS[name][:2], signature_version="s3v4")
        fields = signer.generate_presigned_post(shared_bucket, key, Fields=sse,
                                                Conditions=[{k: v} for k, v in sse.items()])["fields"]
        return requests.post(f"{gw.url}/{shared_bucket}", data=fields, files={"file": ("f", b"form data")},
                             timeout=30)

    assert post("app1", "form-one").status_code == 204
    assert gw.client("app1").get_object(Bucket=shared_bucket, Key="form-one")["Body"].read() == b"form data"
    refused = post("app2", "form-stolen")
    assert (refused.status_code, b"<Code>AccessDenied</Code>" in refused.content) == (403, True)
    assert f"User: {APPS['app2'][2]} is not authorized to perform: kms:GenerateDataKey".encode() in refused.content
    assert "form-stolen" not in upstream_keys(upstream_s3, shared_bucket)


def test_a_decrypt_grant_lets_a_third_credential_read_but_not_write(keyed_gateway, shared_bucket, upstream_s3):
    gw = keyed_gateway
    gw.client("app1").put_object(Bucket=shared_bucket, Key="shared", Body=b"for the reader",
                                 ServerSideEncryption="aws:kms", SSEKMSKeyId=gw.keys["key1"])
    reader = gw.client("reader")
    assert reader.get_object(Bucket=shared_bucket, Key="shared")["Body"].read() == b"for the reader"
    status, code, _ = _refused(lambda: reader.put_object(Bucket=shared_bucket, Key="by-reader", Body=b"x",
                                                         ServerSideEncryption="aws:kms", SSEKMSKeyId=gw.keys["key1"]))
    assert (status, code) == (403, "AccessDenied")
    assert "by-reader" not in upstream_keys(upstream_s3, shared_bucket)


def test_the_key_service_sees_the_requesting_principal_and_the_s3_service(keyed_gateway, shared_bucket):
    gw = keyed_gateway
    key = f"audited-{uuid.uuid4().hex[:8]}"
    gw.client("app2").put_object(Bucket=shared_bucket, Key=key, Body=b"x", ServerSideEncryption="aws:kms",
                                 SSEKMSKeyId=gw.keys["key2"])
    records = [r for r in gw.audit("GenerateDataKey")
               if (r["encryption_context"] or {}).get("aws:s3:arn") == f"arn:aws:s3:::{shared_bucket}/{key}"]
    assert [(r["principal"], r["access_key"], r["key_arn"], r["outcome"]) for r in records] == [
        (APPS["app2"][2], APPS["app2"][0], gw.keys["key2"], "ok")]


def test_a_multipart_upload_part_needs_the_uploaders_own_decrypt_permission(keyed_gateway, shared_bucket):
    """S3 needs kms:Decrypt of whoever uploads a part of an SSE-KMS upload: a principal the key refuses
    cannot add parts to another's upload, even though the gateway has the upload's key cached."""
    gw = keyed_gateway
    app1, app2 = gw.client("app1"), gw.client("app2")
    upload = app1.create_multipart_upload(Bucket=shared_bucket, Key="mp", ServerSideEncryption="aws:kms",
                                          SSEKMSKeyId=gw.keys["key1"])["UploadId"]
    part = os.urandom(5 * 1024 * 1024)
    first = app1.upload_part(Bucket=shared_bucket, Key="mp", UploadId=upload, PartNumber=1, Body=part)["ETag"]
    assert _refused(lambda: app2.upload_part(Bucket=shared_bucket, Key="mp", UploadId=upload, PartNumber=2,
                                             Body=b"x"))[:2] == (403, "AccessDenied")
    app1.complete_multipart_upload(Bucket=shared_bucket, Key="mp", UploadId=upload,
                                   MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}]})
    assert app1.get_object(Bucket=shared_bucket, Key="mp")["Body"].read() == part


def test_a_hundred_puts_under_a_bucket_key_make_one_generate_data_key(keyed_gateway, shared_bucket):
    gw = keyed_gateway
    app1 = gw.client("app1")
    bucket_arn = f"arn:aws:s3:::{shared_bucket}"
    before = len(gw.audit("GenerateDataKey"))
    for i in range(100):
        answer = app1.put_object(Bucket=shared_bucket, Key=f"bk/{i}", Body=f"object {i}".encode(),
                                 ServerSideEncryption="aws:kms", SSEKMSKeyId=gw.keys["key1"], BucketKeyEnabled=True)
        assert answer["BucketKeyEnabled"] is True
    made = gw.audit("GenerateDataKey")[before:]
    assert [(r["encryption_context"], r["principal"]) for r in made] == [({"aws:s3:arn": bucket_arn},
                                                                         APPS["app1"][2])]
    decrypts = len(gw.audit("Decrypt"))
    for i in range(100):
        got = app1.get_object(Bucket=shared_bucket, Key=f"bk/{i}")
        assert (got["Body"].read(), got["BucketKeyEnabled"], got["SSEKMSKeyId"]) == (
            f"object {i}".encode(), True, gw.keys["key1"])
    assert len(gw.audit("Decrypt")) - decrypts == 1
    head = app1.head_object(Bucket=shared_bucket, Key="bk/7")
    assert (head["ServerSideEncryption"], head["BucketKeyEnabled"]) == ("aws:kms", True)


def test_a_bucket_key_is_never_shared_with_a_principal_the_key_refuses(keyed_gateway, shared_bucket, upstream_s3):
    gw = keyed_gateway
    gw.client("app1").put_object(Bucket=shared_bucket, Key="warm", Body=b"x", ServerSideEncryption="aws:kms",
                                 SSEKMSKeyId=gw.keys["key1"], BucketKeyEnabled=True)
    assert _refused(lambda: gw.client("app2").put_object(
        Bucket=shared_bucket, Key="cold", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=gw.keys["key1"],
        BucketKeyEnabled=True))[:2] == (403, "AccessDenied")
    assert _refused(lambda: gw.client("app2").get_object(Bucket=shared_bucket, Key="warm"))[:2] == (
        403, "AccessDenied")
    assert "cold" not in upstream_keys(upstream_s3, shared_bucket)


def test_multipart_uploads_and_copies_under_a_bucket_key_echo_it(keyed_gateway, shared_bucket):
    gw = keyed_gateway
    app1 = gw.client("app1")
    created = app1.create_multipart_upload(Bucket=shared_bucket, Key="mpbk", ServerSideEncryption="aws:kms",
                                           SSEKMSKeyId=gw.keys["key1"], BucketKeyEnabled=True)
    assert created["BucketKeyEnabled"] is True
    part = app1.upload_part(Bucket=shared_bucket, Key="mpbk", UploadId=created["UploadId"], PartNumber=1,
                            Body=b"last part may be small")
    assert part["BucketKeyEnabled"] is True
    done = app1.complete_multipart_upload(Bucket=shared_bucket, Key="mpbk", UploadId=created["UploadId"],
                                          MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["BucketKeyEnabled"] is True
    copied = app1.copy_object(Bucket=shared_bucket, Key="mpbk-copy", CopySource={"Bucket": shared_bucket,
                                                                                 "Key": "mpbk"},
                              ServerSideEncryption="aws:kms", SSEKMSKeyId=gw.keys["key1"], BucketKeyEnabled=True)
    assert copied["BucketKeyEnabled"] is True
    assert app1.get_object(Bucket=shared_bucket, Key="mpbk-copy")["Body"].read() == b"last part may be small"
    plain = app1.copy_object(Bucket=shared_bucket, Key="no-bk", CopySource={"Bucket": shared_bucket, "Key": "mpbk"},
                             ServerSideEncryption="aws:kms", SSEKMSKeyId=gw.keys["key1"])
    assert "BucketKeyEnabled" not in plain
    assert Counter(r["outcome"] for r in gw.audit("GenerateDataKey"))["ok"] >= 1


def test_a_bucket_default_names_only_a_key_the_requester_may_use_and_header_less_puts_get_it(
        keyed_gateway, shared_bucket, upstream_s3):
    """The legacy application's path: no SSE header at all, the bucket's configured key (and Bucket Key)."""
    gw = keyed_gateway
    app1 = gw.client("app1")

    def configure(key: str):
        return app1.put_bucket_encryption(Bucket=shared_bucket, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
            "BucketKeyEnabled": True}]})

    status, code, message = _refused(lambda: configure(gw.keys["key2"]))
    assert (status, code) == (403, "AccessDenied") and "kms:GenerateDataKey" in message
    configure(gw.keys["key1"])
    answer = app1.put_object(Bucket=shared_bucket, Key="legacy-app", Body=b"no header")
    assert (answer["ServerSideEncryption"], answer["SSEKMSKeyId"], answer["BucketKeyEnabled"]) == (
        "aws:kms", gw.keys["key1"], True)
    stored = upstream_s3.head_object(Bucket=shared_bucket, Key="legacy-app")["Metadata"]
    assert (stored["x-gw-v"], stored["x-gw-a"]) == ("2", gw.keys["key1"])
    assert _refused(lambda: gw.client("app2").put_object(Bucket=shared_bucket, Key="app2-legacy",
                                                         Body=b"x"))[:2] == (403, "AccessDenied")
    assert gw.client("reader").get_object(Bucket=shared_bucket, Key="legacy-app")["Body"].read() == b"no header"


def test_head_needs_no_decrypt_permission_as_on_s3_and_makes_no_kms_call(keyed_gateway, shared_bucket):
    gw = keyed_gateway
    gw.client("app1").put_object(Bucket=shared_bucket, Key="headed", Body=b"12345", ServerSideEncryption="aws:kms",
                                 SSEKMSKeyId=gw.keys["key1"])
    decrypts = len(gw.audit("Decrypt"))
    head = gw.client("app2").head_object(Bucket=shared_bucket, Key="headed")
    assert (head["ContentLength"], head["ServerSideEncryption"], head["SSEKMSKeyId"]) == (5, "aws:kms",
                                                                                          gw.keys["key1"])
    assert len(gw.audit("Decrypt")) == decrypts
    assert _refused(lambda: gw.client("app2").get_object(Bucket=shared_bucket, Key="headed"))[:2] == (
        403, "AccessDenied")


def test_only_a_principal_that_may_use_the_buckets_key_changes_or_removes_its_default(
        keyed_gateway, shared_bucket, upstream_s3):
    """No IAM here: without this, app2 could move app1's header-less writes to a key app2 can read."""
    gw = keyed_gateway
    app1, app2 = gw.client("app1"), gw.client("app2")
    rule = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                              "KMSMasterKeyID": gw.keys["key1"]}}]}
    app1.put_bucket_encryption(Bucket=shared_bucket, ServerSideEncryptionConfiguration=rule)
    aes = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    assert _refused(lambda: app2.put_bucket_encryption(Bucket=shared_bucket, ServerSideEncryptionConfiguration=aes))[
        :2] == (403, "AccessDenied")
    assert _refused(lambda: app2.delete_bucket_encryption(Bucket=shared_bucket))[:2] == (403, "AccessDenied")
    got = app1.get_bucket_encryption(Bucket=shared_bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert got["ApplyServerSideEncryptionByDefault"] == rule["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    app1.put_object(Bucket=shared_bucket, Key="still-key1", Body=b"x")
    assert upstream_s3.head_object(Bucket=shared_bucket, Key="still-key1")["Metadata"]["x-gw-a"] == gw.keys["key1"]
    app1.delete_bucket_encryption(Bucket=shared_bucket)
