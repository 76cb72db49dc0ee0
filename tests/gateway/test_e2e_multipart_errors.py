"""Multipart integrity and error paths end to end: boto3 (and hand-signed requests) against the gateway,
boto3 straight to moto to rebuild what the gateway stored.

The tamper tests reassemble a completed 3-part object upstream from byte ranges of its own stored
parts (same key, same metadata, so only the part layout changes). The sealed manifest names each
part's number, size and stream parameters, so the gateway must refuse every such layout: with a
500 InternalError before the body when sizes or the part count disagree with the manifest or the
first part does not open, or by cutting the connection after authentic bytes only.
"""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
import os
import re
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

from gateway.crypto.multipart import PART_OVERHEAD
from tests.gateway.conftest import (GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, Gateway, _start_gateway,
                                    start_gateway_with_remote_kms)
from tests.keyservice.conftest import kms_client, launch
from tests.gateway.test_e2e_multipart import _error, _upload
from tests.gateway.test_e2e_tamper import INTEGRITY_ERROR, read_through_gateway
from tests.support.clients import s3_client, signed_request, upstream_keys
from tests.support.moto import MotoServer
from tests.support.process import Server
from tests.support.secrets import MULTIPART_CUSTOMER_KEY, OTHER_MULTIPART_CUSTOMER_KEY

MiB = 1024 * 1024
PART = 5 * MiB
TAIL = 200_000  # a last part of several 64 KiB segments
MANIFEST_PREFIX = ".s3gw/manifests/"
CUSTOMER_KEY = MULTIPART_CUSTOMER_KEY
OTHER_CUSTOMER_KEY = OTHER_MULTIPART_CUSTOMER_KEY


# --- helpers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredObject:
    """A 3-part object completed through the gateway: its plaintext parts and upstream byte spans."""

    bucket: str
    key: str
    parts: tuple[bytes, ...]

    @property
    def plaintext(self) -> bytes:
        return b"".join(self.parts)

    @property
    def stored_spans(self) -> list[tuple[int, int]]:
        """Inclusive upstream byte span of each stored part (each PART_OVERHEAD longer than its plaintext)."""
        spans, offset = [], 0
        for part in self.parts:
            size = len(part) + PART_OVERHEAD
            spans.append((offset, offset + size - 1))
            offset += size
        return spans


@pytest.fixture
def three_parts(s3, bucket) -> StoredObject:
    parts = (os.urandom(PART), os.urandom(PART), os.urandom(TAIL))
    _upload(s3, bucket, "obj", list(parts))
    return StoredObject(bucket, "obj", parts)


def rebuild_upstream(upstream_s3, bucket: str, key: str, spans: list[tuple[int, int]],
                     metadata_changes: dict[str, str] | None = None) -> None:
    """Replace ``key`` upstream by a new multipart object made of ``spans`` of its current bytes,
    keeping its metadata (so the gateway still finds its keys and manifest tag) bar ``metadata_changes``.

    The spans are copied from a scratch copy, since the new upload replaces the source key."""
    metadata = {**upstream_s3.head_object(Bucket=bucket, Key=key)["Metadata"], **(metadata_changes or {})}
    scratch = f"{key}.scratch"
    upstream_s3.copy_object(Bucket=bucket, Key=scratch, CopySource={"Bucket": bucket, "Key": key})
    upload_id = upstream_s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
    done = []
    for number, (start, end) in enumerate(spans, 1):
        copied = upstream_s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                              CopySource={"Bucket": bucket, "Key": scratch},
                                              CopySourceRange=f"bytes={start}-{end}")
        done.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
    upstream_s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                          MultipartUpload={"Parts": done})
    upstream_s3.delete_object(Bucket=bucket, Key=scratch)


def assert_refused(s3, stored: StoredObject, tampered: bytes, expected: tuple[str, int, str | None]) -> None:
    """The GET ends as ``expected`` and whatever body arrived is an authentic prefix, never ``tampered``."""
    outcome = read_through_gateway(s3, stored.bucket, stored.key)
    assert outcome.summary == expected
    assert outcome.body != tampered
    assert len(outcome.body) < len(stored.plaintext) and stored.plaintext.startswith(outcome.body)


def error_code(response: requests.Response) -> tuple[int, str]:
    """Status and S3 error code of a raw response."""
    match = re.search(r"<Code>([^<]*)</Code>", response.text)
    return response.status_code, match.group(1) if match else ""


