"""`gateway keys usage` in a versioned bucket (a user trial's data-loss finding): after a rewrap, the older
versions still sealed under the old CMK are counted and named, on moto and on Ceph RGW; delete markers are not;
the versions listing is read across page boundaries; an unversioned bucket is reported as it always was."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from gateway.config import load_config
from gateway.tools.keys_usage import Usage, usage_note, usage_of
from gateway.tools.runtime import object_store
from gateway.tools.scan import Target
from tests.gateway.tools.conftest import MIB, gateway_tool

OLD_MULTIPART = os.urandom(5 * MIB) + os.urandom(10)
BODIES = {("docs/a", 1): b"aaa", ("docs/a", 2): b"AAAA", ("docs/b", 1): b"bbbbb", ("docs/m", 1): OLD_MULTIPART,
          ("docs/m", 2): b"m"}
OLDER_BYTES = 3 + 4 + 5 + len(OLD_MULTIPART)  # docs/a twice, docs/b (deleted), docs/m's multipart first version


@pytest.fixture(params=["moto", pytest.param("rgw", marks=pytest.mark.rgw)])
def vworld(request):
    """The tools' world (tests/gateway/tools/conftest.py) on moto or RGW, plus a versioned bucket written through
    its gateway under CMK A: two versions of docs/a, docs/b then deleted (a delete marker over it), docs/m as a
    multipart upload then overwritten; everything current under docs/ rewrapped to B; then keep/c under A.
    ``older`` is every (key, version id) left under A that is not current, read from the listing."""
    world = request.getfixturevalue("world" if request.param == "moto" else "rgw_world")
    s3, bucket = world.s3, f"vkeys-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    sse = dict(ServerSideEncryption="aws:kms", SSEKMSKeyId=world.key_a)
    for (key, _), body in BODIES.items():
        if body is OLD_MULTIPART:
            upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **sse)["UploadId"]
            parts = [{"PartNumber": number, "ETag": s3.upload_part(Bucket=bucket, Key=key, UploadId=upload,
                                                                   PartNumber=number, Body=piece)["ETag"]}
                     for number, piece in enumerate([body[:5 * MIB], body[5 * MIB:]], start=1)]
            s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
        else:
            s3.put_object(Bucket=bucket, Key=key, Body=body, **sse)
    s3.delete_object(Bucket=bucket, Key="docs/b")
    older = sorted((v["Key"], v["VersionId"]) for v in s3.list_object_versions(Bucket=bucket)["Versions"])
    rewrapped = gateway_tool("rewrap", f"s3://{bucket}/docs/", "--to-kms-key-id", world.key_b, "--writers-stopped",
                             config=world.config)
    assert rewrapped.returncode == 0, rewrapped.stdout + rewrapped.stderr
    s3.put_object(Bucket=bucket, Key="keep/c", Body=b"ccc", **sse)
    world.vbucket, world.older, world.upstream = bucket, older, request.param
    assert len(older) == 5
    return world


def usage_json(world, *args: str) -> dict:
    done = gateway_tool("keys", "usage", *args, "--json", config=world.config)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_older_versions_sealed_under_the_key_are_counted_apart_from_current_objects_and_named(vworld) -> None:
    w = vworld
    done = gateway_tool("keys", "usage", "--key-id", w.key_a, f"s3://{w.vbucket}", "--list", config=w.config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{w.key_a}: 1 objects (3 bytes) and 5 older versions ({OLDER_BYTES + 1} bytes) can only be read "
        f"with this key",
        f"  s3://{w.vbucket}/: 1 objects, 3 bytes and 5 older versions, {OLDER_BYTES + 1} bytes",
        "    keep/c",
        *(f"    {key} (older version {version})" for key, version in w.older)]

    report = usage_json(w, "--key-id", w.key_a, f"s3://{w.vbucket}", "--list")
    assert report["targets"][0].pop("stored_bytes") > 3  # the ciphertext's size: the plaintext and more
    assert report == {
        "key_arn": w.key_a, "objects": 1, "plaintext_bytes": 3, "noncurrent_versions": 5,
        "noncurrent_plaintext_bytes": OLDER_BYTES + 1,
        "targets": [{"target": f"s3://{w.vbucket}/", "objects": 1, "plaintext_bytes": 3, "not_examined": [],
                     "noncurrent_versions": 5, "noncurrent_plaintext_bytes": OLDER_BYTES + 1, "keys": ["keep/c"],
                     "noncurrent": [{"key": key, "version_id": version} for key, version in w.older]}]}


def test_every_older_version_is_readable_by_its_version_id_while_the_key_exists(vworld) -> None:
    """What the report counts is real: each older version it names reads back, by version id, as written."""
    w = vworld
    written = {}
    for key, version in w.older:
        written.setdefault(key, []).append(w.s3.get_object(Bucket=w.vbucket, Key=key, VersionId=version)["Body"].read())
    assert {key: sorted(bodies) for key, bodies in written.items()} == {
        "docs/a": [b"AAAA", b"aaa"], "docs/b": [b"bbbbb"], "docs/m": sorted([b"m", OLD_MULTIPART])}


def test_the_user_trials_report_of_zero_is_now_the_three_older_versions(vworld) -> None:
    """The trial's bucket: the current objects all rewrapped, the older versions only under the old key."""
    w = vworld
    w.s3.delete_object(Bucket=w.vbucket, Key="keep/c")  # a delete marker over it: its one version is older now
    report = usage_json(w, "--key-id", w.key_a, f"s3://{w.vbucket}/docs/")
    assert (report["objects"], report["noncurrent_versions"], report["noncurrent_plaintext_bytes"]) == (
        0, 5, OLDER_BYTES + 1)
    whole = usage_json(w, "--key-id", w.key_a, f"s3://{w.vbucket}")
    assert (whole["objects"], whole["plaintext_bytes"], whole["noncurrent_versions"],
            whole["noncurrent_plaintext_bytes"]) == (0, 0, 6, OLDER_BYTES + 1 + 3)
    under_b = usage_json(w, "--key-id", "alias/rewrap-b", f"s3://{w.vbucket}", "--list")
    # docs/a and docs/m rewrapped (new current versions under B); docs/b was deleted, so never rewrapped
    assert (under_b["objects"], under_b["noncurrent_versions"], under_b["targets"][0]["keys"]) == (
        2, 0, ["docs/a", "docs/m"])


