"""A bucket created through the gateway is known to hold no plaintext: stripping an object's gateway metadata
upstream (a downgrade to "legacy plaintext") gets 403 on every read path, even with allow_unencrypted_reads on.

The knowledge is a reserved object ``.s3gw/bucket-state`` in the bucket, authenticated under the gateway
secret (docs/FORMAT.md §5): it survives restarts, is shared by gateways sharing the secret, and a record
that fails authentication still refuses (fail closed). Buckets created directly upstream keep serving
their legacy plaintext objects.
"""
from __future__ import annotations

import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from gateway.bucketstate import STATE_KEY
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _config_toml, _start_gateway
from tests.support.clients import s3_client, signed_request
from tests.support.faultproxy import FaultProxy, burst
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server

REFUSAL = ("AccessDenied", "The object is not encrypted by the gateway, and its bucket holds only objects the "
                           "gateway encrypted.")
BODY = bytes(range(256)) * 400  # 102,400 bytes: two segments
PASSTHROUGH_BUCKET = f"state-plain-{uuid.uuid4().hex[:8]}"


class Gateways:
    """Gateway processes on one workdir each; ``a`` and ``b`` share the gateway secret."""

    def __init__(self, moto: MotoServer, root: Path) -> None:
        self.moto, self.root = moto, root
        tables = f'[buckets.{PASSTHROUGH_BUCKET}]\nencryption = "passthrough"\n'
        self.a = _start_gateway(moto, root / "a", tls=None, tables=tables)
        (root / "b" / "data").mkdir(parents=True)
        shutil.copy(root / "a" / "data" / "gateway.secret", root / "b" / "data" / "gateway.secret")
        self.b: Server | None = None

    def fresh_b(self) -> Server:
        """Gateway b started now (so it has cached nothing), sharing a's secret."""
        if self.b is not None:
            self.b.stop()
        self.b = _start_gateway(self.moto, self.root / "b", tls=None)
        return self.b

    def restart_a(self) -> Server:
        self.a.stop()
        self.a = _start_gateway(self.moto, self.root / "a", tls=None,
                                tables=f'[buckets.{PASSTHROUGH_BUCKET}]\nencryption = "passthrough"\n')
        return self.a

    def stop(self) -> None:
        for server in (self.a, self.b):
            if server is not None:
                server.stop()


@pytest.fixture(scope="module")
def gateways(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateways]:
    pair = Gateways(moto, tmp_path_factory.mktemp("bucket-state"))
    yield pair
    pair.stop()


def client(server: Server):
    return s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)


def new_bucket_with_stripped_object(server: Server, upstream_s3) -> tuple[str, bytes]:
    """A bucket created through ``server``, an object put through it, then its metadata stripped upstream
    (copied onto itself with MetadataDirective=REPLACE); returns the bucket and the stored ciphertext."""
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    s3 = client(server)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="secret", Body=BODY)
    upstream_s3.copy_object(Bucket=bucket, Key="secret", CopySource={"Bucket": bucket, "Key": "secret"},
                            MetadataDirective="REPLACE", Metadata={})
    stored = upstream_s3.get_object(Bucket=bucket, Key="secret")
    assert stored["Metadata"] == {}
    return bucket, stored["Body"].read()


def raw(server: Server, method: str, bucket: str, query: str = "", headers: dict[str, str] | None = None):
    url = f"{server.url}/{bucket}/secret" + (f"?{query}" if query else "")
    return signed_request(method, url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, headers=headers)


def error_of(body: bytes) -> tuple[str | None, str | None]:
    root = ET.fromstring(body)
    return root.findtext("Code"), root.findtext("Message")


def assert_every_read_refused(server: Server, bucket: str, ciphertext: bytes, upstream_s3) -> None:
    """GET, Range GET, partNumber GET, HEAD and a CopyObject source: 403 AccessDenied, no ciphertext byte out."""
    for query, headers in (("", None), ("", {"Range": "bytes=0-99"}), ("partNumber=1", None)):
        response = raw(server, "GET", bucket, query, headers)
        assert (response.status_code, error_of(response.content)) == (403, REFUSAL)
        assert ciphertext[:32] not in response.content
    head = raw(server, "HEAD", bucket)
    assert (head.status_code, head.content, head.headers.get("Content-Length")) == (403, b"", None)
    with pytest.raises(ClientError) as err:
        client(server).copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "secret"})
    assert (err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]) == REFUSAL
    assert upstream_s3.list_objects_v2(Bucket=bucket, Prefix="copy")["KeyCount"] == 0