def raw_complete(gateway: Gateway, bucket: str, key: str, upload_id: str, body: str) -> requests.Response:
    """A hand-signed CompleteMultipartUpload carrying XML no SDK would produce."""
    url = f"{gateway.url}/{bucket}/{key}?uploadId={quote(upload_id, safe='')}"
    return signed_request("POST", url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, body=body.encode())


def complete_xml(parts: list[tuple[int, str]]) -> str:
    """A Complete body with each ETag exactly as given (already quoted or escaped by the caller)."""
    items = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>" for n, etag in parts)
    return f"<CompleteMultipartUpload>{items}</CompleteMultipartUpload>"


def start_part(s3, bucket: str, key: str, data: bytes, **extra) -> tuple[str, str]:
    """Create an upload and store ``data`` as its part 1; (UploadId, part ETag)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=data, **extra)["ETag"]
    return upload_id, etag


def manifest_key(upstream_s3, bucket: str, key: str) -> str:
    return MANIFEST_PREFIX + upstream_s3.head_object(Bucket=bucket, Key=key)["Metadata"]["x-gw-u"]


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


# --- tampering with the stored parts ----------------------------------------------------------

def test_rebuilding_with_the_original_layout_still_reads_back(s3, upstream_s3, three_parts):
    """The control for the tamper tests: the rebuild itself keeps all the gateway needs, so their
    failures come from the part layout alone."""
    rebuild_upstream(upstream_s3, three_parts.bucket, three_parts.key, three_parts.stored_spans)
    assert s3.get_object(Bucket=three_parts.bucket, Key=three_parts.key)["Body"].read() == three_parts.plaintext


def test_swapped_parts_fail_before_the_body(s3, upstream_s3, three_parts):
    first, second, third = three_parts.stored_spans
    rebuild_upstream(upstream_s3, three_parts.bucket, three_parts.key, [second, first, third])
    p1, p2, p3 = three_parts.parts
    assert_refused(s3, three_parts, p2 + p1 + p3, INTEGRITY_ERROR)


def test_dropped_middle_part_fails_before_the_body(s3, upstream_s3, three_parts):
    first, _, third = three_parts.stored_spans
    rebuild_upstream(upstream_s3, three_parts.bucket, three_parts.key, [first, third])
    p1, _, p3 = three_parts.parts
    assert_refused(s3, three_parts, p1 + p3, INTEGRITY_ERROR)


def test_duplicated_part_is_cut_off_after_the_authentic_first_part(s3, upstream_s3, three_parts):
    """Sizes and part count still match the manifest, so the answer starts; the second part's
    header is part 1's, which is not the stream the manifest pins, so the body stops there."""
    first, _, third = three_parts.stored_spans
    rebuild_upstream(upstream_s3, three_parts.bucket, three_parts.key, [first, first, third])
    p1, _, p3 = three_parts.parts
    outcome = read_through_gateway(s3, three_parts.bucket, three_parts.key)
    assert outcome.summary == ("aborted", 200, None)
    assert len(outcome.body) <= PART and p1.startswith(outcome.body)
    assert outcome.body != p1 + p1 + p3


