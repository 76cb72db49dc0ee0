"""`S3Client.list_object_versions` (gateway/s3client.py): on moto and Ceph RGW, every version and delete
marker exactly as the upstream's own listing names them, across page boundaries, odd keys decoded; against a
canned upstream, NextKeyMarker read whether it comes URL-encoded (S3) or not (RGW 16), and a marker that does
not advance refused."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.crypto.stream import IntegrityError
from gateway.s3client import DeleteMarkerEntry, S3Client, VersionEntry
from gateway.upstream import Upstream, UpstreamTarget
from tests.gateway.conftest import on_upstream
from tests.support.scripted_upstream import scripted_upstream

KEYS = ["a", "b/1", "c\x01d", "d e+f%", "z"]  # moto ignores encoding-type=url here: no "\x01" there (not XML 1.0)


def keys_on(upstream: str) -> list[str]:
    return KEYS if upstream == "rgw" else [key.replace("\x01", "-") for key in KEYS]


@pytest.fixture
def upstream_s3(upstream_s3, upstream, request):
    """boto3 straight to the upstream of the test: moto's, or RGW's (tests/gateway/both_upstreams.py)."""
    return on_upstream(request, upstream, upstream_s3, "rgw_s3")


@pytest.fixture
async def client(upstream, request) -> AsyncIterator[S3Client]:
    server = request.getfixturevalue("moto" if upstream == "moto" else "rgw")
    link = Upstream(UpstreamTarget(server.url, "us-east-1", server.access_key, server.secret_key))
    await link.start()
    yield S3Client(link)
    await link.close()


@pytest.fixture
def versioned(upstream_s3, upstream):
    """A bucket with an unversioned ("null") version of "a", then versioning on: two more versions of every key,
    then a delete marker over "b/1" and over "d e+f%" (11 versions, 2 delete markers)."""
    bucket = f"versions-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="a", Body=b"before versioning")
    upstream_s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in keys_on(upstream):
        for round_ in range(2):
            upstream_s3.put_object(Bucket=bucket, Key=key, Body=f"{key} {round_}".encode())
    for key in ("b/1", "d e+f%"):
        upstream_s3.delete_object(Bucket=bucket, Key=key)
    return bucket


def upstream_listing(upstream_s3, bucket: str) -> tuple[list[tuple], list[tuple]]:
    """The upstream's own answer, read with boto3 (which pages by itself)."""
    versions, markers = [], []
    for page in upstream_s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        versions += [(v["Key"], v["VersionId"], v["Size"], v["ETag"], v["IsLatest"]) for v in page.get("Versions", [])]
        markers += [(m["Key"], m["VersionId"], m["IsLatest"]) for m in page.get("DeleteMarkers", [])]
    return versions, markers


async def all_pages(client: S3Client, bucket: str, max_keys: int) -> tuple[list[VersionEntry], list[DeleteMarkerEntry], int]:
    versions: list[VersionEntry] = []
    markers: list[DeleteMarkerEntry] = []
    key_marker = version_marker = None
    pages = 0
    while True:
        page = await client.list_object_versions(bucket, key_marker=key_marker, version_id_marker=version_marker,
                                                 max_keys=max_keys)
        pages += 1
        versions += page.versions
        markers += page.delete_markers
        if not page.truncated:
            return versions, markers, pages
        key_marker, version_marker = page.next_key_marker, page.next_version_id_marker


@pytest.mark.parametrize("upstream", ["moto", pytest.param("rgw", marks=pytest.mark.rgw)], indirect=True)
@pytest.mark.parametrize("max_keys", [1, 2, 1000])
async def test_every_version_and_delete_marker_is_listed_once_across_pages_with_keys_decoded(
        client, upstream, upstream_s3, versioned, max_keys):
    versions, markers, pages = await all_pages(client, versioned, max_keys)
    expected_versions, expected_markers = upstream_listing(upstream_s3, versioned)
    assert len(expected_versions) == 11 and len(expected_markers) == 2
    assert sorted((v.key, v.version_id, v.size, v.etag, v.is_latest) for v in versions) == sorted(expected_versions)
    assert sorted((m.key, m.version_id, m.is_latest) for m in markers) == sorted(expected_markers)
    assert pages == (13 if max_keys == 1 else 7 if max_keys == 2 else 1)
    assert {v.key for v in versions} == set(keys_on(upstream))
    assert [v.version_id for v in versions if v.key == "a" and not v.is_latest].count("null") == 1
    assert {v.key for v in versions if v.is_latest} == {"a", keys_on(upstream)[2], "z"}  # "b/1", "d e+f%": delete markers
    assert all(v.last_modified for v in versions)


