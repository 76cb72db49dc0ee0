"""`gateway keys usage` as a real process: exactly the objects sealed under a CMK, before and after a rewrap."""
from __future__ import annotations

import json

from tests.gateway.tools.conftest import MULTIPART_BODY, MULTIPART_KEY, SMALL, gateway_tool


def usage(world, *args: str) -> dict:
    done = gateway_tool("keys", "usage", *args, "--json", config=world.config)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_usage_lists_exactly_the_objects_under_the_cmk_and_none_after_they_are_rewrapped(world) -> None:
    before = usage(world, "--key-id", world.key_a, f"s3://{world.bucket}", "--list")
    assert (before["key_arn"], before["objects"]) == (world.key_a, 5)
    assert before["plaintext_bytes"] == sum(map(len, SMALL.values())) + len(MULTIPART_BODY)
    assert before["targets"][0]["keys"] == sorted([*SMALL, MULTIPART_KEY])

    assert gateway_tool("rewrap", f"s3://{world.bucket}/docs/", "--to-kms-key-id", world.key_b,
                        config=world.config).returncode == 0
    after_a = usage(world, "--key-id", world.key_a, f"s3://{world.bucket}", "--list")
    after_b = usage(world, "--key-id", "alias/rewrap-b", f"s3://{world.bucket}/docs/")
    assert after_a["targets"][0]["keys"] == ["other/c.txt"]
    assert (after_b["key_arn"], after_b["objects"]) == (world.key_b, 4)


def test_usage_without_a_bucket_looks_at_every_bucket_and_prints_a_summary(world) -> None:
    done = gateway_tool("keys", "usage", "--key-id", world.key_a, "--list", config=world.config)
    # 1 when some other test's bucket on the shared moto holds tampered metadata (listed as not examined)
    assert done.returncode in (0, 1), done.stderr
    # "and 0 older versions" when some other test left a versioned bucket on the shared moto: CMK A is this
    # world's own, so none of its versions is under it
    found = f"{world.key_a}: 5 objects ({sum(map(len, SMALL.values())) + len(MULTIPART_BODY)} bytes)"
    assert done.stdout.splitlines()[0] in (f"{found} can only be read with this key",
                                           f"{found} and 0 older versions (0 bytes) can only be read with this key")
    assert f"  s3://{world.bucket}/: 5 objects" in done.stdout
    assert f"    {MULTIPART_KEY}" in done.stdout


def test_an_unknown_key_is_a_usage_error(world) -> None:
    done = gateway_tool("keys", "usage", "--key-id", "alias/nothing-here", config=world.config)
    assert done.returncode == 2 and "gateway keys usage:" in done.stderr


def test_a_recorded_usage_is_warned_of_in_the_audit_log_when_the_key_is_scheduled_for_deletion(world) -> None:
    """`--record` notes the usage on the key; ScheduleKeyDeletion still goes ahead (as in AWS), but its
    audit record and the key service's log say what the deletion will make unreadable."""
    recorded = gateway_tool("keys", "usage", "--key-id", world.key_a, f"s3://{world.bucket}", "--record",
                            config=world.config)
    assert recorded.returncode == 0, recorded.stderr
    tags = {t["TagKey"]: t["TagValue"] for t in world.kms.list_resource_tags(KeyId=world.key_a)["Tags"]}
    # one bucket named, not every bucket: what was found is a lower bound
    assert tags["s3gw:usage"].startswith(f"at least 5 objects, {sum(map(len, SMALL.values())) + len(MULTIPART_BODY)} "
                                         f"bytes (0 not examined) in s3://{world.bucket}/ (gateway keys usage, ")
    world.kms.schedule_key_deletion(KeyId=world.key_a, PendingWindowInDays=7)
    records = [json.loads(line) for line in world.keyservice.audit_log.read_text().splitlines()]
    deletion = [r for r in records if r["operation"] == "ScheduleKeyDeletion"][-1]
    assert (deletion["outcome"], deletion["warning"]) == (
        "ok", f"scheduled for deletion while objects need it: {tags['s3gw:usage']}")
    world.kms.cancel_key_deletion(KeyId=world.key_a)
    world.kms.enable_key(KeyId=world.key_a)


def test_a_key_without_a_recorded_usage_is_deleted_without_a_warning(world) -> None:
    world.kms.schedule_key_deletion(KeyId=world.key_b, PendingWindowInDays=7)
    records = [json.loads(line) for line in world.keyservice.audit_log.read_text().splitlines()]
    assert "warning" not in [r for r in records if r["operation"] == "ScheduleKeyDeletion"][-1]
