"""Listings in-process: exact for legacy and encrypted objects, and what finding out costs in requests."""
from __future__ import annotations

import uuid

from gateway.app import GATEWAY_KEY
from gateway.crypto.stream import ciphertext_size
from tests.gateway.inprocess.harness import Gateway


def _terms(gw: Gateway):
    return gw.client.server.app[GATEWAY_KEY].objects.listing


async def _listed(gw: Gateway, bucket: str) -> dict[str, tuple[int, str]]:
    answer = await gw.send("GET", f"/{bucket}", "list-type=2")
    assert answer.status == 200, answer.body
    return {c.findtext("{*}Key"): (int(c.findtext("{*}Size")), c.findtext("{*}ETag")) for c in answer.all("Contents")}


async def test_a_bucket_made_through_the_gateway_is_listed_without_a_request_per_object(gw, bucket):
    """It holds no plaintext (its bucket-state record says so): every entry is shown from the listing alone."""
    for index in range(5):
        await gw.put(bucket, f"k{index}", b"x" * (1000 * index))
    before = _terms(gw).heads
    assert {key: size for key, (size, _) in (await _listed(gw, bucket)).items()} == {
        f"k{index}": 1000 * index for index in range(5)}
    assert _terms(gw).heads == before


async def test_a_mixed_bucket_costs_one_head_per_unknown_object_once(gw, upstream_s3):
    """Legacy objects whose stored size could be a ciphertext's are looked up (HEAD) once; a repeated
    listing costs nothing; a size no ciphertext has needs no lookup."""
    bucket = f"mixed-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    looks_encrypted = ciphertext_size(1000)  # a legacy object of exactly a ciphertext's size
    upstream_s3.put_object(Bucket=bucket, Key="legacy", Body=b"p" * looks_encrypted)
    upstream_s3.put_object(Bucket=bucket, Key="tiny", Body=b"12345")  # no ciphertext is 5 bytes
    await gw.put(bucket, "encrypted", b"e" * 1000)
    before = _terms(gw).heads
    listed = await _listed(gw, bucket)
    assert {key: size for key, (size, _) in listed.items()} == {"legacy": looks_encrypted, "tiny": 5,
                                                               "encrypted": 1000}
    assert listed["legacy"][1] == upstream_s3.head_object(Bucket=bucket, Key="legacy")["ETag"]
    assert listed["encrypted"][1].endswith('-1"')
    assert _terms(gw).heads == before + 2  # legacy and encrypted; not tiny
    assert await _listed(gw, bucket) == listed
    assert _terms(gw).heads == before + 2  # cached


async def test_an_object_overwritten_after_it_was_listed_is_shown_as_listed(gw, upstream_s3):
    bucket = f"mixed-{uuid.uuid4().hex[:12]}"
    upstream_s3.create_bucket(Bucket=bucket)
    upstream_s3.put_object(Bucket=bucket, Key="k", Body=b"p" * ciphertext_size(10))
    terms = _terms(gw)
    from gateway.objects.listing import ListedObject
    stale = ListedObject("k", None, ciphertext_size(10), '"00000000000000000000000000000000"')
    assert await terms.shown(bucket, [stale]) == [None]