def test_a_recorded_usage_of_older_versions_alone_warns_at_deletion(vworld) -> None:
    """The note starts with the count of everything the key reads: the key service warns unless it reads
    "0 objects", so versions alone must never read so."""
    w = vworld
    w.s3.delete_object(Bucket=w.vbucket, Key="keep/c")
    done = gateway_tool("keys", "usage", "--key-id", w.key_a, f"s3://{w.vbucket}", "--record", config=w.config)
    assert done.returncode == 0, done.stderr
    tags = {t["TagKey"]: t["TagValue"] for t in w.kms.list_resource_tags(KeyId=w.key_a)["Tags"]}
    assert tags["s3gw:usage"].startswith(
        f"at least 6 objects, {OLDER_BYTES + 4} bytes (6 of them older versions, {OLDER_BYTES + 4} bytes; "
        f"0 not examined) in s3://{w.vbucket}/ (gateway keys usage, ")
    w.kms.schedule_key_deletion(KeyId=w.key_a, PendingWindowInDays=7)
    records = [json.loads(line) for line in w.keyservice.audit_log.read_text().splitlines()]
    assert [r for r in records if r["operation"] == "ScheduleKeyDeletion"][-1]["warning"] == (
        f"scheduled for deletion while objects need it: {tags['s3gw:usage']}")
    w.kms.cancel_key_deletion(KeyId=w.key_a)
    w.kms.enable_key(KeyId=w.key_a)


