"""Real clients (awscli, s3cmd, rclone) uploading multipart objects through the gateway and reading them back.

awscli switches to multipart at 8 MiB (8 MiB parts), s3cmd at 15 MiB (15 MiB parts), and rclone at its
--s3-upload-cutoff; so the sizes below straddle those thresholds, and the clients' own integrity checks
(awscli's part checksums, s3cmd's MD5 comparison, rclone's Content-MD5 per part) run against the gateway's
encrypted-part ETags and manifest-based reads.
"""
from __future__ import annotations

import hashlib
import os
import time
import random
import re
from pathlib import Path

import pytest

from tests.gateway.both_upstreams import gateway, gateway_tls, upstream_s3  # noqa: F401 (moto and RGW)
from tests.support.clients import CliResult, Endpoint, aws, rclone, s3cmd
from tests.support.secrets import CLI_CUSTOMER_KEY

MiB = 1024 * 1024
SSE_C_KEY = CLI_CUSTOMER_KEY


def _ok(result: CliResult) -> str:
    returncode, stdout, stderr = result
    assert returncode == 0, stdout + stderr
    return stdout


def _random_file(path: Path, size: int) -> bytes:
    """Random (incompressible, never repeating) bytes, so a plaintext slice upstream cannot be a coincidence."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listed_size(endpoint: Endpoint, bucket: str, key: str) -> int:
    """The size ``aws s3 ls`` prints for ``key`` (what a user sees, so it must be the plaintext size)."""
    listing = _ok(aws(endpoint, "s3", "ls", f"s3://{bucket}/{key}"))
    match = re.search(rf"^\S+ \S+\s+(\d+) {re.escape(key)}$", listing, re.MULTILINE)
    assert match, listing
    return int(match.group(1))


def _parts(upstream_s3, bucket: str, key: str) -> int:
    """How many parts the upstream ETag says ``key`` was uploaded in (0: a single PUT), so each test proves
    the client really took the path it is meant to exercise (the gateway shows even single PUTs as "-1")."""
    etag = upstream_s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"][0]["ETag"]
    match = re.fullmatch(r'"[0-9a-f]{32}(?:-(\d+))?"', etag)
    assert match, etag
    return int(match.group(1) or 0)


def _assert_stored_encrypted(upstream_s3, bucket: str, key: str, data: bytes) -> None:
    """Upstream holds a larger object that contains no 4 KiB slice of the plaintext."""
    stored = upstream_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(stored) > len(data)
    if data:
        start = random.randrange(max(1, len(data) - 4096))
        assert data[start:start + 4096] not in stored


def _aws_cp_round_trip(endpoint: Endpoint, bucket: str, tmp_path: Path, size: int,
                       *cp_args: str) -> tuple[bytes, str]:
    """``aws s3 cp`` a random file up and back down; the download must hash like the upload.

    Returns the uploaded bytes and the upload's stderr (where ``--debug`` shows the wire framing)."""
    data = _random_file(tmp_path / "up.bin", size)
    upload = aws(endpoint, "s3", "cp", *cp_args, str(tmp_path / "up.bin"), f"s3://{bucket}/obj")
    _ok(upload)
    _ok(aws(endpoint, "s3", "cp", *cp_args, f"s3://{bucket}/obj", str(tmp_path / "down.bin")))
    assert _sha256(tmp_path / "down.bin") == hashlib.sha256(data).hexdigest()
    return data, upload[2]


@pytest.mark.parametrize(("size", "parts"),
                         [(0, 0), (8 * MiB - 1, 0), (8 * MiB, 1), (8 * MiB + 1, 2), (100 * MiB, 13)],
                         ids=["empty", "8MiB-1", "8MiB", "8MiB+1", "100MiB"])
def test_aws_s3_cp_round_trips_across_the_multipart_threshold_and_stores_only_ciphertext(
        gateway, upstream_s3, bucket, tmp_path, size, parts):
    endpoint = gateway.endpoint(tmp_path)
    data, _ = _aws_cp_round_trip(endpoint, bucket, tmp_path, size)
    assert _parts(upstream_s3, bucket, "obj") == parts
    assert _listed_size(endpoint, bucket, "obj") == size
    _assert_stored_encrypted(upstream_s3, bucket, "obj", data)


