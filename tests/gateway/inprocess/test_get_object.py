"""GetObject/HeadObject edge cases in-process: Range, partNumber and conditional reads of encrypted objects,
answered in plaintext terms (sizes, Content-Range, the client-visible ETag)."""
from __future__ import annotations

import pytest

from tests.gateway.inprocess.harness import MIB, Gateway

BODY = bytes(range(100))
RANGE_NOT_SATISFIABLE = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRange</Code>'
                         b"<Message>The requested range is not satisfiable</Message>"
                         b"<ActualObjectSize>100</ActualObjectSize><Resource>/%s/k</Resource>"
                         b"<RequestId>%s</RequestId></Error>")


@pytest.fixture
async def stored(gw: Gateway, bucket: str) -> str:
    """``/bucket/k``: 100 bytes, encrypted under the default KMS key."""
    await gw.put(bucket, "k", BODY)
    return f"/{bucket}/k"


@pytest.mark.parametrize("header,first,last", [
    ("bytes=-5", 95, 99),        # suffix
    ("bytes=-500", 0, 99),       # suffix longer than the object: all of it
    ("bytes=90-", 90, 99),       # open-ended
    ("bytes=90-1000", 90, 99),   # last past the end: clamped
    ("bytes=0-0", 0, 0),
    ("bytes=99-99", 99, 99),
])
async def test_satisfiable_ranges_are_206_with_the_plaintext_content_range(gw, stored, header, first, last):
    answer = await gw.send("GET", stored, headers={"Range": header})
    assert answer.status == 206
    assert answer.body == BODY[first:last + 1]
    assert answer.headers["Content-Range"] == f"bytes {first}-{last}/100"
    assert answer.headers["Content-Length"] == str(last - first + 1)


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
async def test_a_range_past_the_end_is_416_with_content_range_of_the_plaintext_size(gw, stored, header):
    answer = await gw.send("GET", stored, headers={"Range": header})
    request_id = answer.headers["x-amz-request-id"]
    assert answer.status == 416
    assert answer.headers["Content-Range"] == "bytes */100"
    assert answer.body == RANGE_NOT_SATISFIABLE % (stored.split("/")[1].encode(), request_id.encode())


async def test_head_with_a_range_past_the_end_is_416_without_a_body(gw, stored):
    answer = await gw.send("HEAD", stored, headers={"Range": "bytes=100-"})
    assert (answer.status, answer.body, answer.headers["Content-Range"]) == (416, b"", "bytes */100")


async def test_any_range_of_an_empty_object_is_416(gw, bucket):
    await gw.put(bucket, "empty", b"")
    answer = await gw.send("GET", f"/{bucket}/empty", headers={"Range": "bytes=0-"})
    assert answer.error() == (416, "InvalidRange")
    assert answer.headers["Content-Range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=-", "bytes=x-y"])
async def test_multiple_reversed_or_malformed_ranges_are_ignored_with_200_and_the_whole_object(gw, stored, header):
    answer = await gw.send("GET", stored, headers={"Range": header})
    assert (answer.status, answer.body, answer.headers["Content-Length"]) == (200, BODY, "100")
    assert "Content-Range" not in answer.headers


async def test_part_number_1_of_a_single_part_object_is_the_whole_object(gw, stored):
    answer = await gw.send("GET", stored, "partNumber=1")
    assert (answer.status, answer.body) == (200, BODY)
    assert "x-amz-mp-parts-count" not in answer.headers


async def test_part_number_2_of_a_single_part_object_is_416_invalid_part_number(gw, stored):
    answer = await gw.send("GET", stored, "partNumber=2")
    assert answer.error() == (416, "InvalidPartNumber")
    assert answer.xml()["Message"] == "The requested partnumber is not satisfiable"


@pytest.mark.parametrize("value", ["0", "10001", "abc", "", "-1"])
async def test_a_part_number_outside_1_to_10000_is_400_invalid_argument(gw, stored, value):
    answer = await gw.send("GET", stored, f"partNumber={value}")
    assert answer.error() == (400, "InvalidArgument")
    assert (answer.xml()["ArgumentName"], answer.xml()["ArgumentValue"]) == ("partNumber", value)


async def test_range_together_with_part_number_is_400_invalid_request(gw, stored):
    answer = await gw.send("GET", stored, "partNumber=1", headers={"Range": "bytes=0-1"})
    assert answer.error() == (400, "InvalidRequest")
    assert answer.xml()["Message"] == "Cannot specify both Range header and partNumber query parameter"


@pytest.fixture
async def two_parts(gw: Gateway, bucket: str) -> tuple[str, list[bytes]]:
    """``/bucket/mp``: a 5 MiB part and a 1000-byte part."""
    parts = [bytes([7]) * (5 * MIB), bytes(range(250)) * 4]
    await gw.multipart_object(bucket, "mp", parts)
    return f"/{bucket}/mp", parts


@pytest.mark.parametrize("number", [1, 2])
async def test_part_number_of_a_multipart_object_is_206_with_the_part_and_the_part_count(gw, two_parts, number):
    path, parts = two_parts
    first = sum(len(p) for p in parts[:number - 1])
    last = first + len(parts[number - 1]) - 1
    answer = await gw.send("GET", path, f"partNumber={number}")
    assert (answer.status, answer.body) == (206, parts[number - 1])
    assert answer.headers["x-amz-mp-parts-count"] == "2"
    assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{5 * MIB + 1000}"