def test_truncated_last_part_fails_before_the_body(s3, upstream_s3, three_parts):
    first, second, (start, _) = three_parts.stored_spans
    rebuild_upstream(upstream_s3, three_parts.bucket, three_parts.key, [first, second, (start, start + TAIL // 2)])
    p1, p2, p3 = three_parts.parts
    assert_refused(s3, three_parts, p1 + p2 + p3[:TAIL // 2], INTEGRITY_ERROR)


@pytest.mark.parametrize("start, end", [(PART, PART + 99), (PART + 300_000, PART + 400_000), (0, 99)],
                         ids=["second-part-head", "second-part-middle", "first-part-head"])
def test_ranged_get_inside_a_swapped_part_fails(s3, upstream_s3, three_parts, start, end):
    first, second, third = three_parts.stored_spans
    rebuild_upstream(upstream_s3, three_parts.bucket, three_parts.key, [second, first, third])
    get = lambda: s3.get_object(Bucket=three_parts.bucket, Key=three_parts.key, Range=f"bytes={start}-{end}")
    assert _error(get) == (500, "InternalError")


# --- gateways of their own, sharing a gateway secret and a key service ------------------------

@dataclass
class GatewayPair:
    """Two gateway processes as README's several-gateways set-up has them: one data dir (one gateway
    secret), one key service (`keyservice serve`, reached over the KMS API)."""

    first: Server
    second: Server

    def clients(self) -> tuple:
        return tuple(s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
                     for server in (self.first, self.second))


def start_sharing(moto: MotoServer, workdir: Path) -> Server:
    """A gateway with its embedded key service on ``workdir``'s data dir (``_start_gateway`` derives it)."""
    return _start_gateway(moto, workdir, tls=None)


@pytest.fixture(scope="module")
def gateway_pair(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayPair]:
    """Started one after the other: the first creates the secret the second then reads."""
    workdir = tmp_path_factory.mktemp("gateway-pair")
    (workdir / "keyservice").mkdir()
    keyservice = launch(workdir / "keyservice")
    try:
        key_arn = kms_client(keyservice.url).create_key()["KeyMetadata"]["Arn"]
        first = start_gateway_with_remote_kms(moto, workdir, keyservice.url, key_arn, {})
        try:
            second = start_gateway_with_remote_kms(moto, workdir, keyservice.url, key_arn, {})
        except BaseException:
            first.stop()
            raise
        yield GatewayPair(first, second)
        second.stop()
        first.stop()
    finally:
        keyservice.server.stop()


def new_bucket(s3) -> str:
    name = f"e2e-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def test_deleted_manifest_fails_get_but_head_still_reports_the_size(gateway_pair, upstream_s3):
    """Read through the second gateway, which never cached the manifest the first one wrote."""
    writer, reader = gateway_pair.clients()
    bucket = new_bucket(writer)
    parts = [os.urandom(PART), os.urandom(TAIL)]
    _upload(writer, bucket, "obj", parts)
    upstream_s3.delete_object(Bucket=bucket, Key=manifest_key(upstream_s3, bucket, "obj"))
    assert _error(lambda: reader.get_object(Bucket=bucket, Key="obj")) == (500, "InternalError")
    assert reader.head_object(Bucket=bucket, Key="obj")["ContentLength"] == PART + TAIL


def test_upload_alternating_between_two_live_gateways_reads_back_through_either(gateway_pair):
    a, b = gateway_pair.clients()
    bucket = new_bucket(a)
    parts = [os.urandom(PART), os.urandom(TAIL)]
    upload_id = a.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    done = []
    for number, (client, data) in enumerate(zip((b, a), parts), 1):
        etag = client.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
        done.append({"PartNumber": number, "ETag": etag})
    b.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": done})
    for client in (a, b):
        assert client.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"".join(parts)


def test_object_uploaded_before_a_restart_reads_back_after_it(moto, tmp_path):
    workdir = tmp_path / "gw"
    parts = [os.urandom(PART), os.urandom(TAIL)]
    before = start_sharing(moto, workdir)
    try:
        client = s3_client(before.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = new_bucket(client)
        _upload(client, bucket, "obj", parts)
    finally:
        before.stop()
    after = start_sharing(moto, workdir)
    try:
        client = s3_client(after.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        assert client.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"".join(parts)
    finally:
        after.stop()


# --- CompleteMultipartUpload ------------------------------------------------------------------

def _change_one_hex_digit(etag: str) -> str:
    """The part ETag with its first (upstream MD5) hex digit changed."""
    bare = etag.strip('"')
    return f'"{"0" if bare[0] != "0" else "1"}{bare[1:]}"'


def test_complete_with_an_altered_etag_is_invalid_part(s3, bucket):
    upload_id, etag = start_part(s3, bucket, "obj", b"data")
    parts = [{"PartNumber": 1, "ETag": _change_one_hex_digit(etag)}]
    complete = lambda: s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id,
                                                    MultipartUpload={"Parts": parts})
    assert _error(complete) == (400, "InvalidPart")


def test_complete_with_parts_out_of_order_is_invalid_part_order(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=n,
                                                     Body=b"x" * n)["ETag"]} for n in (1, 2)]
    complete = lambda: s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id,
                                                    MultipartUpload={"Parts": done[::-1]})
    assert _error(complete) == (400, "InvalidPartOrder")


@pytest.mark.parametrize("body", ["<CompleteMultipartUpload></CompleteMultipartUpload>", "<Complete<<garbage",
                                  ""], ids=["no-parts", "garbage", "empty-body"])
def test_complete_with_no_parts_or_garbage_is_malformed_xml(s3, gateway, bucket, body):
    upload_id, _ = start_part(s3, bucket, "obj", b"data")
    assert error_code(raw_complete(gateway, bucket, "obj", upload_id, body)) == (400, "MalformedXML")


@pytest.mark.parametrize("form", ["&quot;{}&quot;", "&#34;{}&#34;", "{}"], ids=["quot", "numeric", "unquoted"])
def test_complete_accepts_escaped_and_unquoted_etags(s3, gateway, bucket, form):
    data = os.urandom(1000)
    upload_id, etag = start_part(s3, bucket, "obj", data)
    xml = complete_xml([(1, form.format(etag.strip('"')))])
    assert raw_complete(gateway, bucket, "obj", upload_id, xml).status_code == 200
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data


def test_parts_numbered_with_a_gap_above_one_read_back(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    parts = {2: os.urandom(PART), 5: os.urandom(TAIL)}
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=n,
                                                     Body=data)["ETag"]} for n, data in parts.items()]
    s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": done})
    got = s3.get_object(Bucket=bucket, Key="obj")
    assert got["Body"].read() == parts[2] + parts[5]
    assert s3.get_object(Bucket=bucket, Key="obj", PartNumber=2)["Body"].read() == parts[5]


def test_complete_checks_the_crc32_the_part_was_uploaded_with(s3, bucket):
    data = os.urandom(1000)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj", ChecksumAlgorithm="CRC32")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=1, Body=data,
                          ChecksumAlgorithm="CRC32")
    assert part["ChecksumCRC32"] == crc32_b64(data)

    def complete(crc: str) -> dict:
        parts = [{"PartNumber": 1, "ETag": part["ETag"], "ChecksumCRC32": crc}]
        return s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id,
                                            MultipartUpload={"Parts": parts})

    assert _error(lambda: complete(crc32_b64(data + b"!"))) == (400, "InvalidPart")
    complete(part["ChecksumCRC32"])
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data


