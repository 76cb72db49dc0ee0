"""Per-user upstream credentials: a client credential mapped to an upstream user of its own
(``upstream_access_key`` / ``upstream_secret_key``) is that user upstream, so the upstream's users, policies and
object ownership apply through the gateway; a credential without a mapping is the gateway's ``[upstream]`` one.

The module runs a gateway process of its own on each upstream, with three client credentials: ALICE and
BOB mapped to two upstream users, SERVICE (the suite's client credential) unmapped. The upstreams:

- Ceph RGW has real users (``radosgw-admin user create``): each owns the buckets and objects it creates, another
  user gets AccessDenied until the owner grants it a bucket policy.
- moto (IAM auth on) enforces each IAM user's own policies, not bucket policies, and has one owner for the whole
  account: there alice and bob are IAM users allowed s3:* on buckets named after them (``ua-alice-*``,
  ``ua-bob-*``), the service user everything, and "granting" bob a bucket is an IAM policy of his. Ownership
  is only checked on RGW.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest
import requests
from botocore.exceptions import ClientError

from tests.gateway.conftest import UPSTREAMS, _start_gateway
from tests.support.clients import s3_client, upstream_keys
from tests.support.moto import start_moto_with_users
from tests.support.rgw import RgwServer
from tests.support import secrets
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

MIB = 1 << 20
CLIENTS = {"alice": ("GWALICEACCESSKEY0001", "alice-gateway-secret-key-000000000001"),
           "bob": ("GWBOBACCESSKEY000001", "bob-gateway-secret-key-00000000000001"),
           "service": (GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)}


def _named_buckets_policy(prefix: str) -> str:
    """An IAM user policy: s3:* on the buckets whose names start with ``prefix``, and their objects."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{prefix}*", f"arn:aws:s3:::{prefix}*/*"]}]})


EVERYTHING = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass
class UsersGateway:
    """The gateway in front of one upstream, the upstream users its clients map to, and how a user grants another."""

    upstream: str                                 # "moto" or "rgw"
    url: str
    upstream_url: str
    users: dict[str, tuple[str, str]]             # upstream key pairs: alice, bob, service
    uids: dict[str, str]                          # upstream user names (RGW uids, IAM user names)
    grant_bob: Callable[..., None]  # (setup, bucket, keys=None): bob may use the bucket (only those keys)

    def client(self, who: str):
        """A boto3 client of the gateway with ``who``'s client credential."""
        return s3_client(self.url, *CLIENTS[who])

    def upstream_client(self, who: str):
        """A boto3 client straight to the upstream as ``who``'s upstream user."""
        return s3_client(self.upstream_url, *self.users[who])

    def new_bucket(self, who: str) -> str:
        """A bucket created through the gateway by ``who`` (named so moto's IAM policies cover it)."""
        name = f"ua-{who}-{uuid.uuid4().hex[:12]}"
        self.client(who).create_bucket(Bucket=name)
        return name


def _granted(bucket: str, keys: list[str] | None) -> list[str]:
    """The resources of a grant: the bucket and its objects (only ``keys``, when given)."""
    return [f"arn:aws:s3:::{bucket}", *(f"arn:aws:s3:::{bucket}/{key}" for key in (keys or ["*"]))]


def _grant_by_bucket_policy(setup: UsersGateway, bucket: str, keys: list[str] | None = None) -> None:
    """RGW: alice gives bob read, write, list and delete in her bucket with a bucket policy, sent through the
    gateway (PutBucketPolicy is forwarded signed as alice)."""
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam:::user/{setup.uids['bob']}"]},
        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
        "Resource": _granted(bucket, keys)}]}
    setup.client("alice").put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def _grant_by_iam_policy(setup: UsersGateway, bucket: str, keys: list[str] | None = None) -> None:
    """moto: bob's IAM user gets a policy for the bucket (moto does not evaluate bucket policies)."""
    iam = boto3.client("iam", endpoint_url=setup.upstream_url, region_name="us-east-1",
                       aws_access_key_id=setup.users["service"][0], aws_secret_access_key=setup.users["service"][1])
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*",
                                                      "Resource": _granted(bucket, keys)}]}
    iam.put_user_policy(UserName=setup.uids["bob"], PolicyName=f"grant-{bucket}", PolicyDocument=json.dumps(policy))


def _mapped_credentials(users: dict[str, tuple[str, str]]) -> str:
    """The [[gateway.credentials]] entries of alice and bob, each mapped to its upstream user."""
    return "".join(f'\n[[gateway.credentials]]\naccess_key = "{CLIENTS[who][0]}"\nsecret_key = "{CLIENTS[who][1]}"\n'
                   f'upstream_access_key = "{users[who][0]}"\nupstream_secret_key = "{users[who][1]}"\n'
                   for who in ("alice", "bob"))


