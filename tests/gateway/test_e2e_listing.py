"""Listings through the gateway report plaintext sizes and the ETags HEAD reports."""
from __future__ import annotations

import hashlib
from urllib.parse import unquote

from tests.support.clients import aws

BODIES = {"a.txt": b"alpha" * 100, "b.bin": b"\x00" * 70000}


def _put_all(s3, bucket: str) -> None:
    for key, body in BODIES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def _head_etag(s3, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key)["ETag"]


def test_list_objects_v1_reports_plaintext_sizes_and_head_etags(s3, bucket):
    _put_all(s3, bucket)
    contents = s3.list_objects(Bucket=bucket)["Contents"]
    assert {c["Key"]: c["Size"] for c in contents} == {k: len(v) for k, v in BODIES.items()}
    assert all(c["ETag"] == _head_etag(s3, bucket, c["Key"]) for c in contents)


def test_list_object_versions_reports_plaintext_sizes_and_head_etags(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    _put_all(s3, bucket)
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert {v["Key"]: v["Size"] for v in versions} == {k: len(v) for k, v in BODIES.items()}
    assert all(v["ETag"] == _head_etag(s3, bucket, v["Key"]) for v in versions)


def test_list_objects_v2_url_encoding_round_trips_unusual_keys(s3, bucket):
    key = "dir with space/résumé ünï.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 10)
    response = s3.list_objects_v2(Bucket=bucket, EncodingType="url")
    assert [unquote(c["Key"]) for c in response["Contents"]] == [key]
    assert response["Contents"][0]["Size"] == 10


def test_put_on_unversioned_bucket_has_no_version_id_header(s3, bucket):
    response = s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    assert "x-amz-version-id" not in response["ResponseMetadata"]["HTTPHeaders"]


# --- mixed buckets: legacy plaintext beside encrypted objects (issue 9) ---------------------------

MIB = 1024 * 1024
LEGACY_SIZES = {"empty": 0, "one": 1, "nineteen": 19, "kib": 1024, "just-under-8m": 8 * MIB - 1,
                "just-over-8m": 8 * MIB + 1}
MULTIPART_KEY, MULTIPART_SIZE = "twenty-million", 20_000_000


def _body(key: str, size: int) -> bytes:
    block = hashlib.sha256(key.encode()).digest() * (1 + size // 32)
    return block[:size]


def _seed_legacy(upstream_s3, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Plaintext objects written straight upstream (as before the gateway), one of them in parts."""
    bodies = {prefix + key: _body(key, size) for key, size in LEGACY_SIZES.items()}
    for key, body in bodies.items():
        upstream_s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"owner": "legacy-app"})
    key = prefix + MULTIPART_KEY
    bodies[key] = _body(key, MULTIPART_SIZE)
    upload = upstream_s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, MULTIPART_SIZE, 8 * MIB), 1):
        etag = upstream_s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                                       Body=bodies[key][start:start + 8 * MIB])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    upstream_s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return bodies


def _listed(s3, bucket: str) -> dict[str, tuple[int, str]]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {c["Key"]: (c["Size"], c["ETag"]) for page in pages for c in page.get("Contents", [])}


def _headed(s3, bucket: str, keys) -> dict[str, tuple[int, str]]:
    return {key: (head["ContentLength"], head["ETag"])
            for key in keys for head in [s3.head_object(Bucket=bucket, Key=key)]}


def test_a_mixed_buckets_listing_shows_every_object_as_head_does(s3, upstream_s3, legacy_bucket):
    """Legacy plaintext of every awkward size beside encrypted objects of the same sizes: each listed
    with the size and ETag its reader sees, in V1, V2 and versions listings."""
    bodies = _seed_legacy(upstream_s3, legacy_bucket)
    for key, size in LEGACY_SIZES.items():
        s3.put_object(Bucket=legacy_bucket, Key=f"encrypted/{key}", Body=_body(key, size))
        bodies[f"encrypted/{key}"] = _body(key, size)
    expected = _headed(s3, legacy_bucket, bodies)
    assert {key: size for key, (size, _) in expected.items()} == {key: len(body) for key, body in bodies.items()}
    assert _listed(s3, legacy_bucket) == expected
    v1 = {c["Key"]: (c["Size"], c["ETag"]) for c in s3.list_objects(Bucket=legacy_bucket)["Contents"]}
    assert v1 == expected
    versions = {v["Key"]: (v["Size"], v["ETag"]) for v in s3.list_object_versions(Bucket=legacy_bucket)["Versions"]}
    assert versions == expected


def test_aws_cli_copy_of_legacy_objects_onto_themselves_encrypts_them_byte_for_byte(gateway, upstream_s3,
                                                                                   legacy_bucket, s3, tmp_path):
    """The README's way to encrypt old objects: `aws s3 cp --recursive` of a prefix onto itself, which plans
    its part copies from listed sizes. Every object comes back byte-identical, now encrypted."""
    bodies = _seed_legacy(upstream_s3, legacy_bucket, "old/")
    endpoint = gateway.endpoint(tmp_path)
    code, out, err = aws(endpoint, "s3", "cp", "--recursive", f"s3://{legacy_bucket}/old/",
                         f"s3://{legacy_bucket}/old/", "--sse", "aws:kms")
    assert code == 0, out + err
    for key, body in bodies.items():
        assert s3.get_object(Bucket=legacy_bucket, Key=key)["Body"].read() == body, key
        assert upstream_s3.head_object(Bucket=legacy_bucket, Key=key)["Metadata"].get("x-gw-v") == "1", key
    assert _listed(s3, legacy_bucket) == _headed(s3, legacy_bucket, bodies)


def test_aws_cli_sync_between_legacy_and_encrypted_prefixes_is_byte_identical_both_ways(gateway, upstream_s3,
                                                                                       legacy_bucket, s3, tmp_path):
    """`aws s3 sync` plans from listings in both directions: legacy -> new prefix (encrypting), then back
    into a third prefix; every object of every size arrives whole, and a second sync copies nothing."""
    bodies = _seed_legacy(upstream_s3, legacy_bucket, "legacy/")
    endpoint = gateway.endpoint(tmp_path)
    for source, destination in (("legacy/", "encrypted/"), ("encrypted/", "again/")):
        code, out, err = aws(endpoint, "s3", "sync", f"s3://{legacy_bucket}/{source}",
                             f"s3://{legacy_bucket}/{destination}")
        assert code == 0, out + err
    for key, body in bodies.items():
        for prefix in ("encrypted/", "again/"):
            copied = prefix + key.removeprefix("legacy/")
            assert s3.get_object(Bucket=legacy_bucket, Key=copied)["Body"].read() == body, copied
    code, out, err = aws(endpoint, "s3", "sync", f"s3://{legacy_bucket}/legacy/", f"s3://{legacy_bucket}/encrypted/")
    assert (code, out.strip()) == (0, ""), out + err
