"""CompleteMultipartUpload and ListParts edge cases in-process: the part list a client sends is checked
against what was uploaded, and parts are listed in plaintext terms."""
from __future__ import annotations

import pytest

from tests.gateway.inprocess.harness import MIB, Gateway

INVALID_PART = ("One or more of the specified parts could not be found.  The part may not have been uploaded, "
                "or the specified entity tag may not match the part's entity tag.")


@pytest.fixture
async def upload(gw: Gateway, bucket: str) -> tuple[str, list[tuple[int, str]]]:
    """An upload of ``bucket/k`` with three small parts (1000, 2000 and 3000 bytes), not completed."""
    upload_id = await gw.create_upload(bucket, "k")
    etags = [(n, await gw.upload_part(bucket, "k", upload_id, n, bytes([n]) * (1000 * n))) for n in (1, 2, 3)]
    return upload_id, etags


async def test_complete_with_a_wrong_part_etag_is_400_invalid_part(gw, bucket, upload):
    upload_id, etags = upload
    answer = await gw.complete(bucket, "k", upload_id, [(3, etags[1][1])])  # part 2's ETag named as part 3
    assert answer.error() == (400, "InvalidPart")
    assert answer.xml()["Message"] == INVALID_PART


async def test_complete_naming_a_part_never_uploaded_is_400_invalid_part(gw, bucket, upload):
    upload_id, etags = upload
    assert (await gw.complete(bucket, "k", upload_id, [(4, etags[2][1])])).error() == (400, "InvalidPart")


@pytest.mark.parametrize("order", [[2, 1], [1, 3, 2], [1, 1]])
async def test_complete_with_parts_out_of_order_or_repeated_is_400_invalid_part_order(gw, bucket, upload, order):
    upload_id, etags = upload
    answer = await gw.complete(bucket, "k", upload_id, [etags[n - 1] for n in order])
    assert answer.error() == (400, "InvalidPartOrder")


async def test_complete_with_a_non_last_part_under_5_mib_is_400_entity_too_small(gw, bucket, upload):
    upload_id, etags = upload
    answer = await gw.complete(bucket, "k", upload_id, etags[:2])
    assert answer.error() == (400, "EntityTooSmall")
    assert answer.xml()["Message"] == "Your proposed upload is smaller than the minimum allowed object size."


async def test_complete_with_only_the_last_part_small_reads_back(gw, bucket):
    parts = [bytes([1]) * (5 * MIB), b"tail"]
    answer = await gw.multipart_object(bucket, "k", parts)
    # parts sent without a checksum get S3's default, CRC64NVME over the whole object
    assert set(answer.xml()) == {"Location", "Bucket", "Key", "ETag", "ChecksumCRC64NVME", "ChecksumType"}
    assert answer.xml()["ChecksumType"] == "FULL_OBJECT"
    assert answer.xml()["ETag"].endswith('-2"')
    got = await gw.send("GET", f"/{bucket}/k")
    assert (got.status, len(got.body), got.body == b"".join(parts)) == (200, 5 * MIB + 4, True)
    assert got.headers["ETag"] == answer.xml()["ETag"]


async def test_complete_with_a_single_small_part_reads_back(gw, bucket, upload):
    upload_id, etags = upload
    assert (await gw.complete(bucket, "k", upload_id, etags[:1])).status == 200
    assert (await gw.send("GET", f"/{bucket}/k")).body == bytes([1]) * 1000


@pytest.mark.parametrize("body", [b"<CompleteMultipartUpload></CompleteMultipartUpload>", b"not xml"])
async def test_complete_with_no_parts_or_garbage_is_400_malformed_xml(gw, bucket, upload, body):
    upload_id, _ = upload
    answer = await gw.send("POST", f"/{bucket}/k", f"uploadId={upload_id}", body=body)
    assert answer.error() == (400, "MalformedXML")


async def test_list_parts_gives_plaintext_sizes_and_the_clients_upload_id(gw, bucket, upload):
    upload_id, _ = upload
    answer = await gw.send("GET", f"/{bucket}/k", f"uploadId={upload_id}")
    assert answer.status == 200, answer.body
    assert answer.xml()["UploadId"] == upload_id
    listed = [(part.findtext("{*}PartNumber"), part.findtext("{*}Size")) for part in answer.all("Part")]
    assert listed == [("1", "1000"), ("2", "2000"), ("3", "3000")]


async def test_a_forged_upload_id_is_404_no_such_upload(gw, bucket, upload):
    upload_id, _ = upload
    forged = upload_id[:-2] + ("AA" if not upload_id.endswith("AA") else "BB")
    answer = await gw.send("GET", f"/{bucket}/k", f"uploadId={forged}")
    assert answer.error() == (404, "NoSuchUpload")
