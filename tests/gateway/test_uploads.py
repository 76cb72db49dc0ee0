"""UploadIds and part ETags carry the upload's state, readable only as the gateway issued it."""
from __future__ import annotations

import pytest

from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.sse import CustomerKeySeal, KmsSeal, SseMode
from gateway.crypto.stream import IntegrityError, StreamParams
from gateway.handlers.multipart import parse_complete
from gateway.s3errors import S3Error
from gateway.uploads import ForgedToken, UploadTokens

FIELDS = {"x-amz-meta-x-gw-v": "1", "x-amz-meta-x-gw-m": "SSE-C", "x-amz-meta-x-gw-u": "abc"}
TOKENS = UploadTokens(b"s" * 32)


def _upload():
    client_id = TOKENS.issue_upload_id("bkt", "key", "upstream.id-with.dots", FIELDS)
    return TOKENS.parse_upload_id("bkt", "key", client_id)


def test_upload_id_round_trips_to_the_upstream_id_and_metadata():
    upload = _upload()
    assert (upload.upstream_id, dict(upload.fields)) == ("upstream.id-with.dots", FIELDS)


@pytest.mark.parametrize("bucket,key,change", [("other", "key", False), ("bkt", "other", False), ("bkt", "key", True)])
def test_upload_id_for_another_object_or_altered_is_refused(bucket, key, change):
    client_id = TOKENS.issue_upload_id("bkt", "key", "up", FIELDS)
    if change:
        client_id = client_id.replace("gw1.e", "gw1.f", 1)
    with pytest.raises(ForgedToken):
        TOKENS.parse_upload_id(bucket, key, client_id)


@pytest.mark.parametrize("seal", [CustomerKeySeal(bytes(60), bytes(32), bytes(32)),
                                  KmsSeal(SseMode.KMS, bytes(60), "arn:aws:kms:r:1:key/k", b"w", {"a": "b"})])
def test_an_upload_carries_the_multipart_encryption_info_it_was_created_with(seal):
    info = EncryptionInfo(seal, Multipart(metadata.new_upload_tag()))
    client_id = TOKENS.issue_upload_id("bkt", "key", "up", metadata.encode(info))
    assert TOKENS.parse_upload_id("bkt", "key", client_id).info == info
    single_stream = metadata.encode(EncryptionInfo(seal, SingleStream(StreamParams.new(), 5)))
    for fields in (single_stream, {}, FIELDS):  # FIELDS names a malformed upload tag
        upload = TOKENS.parse_upload_id("bkt", "key", TOKENS.issue_upload_id("bkt", "key", "up", fields))
        with pytest.raises(IntegrityError):
            upload.info


def test_upstream_ids_are_not_gateway_uploads():
    assert TOKENS.parse_upload_id("bkt", "key", "plainUpstreamId") is None


def test_part_etag_records_params_and_checksum_for_its_part_only():
    upload, params = _upload(), StreamParams.new()
    etag = TOKENS.issue_part_etag(upload, 3, '"0123abcd"', params, {"x-amz-checksum-crc32": "vYYWJA=="})
    assert etag.startswith('"0123abcd-') and "-" in etag
    record = TOKENS.parse_part_etag(upload, 3, etag)
    assert (record.upstream_etag, record.params, record.checksum) == ("0123abcd", params, ("crc32", "vYYWJA=="))
    with pytest.raises(ForgedToken):
        TOKENS.parse_part_etag(upload, 4, etag)
    with pytest.raises(ForgedToken):
        UploadTokens(b"t" * 32).parse_part_etag(upload, 3, etag)


def test_a_bare_upstream_etag_names_the_part_but_pins_nothing():
    record = TOKENS.parse_part_etag(_upload(), 1, '"0123abcd"')
    assert (record.upstream_etag, record.params, record.checksum) == ("0123abcd", None, None)


@pytest.mark.parametrize("etag", ['"e1"', "&quot;e1&quot;", "&#34;e1&#34;", "e1", " \"e1\" "])
def test_complete_xml_etags_parse_in_every_client_spelling(etag):
    body = (f'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>{etag}</ETag>'
            "<PartNumber>2</PartNumber><ChecksumCRC32>vYYWJA==</ChecksumCRC32></Part>"
            "<Part><PartNumber>5</PartNumber><ETag>e2</ETag></Part></CompleteMultipartUpload>").encode()
    parts = parse_complete(body)
    assert [(p.number, p.etag.strip('"'), dict(p.checksums)) for p in parts] == [
        (2, "e1", {"crc32": "vYYWJA=="}), (5, "e2", {})]


@pytest.mark.parametrize("body,code", [
    (b"<CompleteMultipartUpload></CompleteMultipartUpload>", "MalformedXML"),
    (b"not xml", "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
     "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>a</ETag></Part>"
     b"<Part><PartNumber>1</PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>", "InvalidPartOrder"),
    (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part>"
     b"<Part><PartNumber>1</PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>", "InvalidPartOrder"),
])
def test_bad_complete_xml_is_refused_with_s3s_codes(body, code):
    with pytest.raises(S3Error) as err:
        parse_complete(body)
    assert (err.value.code, err.value.status) == (code, 400)