async def test_head_with_part_number_of_a_multipart_object_gives_the_part_size_and_count(gw, two_parts):
    path, _ = two_parts
    answer = await gw.send("HEAD", path, "partNumber=2")
    assert (answer.status, answer.body) == (206, b"")
    assert (answer.headers["Content-Length"], answer.headers["x-amz-mp-parts-count"]) == ("1000", "2")


async def test_part_number_past_the_last_part_of_a_multipart_object_is_416_invalid_part_number(gw, two_parts):
    path, _ = two_parts
    assert (await gw.send("GET", path, "partNumber=3")).error() == (416, "InvalidPartNumber")


async def test_a_range_across_the_part_boundary_of_a_multipart_object_reads_both_parts(gw, two_parts):
    path, parts = two_parts
    answer = await gw.send("GET", path, headers={"Range": f"bytes={5 * MIB - 3}-{5 * MIB + 2}"})
    assert (answer.status, answer.body) == (206, parts[0][-3:] + parts[1][:3])


# Conditions are evaluated by the gateway against the ETag clients see, never the upstream's.

async def test_if_none_match_the_client_etag_is_304_with_the_etag_and_no_body(gw, stored):
    etag = (await gw.send("HEAD", stored)).headers["ETag"]
    answer = await gw.send("GET", stored, headers={"If-None-Match": etag})
    assert (answer.status, answer.body, answer.headers["ETag"]) == (304, b"", etag)


async def test_if_match_another_etag_is_412_naming_the_if_match_condition(gw, stored):
    answer = await gw.send("GET", stored, headers={"If-Match": '"0123456789abcdef0123456789abcdef"'})
    assert answer.error() == (412, "PreconditionFailed")
    assert answer.xml()["Condition"] == "If-Match"


async def test_if_match_the_upstream_ciphertext_etag_is_412(gw, stored, upstream_s3):
    bucket = stored.split("/")[1]
    upstream_etag = upstream_s3.head_object(Bucket=bucket, Key="k")["ETag"]
    assert upstream_etag != (await gw.send("HEAD", stored)).headers["ETag"]
    answer = await gw.send("GET", stored, headers={"If-Match": upstream_etag})
    assert answer.error() == (412, "PreconditionFailed")


async def test_if_match_the_client_etag_serves_the_object(gw, stored):
    etag = (await gw.send("HEAD", stored)).headers["ETag"]
    answer = await gw.send("GET", stored, headers={"If-Match": etag})
    assert (answer.status, answer.body) == (200, BODY)


async def test_if_modified_since_a_later_time_is_304_and_if_unmodified_since_an_earlier_one_412(gw, stored):
    later, earlier = "Fri, 01 Jan 2100 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT"
    assert (await gw.send("GET", stored, headers={"If-Modified-Since": later})).status == 304
    answer = await gw.send("GET", stored, headers={"If-Unmodified-Since": earlier})
    assert answer.error() == (412, "PreconditionFailed")
    assert answer.xml()["Condition"] == "If-Unmodified-Since"


async def test_head_if_match_another_etag_is_412_without_a_body(gw, stored):
    answer = await gw.send("HEAD", stored, headers={"If-Match": '"0123456789abcdef0123456789abcdef"'})
    assert (answer.status, answer.body) == (412, b"")


async def test_keys_whose_encoding_is_not_utf8_are_400_invalid_uri_and_never_stored(gw, bucket):
    """x%FF and x%FE must not both become one key "x\ufffd" upstream, the second overwriting the first."""
    for raw in ("x%FF", "x%FE"):
        answer = await gw.send("PUT", f"/{bucket}/{raw}", body=b"data")
        assert answer.error() == (400, "InvalidURI")
    assert (await gw.send("GET", f"/{bucket}/x%EF%BF%BD")).error() == (404, "NoSuchKey")


async def test_a_legacy_objects_part_is_read_and_headed_as_the_upstream_has_it(gw, upstream_s3):
    """A part of an object the gateway did not encrypt: status, Content-Length and Content-Range as the
    upstream gives them (moto serves only part 1 of single-part objects), its bytes exactly, HEAD with
    no body, both pinned to the version the metadata read saw."""
    import uuid
    bucket = f"legacy-parts-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="old", Body=BODY)
    direct = upstream_s3.head_object(Bucket=bucket, Key="old", PartNumber=1)["ResponseMetadata"]
    got = await gw.send("GET", f"/{bucket}/old", "partNumber=1")
    assert (got.status, got.body, got.headers["Content-Length"]) == (206, BODY, "100")
    assert got.headers["Content-Range"] == "bytes 0-99/100"
    head = await gw.send("HEAD", f"/{bucket}/old", "partNumber=1")
    assert (head.status, head.body, head.headers["Content-Length"]) == (direct["HTTPStatusCode"], b"", "100")
    assert (await gw.send("GET", f"/{bucket}/old", "partNumber=2")).error() == (416, "InvalidRange")


async def test_sse_c_headers_on_an_object_not_stored_under_a_customer_key_are_400_as_on_s3(gw, stored):
    """S3 refuses SSE-C parameters for an object encrypted otherwise; the gateway never ignores a key."""
    import base64
    import hashlib
    key = bytes(range(32))
    headers = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
               "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
               "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    answer = await gw.send("GET", stored, headers=headers)
    assert answer.error() == (400, "InvalidRequest")
    assert answer.xml()["Message"] == "The encryption parameters are not applicable to this object."