@pytest.fixture(scope="module", params=UPSTREAMS)
def setup(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsersGateway]:
    """A gateway with alice and bob mapped to upstream users of their own, on moto or on RGW."""
    workdir = tmp_path_factory.mktemp(f"upstream-users-{request.param}")
    for who in ("alice", "bob"):
        secrets.register(f"gateway client {who} secret key", CLIENTS[who][1], signs=True)
    if request.param == "rgw":
        rgw: RgwServer = request.getfixturevalue("rgw")
        uids = {"alice": f"alice-{uuid.uuid4().hex[:8]}", "bob": f"bob-{uuid.uuid4().hex[:8]}", "service": "tester"}
        users = {who: rgw.create_user(uids[who]) for who in ("alice", "bob")}
        users["service"] = (rgw.access_key, rgw.secret_key)
        server = _start_gateway(rgw, workdir, tls=None, tables=_mapped_credentials(users))
        yield UsersGateway("rgw", server.url, rgw.url, users, uids, _grant_by_bucket_policy)
        server.stop()
        return
    moto, users = start_moto_with_users({"service": EVERYTHING, "alice": _named_buckets_policy("ua-alice-"),
                                         "bob": _named_buckets_policy("ua-bob-")})
    server = _start_gateway(moto, workdir, tls=None, tables=_mapped_credentials(users))
    yield UsersGateway("moto", server.url, moto.url, users, {who: who for who in users}, _grant_by_iam_policy)
    server.stop()
    moto.stop()


def _refused(call: Callable[[], object]) -> tuple[int, str]:
    """The HTTP status and S3 error code of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"], caught.value.response["Error"]["Code"]


def _upload(s3, bucket: str, key: str, parts: list[bytes]) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
             for n, body in enumerate(parts, start=1)]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]})


def test_another_user_cannot_read_list_write_or_delete_in_a_users_bucket(setup):
    bucket = setup.new_bucket("alice")
    alice, bob = setup.client("alice"), setup.client("bob")
    alice.put_object(Bucket=bucket, Key="doc", Body=b"alice's data")
    denied = (403, "AccessDenied")
    assert _refused(lambda: bob.get_object(Bucket=bucket, Key="doc")) == denied
    assert _refused(lambda: bob.head_object(Bucket=bucket, Key="doc"))[0] == 403  # HEAD answers carry no code
    assert _refused(lambda: bob.get_object(Bucket=bucket, Key="doc", Range="bytes=0-3")) == denied
    assert _refused(lambda: bob.list_objects_v2(Bucket=bucket)) == denied
    assert _refused(lambda: bob.list_objects(Bucket=bucket)) == denied
    assert _refused(lambda: bob.put_object(Bucket=bucket, Key="doc", Body=b"bob's overwrite")) == denied
    assert _refused(lambda: bob.put_object(Bucket=bucket, Key="new", Body=b"bob's")) == denied
    assert _refused(lambda: bob.create_multipart_upload(Bucket=bucket, Key="big")) == denied
    assert _refused(lambda: bob.list_multipart_uploads(Bucket=bucket)) == denied
    assert _refused(lambda: bob.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "doc"})) \
        == denied
    assert _refused(lambda: bob.delete_object(Bucket=bucket, Key="doc")) == denied
    assert _refused(lambda: bob.delete_bucket(Bucket=bucket)) == denied
    assert _refused(lambda: bob.get_bucket_encryption(Bucket=bucket)) == denied
    assert alice.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"alice's data"
    assert [o["Key"] for o in alice.list_objects_v2(Bucket=bucket)["Contents"]] == ["doc"]


def test_another_user_cannot_copy_a_users_object_into_its_own_bucket(setup):
    source, own = setup.new_bucket("alice"), setup.new_bucket("bob")
    setup.client("alice").put_object(Bucket=source, Key="doc", Body=b"alice's data")
    bob = setup.client("bob")
    assert _refused(lambda: bob.copy_object(Bucket=own, Key="stolen", CopySource={"Bucket": source, "Key": "doc"})) \
        == (403, "AccessDenied")
    assert "Contents" not in bob.list_objects_v2(Bucket=own)


def test_another_user_can_read_list_write_and_delete_once_the_owner_grants_it(setup):
    """RGW: a bucket policy alice puts through the gateway; moto: an IAM policy of bob's (the module docstring)."""
    bucket = setup.new_bucket("alice")
    alice, bob = setup.client("alice"), setup.client("bob")
    alice.put_object(Bucket=bucket, Key="doc", Body=b"alice's data")
    assert _refused(lambda: bob.get_object(Bucket=bucket, Key="doc")) == (403, "AccessDenied")
    setup.grant_bob(setup, bucket)
    assert bob.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"alice's data"
    listed = bob.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("doc", len(b"alice's data"))]  # plaintext sizes
    bob.put_object(Bucket=bucket, Key="from-bob", Body=b"bob's data")
    assert bob.get_object(Bucket=bucket, Key="from-bob")["Body"].read() == b"bob's data"
    bob.delete_object(Bucket=bucket, Key="from-bob")
    assert [o["Key"] for o in bob.list_objects_v2(Bucket=bucket)["Contents"]] == ["doc"]
    _upload(bob, bucket, "bob-big", [b"c" * (5 * MIB), b"d" * 10])
    assert bob.get_object(Bucket=bucket, Key="bob-big", Range="bytes=5242879-5242880")["Body"].read() == b"cd"