def test_an_object_stripped_of_its_metadata_in_a_gateway_created_bucket_is_refused_on_every_read_path(
        gateways, upstream_s3):
    bucket, ciphertext = new_bucket_with_stripped_object(gateways.a, upstream_s3)
    assert_every_read_refused(gateways.a, bucket, ciphertext, upstream_s3)


def test_the_refusal_survives_a_restart_and_is_shared_by_another_gateway_with_the_secret(gateways, upstream_s3):
    bucket, ciphertext = new_bucket_with_stripped_object(gateways.a, upstream_s3)
    assert_every_read_refused(gateways.restart_a(), bucket, ciphertext, upstream_s3)
    assert_every_read_refused(gateways.fresh_b(), bucket, ciphertext, upstream_s3)


def test_a_running_gateway_remembers_the_refusal_when_the_marker_is_deleted_upstream(gateways, upstream_s3):
    bucket, ciphertext = new_bucket_with_stripped_object(gateways.a, upstream_s3)
    upstream_s3.delete_object(Bucket=bucket, Key=STATE_KEY)
    assert_every_read_refused(gateways.a, bucket, ciphertext, upstream_s3)


@pytest.mark.parametrize("marker", [
    pytest.param(b'{"no_plaintext":false,"since":"2020-01-01T00:00:00Z","v":1}\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n',
                 id="forged-record"),
    pytest.param(b"garbage", id="garbage"),
])
def test_a_tampered_marker_still_refuses_and_is_logged(gateways, upstream_s3, marker):
    bucket, ciphertext = new_bucket_with_stripped_object(gateways.a, upstream_s3)
    upstream_s3.put_object(Bucket=bucket, Key=STATE_KEY, Body=marker)
    fresh = gateways.fresh_b()
    assert_every_read_refused(fresh, bucket, ciphertext, upstream_s3)
    assert f"bucket {bucket}: its state record {STATE_KEY} is not authentic" in fresh.log()


def test_a_marker_copied_from_another_bucket_does_not_authenticate_and_refuses(gateways, upstream_s3):
    """The MAC key is bound to the bucket name: a transplanted record fails, and fails closed."""
    source, _ = new_bucket_with_stripped_object(gateways.a, upstream_s3)
    legacy = f"state-legacy-{uuid.uuid4().hex[:8]}"
    upstream_s3.create_bucket(Bucket=legacy)
    upstream_s3.put_object(Bucket=legacy, Key="secret", Body=b"legacy plaintext")
    upstream_s3.copy_object(Bucket=legacy, Key=STATE_KEY, CopySource={"Bucket": source, "Key": STATE_KEY})
    fresh = gateways.fresh_b()
    response = raw(fresh, "GET", legacy)
    assert (response.status_code, error_of(response.content)) == (403, REFUSAL)
    assert f"bucket {legacy}: its state record {STATE_KEY} is not authentic" in fresh.log()


def test_a_bucket_created_directly_upstream_still_serves_its_legacy_plaintext(gateways, upstream_s3):
    bucket = f"state-legacy-{uuid.uuid4().hex[:8]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="secret", Body=b"legacy plaintext")
    s3 = client(gateways.a)
    assert s3.get_object(Bucket=bucket, Key="secret")["Body"].read() == b"legacy plaintext"
    assert s3.head_object(Bucket=bucket, Key="secret")["ContentLength"] == len(b"legacy plaintext")


def test_create_bucket_through_the_gateway_on_an_existing_legacy_bucket_writes_no_marker(gateways, upstream_s3):
    """us-east-1 answers a re-create of an owned bucket with 200: its legacy objects must stay readable."""
    bucket = f"state-legacy-{uuid.uuid4().hex[:8]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="secret", Body=b"legacy plaintext")
    s3 = client(gateways.a)
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as err:
        assert err.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    assert [o["Key"] for o in upstream_s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["secret"]
    assert s3.get_object(Bucket=bucket, Key="secret")["Body"].read() == b"legacy plaintext"


def test_a_pass_through_bucket_created_through_the_gateway_gets_no_marker(gateways, upstream_s3):
    client(gateways.a).create_bucket(Bucket=PASSTHROUGH_BUCKET)
    assert upstream_s3.list_objects_v2(Bucket=PASSTHROUGH_BUCKET)["KeyCount"] == 0


def test_the_marker_is_hidden_refused_to_clients_and_removed_by_delete_bucket(gateways, upstream_s3):
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    s3 = client(gateways.a)
    s3.create_bucket(Bucket=bucket)
    assert [o["Key"] for o in upstream_s3.list_objects_v2(Bucket=bucket)["Contents"]] == [STATE_KEY]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    for call in (lambda: s3.get_object(Bucket=bucket, Key=STATE_KEY),
                 lambda: s3.delete_object(Bucket=bucket, Key=STATE_KEY),
                 lambda: s3.put_object(Bucket=bucket, Key=STATE_KEY, Body=b"{}")):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "AccessDenied"
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in upstream_s3.list_buckets()["Buckets"]]