def test_an_unversioned_bucket_is_reported_exactly_as_before_beside_a_versioned_one(vworld) -> None:
    w = vworld
    plain = usage_json(w, "--key-id", w.key_a, f"s3://{w.bucket}/other/")
    assert list(plain) == ["key_arn", "objects", "plaintext_bytes", "targets"]
    assert list(plain["targets"][0]) == ["target", "objects", "plaintext_bytes", "stored_bytes", "not_examined"]
    done = gateway_tool("keys", "usage", "--key-id", w.key_a, f"s3://{w.bucket}/other/", config=w.config)
    assert done.stdout.splitlines() == [
        f"{w.key_a}: 1 objects (18 bytes) can only be read with this key", f"  s3://{w.bucket}/other/: 1 objects, 18 bytes"]
    both = gateway_tool("keys", "usage", "--key-id", w.key_a, f"s3://{w.bucket}/other/", f"s3://{w.vbucket}/keep/",
                        config=w.config)
    assert both.stdout.splitlines() == [
        f"{w.key_a}: 2 objects (21 bytes) and 0 older versions (0 bytes) can only be read with this key",
        f"  s3://{w.bucket}/other/: 1 objects, 18 bytes",
        f"  s3://{w.vbucket}/keep/: 1 objects, 3 bytes and 0 older versions, 0 bytes"]


@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_the_versions_scan_counts_the_same_across_listing_page_boundaries(world, page_size) -> None:
    """usage_of in the tool's own process, a listing page of 1-3 versions: every version seen exactly once,
    the delete marker (a page entry of its own) counted nowhere."""
    bucket = f"vpages-{uuid.uuid4().hex[:12]}"
    world.s3.create_bucket(Bucket=bucket)
    world.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key, body in [("a", b"1"), ("a", b"22"), ("a", b"333"), ("b", b"4444"), ("c", b"55555")]:
        world.s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms",
                            SSEKMSKeyId=world.key_a)
    world.s3.delete_object(Bucket=bucket, Key="b")
    listed = world.s3.list_object_versions(Bucket=bucket)
    older = sorted((v["Key"], v["VersionId"]) for v in listed["Versions"] if not v["IsLatest"])
    assert len(listed["DeleteMarkers"]) == 1 and len(older) == 3
    config = load_config(str(world.config), {k: v for k, v in os.environ.items()
                                             if not k.startswith(("GATEWAY_", "KEYSERVICE_"))})
    async with object_store(config) as store:
        usage = await usage_of(store, world.key_a, Target(bucket), page_size=page_size)
    assert (sorted(usage.keys), usage.plaintext_bytes, sorted(usage.noncurrent), usage.noncurrent_plaintext_bytes,
            usage.unreadable, usage.versioned) == (["a", "c"], 3 + 5, older, 1 + 2 + 4, [], True)


def test_a_complete_scan_of_versioned_buckets_notes_no_lower_bound_and_a_zero_only_when_nothing_needs_the_key():
    empty = Usage(Target("v"), versioned=True)
    older = Usage(Target("v"), versioned=True, noncurrent=[("k", "v1"), ("k", "v2")], noncurrent_plaintext_bytes=9)
    plain = Usage(Target("p"), keys=["x"], plaintext_bytes=5)
    assert usage_note([empty], True).startswith(
        "0 objects, 0 bytes (0 of them older versions, 0 bytes) in s3://v/ (gateway keys usage, ")
    assert usage_note([older, plain], True).startswith(
        "3 objects, 14 bytes (2 of them older versions, 9 bytes) in s3://v/, s3://p/ (gateway keys usage, ")
    assert usage_note([plain], True).startswith("1 objects, 5 bytes in s3://p/ (gateway keys usage, ")
    assert usage_note([plain], False).startswith("at least 1 objects, 5 bytes (0 not examined) in s3://p/ ")
