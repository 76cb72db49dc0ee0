"""CopyObject and UploadPartCopy edge cases in-process: source ranges, the metadata and tagging
directives, the pointless self-copy, copy conditions and a missing source."""
from __future__ import annotations

import uuid

import pytest

from tests.gateway.inprocess.harness import Gateway

BODY = bytes(range(100))
SELF_COPY_MESSAGE = ("This copy request is illegal because it is trying to copy an object to itself without "
                     "changing the object's metadata, storage class, website redirect location or encryption "
                     "attributes.")


@pytest.fixture
async def source(gw: Gateway, bucket: str) -> str:
    """``bucket/src``: 100 bytes with user metadata, a Content-Type and a tag."""
    await gw.put(bucket, "src", BODY, {"x-amz-meta-colour": "blue", "Content-Type": "text/plain",
                                       "x-amz-tagging": "team=red"})
    return f"{bucket}/src"


async def _copy(gw: Gateway, bucket: str, key: str, source: str, **headers: str):
    return await gw.send("PUT", f"/{bucket}/{key}", headers={"x-amz-copy-source": source, **headers})


async def _tags(gw: Gateway, bucket: str, key: str) -> dict[str, str]:
    answer = await gw.send("GET", f"/{bucket}/{key}", "tagging")
    assert answer.status == 200, answer.body
    return {tag.findtext("{*}Key"): tag.findtext("{*}Value") for tag in answer.all("Tag")}


async def test_copy_by_default_takes_the_source_metadata_and_content_type_not_the_requests(gw, bucket, source):
    answer = await _copy(gw, bucket, "dst", source, **{"x-amz-meta-colour": "green", "Content-Type": "image/png"})
    assert answer.status == 200 and set(answer.xml()) == {"LastModified", "ETag"}
    copied = await gw.send("GET", f"/{bucket}/dst")
    assert copied.body == BODY
    assert (copied.headers["x-amz-meta-colour"], copied.headers["Content-Type"]) == ("blue", "text/plain")


async def test_metadata_directive_replace_takes_the_requests_metadata_only(gw, bucket, source):
    answer = await _copy(gw, bucket, "dst", source, **{"x-amz-metadata-directive": "REPLACE",
                                                       "x-amz-meta-size": "large"})
    assert answer.status == 200, answer.body
    copied = await gw.send("HEAD", f"/{bucket}/dst")
    assert copied.headers["x-amz-meta-size"] == "large"
    assert "x-amz-meta-colour" not in copied.headers


@pytest.mark.parametrize("name", ["x-amz-metadata-directive", "x-amz-tagging-directive"])
async def test_an_unknown_directive_is_400_invalid_argument_naming_it(gw, bucket, source, name):
    answer = await _copy(gw, bucket, "dst", source, **{name: "MERGE"})
    assert answer.error() == (400, "InvalidArgument")
    assert (answer.xml()["ArgumentName"], answer.xml()["ArgumentValue"]) == (name, "MERGE")


async def test_tags_are_copied_by_default_and_replaced_with_tagging_directive_replace(gw, bucket, source):
    assert (await _copy(gw, bucket, "kept", source, **{"x-amz-tagging": "ignored=yes"})).status == 200
    assert await _tags(gw, bucket, "kept") == {"team": "red"}
    replaced = await _copy(gw, bucket, "replaced", source,
                           **{"x-amz-tagging-directive": "REPLACE", "x-amz-tagging": "team=blue"})
    assert replaced.status == 200, replaced.body
    assert await _tags(gw, bucket, "replaced") == {"team": "blue"}


async def test_copying_an_object_onto_itself_without_changes_is_400_invalid_request(gw, bucket, source):
    answer = await _copy(gw, bucket, "src", source)
    assert answer.error() == (400, "InvalidRequest")
    assert answer.xml()["Message"] == SELF_COPY_MESSAGE


async def test_copying_an_object_onto_itself_with_metadata_replaced_is_allowed(gw, bucket, source):
    answer = await _copy(gw, bucket, "src", source, **{"x-amz-metadata-directive": "REPLACE",
                                                       "x-amz-meta-colour": "red"})
    assert answer.status == 200, answer.body
    copied = await gw.send("GET", f"/{bucket}/src")
    assert (copied.body, copied.headers["x-amz-meta-colour"]) == (BODY, "red")


async def test_a_failed_copy_source_condition_is_412_even_for_if_none_match(gw, bucket, source):
    etag = (await gw.send("HEAD", f"/{source}")).headers["ETag"]
    answer = await _copy(gw, bucket, "dst", source, **{"x-amz-copy-source-if-none-match": etag})
    assert answer.error() == (412, "PreconditionFailed")
    answer = await _copy(gw, bucket, "dst", source, **{"x-amz-copy-source-if-match": etag})
    assert answer.status == 200, answer.body


