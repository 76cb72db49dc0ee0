"""`gateway rewrap` as a real process over moto and a standalone key service, with a live gateway on the
same key service: objects move from CMK A to CMK B without their bodies moving, and read the same after A
is disabled."""
from __future__ import annotations

import json
import time

import pytest

from tests.gateway.tools.conftest import MULTIPART_KEY, SMALL, bodies, gateway_tool

def test_rewrap_moves_every_object_to_the_target_cmk_and_they_read_the_same_after_the_old_cmk_is_disabled(
        world, moto, upstream_s3) -> None:
    tags = {"TagSet": [{"Key": "project", "Value": "blue"}]}
    upstream_s3.put_object_tagging(Bucket=world.bucket, Key=MULTIPART_KEY, Tagging=tags)
    upstream_s3.put_object_tagging(Bucket=world.bucket, Key="docs/a.txt", Tagging=tags)
    before = {key: upstream_s3.head_object(Bucket=world.bucket, Key=key) for key in bodies()}
    client_heads = {key: world.s3.head_object(Bucket=world.bucket, Key=key) for key in bodies()}
    audit_mark = len(world.keyservice.audit_records())
    moto_mark = len(moto.server.log())
    report = world.tmp_path / "report.json"

    started = time.monotonic()
    done = gateway_tool("rewrap", f"s3://{world.bucket}/docs/", "--to-kms-key-id", "alias/rewrap-b",
                        "--report", str(report), config=world.config)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr + done.stdout

    summary = json.loads(report.read_text())
    assert summary["counts"] == {"rewrapped": 4}
    assert summary["kms_calls"] == {"Decrypt": 4, "GenerateDataKey": 4}
    assert summary["upstream_calls"] == {"CompleteMultipartUpload": 1, "CopyObject": 3, "CreateMultipartUpload": 1,
                                         "GetObject(manifest)": 1, "GetObjectTagging": 1, "HeadObject": 4,
                                         "UploadPartCopy": 2}
    audit = [(r["operation"], r["key_arn"]) for r in world.keyservice.audit_records()[audit_mark:]
             if r["operation"] in ("Decrypt", "GenerateDataKey", "DescribeKey")]
    # the start-up check's DescribeKey of the default CMK, the target's, then the objects' calls
    assert sorted(audit) == sorted([("DescribeKey", world.key_a), ("DescribeKey", world.key_b)]
                                   + [("Decrypt", world.key_a)] * 4
                                   + [("GenerateDataKey", world.key_b)] * 4)
    moto_lines = moto.server.log()[moto_mark:]
    body_gets = [line for line in moto_lines.splitlines()
                 if f'"GET /{world.bucket}/docs/' in line and "?tagging=" not in line]  # tags are no body
    heads = [line for line in moto_lines.splitlines() if f'"HEAD /{world.bucket}/docs/' in line]
    assert (body_gets, len(heads)) == ([], 4)

    world.kms.disable_key(KeyId=world.key_a)
    for key, body in bodies().items():
        answer = world.s3.get_object(Bucket=world.bucket, Key=key)
        assert answer["Body"].read() == body, key
        assert (answer["Metadata"], answer["ETag"], answer["ContentType"]) == (
            client_heads[key]["Metadata"], client_heads[key]["ETag"], client_heads[key]["ContentType"])
        after = upstream_s3.head_object(Bucket=world.bucket, Key=key)
        assert after["Metadata"]["x-gw-a"] == world.key_b
        assert after["ETag"] == before[key]["ETag"]
        assert after["Metadata"]["owner"] == before[key]["Metadata"]["owner"]
    assert client_heads["docs/a.txt"]["ContentType"] == "text/x-test"
    for key in (MULTIPART_KEY, "docs/a.txt"):
        assert upstream_s3.get_object_tagging(Bucket=world.bucket, Key=key)["TagSet"] == tags["TagSet"]
    assert upstream_s3.head_object(Bucket=world.bucket, Key="other/c.txt")["Metadata"]["x-gw-a"] == world.key_a
    print(f"\nrewrap: 4 objects in {elapsed:.2f} s (process), {summary['rewrapped_per_second']}/s in the tool, "
          f"against moto")