@pytest.mark.parametrize("upstream", ["moto"], indirect=True)
async def test_a_prefix_lists_only_its_versions(client, versioned):
    page = await client.list_object_versions(versioned, prefix="b/")
    assert ({v.key for v in page.versions}, [m.key for m in page.delete_markers], page.truncated) == (
        {"b/1"}, ["b/1"], False)


# ------------------------------------------------------------------ a canned upstream

def versions_page(next_key: str | None, next_version: str | None, *keys: tuple[str, str], truncated: bool = True,
                  encoding: bool = True) -> bytes:
    entries = "".join(f"<Version><Key>{key}</Key><VersionId>{version}</VersionId><IsLatest>true</IsLatest>"
                      f"<ETag>\"e\"</ETag><Size>1</Size><LastModified>2026-01-01T00:00:00.000Z</LastModified></Version>"
                      for key, version in keys)
    nexts = (f"<NextKeyMarker>{next_key}</NextKeyMarker>" if next_key is not None else "") + (
        f"<NextVersionIdMarker>{next_version}</NextVersionIdMarker>" if next_version is not None else "")
    return (f'<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"{'<EncodingType>url</EncodingType>' if encoding else ''}<IsTruncated>{str(truncated).lower()}"
            f"</IsTruncated>{nexts}{entries}</ListVersionsResult>").encode()


@pytest.fixture
async def canned() -> AsyncIterator:
    """A client of an upstream answering every request with the body ``answer[0]``; ``asked`` the queries."""
    answer: list[bytes] = [b""]
    asked: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        return web.Response(body=answer[0], content_type="application/xml")

    async with scripted_upstream(handle) as link:
        yield S3Client(link), answer, asked


async def test_the_request_asks_for_versions_url_encoded_after_the_marker_pair(canned):
    client, answer, asked = canned
    answer[0] = versions_page(None, None, ("k", "v1"), truncated=False)
    await client.list_object_versions("b", prefix="p/", key_marker="a b", version_id_marker="v0", max_keys=7)
    assert asked == [{"versions": "", "encoding-type": "url", "prefix": "p/", "max-keys": "7", "key-marker": "a b",
                      "version-id-marker": "v0"}]


@pytest.mark.parametrize("next_key", ["d%20e%2Bf%25", "d e+f%"], ids=["S3 encodes it", "RGW 16 does not"])
async def test_next_key_marker_is_the_listed_key_whether_or_not_the_upstream_encoded_it(canned, next_key):
    client, answer, _ = canned
    answer[0] = versions_page(next_key, "v2", ("a", "v1"), ("d%20e%2Bf%25", "v2"))
    page = await client.list_object_versions("b")
    assert ([v.key for v in page.versions], page.next_key_marker, page.next_version_id_marker, page.truncated) == (
        ["a", "d e+f%"], "d e+f%", "v2", True)


async def test_a_marker_rgw_sends_unencoded_around_a_control_character_is_read_not_refused_as_junk_xml(canned):
    """RGW 16 answers ``<NextKeyMarker>c&#x01;d</NextKeyMarker>`` (no XML 1.0 parser reads that) for key "c\x01d"."""
    client, answer, _ = canned
    answer[0] = versions_page("c&#x01;d&amp;", "v2", ("c%01d%26", "v2")).replace(
        b"<IsTruncated>", b"<KeyMarker>c&#x01;d&amp;</KeyMarker><IsTruncated>")
    page = await client.list_object_versions("b", key_marker="c\x01d&", version_id_marker="v1")
    assert ([v.key for v in page.versions], page.next_key_marker, page.next_version_id_marker) == (
        ["c\x01d&"], "c\x01d&", "v2")


async def test_a_truncated_page_whose_markers_do_not_advance_is_refused(canned):
    client, answer, _ = canned
    answer[0] = versions_page("k", "v1", ("k", "v1"))
    with pytest.raises(IntegrityError, match="does not advance"):
        await client.list_object_versions("b", key_marker="k", version_id_marker="v1")
    answer[0] = versions_page(None, None, ("k", "v1"))
    with pytest.raises(IntegrityError, match="does not advance"):
        await client.list_object_versions("b")


async def test_an_answer_that_is_not_a_versions_listing_is_refused(canned):
    client, answer, _ = canned
    answer[0] = b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"
    with pytest.raises(IntegrityError, match="ListBucketResult"):
        await client.list_object_versions("b")
