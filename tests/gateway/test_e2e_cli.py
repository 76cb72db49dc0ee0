"""Real command-line clients (awscli, s3cmd, rclone) against the gateway, over http and https.

Over https botocore uploads aws-chunked STREAMING-UNSIGNED-PAYLOAD-TRAILER bodies with a crc32
trailer; over http it sends a hex sha256 payload hash and an x-amz-checksum-crc32 header, so
running each case on both fixtures covers both upload framings.
"""
from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

import pytest

from tests.gateway.both_upstreams import gateway, gateway_tls, upstream_s3  # noqa: F401 (moto and RGW)
from tests.support.clients import Endpoint, aws, rclone, s3cmd

SIZES = {"empty": 0, "small": 1000, "three-segments": 2 * 65536 + 1000}
BIG = 5 * 1024 * 1024


@pytest.fixture(params=["http", "https"])
def endpoint(request, tmp_path, upstream) -> Endpoint:
    gateway = request.getfixturevalue("gateway" if request.param == "http" else "gateway_tls")
    return gateway.endpoint(tmp_path)


def _sizes(endpoint: Endpoint) -> dict[str, int]:
    """The 5 MiB file goes once per client: over https, the aws-chunked path."""
    return {**SIZES, "big": BIG} if endpoint.https else SIZES


def _write_files(directory: Path, sizes: dict[str, int]) -> dict[str, bytes]:
    directory.mkdir()
    contents = {name: os.urandom(size) for name, size in sizes.items()}
    for name, data in contents.items():
        (directory / name).write_bytes(data)
    return contents


def _ok(result: tuple[int, str, str]) -> str:
    returncode, stdout, stderr = result
    assert returncode == 0, stderr
    return stdout


def test_aws_s3_cp_uploads_and_downloads_identical_bytes_in_the_schemes_framing(
        endpoint, bucket, tmp_path):
    contents = _write_files(tmp_path / "up", _sizes(endpoint))
    upload = aws(endpoint, "--debug", "s3", "cp", "--recursive", str(tmp_path / "up"),
                 f"s3://{bucket}/")
    _ok(upload)
    assert ("STREAMING-UNSIGNED-PAYLOAD-TRAILER" in upload[2]) == endpoint.https
    _ok(aws(endpoint, "s3", "cp", "--recursive", f"s3://{bucket}/", str(tmp_path / "down")))
    for name, data in contents.items():
        assert (tmp_path / "down" / name).read_bytes() == data, name


def test_aws_s3_ls_shows_plaintext_sizes(endpoint, bucket, tmp_path):
    contents = _write_files(tmp_path / "up", SIZES)
    _ok(aws(endpoint, "s3", "cp", "--recursive", str(tmp_path / "up"), f"s3://{bucket}/"))
    listing = _ok(aws(endpoint, "s3", "ls", f"s3://{bucket}/"))
    sizes = {m.group(2): int(m.group(1))
             for m in re.finditer(r"^\S+ \S+\s+(\d+) (\S+)$", listing, re.MULTILINE)}
    assert sizes == {name: len(data) for name, data in contents.items()}


def test_aws_s3_rm_deletes_the_object(endpoint, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="doomed", Body=b"bye")
    assert _ok(aws(endpoint, "s3", "rm", f"s3://{bucket}/doomed")).startswith("delete:")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_aws_s3_presign_url_fetches_the_plaintext(gateway, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="shared", Body=b"presigned plaintext")
    url = _ok(aws(gateway.endpoint(tmp_path), "s3", "presign", f"s3://{bucket}/shared")).strip()
    assert "Signature=" in url and "AWSAccessKeyId=" in url
    with urllib.request.urlopen(url, timeout=30) as response:
        assert (response.status, response.read()) == (200, b"presigned plaintext")


def test_s3cmd_put_and_get_round_trip_without_md5_warnings(endpoint, bucket, tmp_path):
    contents = _write_files(tmp_path / "up", _sizes(endpoint))
    (tmp_path / "down").mkdir()
    for name, data in contents.items():
        _, _, put_err = s3cmd(endpoint, "put", str(tmp_path / "up" / name), f"s3://{bucket}/{name}")
        result = s3cmd(endpoint, "get", f"s3://{bucket}/{name}", str(tmp_path / "down" / name))
        _ok(result)
        for stderr in (put_err, result[2]):
            assert "WARNING" not in stderr and "MD5" not in stderr, stderr
        assert (tmp_path / "down" / name).read_bytes() == data, name


def test_rclone_copy_up_and_down_without_retries_or_hash_errors(endpoint, bucket, tmp_path):
    contents = _write_files(tmp_path / "up", _sizes(endpoint))
    up = rclone(endpoint, "copy", str(tmp_path / "up"), f"gw:{bucket}/dir")
    down = rclone(endpoint, "copy", f"gw:{bucket}/dir", str(tmp_path / "down"))
    for result in (up, down):
        _ok(result)
        assert "ERROR" not in result[2] and "Attempt" not in result[2], result[2]
        assert "corrupted" not in result[2] and "hash differ" not in result[2], result[2]
    for name, data in contents.items():
        assert (tmp_path / "down" / name).read_bytes() == data, name