def test_dry_run_counts_exactly_and_changes_nothing(world, upstream_s3) -> None:
    before = upstream_s3.head_object(Bucket=world.bucket, Key="docs/a.txt")["Metadata"]
    report = world.tmp_path / "dry.json"
    done = gateway_tool("rewrap", f"s3://{world.bucket}", "--to-kms-key-id", world.key_b,
                        "--from-kms-key-id", world.key_a, "--dry-run", "--report", str(report), config=world.config)
    assert done.returncode == 0, done.stderr
    summary = json.loads(report.read_text())
    assert (summary["counts"], summary["kms_calls"]) == ({"rewrapped": 5}, {})
    assert summary["stored_bytes"] == sum(upstream_s3.head_object(Bucket=world.bucket, Key=k)["ContentLength"]
                                          for k in [*SMALL, MULTIPART_KEY])
    assert "would rewrap 5 objects" in done.stdout
    assert upstream_s3.head_object(Bucket=world.bucket, Key="docs/a.txt")["Metadata"] == before


def test_a_second_run_finds_everything_under_the_target_and_other_cmk_filters_select_nothing(world) -> None:
    first = gateway_tool("rewrap", f"s3://{world.bucket}/other/", "--to-kms-key-id", world.key_b, config=world.config)
    assert first.returncode == 0, first.stderr
    report = world.tmp_path / "again.json"
    again = gateway_tool("rewrap", f"s3://{world.bucket}/other/", "--to-kms-key-id", world.key_b,
                         "--report", str(report), config=world.config)
    assert json.loads(report.read_text())["counts"] == {"already-under-target": 1}
    other = gateway_tool("rewrap", f"s3://{world.bucket}/other/", "--to-kms-key-id", world.key_a,
                         "--from-kms-key-id", world.key_a, "--report", str(report), config=world.config)
    assert (again.returncode, other.returncode) == (0, 0)
    assert json.loads(report.read_text())["counts"] == {"other-cmk": 1}


def rewrap_racing_a_write(world, key: str, hooked: str):
    """Rewrap ``key`` in process while a client overwrites it right after the tool's ``hooked`` upstream
    call (the HEAD it pins its copies to, or the last part copy before Complete); the tally."""
    import asyncio

    from gateway.config import load_config
    from gateway.tools.rewrap import Options, Rewrap, Tally
    from gateway.tools.runtime import object_store
    from gateway.tools.scan import Target

    async def race() -> Tally:
        async with object_store(load_config(str(world.config), {})) as store:
            entry = (await store.client.list_objects_v2(world.bucket, prefix=key)).entries[0]
            tally = Tally()
            run = Rewrap(store, Options(Target(world.bucket, key), world.key_b), world.key_b, None, tally)
            original = getattr(run.client, hooked)
            calls = []

            async def then_overwrite(*args, **kwargs):
                answer = await original(*args, **kwargs)
                calls.append(hooked)
                if hooked == "head_object" or len(calls) == 2:  # the multipart object has two parts
                    world.s3.put_object(Bucket=world.bucket, Key=key, Body=b"written meanwhile")
                return answer
            setattr(run.client, hooked, then_overwrite)
            await run.entry(entry)
            return tally
    return asyncio.run(race())


@pytest.mark.parametrize("key, hooked", [("docs/a.txt", "head_object"), (MULTIPART_KEY, "head_object"),
                                         (MULTIPART_KEY, "upload_part_copy")])
def test_an_object_written_during_its_rewrap_is_skipped_reported_and_kept(world, upstream_s3, key, hooked) -> None:
    tally = rewrap_racing_a_write(world, key, hooked)
    assert dict(tally.counts) == {"changed-during-rewrap": 1}
    assert tally.problems == [{"key": key, "outcome": "changed-during-rewrap",
                               "reason": "the object was written while it was being rewrapped"}]
    assert world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read() == b"written meanwhile"
    assert upstream_s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []


def test_a_usage_error_exits_2(world) -> None:
    done = gateway_tool("rewrap", "not-a-url", "--to-kms-key-id", world.key_b, config=world.config)
    assert done.returncode == 2 and "s3://BUCKET[/PREFIX]" in done.stderr


def test_resume_goes_on_after_the_checkpointed_key_and_keeps_the_earlier_tally(world, upstream_s3) -> None:
    from collections import Counter

    from gateway.tools.rewrap import Checkpoint, Options, Tally
    from gateway.tools.scan import Target

    target = f"s3://{world.bucket}/docs/"
    checkpoint = Checkpoint(world.tmp_path / "tool-data", Options(Target.parse(target), world.key_b))
    checkpoint.save("docs/a.txt", Tally(Counter({"rewrapped": 1}), 600))
    report = world.tmp_path / "resumed.json"
    done = gateway_tool("rewrap", target, "--to-kms-key-id", world.key_b, "--resume", "--report", str(report),
                        config=world.config)
    assert done.returncode == 0, done.stderr
    summary = json.loads(report.read_text())
    assert (summary["counts"], summary["kms_calls"]) == ({"rewrapped": 4}, {"Decrypt": 3, "GenerateDataKey": 3})
    assert upstream_s3.head_object(Bucket=world.bucket, Key="docs/a.txt")["Metadata"]["x-gw-a"] == world.key_a
    assert upstream_s3.head_object(Bucket=world.bucket, Key="docs/b.bin")["Metadata"]["x-gw-a"] == world.key_b
    assert not checkpoint.path.exists()


def test_objects_newer_than_the_cutoff_are_left_alone(world) -> None:
    report = world.tmp_path / "older.json"
    done = gateway_tool("rewrap", f"s3://{world.bucket}", "--to-kms-key-id", world.key_b, "--older-than", "1",
                        "--report", str(report), config=world.config)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["counts"] == {"newer-than-cutoff": 5}


def ssec_args(customer_key: bytes) -> dict[str, str]:
    import base64
    import hashlib
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(customer_key).decode(),
            "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(customer_key).digest()).decode()}


OLD_CK, NEW_CK, OTHER_CK = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))


def test_an_sse_c_object_is_reported_as_needing_its_customer_key_and_exits_1(world) -> None:
    world.s3.put_object(Bucket=world.bucket, Key="ssec/secret", Body=b"customer keyed", **ssec_args(OLD_CK))
    report = world.tmp_path / "ssec.json"
    done = gateway_tool("rewrap", f"s3://{world.bucket}/ssec/", "--to-kms-key-id", world.key_b,
                        "--report", str(report), config=world.config)
    assert done.returncode == 1, done.stderr
    summary = json.loads(report.read_text())
    assert summary["counts"] == {"needs-customer-key": 1}
    assert summary["problems"] == [{"key": "ssec/secret", "outcome": "needs-customer-key",
                                    "reason": "an SSE-C object: its customer key is needed to re-key it"}]
    assert "needs-customer-key: ssec/secret" in done.stdout


def test_sse_c_objects_are_re_keyed_from_the_old_customer_key_to_the_new_one(world) -> None:
    import base64

    from botocore.exceptions import ClientError

    world.s3.put_object(Bucket=world.bucket, Key="ssec/mine", Body=b"customer keyed", Metadata={"m": "1"},
                        **ssec_args(OLD_CK))
    world.s3.put_object(Bucket=world.bucket, Key="ssec/theirs", Body=b"someone else's", **ssec_args(OTHER_CK))
    (world.tmp_path / "old.key").write_bytes(OLD_CK)
    (world.tmp_path / "new.key").write_text(base64.b64encode(NEW_CK).decode() + "\n")
    report = world.tmp_path / "rekey.json"
    done = gateway_tool("rewrap", f"s3://{world.bucket}/ssec/", "--to-kms-key-id", world.key_b,
                        "--ssec-old-key", str(world.tmp_path / "old.key"),
                        "--ssec-new-key", str(world.tmp_path / "new.key"), "--report", str(report),
                        config=world.config)
    assert done.returncode == 1, done.stderr
    summary = json.loads(report.read_text())
    assert (summary["counts"], summary["kms_calls"]) == ({"rewrapped": 1, "other-customer-key": 1}, {})
    answer = world.s3.get_object(Bucket=world.bucket, Key="ssec/mine", **ssec_args(NEW_CK))
    assert (answer["Body"].read(), answer["Metadata"]) == (b"customer keyed", {"m": "1"})
    with pytest.raises(ClientError) as refused:
        world.s3.get_object(Bucket=world.bucket, Key="ssec/mine", **ssec_args(OLD_CK))
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert world.s3.get_object(Bucket=world.bucket, Key="ssec/theirs", **ssec_args(OTHER_CK))["Body"].read() == \
        b"someone else's"