async def test_a_missing_copy_source_is_404_no_such_key(gw, bucket):
    answer = await _copy(gw, bucket, "dst", f"{bucket}/absent")
    assert answer.error() == (404, "NoSuchKey")
    assert answer.xml()["Message"] == "The specified copy source does not exist."


async def test_a_copy_source_without_a_key_is_400_invalid_argument(gw, bucket):
    answer = await _copy(gw, bucket, "dst", bucket)
    assert answer.error() == (400, "InvalidArgument")
    assert answer.xml()["ArgumentName"] == "x-amz-copy-source"


async def test_upload_part_copy_with_a_source_range_copies_those_plaintext_bytes(gw, bucket, source):
    upload_id = await gw.create_upload(bucket, "dst")
    answer = await gw.send("PUT", f"/{bucket}/dst", f"partNumber=1&uploadId={upload_id}",
                           headers={"x-amz-copy-source": source, "x-amz-copy-source-range": "bytes=10-19"})
    assert answer.status == 200, answer.body
    etag = answer.xml()["ETag"]
    assert (await gw.complete(bucket, "dst", upload_id, [(1, etag)])).status == 200
    assert (await gw.send("GET", f"/{bucket}/dst")).body == BODY[10:20]


@pytest.mark.parametrize("value,message", [
    ("bytes=5-2", "Range specified is not valid for source object of size: 100"),
    ("bytes=0-100", "Range specified is not valid for source object of size: 100"),
    ("bytes=100-100", "Range specified is not valid for source object of size: 100"),
    ("0-10", "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are "
             "the zero-based offsets of the first and last bytes to copy"),
    ("bytes=-10", "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last "
                  "are the zero-based offsets of the first and last bytes to copy"),
    ("bytes=10-", "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last "
                  "are the zero-based offsets of the first and last bytes to copy"),
])
async def test_an_invalid_copy_source_range_is_400_invalid_argument(gw, bucket, source, value, message):
    upload_id = await gw.create_upload(bucket, "dst")
    answer = await gw.send("PUT", f"/{bucket}/dst", f"partNumber=1&uploadId={upload_id}",
                           headers={"x-amz-copy-source": source, "x-amz-copy-source-range": value})
    assert answer.error() == (400, "InvalidArgument")
    assert answer.xml()["Message"] == message
    assert (answer.xml()["ArgumentName"], answer.xml()["ArgumentValue"]) == ("x-amz-copy-source-range", value)


async def test_a_forwarded_upload_part_copy_is_pinned_to_the_source_version_that_was_checked(
        moto, upstream_s3, tmp_path, clean_environment):
    """UploadPartCopy into a pass-through upload is left to the upstream, after the gateway checked the
    source (a legacy object may be read). An encrypted object put in its place in between must not be
    copied as if it were plaintext: the forwarded copy names the checked version's ETag in
    x-amz-copy-source-if-match, which S3 and Ceph answer with 412 when it changed (moto ignores it, so
    this test proves the pin is sent, on the wire, through the fault proxy)."""
    from dataclasses import replace

    from gateway.app import create_app
    from gateway.config import BucketPolicy
    from tests.gateway.inprocess.harness import gateway_config, inprocess, moto_upstream
    from tests.support.faultproxy import FaultProxy

    source_bucket, plain_bucket = (f"pin-{uuid.uuid4().hex[:12]}" for _ in range(2))
    for name in (source_bucket, plain_bucket):
        upstream_s3.create_bucket(Bucket=name)
    etag = upstream_s3.put_object(Bucket=source_bucket, Key="k", Body=b"legacy plaintext")["ETag"]
    proxy = FaultProxy("127.0.0.1", int(moto.url.rsplit(":", 1)[1])).start()
    pinned: list[bool] = []
    try:
        config = gateway_config(replace(moto_upstream(moto), url=proxy.url), tmp_path / "data")
        config = replace(config, buckets={plain_bucket: BucketPolicy("passthrough")})
        async with inprocess(create_app(config)) as gw:
            upload_id = await gw.create_upload(plain_bucket, "dst")
            proxy.before(f"x-amz-copy-source-if-match: {etag}".encode(), lambda: pinned.append(True))
            answer = await gw.send("PUT", f"/{plain_bucket}/dst", f"partNumber=1&uploadId={upload_id}",
                                   headers={"x-amz-copy-source": f"{source_bucket}/k"})
            assert answer.status == 200, answer.body
    finally:
        proxy.stop()
    assert pinned == [True]