def test_complete_refuses_a_checksum_it_cannot_verify_for_a_bare_upstream_etag(s3, bucket):
    upload_id, _ = start_part(s3, bucket, "obj", b"data", ChecksumAlgorithm="CRC32")
    bare = s3.list_parts(Bucket=bucket, Key="obj", UploadId=upload_id)["Parts"][0]["ETag"]
    parts = [{"PartNumber": 1, "ETag": bare, "ChecksumCRC32": crc32_b64(b"other")}]
    complete = lambda: s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id,
                                                    MultipartUpload={"Parts": parts})
    assert _error(complete) == (400, "InvalidPart")


def test_a_cached_manifest_never_serves_another_object_that_names_its_tag(s3, upstream_s3, bucket, three_parts):
    """The tag in the metadata is not authenticated: an object rebuilt upstream from its first two parts and
    pointed at another object's (cached, unpinned) two-part manifest must not be served truncated."""
    other = [os.urandom(PART), os.urandom(PART)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="other")["UploadId"]
    for number, data in enumerate(other, 1):
        s3.upload_part(Bucket=bucket, Key="other", UploadId=upload_id, PartNumber=number, Body=data)
    bare = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
            for p in s3.list_parts(Bucket=bucket, Key="other", UploadId=upload_id)["Parts"]]
    s3.complete_multipart_upload(Bucket=bucket, Key="other", UploadId=upload_id, MultipartUpload={"Parts": bare})
    assert s3.get_object(Bucket=bucket, Key="other")["Body"].read() == b"".join(other)  # its manifest is cached
    other_tag = upstream_s3.head_object(Bucket=bucket, Key="other")["Metadata"]["x-gw-u"]
    rebuild_upstream(upstream_s3, bucket, "obj", three_parts.stored_spans[:2], {"x-gw-u": other_tag})
    assert_refused(s3, three_parts, b"".join(three_parts.parts[:2]), INTEGRITY_ERROR)


def test_concurrent_completes_of_one_upload_leave_its_manifest_in_place(s3, upstream_s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=n,
                                                      Body=data)["ETag"]}
             for n, data in ((1, os.urandom(PART)), (2, b"tail"))]

    def complete() -> str:
        try:
            s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": parts})
            return "ok"
        except ClientError as err:
            return err.response["Error"]["Code"]

    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: complete(), range(3)))
    assert "ok" in outcomes
    stored = upstream_s3.list_objects_v2(Bucket=bucket, Prefix=MANIFEST_PREFIX)["Contents"]
    assert [entry["Key"] for entry in stored] == [manifest_key(upstream_s3, bucket, "obj")]


# --- UploadPart -------------------------------------------------------------------------------

def test_non_last_part_one_byte_under_5_mib_is_entity_too_small(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=n,
                                                     Body=data)["ETag"]}
            for n, data in ((1, os.urandom(PART - 1)), (2, b"tail"))]
    complete = lambda: s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id,
                                                    MultipartUpload={"Parts": done})
    assert _error(complete) == (400, "EntityTooSmall")