def test_one_customer_key_without_the_other_is_a_usage_error(world) -> None:
    (world.tmp_path / "old.key").write_bytes(OLD_CK)
    done = gateway_tool("rewrap", f"s3://{world.bucket}", "--to-kms-key-id", world.key_b,
                        "--ssec-old-key", str(world.tmp_path / "old.key"), config=world.config)
    assert done.returncode == 2 and "go together" in done.stderr


def _probes(s3, bucket: str) -> list[str]:
    """Every version and delete marker under the reserved prefix of the copy-condition trial."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=".s3gw/probes/")
    return [item["Key"] for item in listed.get("Versions", []) + listed.get("DeleteMarkers", [])]


def test_the_copy_condition_trial_leaves_no_scratch_object_or_version_behind(world, upstream_s3) -> None:
    world.s3.put_bucket_versioning(Bucket=world.bucket, VersioningConfiguration={"Status": "Enabled"})
    done = gateway_tool("rewrap", f"s3://{world.bucket}/docs/a.txt", "--to-kms-key-id", world.key_b,
                        config=world.config)
    assert done.returncode == 0, done.stderr + done.stdout
    assert _probes(upstream_s3, world.bucket) == []


@pytest.mark.rgw
def test_where_the_upstream_ignores_copy_conditions_rewrap_refuses_until_told_the_writers_are_stopped(
        rgw_world, rgw_s3) -> None:
    """Ceph RGW 16 copies whatever x-amz-copy-source-if-match says: a client's write racing a copy would get
    the old seal over its new body. So the run refuses, changing nothing; with --writers-stopped it runs, and
    the multipart object (whose Complete RGW answers with an empty ETag) counts as rewrapped."""
    world = rgw_world
    refused = gateway_tool("rewrap", f"s3://{world.bucket}/docs/", "--to-kms-key-id", world.key_b,
                           config=world.config)
    target = f"s3://{world.bucket}/docs/"
    assert (refused.returncode, refused.stdout, refused.stderr) == (2, "", (
        f"gateway rewrap: the upstream ignores x-amz-copy-source-if-match (Ceph RGW 16 does), so a client writing "
        f"an object of {target} while it is rewrapped would find its write unreadable for good (its new body "
        f"under the old seal). Stop every writer to {target} (clients of the gateway and anything writing "
        f"straight to the upstream), then run again with --writers-stopped\n"))
    assert {key: rgw_s3.head_object(Bucket=world.bucket, Key=key)["Metadata"]["x-gw-a"] for key in bodies()} == \
        dict.fromkeys(bodies(), world.key_a)
    assert _probes(rgw_s3, world.bucket) == []

    report = world.tmp_path / "report.json"
    done = gateway_tool("rewrap", target, "--to-kms-key-id", world.key_b, "--writers-stopped",
                        "--report", str(report), config=world.config)
    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(report.read_text())["counts"] == {"rewrapped": 4}
    world.kms.disable_key(KeyId=world.key_a)
    for key, body in bodies().items():
        assert world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read() == body, key
        assert rgw_s3.head_object(Bucket=world.bucket, Key=key)["Metadata"]["x-gw-a"] == world.key_b