def test_a_mapped_users_multipart_upload_round_trips(setup):
    bucket = setup.new_bucket("alice")
    alice = setup.client("alice")
    parts = [b"a" * (5 * MIB), b"b" * 1024]
    _upload(alice, bucket, "big", parts)
    assert alice.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(parts)
    assert alice.get_object(Bucket=bucket, Key="big", Range="bytes=5242878-5242881")["Body"].read() == b"aabb"
    assert alice.head_object(Bucket=bucket, Key="big")["ContentLength"] == 5 * MIB + 1024
    assert _refused(lambda: setup.client("bob").get_object(Bucket=bucket, Key="big")) == (403, "AccessDenied")


def test_a_user_granted_a_multipart_object_but_not_the_reserved_prefix_is_denied_it_as_s3_would(setup):
    """The manifest of a multipart object (``.s3gw/manifests/``) is read as the requester, so a grant that leaves
    the reserved prefix out is the upstream's AccessDenied (403), not an integrity failure (500). Alice's Complete
    cached the manifest for her: bob is never served from that cache. So is a listing, whose plaintext sizes need
    the bucket's state record: the gateway fails closed rather than show ciphertext sizes."""
    bucket = setup.new_bucket("alice")
    _upload(setup.client("alice"), bucket, "big", [b"a" * (5 * MIB), b"b" * 10])
    setup.client("alice").put_object(Bucket=bucket, Key="small", Body=b"single stream")
    setup.grant_bob(setup, bucket, ["big", "small"])
    bob = setup.client("bob")
    assert bob.get_object(Bucket=bucket, Key="small")["Body"].read() == b"single stream"
    assert _refused(lambda: bob.get_object(Bucket=bucket, Key="big")) == (403, "AccessDenied")
    # The listing's plaintext sizes need the bucket's state record (.s3gw/bucket-state), read as bob: refused.
    assert _refused(lambda: bob.list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")


@pytest.mark.parametrize("setup", [pytest.param("rgw", marks=pytest.mark.rgw)], indirect=True)
def test_a_mapped_users_objects_and_their_manifests_are_owned_by_that_user(setup):
    """On RGW only: moto has one owner for all the users of its account."""
    bucket = setup.new_bucket("alice")
    alice = setup.client("alice")
    alice.put_object(Bucket=bucket, Key="single", Body=b"single")
    _upload(alice, bucket, "big", [b"a" * (5 * MIB), b"b" * 10])
    for key in ("single", "big"):
        assert alice.get_object_acl(Bucket=bucket, Key=key)["Owner"]["ID"] == setup.uids["alice"]
    assert alice.get_bucket_acl(Bucket=bucket)["Owner"]["ID"] == setup.uids["alice"]
    listed = alice.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"]
    assert {(o["Key"], o["Owner"]["ID"]) for o in listed} == {("single", setup.uids["alice"]),
                                                              ("big", setup.uids["alice"])}
    straight = setup.upstream_client("alice")
    reserved = straight.list_objects_v2(Bucket=bucket, Prefix=".s3gw/", FetchOwner=True)["Contents"]
    assert any(o["Key"].startswith(".s3gw/manifests/") for o in reserved)
    assert {o["Owner"]["ID"] for o in reserved} == {setup.uids["alice"]}  # manifests and bucket records too


def test_an_unmapped_credential_uses_the_gateways_upstream_credential(setup):
    bucket = f"ua-service-{uuid.uuid4().hex[:12]}"
    service = setup.client("service")
    service.create_bucket(Bucket=bucket)
    service.put_object(Bucket=bucket, Key="doc", Body=b"service data")
    assert upstream_keys(setup.upstream_client("service"), bucket) == ["doc"]  # stored as the [upstream] user
    assert _refused(lambda: setup.client("bob").get_object(Bucket=bucket, Key="doc")) == (403, "AccessDenied")
    if setup.upstream == "rgw":  # RGW has owners per user; moto one per account
        assert service.get_bucket_acl(Bucket=bucket)["Owner"]["ID"] == setup.uids["service"]
        assert _refused(lambda: setup.client("alice").list_objects_v2(Bucket=bucket)) == (403, "AccessDenied")
    assert service.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"service data"


@pytest.mark.parametrize("setup", [pytest.param("rgw", marks=pytest.mark.rgw)], indirect=True)
def test_preflights_into_a_users_bucket_need_the_gateways_upstream_user_to_read_its_cors_rules(setup):
    """A preflight is unsigned: the gateway reads the bucket's CORS rules as its ``[upstream]`` user, which on RGW
    needs the owner's grant (s3:GetBucketCORS); moto's service user may read every bucket's."""
    bucket = setup.new_bucket("alice")
    alice = setup.client("alice")
    alice.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": ["https://app.example"], "AllowedMethods": ["GET", "PUT"]}]})
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"}
    refused = requests.options(f"{setup.url}/{bucket}/upload.txt", headers=headers, timeout=10)
    assert (refused.status_code, "Access-Control-Allow-Origin" in refused.headers) == (403, False)
    alice.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam:::user/{setup.uids['service']}"]},
        "Action": ["s3:GetBucketCORS"], "Resource": [f"arn:aws:s3:::{bucket}"]}]}))
    answered = requests.options(f"{setup.url}/{bucket}/upload.txt", headers=headers, timeout=10)
    assert (answered.status_code, answered.headers["Access-Control-Allow-Origin"]) == (200, "https://app.example")


