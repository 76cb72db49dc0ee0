"""`gateway rewrap` as a real process over moto and a standalone key service, with a live gateway on the
same key service: objects move from CMK A to CMK B without their bodies moving, and read the same after A
is disabled."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, start_gateway_with_remote_kms
from tests.keyservice.conftest import ROOT, kms_client, launch
from tests.support.clients import s3_client
from tests.support.process import VENV_BIN

MIB = 1024 * 1024
SMALL = {"docs/a.txt": b"alpha " * 100, "docs/b.bin": os.urandom(70_000), "docs/empty": b"",
         "other/c.txt": b"outside the prefix"}
MULTIPART_KEY = "docs/big.bin"
MULTIPART_BODY = os.urandom(5 * MIB) + os.urandom(1234)


def tool_config(path: Path, moto, kms_url: str) -> Path:
    """The settings a tool reads: moto upstream, the shared key service, its own data dir."""
    path.write_text(f'''
[gateway]
data_dir = "{path.parent / 'tool-data'}"

[upstream]
url = "{moto.url}"
access_key = "{moto.access_key}"
secret_key = "{moto.secret_key}"

[kms]
endpoint = "{kms_url}"
region = "us-east-1"
access_key = "{ROOT[0]}"
secret_key = "{ROOT[1]}"
''')
    return path


def gateway_tool(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gateway"), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                       if not k.startswith(("GATEWAY_", "KEYSERVICE_"))})


@pytest.fixture
def world(moto, tmp_path):
    """A key service with CMKs A and B, a gateway writing under A, a bucket of objects written through it."""
    (tmp_path / "ks").mkdir()
    keyservice = launch(tmp_path / "ks")
    kms = kms_client(keyservice.url)
    key_a = kms.create_key()["KeyMetadata"]["Arn"]
    key_b = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/rewrap-b", TargetKeyId=key_b)
    gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, key_a)
    s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
    bucket = f"rewrap-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for key, body in SMALL.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a,
                      Metadata={"owner": "team-x"}, ContentType="text/x-test")
    upload = s3.create_multipart_upload(Bucket=bucket, Key=MULTIPART_KEY, ServerSideEncryption="aws:kms",
                                        SSEKMSKeyId=key_a, Metadata={"owner": "team-y"})
    parts = []
    for number, (start, end) in enumerate([(0, 5 * MIB), (5 * MIB, len(MULTIPART_BODY))], start=1):
        etag = s3.upload_part(Bucket=bucket, Key=MULTIPART_KEY, UploadId=upload["UploadId"], PartNumber=number,
                              Body=MULTIPART_BODY[start:end])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key=MULTIPART_KEY, UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": parts})
    config = tool_config(tmp_path / "tool.toml", moto, keyservice.url)
    try:
        yield type("World", (), dict(keyservice=keyservice, kms=kms, key_a=key_a, key_b=key_b, gateway=gateway,
                                     s3=s3, bucket=bucket, config=config, tmp_path=tmp_path))
    finally:
        assert gateway.stop() == 0, gateway.log()
        assert keyservice.server.stop() == 0


def bodies() -> dict[str, bytes]:
    return {**{key: body for key, body in SMALL.items() if key.startswith("docs/")}, MULTIPART_KEY: MULTIPART_BODY}


def test_rewrap_moves_every_object_to_the_target_cmk_and_they_read_the_same_after_the_old_cmk_is_disabled(
        world, moto, upstream_s3) -> None:
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
                                         "GetObject(manifest)": 1, "HeadObject": 4, "UploadPartCopy": 2}
    audit = [(r["operation"], r["key_arn"]) for r in world.keyservice.audit_records()[audit_mark:]
             if r["operation"] in ("Decrypt", "GenerateDataKey", "DescribeKey")]
    assert sorted(audit) == sorted([("DescribeKey", world.key_b)] + [("Decrypt", world.key_a)] * 4
                                   + [("GenerateDataKey", world.key_b)] * 4)
    moto_lines = moto.server.log()[moto_mark:]
    body_gets = [line for line in moto_lines.splitlines() if f'"GET /{world.bucket}/docs/' in line]
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


def test_an_object_changed_during_the_rewrap_is_skipped_reported_and_kept(world, upstream_s3) -> None:
    """The copy is pinned to the ETag read by the HEAD; a write in between wins (simulated with the
    copy-source pin of a stale ETag through the tool's own upstream client)."""
    import asyncio

    from gateway.config import load_config
    from gateway.tools.rewrap import Options, Rewrap, Tally
    from gateway.tools.runtime import object_store
    from gateway.tools.scan import Target

    async def race() -> Tally:
        config = load_config(str(world.config), {})
        async with object_store(config) as store:
            page = (await store.client.list_objects_v2(world.bucket, prefix="docs/a.txt")).entries
            tally = Tally()
            run = Rewrap(store, Options(Target(world.bucket, "docs/a.txt"), world.key_b), world.key_b, None, tally)
            original = run.client.head_object

            async def head_then_overwrite(*args, **kwargs):
                head = await original(*args, **kwargs)
                world.s3.put_object(Bucket=world.bucket, Key="docs/a.txt", Body=b"written meanwhile")
                return head
            run.client.head_object = head_then_overwrite
            await run.entry(page[0])
            return tally
    tally = asyncio.run(race())
    assert dict(tally.counts) == {"changed-during-rewrap": 1}
    assert tally.problems == [{"key": "docs/a.txt", "outcome": "changed-during-rewrap",
                               "reason": "the object was written while it was being rewrapped"}]
    assert world.s3.get_object(Bucket=world.bucket, Key="docs/a.txt")["Body"].read() == b"written meanwhile"


def test_a_usage_error_exits_2(world) -> None:
    done = gateway_tool("rewrap", "not-a-url", "--to-kms-key-id", world.key_b, config=world.config)
    assert done.returncode == 2 and "s3://BUCKET[/PREFIX]" in done.stderr