@pytest.mark.parametrize("number", [0, 10001])
def test_upload_part_number_out_of_range_is_invalid_argument(s3, bucket, number):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    upload = lambda: s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=number, Body=b"x")
    assert _error(upload) == (400, "InvalidArgument")


@pytest.mark.parametrize("number", ["%C2%B2", "1.0", "x"])
def test_upload_part_number_that_is_not_ascii_digits_is_invalid_argument(s3, gateway, bucket, number):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    url = f"{gateway.url}/{bucket}/obj?partNumber={number}&uploadId={quote(upload_id, safe='')}"
    response = signed_request("PUT", url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, body=b"x")
    assert error_code(response) == (400, "InvalidArgument")


def _forge_mac(upload_id: str) -> str:
    """The UploadId with the first character of its MAC field changed (the last one may carry only
    base64 padding bits)."""
    prefix, payload, mac, upstream_id = upload_id.split(".", 3)
    return ".".join([prefix, payload, ("A" if mac[0] != "A" else "B") + mac[1:], upstream_id])


def test_upload_part_with_a_forged_upload_id_is_no_such_upload(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    upload = lambda: s3.upload_part(Bucket=bucket, Key="obj", UploadId=_forge_mac(upload_id), PartNumber=1,
                                    Body=b"x")
    assert _error(upload) == (404, "NoSuchUpload")


# --- Abort, ListParts, the reserved prefix ----------------------------------------------------

def test_abort_leaves_nothing_behind(s3, upstream_s3, bucket):
    upload_id, _ = start_part(s3, bucket, "obj", b"data")
    s3.abort_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id)
    assert _error(lambda: s3.head_object(Bucket=bucket, Key="obj")) == (404, "404")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert upstream_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert upstream_keys(upstream_s3, bucket, reserved=True) == [".s3gw/bucket-state"]  # no manifest


def test_list_parts_reports_plaintext_sizes_and_the_client_upload_id(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    for number, size in ((1, PART), (2, TAIL)):
        s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=number, Body=os.urandom(size))
    listed = s3.list_parts(Bucket=bucket, Key="obj", UploadId=upload_id)
    assert listed["UploadId"] == upload_id
    assert [(p["PartNumber"], p["Size"]) for p in listed["Parts"]] == [(1, PART), (2, TAIL)]


def test_reserved_prefix_is_forbidden_and_never_listed(s3, upstream_s3, bucket):
    _upload(s3, bucket, "dir/obj", [os.urandom(1000)])
    reserved = manifest_key(upstream_s3, bucket, "dir/obj")
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: s3.get_object(Bucket=bucket, Key=reserved),
        "put": lambda: s3.put_object(Bucket=bucket, Key=reserved, Body=b"x"),
        "delete": lambda: s3.delete_object(Bucket=bucket, Key=reserved),
    }
    assert {name: _error(call) for name, call in calls.items()} == dict.fromkeys(calls, (403, "AccessDenied"))
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/obj"]
    by_folder = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert "Contents" not in by_folder and by_folder["CommonPrefixes"] == [{"Prefix": "dir/"}]
    assert s3.list_objects_v2(Bucket=bucket, Prefix=".s3gw/").get("Contents", []) == []
    assert upstream_s3.head_object(Bucket=bucket, Key=reserved)["ContentLength"] > 0


# --- SSE-C ------------------------------------------------------------------------------------

def _ssec(key: bytes) -> dict[str, object]:
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def test_ssec_multipart_round_trips_and_needs_the_same_key_on_every_part(s3, bucket):
    parts = [os.urandom(PART), os.urandom(TAIL)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="obj", **_ssec(CUSTOMER_KEY))["UploadId"]
    put = lambda data, **sse: s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=2,
                                             Body=data, **sse)
    assert _error(lambda: put(parts[1])) == (400, "InvalidRequest")
    assert _error(lambda: put(parts[1], **_ssec(OTHER_CUSTOMER_KEY))) == (400, "InvalidRequest")
    done = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="obj", UploadId=upload_id, PartNumber=n,
                                                     Body=data, **_ssec(CUSTOMER_KEY))["ETag"]}
            for n, data in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key="obj", UploadId=upload_id, MultipartUpload={"Parts": done},
                                 **_ssec(CUSTOMER_KEY))
    got = s3.get_object(Bucket=bucket, Key="obj", **_ssec(CUSTOMER_KEY))
    assert got["Body"].read() == b"".join(parts)
    assert got["SSECustomerAlgorithm"] == "AES256"