def test_another_user_cannot_use_a_users_multipart_upload_or_its_pass_through_resources(setup):
    """An UploadId is the gateway's (MAC-authenticated), but whoever holds one still needs its own upstream rights
    to use it; requests passed through unchanged (ACLs, tagging) are signed as the requester too."""
    bucket = setup.new_bucket("alice")
    alice, bob = setup.client("alice"), setup.client("bob")
    alice.put_object(Bucket=bucket, Key="doc", Body=b"alice's data")
    upload_id = alice.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    part = alice.upload_part(Bucket=bucket, Key="big", UploadId=upload_id, PartNumber=1, Body=b"a" * MIB)
    denied = (403, "AccessDenied")
    assert _refused(lambda: bob.upload_part(Bucket=bucket, Key="big", UploadId=upload_id, PartNumber=2,
                                            Body=b"b" * MIB)) == denied
    assert _refused(lambda: bob.list_parts(Bucket=bucket, Key="big", UploadId=upload_id)) == denied
    assert _refused(lambda: bob.complete_multipart_upload(
        Bucket=bucket, Key="big", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})) == denied
    assert _refused(lambda: bob.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload_id)) == denied
    assert _refused(lambda: bob.get_bucket_acl(Bucket=bucket)) == denied
    assert _refused(lambda: bob.get_object_tagging(Bucket=bucket, Key="doc")) == denied
    assert _refused(lambda: bob.put_object_tagging(Bucket=bucket, Key="doc",
                                                   Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})) == denied
    assert [p["PartNumber"] for p in alice.list_parts(Bucket=bucket, Key="big", UploadId=upload_id)["Parts"]] == [1]
    alice.abort_multipart_upload(Bucket=bucket, Key="big", UploadId=upload_id)


def test_another_users_batch_delete_in_a_users_bucket_deletes_nothing(setup):
    """The refusal is the upstream's: RGW refuses the whole DeleteObjects (403 AccessDenied), moto answers 200 with
    an AccessDenied error for each key."""
    bucket = setup.new_bucket("alice")
    alice, bob = setup.client("alice"), setup.client("bob")
    alice.put_object(Bucket=bucket, Key="doc", Body=b"alice's data")
    try:
        answer = bob.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "doc"}]})
        outcome = ("answered", [(e["Key"], e["Code"]) for e in answer.get("Errors", [])], answer.get("Deleted"))
    except ClientError as exc:
        outcome = ("refused", exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"])
    assert outcome == {"rgw": ("refused", 403, "AccessDenied"),
                       "moto": ("answered", [("doc", "AccessDenied")], None)}[setup.upstream]
    assert alice.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"alice's data"
