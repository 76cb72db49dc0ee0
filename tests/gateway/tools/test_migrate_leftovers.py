"""What `gateway migrate` leaves behind, and says it leaves (moto with IAM auth; Ceph RGW 16 where its
behaviour is the point): a checkpointed object rewritten as plaintext before a resume, metadata in the
gateway's reserved names, plaintext written straight to the upstream around the mark, a marked bucket with
plaintext in it, the upstream's at-rest encryption, what the summary says about the mark, RGW refusing
If-Match in versioned buckets."""
from __future__ import annotations

import argparse
import json
import os
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from gateway.bucketstate import STATE_KEY, BucketStates
from gateway.config import load_config
from gateway.tools import migrate as migrate_module
from gateway.tools.migrate import REFUSED_UNCHANGED, run_command, state_name, tool_config
from gateway.tools.scan import Target
from tests.gateway.conftest import _config_toml
from tests.gateway.tools.test_migrate import _env, _marked, migrate, read_all, seed_small
from tests.support.clients import s3_client

ACL_NOTE = ("object ACLs are not carried over: a migrated object has the upstream's default ACL for a new object "
            "(README, gateway migrate)")


@pytest.fixture
def config_file(moto, tmp_path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(_config_toml(moto, tmp_path / "data", None))
    return path


def report_at(config_file: Path, target: str, *, dry_run: bool = False) -> dict:
    """The report of the last run on ``target`` in its default place (a dry run's has a name of its own)."""
    name = state_name(Target.parse(target)) + (".dry-run.report.json" if dry_run else ".report.json")
    return json.loads((config_file.parent / "data" / "migrate" / name).read_text())


def checkpoint_file(config_file: Path, target: str) -> Path:
    return config_file.parent / "data" / "migrate" / (state_name(Target.parse(target)) + ".checkpoint.json")


def plaintext(upstream_s3, bucket: str, key: str) -> bool:
    return "x-gw-v" not in upstream_s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def record_stored(upstream_s3, bucket: str) -> bool:
    try:
        upstream_s3.head_object(Bucket=bucket, Key=STATE_KEY)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchKey")
        return False
    return True


async def run_in_process(config_file: Path, target: str, capsys, *flags: str) -> tuple[int, str]:
    """`gateway migrate` run in this process (so a test can time a write against one of its steps)."""
    args = argparse.Namespace(target=target, dry_run=False, concurrency=2, kms_key_id=None, resume=False,
                              report=None, plaintext_in_marked_bucket=MARKED in flags)
    parsed = Target.parse(target)
    code = await run_command(args, tool_config(load_config(config_file, _env()), parsed.bucket), parsed)
    return code, capsys.readouterr().out


MARKED = "--plaintext-in-marked-bucket"


# ---------------------------------------------------------------- B1: resume trusts keys only

def test_resume_migrates_a_checkpointed_object_rewritten_as_plaintext_since(upstream_s3, legacy_bucket,
                                                                             config_file):
    target = f"s3://{legacy_bucket}/obj/"
    bodies = seed_small(upstream_s3, legacy_bucket, 20, prefix="obj/")
    first = migrate(config_file, target)
    assert first.returncode == 0, first.stdout + first.stderr
    upstream_s3.put_object(Bucket=legacy_bucket, Key="obj/k0005", Body=b"rewritten by a legacy app")
    resumed = migrate(config_file, target, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ("migrated and verified 1 objects (25 bytes); 0 found already encrypted; 19 migrated by an earlier run\n"
            "skipped (changed meanwhile): 0; failed: 0; unreadable: 0\n") in resumed.stdout
    report = report_at(config_file, target)
    assert report["counts"]["migrated_earlier"] == 19 and report["done"] == [{"key": "obj/k0005", "bytes": 25}]
    assert read_all(config_file, legacy_bucket, ["obj/k0005"]) == {"obj/k0005": b"rewritten by a legacy app"}
    done = json.loads(checkpoint_file(config_file, target).read_text())["done"]
    assert done == {key: upstream_s3.head_object(Bucket=legacy_bucket, Key=key)["ETag"] for key in bodies}


def test_resume_from_a_checkpoint_of_keys_only_heads_every_key_and_counts_the_encrypted_ones(
        upstream_s3, legacy_bucket, config_file):
    """A checkpoint written before ETags were kept still loads: its keys' ETags are unknown, so each is
    HEADed; the summary counts the objects the inventory found encrypted."""
    target = f"s3://{legacy_bucket}/obj/"
    bodies = seed_small(upstream_s3, legacy_bucket, 20, prefix="obj/")
    assert migrate(config_file, target).returncode == 0
    path = checkpoint_file(config_file, target)
    path.write_text(json.dumps({"target": target, "position": "obj/k0015", "done": sorted(bodies)}))
    upstream_s3.put_object(Bucket=legacy_bucket, Key="obj/k0005", Body=b"rewritten by a legacy app")
    resumed = migrate(config_file, target, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ("migrated and verified 1 objects (25 bytes); 19 found already encrypted; 0 migrated by an earlier run\n"
            in resumed.stdout)
    report = report_at(config_file, target)
    assert report["counts"]["encrypted"]["objects"] == 19 and report["counts"]["migrated_earlier"] == 0
    assert read_all(config_file, legacy_bucket, ["obj/k0005"]) == {"obj/k0005": b"rewritten by a legacy app"}
    assert set(json.loads(path.read_text())["done"]) == set(bodies)


# ---------------------------------------------------------------- B2: metadata in the reserved names

UNREADABLE_REASON = (
    "its metadata uses names the gateway reserves (x-amz-meta-x-gw-note) but is no gateway metadata (encryption "
    "metadata lacks x-amz-meta-x-gw-v): the gateway refuses to serve it and migrate left it as it is. If it is "
    "legacy plaintext, copy it onto itself straight at the upstream with that metadata renamed (outside "
    "x-amz-meta-x-gw-*), then run migrate again; if the gateway encrypted it, its metadata is damaged: restore "
    "the object")


def test_an_object_with_metadata_in_the_reserved_names_exits_1_is_listed_with_what_to_do_and_blocks_the_mark(
        upstream_s3, legacy_bucket, config_file):
    upstream_s3.put_object(Bucket=legacy_bucket, Key="plain", Body=b"plain")
    upstream_s3.put_object(Bucket=legacy_bucket, Key="odd", Body=b"legacy", Metadata={"x-gw-note": "hello"})
    done = migrate(config_file, f"s3://{legacy_bucket}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("migrated and verified 1 objects (5 bytes); 0 found already encrypted; 0 migrated by an earlier run\n"
            "skipped (changed meanwhile): 0; failed: 0; unreadable: 1\n"
            f"  unreadable odd: {UNREADABLE_REASON}\n"
            f"bucket {legacy_bucket} is not marked as holding no plaintext: objects were left unmigrated "
            "(1 with unreadable metadata; listed above); the bucket is marked only by a run that leaves none\n"
            ) in done.stdout
    assert "is marked so" not in done.stdout
    report = report_at(config_file, f"s3://{legacy_bucket}")
    assert report["unreadable"] == [{"key": "odd", "bytes": 6, "reason": UNREADABLE_REASON}]
    assert (report["marked_no_plaintext"], report["exit_code"]) == (False, 1)
    assert plaintext(upstream_s3, legacy_bucket, "odd") and not record_stored(upstream_s3, legacy_bucket)

    dry = migrate(config_file, f"s3://{legacy_bucket}", "--dry-run")
    assert dry.returncode == 1 and f"  unreadable odd: {UNREADABLE_REASON}\n" in dry.stdout


# ---------------------------------------------------------------- B3: the mark and writers straight upstream

async def test_plaintext_written_straight_upstream_as_the_mark_is_written_withdraws_the_mark(
        upstream_s3, legacy_bucket, config_file, capsys, monkeypatch):
    seed_small(upstream_s3, legacy_bucket, 3)
    real = BucketStates.record_no_plaintext

    async def a_legacy_writer_first(states, bucket):  # after the final listing, before the mark lands
        upstream_s3.put_object(Bucket=bucket, Key="late", Body=b"written straight upstream")
        await real(states, bucket)
    monkeypatch.setattr(BucketStates, "record_no_plaintext", a_legacy_writer_first)
    code, out = await run_in_process(config_file, f"s3://{legacy_bucket}", capsys)
    monkeypatch.undo()
    reason = ("the listing after the mark was written found plaintext object late, written straight to the "
              "upstream during the run, so the mark was withdrawn again (a gateway that read it meanwhile keeps "
              "refusing unencrypted reads there until it restarts); stop every writer that writes straight to "
              "the upstream and run again")
    assert code == 1, out
    assert f"bucket {legacy_bucket} is not marked as holding no plaintext: {reason}\n" in out
    report = report_at(config_file, f"s3://{legacy_bucket}")
    assert (report["marked_no_plaintext"], report["not_marked_reason"], report["exit_code"]) == (False, reason, 1)
    assert not record_stored(upstream_s3, legacy_bucket) and not await _marked(config_file, legacy_bucket)
    assert plaintext(upstream_s3, legacy_bucket, "late")

    again = migrate(config_file, f"s3://{legacy_bucket}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"bucket {legacy_bucket} holds no plaintext now and is marked so" in again.stdout


async def test_plaintext_written_straight_upstream_during_the_run_is_found_at_the_end_and_the_bucket_not_marked(
        upstream_s3, legacy_bucket, config_file, capsys, monkeypatch):
    seed_small(upstream_s3, legacy_bucket, 3)
    real = migrate_module._migrate_all

    async def then_a_legacy_writer(*args, **kwargs):
        await real(*args, **kwargs)
        upstream_s3.put_object(Bucket=legacy_bucket, Key="late", Body=b"written straight upstream")
    monkeypatch.setattr(migrate_module, "_migrate_all", then_a_legacy_writer)
    code, out = await run_in_process(config_file, f"s3://{legacy_bucket}", capsys)
    reason = ("the final listing found plaintext object late, written during the run (straight to the upstream, "
              "or through a gateway that wrote it unencrypted); stop every writer that writes straight to the "
              "upstream and run again")
    assert code == 1, out
    assert f"bucket {legacy_bucket} is not marked as holding no plaintext: {reason}\n" in out
    assert report_at(config_file, f"s3://{legacy_bucket}")["not_marked_reason"] == reason
    assert not record_stored(upstream_s3, legacy_bucket)


def test_a_marked_bucket_with_plaintext_written_straight_upstream_is_migrated_only_when_the_operator_says_so(
        upstream_s3, legacy_bucket, config_file):
    bodies = seed_small(upstream_s3, legacy_bucket, 2)
    assert migrate(config_file, f"s3://{legacy_bucket}").returncode == 0
    assert record_stored(upstream_s3, legacy_bucket)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="late", Body=b"written straight upstream")

    refused = migrate(config_file, f"s3://{legacy_bucket}")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert (f"  failed late: AccessDenied: The object is not encrypted by the gateway, and its bucket holds only "
            f"objects the gateway encrypted.; bucket {legacy_bucket} is marked as holding no plaintext, where an "
            "object without gateway metadata looks like an encrypted one whose metadata was stripped: if it is "
            f"plaintext written straight to the upstream, run again with {MARKED}\n") in refused.stdout
    assert plaintext(upstream_s3, legacy_bucket, "late")

    done = migrate(config_file, f"s3://{legacy_bucket}", MARKED)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("migrated and verified 1 objects (25 bytes); 2 found already encrypted; 0 migrated by an earlier run\n"
            "skipped (changed meanwhile): 0; failed: 0; unreadable: 0\n"
            f"bucket {legacy_bucket} was marked as holding no plaintext before this run and stays marked\n"
            ) in done.stdout
    assert read_all(config_file, legacy_bucket, [*bodies, "late"]) == {**bodies, "late": b"written straight upstream"}
    assert record_stored(upstream_s3, legacy_bucket)


# ---------------------------------------------------------------- C3: why a bucket is not marked

def test_a_versioned_bucket_is_migrated_and_the_summary_says_why_it_is_not_marked(upstream_s3, legacy_bucket,
                                                                                  config_file):
    upstream_s3.put_bucket_versioning(Bucket=legacy_bucket, VersioningConfiguration={"Status": "Enabled"})
    seed_small(upstream_s3, legacy_bucket, 3)
    done = migrate(config_file, f"s3://{legacy_bucket}")
    reason = (f"bucket {legacy_bucket} has versioning (Enabled), so the plaintext versions this migration replaced "
              "are still stored as noncurrent versions. Find them with ListObjectVersions straight at the upstream "
              f"(aws s3api list-object-versions --bucket {legacy_bucket}) and delete them by version id, or let a "
              "NoncurrentVersionExpiration lifecycle rule remove them; migrate does not mark a bucket with "
              "versioning")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"bucket {legacy_bucket} is not marked as holding no plaintext: {reason}\n" in done.stdout
    report = report_at(config_file, f"s3://{legacy_bucket}")
    assert (report["marked_no_plaintext"], report["not_marked_reason"]) == (False, reason)


def test_a_run_with_a_failure_says_the_bucket_is_not_marked_and_why(upstream_s3, legacy_bucket, config_file):
    """The failures: --kms-key-id names a CMK the key service does not have."""
    seed_small(upstream_s3, legacy_bucket, 2)
    done = migrate(config_file, f"s3://{legacy_bucket}", "--kms-key-id", "alias/no-such-key")
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"bucket {legacy_bucket} is not marked as holding no plaintext: objects were left unmigrated (2 failed; "
            "listed above); the bucket is marked only by a run that leaves none\n") in done.stdout


# ---------------------------------------------------------------- B5: the upstream's at-rest encryption

def test_the_upstreams_at_rest_encryption_of_a_legacy_object_is_kept(upstream_s3, legacy_bucket, config_file):
    upstream_s3.put_object(Bucket=legacy_bucket, Key="sse-s3", Body=b"at rest", ServerSideEncryption="AES256")
    upstream_s3.put_object(Bucket=legacy_bucket, Key="none", Body=b"as it is")
    done = migrate(config_file, f"s3://{legacy_bucket}")
    assert done.returncode == 0, done.stdout + done.stderr
    heads = {key: upstream_s3.head_object(Bucket=legacy_bucket, Key=key) for key in ("sse-s3", "none")}
    assert heads["sse-s3"]["Metadata"]["x-gw-v"] == "1" and heads["sse-s3"]["ServerSideEncryption"] == "AES256"
    assert "ServerSideEncryption" not in heads["none"]
    assert read_all(config_file, legacy_bucket, ["sse-s3"]) == {"sse-s3": b"at rest"}
    assert f"\n{ACL_NOTE}\n" in done.stdout  # an ACL is not carried over, and the summary says so


# ---------------------------------------------------------------- C4: a dry run's report

def test_a_dry_run_writes_a_report_of_its_own_and_leaves_the_real_runs(upstream_s3, legacy_bucket, config_file):
    seed_small(upstream_s3, legacy_bucket, 2)
    assert migrate(config_file, f"s3://{legacy_bucket}").returncode == 0
    assert migrate(config_file, f"s3://{legacy_bucket}", "--dry-run").returncode == 0
    real = report_at(config_file, f"s3://{legacy_bucket}")
    dry = report_at(config_file, f"s3://{legacy_bucket}", dry_run=True)
    assert (real["dry_run"], real["counts"]["done"]["objects"]) == (False, 2)
    (klass,) = dry["inventory"]
    assert (dry["dry_run"], dry["done"], klass.startswith("aws:kms:arn:")) == (True, [], True)


# ---------------------------------------------------------------- C1: Ceph RGW 16 and If-Match in versioned buckets

@pytest.fixture
def rgw_config(rgw, tmp_path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(_config_toml(rgw, tmp_path / "data", None))
    return path


@pytest.mark.rgw
def test_on_rgw_a_versioned_buckets_refused_conditional_writes_of_unchanged_objects_are_failures(rgw, rgw_config):
    s3 = s3_client(rgw.url, rgw.access_key, rgw.secret_key)
    bucket = f"legacy-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    bodies = {f"k{number}": os.urandom(100) for number in range(3)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    etags = {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in bodies}
    done = migrate(rgw_config, f"s3://{bucket}")
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("migrated and verified 0 objects (0 bytes); 0 found already encrypted; 0 migrated by an earlier run\n"
            "skipped (changed meanwhile): 0; failed: 3; unreadable: 0\n"
            + "".join(f"  failed {key}: {REFUSED_UNCHANGED}\n" for key in sorted(bodies))
            + f"bucket {bucket} is not marked as holding no plaintext: objects were left unmigrated (3 failed; "
              "listed above); the bucket is marked only by a run that leaves none\n") in done.stdout
    assert "processed 3/3 objects, 0.0/0.0 MiB\n" in done.stderr
    report = report_at(rgw_config, f"s3://{bucket}")
    assert report["failed"] == [{"key": key, "bytes": 100, "reason": REFUSED_UNCHANGED} for key in sorted(bodies)]
    assert report["skipped"] == []
    for key, body in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=key)
        assert (got["Body"].read(), got["ETag"], "x-gw-v" in got["Metadata"]) == (body, etags[key], False)
