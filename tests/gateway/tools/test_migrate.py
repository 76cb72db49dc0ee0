"""`gateway migrate` run as a process against moto: legacy plaintext objects encrypted in place, with
their content, metadata and tags; resumable after SIGKILL; an object changed meanwhile left intact."""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from gateway.datakeys import GATEWAY
from gateway.config import DEFAULT_KEY_ALIAS, load_config
from gateway.objects.reading import ObjectRef
from gateway.crypto.checksum import FULL_OBJECT, ObjectChecksum
from gateway.tools.migrate import ChecksumMismatch, Progress, _Hashing
from gateway.tools.runtime import object_store
from tests.gateway.conftest import _config_toml
from tests.support.process import VENV_BIN

MiB = 1 << 20
SIZES = {"a/empty": 0, "a/one": 1, "b/nineteen": 19, "c/eight-minus": 8 * MiB - 1, "c/eight-plus": 8 * MiB + 1}
MULTIPART_KEY, MULTIPART_SIZE = "d/multipart", 20_000_000


def _env() -> dict[str, str]:
    """The tool reads only its config file: no GATEWAY_* / KEYSERVICE_* leaking in from the session."""
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("GATEWAY_", "KEYSERVICE_"))}


@pytest.fixture
def config_file(moto, tmp_path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(_config_toml(moto, tmp_path / "data", None))
    return path


def migrate(config_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "gateway"), "migrate", *args, "--config", str(config_file)],
                          capture_output=True, text=True, env=_env(), timeout=600)


def start_migrate(config_file: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(VENV_BIN / "gateway"), "migrate", *args, "--config", str(config_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())


def report_of(config_file: Path, name: str) -> dict:
    (path,) = (config_file.parent / "data" / "migrate").glob(f"{name}-*.report.json")
    return json.loads(path.read_text())


def seed(upstream_s3, bucket: str) -> dict[str, bytes]:
    """Plaintext objects stored straight upstream: the sizes of issue 9, one multipart, with metadata and tags."""
    bodies = {key: os.urandom(size) for key, size in SIZES.items()}
    for key, body in bodies.items():
        upstream_s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-test",
                               ContentDisposition=f'attachment; filename="{key[2:]}"', CacheControl="max-age=60",
                               Metadata={"owner": "legacy", "n": str(len(body))},
                               Tagging=f"class=legacy&size={len(body)}")
    upstream_s3.copy_object(Bucket=bucket, Key="b/nineteen", CopySource={"Bucket": bucket, "Key": "b/nineteen"},
                            StorageClass="STANDARD_IA")  # metadata and tags are copied along
    body = os.urandom(MULTIPART_SIZE)
    upload = upstream_s3.create_multipart_upload(Bucket=bucket, Key=MULTIPART_KEY, ContentType="video/x-test",
                                                 Metadata={"owner": "legacy"},
                                                 Tagging="class=multipart&note=a%20b%3Dc%2Bd")
    parts = []
    for number, start in enumerate(range(0, MULTIPART_SIZE, 8 * MiB), 1):
        answer = upstream_s3.upload_part(Bucket=bucket, Key=MULTIPART_KEY, UploadId=upload["UploadId"],
                                         PartNumber=number, Body=body[start:start + 8 * MiB])
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    upstream_s3.complete_multipart_upload(Bucket=bucket, Key=MULTIPART_KEY, UploadId=upload["UploadId"],
                                          MultipartUpload={"Parts": parts})
    return {**bodies, MULTIPART_KEY: body}


def seed_small(upstream_s3, bucket: str, count: int, size: int = 1024, prefix: str = "") -> dict[str, bytes]:
    bodies = {f"{prefix}k{number:04d}": os.urandom(size) for number in range(count)}
    for key, body in bodies.items():
        upstream_s3.put_object(Bucket=bucket, Key=key, Body=body)
    return bodies


async def _read_all(config_file: Path, bucket: str, keys) -> dict[str, bytes]:
    """Every object's plaintext through the object layer, on the tool's data_dir (its key store)."""
    config = load_config(config_file, _env())
    out = {}
    async with object_store(config) as store:
        for key in keys:
            async with store.reader.stat(ObjectRef(bucket, key), with_body=True) as stored:
                assert stored.encrypted, key
                opened = await stored.open(None, requester=GATEWAY)
                out[key] = b"".join([chunk async for chunk in opened.chunks()])
    return out


def read_all(config_file: Path, bucket: str, keys) -> dict[str, bytes]:
    return asyncio.run(_read_all(config_file, bucket, keys))