def test_encrypted_objects_in_a_marked_bucket_read_normally(gateways):
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    s3 = client(gateways.a)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="fine", Body=BODY)
    assert s3.get_object(Bucket=bucket, Key="fine")["Body"].read() == BODY


@pytest.fixture(scope="module")
def proxied(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaultProxy, Path]]:
    """A fault proxy in front of moto, and a workdir for gateways reaching moto through it."""
    proxy = FaultProxy("127.0.0.1", int(moto.url.rsplit(":", 1)[1])).start()
    workdir = tmp_path_factory.mktemp("bucket-state-proxied")
    yield proxy, workdir
    proxy.stop()


def _gateway_through(moto: MotoServer, proxy: FaultProxy, workdir: Path) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", None).replace(moto.url, proxy.url))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                        cwd=workdir, timeout=60)


def test_a_delete_bucket_refused_upstream_keeps_the_state_record(moto, proxied, upstream_s3):
    """A PUT races in between the gateway removing the reserved keys and the upstream DeleteBucket: the
    upstream answers 409 BucketNotEmpty, the client gets that, and the record is back as it was, so after a
    restart an object stripped of its metadata is still refused."""
    proxy, workdir = proxied
    server = _gateway_through(moto, proxy, workdir)
    try:
        bucket = f"state-{uuid.uuid4().hex[:12]}"
        s3 = client(server)
        s3.create_bucket(Bucket=bucket)
        record = upstream_s3.get_object(Bucket=bucket, Key=STATE_KEY)["Body"].read()
        s3.put_object(Bucket=bucket, Key="gone", Body=BODY)
        s3.delete_object(Bucket=bucket, Key="gone")
        proxy.before(f"DELETE /{bucket} HTTP/1.1".encode(),
                     lambda: upstream_s3.put_object(Bucket=bucket, Key="raced", Body=b"raced in"))
        with pytest.raises(ClientError) as err:
            s3.delete_bucket(Bucket=bucket)
        answer = err.value.response
        assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"]) == (409, "BucketNotEmpty")
        assert upstream_s3.get_object(Bucket=bucket, Key=STATE_KEY)["Body"].read() == record
        assert f"bucket {bucket}: DeleteBucket failed upstream (409); its state record" in server.log()
        s3.put_object(Bucket=bucket, Key="secret", Body=BODY)
        upstream_s3.copy_object(Bucket=bucket, Key="secret", CopySource={"Bucket": bucket, "Key": "secret"},
                                MetadataDirective="REPLACE", Metadata={})
        ciphertext = upstream_s3.get_object(Bucket=bucket, Key="secret")["Body"].read()
    finally:
        server.stop()
    server = _gateway_through(moto, proxy, workdir)  # restarted: nothing cached
    try:
        assert_every_read_refused(server, bucket, ciphertext, upstream_s3)
    finally:
        server.stop()


def test_create_bucket_whose_record_cannot_be_written_is_503_and_a_retry_writes_it(moto, proxied, upstream_s3):
    """The upstream fails every write of the record (the first cut, the retries 503): the bucket exists but
    is unprotected, so the client is told 503 ServiceUnavailable, never success; its retry writes the record."""
    proxy, workdir = proxied
    server = _gateway_through(moto, proxy, workdir)
    try:
        bucket = f"state-{uuid.uuid4().hex[:12]}"
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, retries={"total_max_attempts": 1})
        proxy.before(f"PUT /{bucket}/{STATE_KEY} HTTP/1.1".encode(), lambda: proxy.set(burst(5)))
        with pytest.raises(ClientError) as err:
            s3.create_bucket(Bucket=bucket)
        answer = err.value.response
        assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"]) == (503, "ServiceUnavailable")
        assert bucket in [b["Name"] for b in upstream_s3.list_buckets()["Buckets"]]
        assert upstream_s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        assert f"bucket {bucket}: created, but recording that it holds no plaintext failed 3 times" in server.log()
        proxy.clear()
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as retry:  # outside us-east-1 a re-create is 409 BucketAlreadyOwnedByYou
            assert retry.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
        assert [o["Key"] for o in upstream_s3.list_objects_v2(Bucket=bucket)["Contents"]] == [STATE_KEY]
    finally:
        proxy.clear()
        server.stop()
