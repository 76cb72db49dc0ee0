"""List responses rewritten into plaintext sizes and client ETags."""
import xml.etree.ElementTree as ET

from gateway.crypto.stream import ciphertext_size
from gateway.handlers.listing import rewrite_listing
from tests.fuzz.targets import all_encrypted

NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
V2 = f"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><Prefix></Prefix>
<KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
<NextContinuationToken>tok%3D</NextContinuationToken>
<Contents><Key>a%20b</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified>
<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>{ciphertext_size(1000)}</Size>
<StorageClass>STANDARD</StorageClass><ChecksumAlgorithm>CRC32</ChecksumAlgorithm></Contents>
<Contents><Key>big</Key><ETag>"ffffffffffffffffffffffffffffffff"</ETag><Size>{ciphertext_size(200000)}</Size></Contents>
<Contents><Key>tiny</Key><ETag>"00000000000000000000000000000000"</ETag><Size>5</Size></Contents>
<CommonPrefixes><Prefix>dir/</Prefix></CommonPrefixes></ListBucketResult>"""


def _entries(body: bytes):
    root = ET.fromstring(body)
    return root, [(c.findtext("s3:Key", namespaces=NS), c.findtext("s3:Size", namespaces=NS),
                   c.findtext("s3:ETag", namespaces=NS)) for c in root.findall("s3:Contents", NS)]


def test_sizes_and_etags_become_plaintext_terms():
    _, entries = _entries(rewrite_listing(V2.encode(), all_encrypted))
    assert entries == [
        ("a%20b", "1000", '"0123456789abcdef0123456789abcdef-1"'),
        ("big", "200000", '"ffffffffffffffffffffffffffffffff-1"'),
        ("tiny", "5", '"00000000000000000000000000000000"'),
    ]


def test_checksum_algorithm_is_dropped_and_everything_else_kept():
    root, _ = _entries(rewrite_listing(V2.encode(), all_encrypted))
    assert root.findall(".//s3:ChecksumAlgorithm", NS) == []
    assert root.findtext("s3:NextContinuationToken", namespaces=NS) == "tok%3D"
    assert root.findtext("s3:EncodingType", namespaces=NS) == "url"
    assert root.findtext("s3:CommonPrefixes/s3:Prefix", namespaces=NS) == "dir/"
    assert root.findtext("s3:Contents/s3:StorageClass", namespaces=NS) == "STANDARD"


def test_output_keeps_the_default_namespace():
    body = rewrite_listing(V2.encode(), all_encrypted)
    assert b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' in body


def test_object_versions_are_rewritten():
    body = f"""<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Version><Key>k</Key>
<VersionId>v1</VersionId><ETag>"abababababababababababababababab"</ETag><Size>{ciphertext_size(0)}</Size></Version>
<DeleteMarker><Key>k</Key><VersionId>v2</VersionId></DeleteMarker></ListVersionsResult>"""
    root = ET.fromstring(rewrite_listing(body.encode(), all_encrypted))
    assert root.findtext("s3:Version/s3:Size", namespaces=NS) == "0"
    assert root.findtext("s3:Version/s3:ETag", namespaces=NS) == '"abababababababababababababababab-1"'
    assert root.findtext("s3:DeleteMarker/s3:VersionId", namespaces=NS) == "v2"


def test_unparseable_body_is_returned_unchanged():
    assert rewrite_listing(b"not xml", all_encrypted) == b"not xml"


def test_url_encoded_keys_are_read_as_s3_writes_them_a_space_as_plus():
    """S3 answers encoding-type=url with a space as "+": the object looked up is "a b", not "a+b"."""
    from gateway.handlers.listing import ListingPage
    body = (b"<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>dir/a+b%2Bc</Key><Size>5</Size>"
            b"<ETag>\"e\"</ETag></Contents></ListBucketResult>")
    page = ListingPage.parse(body, url_encoded=True)
    assert [entry.key for entry in page.objects] == ["dir/a b+c"]