async def _marked(config_file: Path, bucket: str) -> bool:
    """What a fresh process (its own, empty cache) reads of the bucket's state record."""
    async with object_store(load_config(config_file, _env())) as store:
        return await store.bucket_states.holds_no_plaintext(bucket)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def test_dry_run_counts_plaintext_objects_and_bytes_exactly_and_writes_nothing(upstream_s3, legacy_bucket,
                                                                              config_file):
    bodies = seed(upstream_s3, legacy_bucket)
    done = migrate(config_file, f"s3://{legacy_bucket}", "--dry-run")
    total = sum(len(body) for body in bodies.values())
    assert done.returncode == 0, done.stderr
    assert f"  plaintext: 6 objects, {total} bytes" in done.stdout
    assert report_of(config_file, legacy_bucket)["inventory"] == {"plaintext": {"objects": 6, "bytes": total}}
    assert all("x-gw-v" not in upstream_s3.head_object(Bucket=legacy_bucket, Key=key)["Metadata"] for key in bodies)


def test_migrate_encrypts_every_object_in_place_keeping_content_metadata_tags_and_marks_the_bucket(
        upstream_s3, legacy_bucket, config_file):
    bodies = seed(upstream_s3, legacy_bucket)
    done = migrate(config_file, f"s3://{legacy_bucket}", "--concurrency", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    report = report_of(config_file, legacy_bucket)
    assert report["counts"]["done"] == {"objects": 6, "bytes": sum(len(b) for b in bodies.values())}
    assert report["skipped"] == [] and report["failed"] == [] and report["marked_no_plaintext"] is True
    assert f"bucket {legacy_bucket} holds no plaintext now" in done.stdout
    assert {key: _digest(body) for key, body in read_all(config_file, legacy_bucket, bodies).items()} == \
        {key: _digest(body) for key, body in bodies.items()}
    for key, body in bodies.items():
        head = upstream_s3.head_object(Bucket=legacy_bucket, Key=key)
        assert head["Metadata"]["x-gw-v"] == "1" and head["Metadata"]["owner"] == "legacy"
        tags = {t["Key"]: t["Value"] for t in upstream_s3.get_object_tagging(Bucket=legacy_bucket, Key=key)["TagSet"]}
        if key == MULTIPART_KEY:
            assert head["ContentType"] == "video/x-test" and tags == {"class": "multipart", "note": "a b=c+d"}
        else:
            assert head["ContentType"] == "application/x-test" and head["CacheControl"] == "max-age=60"
            assert head["ContentDisposition"] == f'attachment; filename="{key[2:]}"'
            assert head["Metadata"]["n"] == str(len(body)) and tags == {"class": "legacy", "size": str(len(body))}
            assert head.get("StorageClass") == ("STANDARD_IA" if key == "b/nineteen" else None)
    assert asyncio.run(_marked(config_file, legacy_bucket)) is True

    again = migrate(config_file, f"s3://{legacy_bucket}")
    assert again.returncode == 0, again.stdout + again.stderr
    second = report_of(config_file, legacy_bucket)
    assert second["counts"]["done"] == {"objects": 0, "bytes": 0} and "plaintext" not in second["inventory"]
    assert sum(counts["objects"] for counts in second["inventory"].values()) == 6


async def _configure(config_file: Path, bucket: str, encryption) -> None:
    async with object_store(load_config(config_file, _env())) as store:
        await store.bucket_encryption.put(bucket, encryption)


def test_migrate_encrypts_as_the_buckets_s3_api_configuration_says_with_one_kms_call_under_a_bucket_key(
        upstream_s3, legacy_bucket, config_file):
    """The default a header-less PUT gets is what migrate writes: the bucket's CMK, under a Bucket Key, so
    40 objects make one GenerateDataKey (the audit log of the tool's key service says so)."""
    from gateway.bucketencryption import KMS, EncryptionConfig
    bodies = seed_small(upstream_s3, legacy_bucket, 40)
    asyncio.run(_configure(config_file, legacy_bucket, EncryptionConfig(KMS, DEFAULT_KEY_ALIAS, bucket_key=True)))
    audit = load_config(config_file, _env()).data_dir / "keyservice" / "audit.log"
    before = audit.read_text().count('"operation":"GenerateDataKey"') if audit.exists() else 0
    done = migrate(config_file, f"s3://{legacy_bucket}", "--concurrency", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert audit.read_text().count('"operation":"GenerateDataKey"') - before == 1
    for key in bodies:
        stored = upstream_s3.head_object(Bucket=legacy_bucket, Key=key)["Metadata"]
        assert stored["x-gw-v"] == "2" and "x-gw-b" in stored
    assert read_all(config_file, legacy_bucket, bodies) == bodies


def test_resume_after_sigkill_finishes_without_redoing_or_double_encrypting(upstream_s3, legacy_bucket,
                                                                            config_file):
    bodies = seed_small(upstream_s3, legacy_bucket, 80)
    checkpoint_dir = config_file.parent / "data" / "migrate"
    process = start_migrate(config_file, f"s3://{legacy_bucket}", "--concurrency", "1")
    deadline = time.monotonic() + 120
    while not list(checkpoint_dir.glob("*.checkpoint.json")):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (checkpoint,) = checkpoint_dir.glob("*.checkpoint.json")
    finished_before = set(json.loads(checkpoint.read_text())["done"])
    assert 16 <= len(finished_before) < 80

    resumed = migrate(config_file, f"s3://{legacy_bucket}", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = report_of(config_file, legacy_bucket)["counts"]
    assert counts["migrated_earlier"] == len(finished_before)
    assert counts["migrated_earlier"] + counts["done"]["objects"] + counts["encrypted"]["objects"] == 80
    assert read_all(config_file, legacy_bucket, bodies) == bodies  # a double encryption would read as ciphertext


def test_an_object_overwritten_during_the_migration_is_reported_and_its_new_content_kept(upstream_s3, legacy_bucket,
                                                                                         config_file):
    seed_small(upstream_s3, legacy_bucket, 60)
    checkpoint_dir = config_file.parent / "data" / "migrate"
    process = start_migrate(config_file, f"s3://{legacy_bucket}", "--concurrency", "1")
    while not list(checkpoint_dir.glob("*.checkpoint.json")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.005)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="k0059", Body=b"written meanwhile")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1, output
    report = report_of(config_file, legacy_bucket)
    assert [item["key"] for item in report["skipped"]] == ["k0059"]
    assert report["counts"]["done"]["objects"] == 59 and report["marked_no_plaintext"] is False
    assert "skipped k0059: changed or deleted since the inventory" in output
    assert upstream_s3.get_object(Bucket=legacy_bucket, Key="k0059")["Body"].read() == b"written meanwhile"

    again = migrate(config_file, f"s3://{legacy_bucket}")
    assert again.returncode == 0, again.stdout + again.stderr
    assert read_all(config_file, legacy_bucket, ["k0059"]) == {"k0059": b"written meanwhile"}
    assert report_of(config_file, legacy_bucket)["marked_no_plaintext"] is True


async def _checksum(config_file: Path, bucket: str, key: str):
    """The stored checksum the gateway answers for x-amz-checksum-mode (None: none)."""
    async with object_store(load_config(config_file, _env())) as store:
        async with store.reader.stat(ObjectRef(bucket, key)) as stored:
            return (await stored.open(None, requester=GATEWAY)).checksum


def test_a_legacy_objects_own_checksum_is_kept_sealed_by_the_migration(upstream_s3, legacy_bucket, config_file):
    body = os.urandom(70_000)
    upstream_s3.put_object(Bucket=legacy_bucket, Key="k", Body=body, ChecksumAlgorithm="SHA256")
    done = migrate(config_file, f"s3://{legacy_bucket}")
    assert done.returncode == 0, done.stdout + done.stderr
    checksum = asyncio.run(_checksum(config_file, legacy_bucket, "k"))
    assert (checksum.algorithm, checksum.kind, checksum.digest) == ("sha256", "FULL_OBJECT",
                                                                   hashlib.sha256(body).digest())
    assert "x-gw-h" in upstream_s3.head_object(Bucket=legacy_bucket, Key="k")["Metadata"]


async def _read_through(source) -> list[bytes]:
    return [chunk async for chunk in source.__aiter__()]


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


def test_bytes_that_do_not_match_the_carried_checksum_fail_before_the_last_chunk_goes_out():
    """Neither moto nor RGW keeps a wrong checksum for an object (both compute their own), so the check that a
    legacy object's bytes match the checksum the migration carries over is proved on the stream itself: the last
    chunk is held back, so the encrypted write is cut short and the object stays as it was."""
    wrong = ObjectChecksum("crc32", FULL_OBJECT, zlib.crc32(b"other").to_bytes(4, "big"))
    source = _Hashing(_chunks(b"the ", b"bytes"), wrong)
    got = []
    with pytest.raises(ChecksumMismatch, match="do not match its crc32 checksum upstream"):
        asyncio.run(_collect(source, got))
    assert got == [b"the "] and isinstance(source.failure, ChecksumMismatch)
    right = ObjectChecksum("crc32", FULL_OBJECT, zlib.crc32(b"the bytes").to_bytes(4, "big"))
    assert asyncio.run(_read_through(_Hashing(_chunks(b"the ", b"bytes"), right))) == [b"the ", b"bytes"]


async def _collect(source, into: list[bytes]) -> None:
    async for chunk in source.__aiter__():
        into.append(chunk)


def test_a_prefix_is_migrated_alone_and_does_not_mark_the_bucket(upstream_s3, legacy_bucket, config_file):
    for key in ("in/x", "in/y", "out/z"):
        upstream_s3.put_object(Bucket=legacy_bucket, Key=key, Body=key.encode())
    done = migrate(config_file, f"s3://{legacy_bucket}/in/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x-gw-v" not in upstream_s3.head_object(Bucket=legacy_bucket, Key="out/z")["Metadata"]
    assert read_all(config_file, legacy_bucket, ["in/x", "in/y"]) == {"in/x": b"in/x", "in/y": b"in/y"}
    assert "holds no plaintext" not in done.stdout


@pytest.mark.parametrize("args, message", [
    (["bucket-without-scheme"], "gateway migrate: target 'bucket-without-scheme' must be s3://BUCKET[/PREFIX]"),
    (["s3://"], "gateway migrate: target 's3://' must be s3://BUCKET[/PREFIX]"),
    (["s3://b/.s3gw/x"], "gateway migrate: prefix '.s3gw/x' is reserved by the gateway"),
    (["s3://b", "--concurrency", "0"], "argument --concurrency: must be at least 1"),
    (["s3://no-such-bucket-for-migrate"], "gateway migrate: bucket no-such-bucket-for-migrate does not exist"),
    (["s3://b", "--concurrency", "40"], "gateway migrate: --concurrency 40 needs 3 upstream connections per "
                                        "object; upstream.pool_size is 100"),
])
def test_bad_arguments_exit_2_with_a_clear_message(config_file, args, message):
    done = migrate(config_file, *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_progress_without_a_terminal_is_a_plain_line():
    stream = io.StringIO()
    progress = Progress(2, 3 * MiB, stream)
    progress.advance(MiB)
    progress.advance(2 * MiB)
    progress.close()
    assert stream.getvalue() == "processed 2/2 objects, 3.0/3.0 MiB\n"


async def test_an_object_overwritten_between_its_read_and_its_write_is_not_clobbered(upstream_s3, legacy_bucket,
                                                                                     config_file, monkeypatch):
    """The conditional write itself (moto honours If-Match on PutObject): the overwrite lands after the
    migration's GET, while it reads the tags, so only the upstream's 412 can save the new content."""
    from gateway.objects.reading import StoredObject
    from gateway.tools.migrate import Entry, migrate_object, kms_request
    upstream_s3.put_object(Bucket=legacy_bucket, Key="raced", Body=b"old content")
    etag = upstream_s3.head_object(Bucket=legacy_bucket, Key="raced")["ETag"]
    real_tags = StoredObject.tags

    async def overwrite_then_tags(stored):
        upstream_s3.put_object(Bucket=legacy_bucket, Key="raced", Body=b"new content")
        return await real_tags(stored)
    monkeypatch.setattr(StoredObject, "tags", overwrite_then_tags)
    config = load_config(config_file, _env())
    async with object_store(config) as store:
        outcome = await migrate_object(store, legacy_bucket, Entry("raced", 11, etag, "plaintext"),
                                       kms_request(await store.bucket_encryption.defaults(legacy_bucket), None))
    assert (outcome.status, outcome.reason) == ("changed", "changed meanwhile (the upstream refused the "
                                                           "conditional write); left as the other writer stored it")
    assert upstream_s3.get_object(Bucket=legacy_bucket, Key="raced")["Body"].read() == b"new content"


def test_a_gateway_started_on_the_tools_data_dir_serves_the_migrated_objects_and_refuses_the_tool_meanwhile(upstream_s3, legacy_bucket,
                                                                              config_file):
    from tests.support.clients import s3_client
    from tests.support.process import start_server
    from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
    bodies = {"x": b"", "y/z": os.urandom(70_000)}
    for key, body in bodies.items():
        upstream_s3.put_object(Bucket=legacy_bucket, Key=key, Body=body, Metadata={"kept": key})
    assert migrate(config_file, f"s3://{legacy_bucket}").returncode == 0
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config_file),
                           "--listen", "127.0.0.1:0"], timeout=60)
    try:
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        for key, body in bodies.items():
            got = s3.get_object(Bucket=legacy_bucket, Key=key)
            assert (got["Body"].read(), got["Metadata"]) == (body, {"kept": key})
        listed = s3.list_objects_v2(Bucket=legacy_bucket)["Contents"]
        assert {entry["Key"]: entry["Size"] for entry in listed} == {"x": 0, "y/z": 70_000}
        refused = migrate(config_file, f"s3://{legacy_bucket}")  # the gateway owns the embedded key store
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "\ngateway migrate: the key store in " in refused.stderr
        assert refused.stderr.endswith("; stop the gateway while migrating\n")
    finally:
        server.stop()


def test_ctrl_c_stops_with_exit_1_and_resume_finishes_the_rest(upstream_s3, legacy_bucket, config_file):
    bodies = seed_small(upstream_s3, legacy_bucket, 60)
    checkpoint_dir = config_file.parent / "data" / "migrate"
    process = start_migrate(config_file, f"s3://{legacy_bucket}", "--concurrency", "1")
    while not list(checkpoint_dir.glob("*.checkpoint.json")):
        assert process.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    assert "gateway migrate: interrupted; run again with --resume to continue" in output
    resumed = migrate(config_file, f"s3://{legacy_bucket}", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert report_of(config_file, legacy_bucket)["counts"]["migrated_earlier"] >= 16
    assert read_all(config_file, legacy_bucket, bodies) == bodies


def test_sigkill_at_random_points_then_resume_loses_nothing_and_encrypts_nothing_twice(upstream_s3, legacy_bucket,
                                                                                      config_file):
    """Each run is killed a random moment after its first new checkpoint: in the middle of a batch, in
    the middle of a large object's stream, between a write and its checkpoint (that object is then
    found encrypted by the next run, and counted so)."""
    import random
    chance = random.Random(9)
    bodies = {**seed_small(upstream_s3, legacy_bucket, 20, prefix="0/"), **seed(upstream_s3, legacy_bucket),
              **seed_small(upstream_s3, legacy_bucket, 40)}
    checkpoint_dir = config_file.parent / "data" / "migrate"
    finished = 0
    for _ in range(3):
        process = start_migrate(config_file, f"s3://{legacy_bucket}", "--resume", "--concurrency", "2")
        while process.poll() is None and _checkpointed(checkpoint_dir) <= finished:
            time.sleep(0.005)
        time.sleep(chance.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert _checkpointed(checkpoint_dir) > finished
        finished = _checkpointed(checkpoint_dir)
    assert finished < len(bodies)
    resumed = migrate(config_file, f"s3://{legacy_bucket}", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = report_of(config_file, legacy_bucket)
    assert report["counts"]["migrated_earlier"] == finished
    assert report["marked_no_plaintext"] is True and report["failed"] == [] and report["skipped"] == []
    assert {key: _digest(body) for key, body in read_all(config_file, legacy_bucket, bodies).items()} == \
        {key: _digest(body) for key, body in bodies.items()}


def _checkpointed(directory: Path) -> int:
    """Objects the checkpoint names as done (0 before the first one)."""
    found = list(directory.glob("*.checkpoint.json"))
    return len(json.loads(found[0].read_text())["done"]) if found else 0


def test_a_bucket_that_has_versioning_is_never_marked_as_holding_no_plaintext(upstream_s3, legacy_bucket, config_file):
    """Its older versions (the plaintext each in-place write replaced) are still stored."""
    upstream_s3.put_bucket_versioning(Bucket=legacy_bucket, VersioningConfiguration={"Status": "Enabled"})
    seed_small(upstream_s3, legacy_bucket, 3)
    done = migrate(config_file, f"s3://{legacy_bucket}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is marked so" not in done.stdout
    assert not asyncio.run(_marked(config_file, legacy_bucket))


def test_a_bucket_whose_encryption_configuration_does_not_authenticate_is_a_usage_error(upstream_s3, legacy_bucket,
                                                                                      config_file):
    seed_small(upstream_s3, legacy_bucket, 2)
    upstream_s3.put_object(Bucket=legacy_bucket, Key=".s3gw/bucket-encryption", Body=b'{"v":1}\nforged\n')
    done = migrate(config_file, f"s3://{legacy_bucket}")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        f"bucket {legacy_bucket}: its encryption configuration cannot be read (InternalError: We encountered an "
        "internal error. Please try again.); fix it with PutBucketEncryption through the gateway first")
    assert all("x-gw-v" not in upstream_s3.head_object(Bucket=legacy_bucket, Key=f"k{n:04d}")["Metadata"]
               for n in range(2))