def test_aws_s3_cp_multipart_over_https_with_aws_chunked_trailer_parts_round_trips(
        gateway_tls, upstream_s3, bucket, tmp_path):
    endpoint = gateway_tls.endpoint(tmp_path)
    data, upload_log = _aws_cp_round_trip(endpoint, bucket, tmp_path, 20 * MiB + 12345, "--debug")
    assert "STREAMING-UNSIGNED-PAYLOAD-TRAILER" in upload_log
    assert _parts(upstream_s3, bucket, "obj") == 3
    assert _listed_size(endpoint, bucket, "obj") == len(data)
    _assert_stored_encrypted(upstream_s3, bucket, "obj", data)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, so two trees compare byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_aws_s3_sync_round_trips_a_mixed_tree_and_resync_uploads_nothing(gateway, bucket, tmp_path):
    endpoint = gateway.endpoint(tmp_path)
    up = tmp_path / "up"
    layout = {"empty": 0, "a/one": 1, "a/b/hundred-k": 100 * 1024, "a/b/c/nine-m": 9 * MiB,
              "d/seventeen-m": 17 * MiB}
    for name, size in layout.items():
        _random_file(up / name, size)
        # A minute in the past: S3's LastModified has whole seconds, so a file written in the same
        # second as its upload would look newer than the stored object and be synced again.
        past = time.time() - 60
        os.utime(up / name, (past, past))
    first = _ok(aws(endpoint, "s3", "sync", str(up), f"s3://{bucket}/tree"))
    assert first.count("upload:") == len(layout), first
    _ok(aws(endpoint, "s3", "sync", f"s3://{bucket}/tree", str(tmp_path / "down")))
    assert _tree(tmp_path / "down") == _tree(up)
    again = _ok(aws(endpoint, "s3", "sync", str(up), f"s3://{bucket}/tree"))
    assert "upload:" not in again, again


def test_s3cmd_put_and_get_of_a_15mib_part_upload_match_without_md5_warnings(gateway, upstream_s3, bucket, tmp_path):
    endpoint = gateway.endpoint(tmp_path)
    data = _random_file(tmp_path / "up.bin", 32 * MiB)
    put = s3cmd(endpoint, "put", str(tmp_path / "up.bin"), f"s3://{bucket}/big")
    get = s3cmd(endpoint, "get", f"s3://{bucket}/big", str(tmp_path / "down.bin"))
    for result in (put, get):
        _ok(result)
        assert "MD5 Sums don't match" not in result[1] + result[2], result
    assert _parts(upstream_s3, bucket, "big") == 3
    assert (tmp_path / "down.bin").read_bytes() == data


def test_rclone_copy_with_5m_chunks_and_content_md5_parts_round_trips(gateway, upstream_s3, bucket, tmp_path):
    endpoint = gateway.endpoint(tmp_path)
    data = _random_file(tmp_path / "up" / "twelve.bin", 12 * MiB)
    chunking = ("--s3-chunk-size", "5M", "--s3-upload-cutoff", "5M")
    up = rclone(endpoint, "copy", "--dump", "headers", *chunking, str(tmp_path / "up"), f"gw:{bucket}/dir")
    down = rclone(endpoint, "copy", *chunking, f"gw:{bucket}/dir", str(tmp_path / "down"))
    for result in (up, down):
        _ok(result)
        assert "ERROR" not in result[2], result[2]
    assert up[2].count("Content-Md5:") == 3, up[2]
    assert _parts(upstream_s3, bucket, "dir/twelve.bin") == 3
    assert (tmp_path / "down" / "twelve.bin").read_bytes() == data


def test_aws_s3_cp_sse_c_multipart_needs_the_same_key_to_read(gateway, upstream_s3, bucket, tmp_path):
    endpoint = gateway.endpoint(tmp_path)
    sse_c = ("--sse-c", "AES256", "--sse-c-key", SSE_C_KEY)
    _aws_cp_round_trip(endpoint, bucket, tmp_path, 9 * MiB, *sse_c)
    assert _parts(upstream_s3, bucket, "obj") == 2
    no_key = aws(endpoint, "s3", "cp", f"s3://{bucket}/obj", str(tmp_path / "nokey.bin"))
    assert no_key[0] == 1 and "(400) when calling the HeadObject operation: Bad Request" in no_key[2], no_key
    wrong = ("--sse-c", "AES256", "--sse-c-key", SSE_C_KEY[::-1])
    wrong_key = aws(endpoint, "s3", "cp", *wrong, f"s3://{bucket}/obj", str(tmp_path / "wrong.bin"))
    assert wrong_key[0] == 1 and "(403) when calling the HeadObject operation: Forbidden" in wrong_key[2], wrong_key
    assert not (tmp_path / "nokey.bin").exists() and not (tmp_path / "wrong.bin").exists()
