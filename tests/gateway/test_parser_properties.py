"""Properties of the parsers of client- and upstream-controlled input (hypothesis).

Each parser, fed anything, either returns or raises its module's own error type (the fuzz targets
in tests/fuzz/targets.py state which), and what a well-behaved writer produces reads back exactly.
"""
from __future__ import annotations

import hashlib
import io
from xml.sax.saxutils import escape

from botocore.httpchecksum import AwsChunkedWrapper, CrtCrc32Checksum
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, Multipart, SingleStream
from gateway.crypto.sse import SEALED_KEY_SIZE, SSEC_CHECK_SIZE, SSEC_SALT_SIZE, CustomerKeySeal, KmsSeal, SseMode
from gateway.crypto.stream import StreamParams
from gateway.handlers.buckets import delete_body
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.uploads import Upload
from tests.fuzz import targets
from tests.support.properties import BOUNDED, PRINTABLE, digit_text, wire_text

# ------------------------------------------------------------------ aws-chunked


def _frame(payload: bytes, sizes: list[int], trailers: dict[str, str], signed: bool) -> bytes:
    """Frame ``payload`` in chunks of ``sizes`` (cycled) the way SDK writers do, signed or not."""
    signer = targets.chunk_verifier() if signed else None
    out, start, index = bytearray(), 0, 0
    while True:
        chunk = payload[start:start + sizes[index % len(sizes)]]
        start, index = start + len(chunk), index + 1
        header = b"%x" % len(chunk)
        if signer is not None:
            signer.previous_signature = signer.sign_chunk(hashlib.sha256(chunk).hexdigest())
            header += b";chunk-signature=" + signer.previous_signature.encode()
        out += header + b"\r\n" + (chunk + b"\r\n" if chunk else b"")
        if not chunk:
            break
    for name, value in trailers.items():
        out += f"{name}:{value}\r\n".encode()
    if signer is not None and trailers:
        canonical = "".join(f"{k}:{v}\n" for k, v in sorted(trailers.items())).encode()
        out += b"x-amz-trailer-signature:" + signer.sign_trailer(canonical).encode() + b"\r\n"
    return bytes(out + b"\r\n")


trailer_values = st.dictionaries(st.sampled_from(["x-amz-checksum-crc32", "x-amz-checksum-sha256"]),
                                 st.text(PRINTABLE, max_size=12).map(str.strip).filter(bool), max_size=2)


@BOUNDED
@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1, max_size=4),
       st.lists(st.integers(0, 4000), max_size=12), trailer_values, st.booleans())
def test_aws_chunked_bodies_decode_to_their_payload_under_any_read_split(payload, sizes, cuts, trailers, signed):
    body = _frame(payload, sizes, trailers, signed)
    decoded = targets.decode_aws_chunked(body, cuts, decoded_length=len(payload), trailer_names=list(trailers),
                                         verifier=targets.chunk_verifier() if signed else None)
    assert decoded == (payload, trailers)


@BOUNDED
@given(st.binary(max_size=3000), st.integers(1, 2000), st.lists(st.integers(0, 4000), max_size=8))
def test_botocore_framed_bodies_decode_under_any_read_split(payload, chunk_size, cuts):
    wrapper = AwsChunkedWrapper(io.BytesIO(payload), checksum_cls=CrtCrc32Checksum,
                                checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size)
    decoded = targets.decode_aws_chunked(wrapper.read(), cuts, decoded_length=len(payload),
                                         trailer_names=["x-amz-checksum-crc32"])
    assert decoded is not None and decoded[0] == payload


@BOUNDED
@given(st.binary(max_size=600), st.lists(st.integers(0, 700), max_size=6), st.booleans(), st.booleans())
@example(b"5\r\nhello\r\n0\r\n\r\n", [], True, True)
@example(b"ffffffffffffffff\r\n", [], False, False)
@example(b"5;chunk-signature=\xc3\xa9\r\nhello\r\n0\r\n\r\n", [], True, True)  # compare_digest TypeError
def test_any_aws_chunked_body_decodes_or_is_refused_with_an_s3_error(body, cuts, with_length, signed):
    targets.decode_aws_chunked(body, cuts, decoded_length=5 if with_length else None,
                               verifier=targets.chunk_verifier() if signed else None, max_chunk_size=4096)


@BOUNDED
@given(st.binary(min_size=1, max_size=400), st.lists(st.integers(1, 100), min_size=1, max_size=3),
       st.data(), st.booleans())
def test_altered_aws_chunked_bodies_decode_or_are_refused_with_an_s3_error(payload, sizes, data, signed):
    body = bytearray(_frame(payload, sizes, {"x-amz-checksum-crc32": "AAAAAA=="}, signed))
    position = data.draw(st.integers(0, len(body) - 1))
    body[position] = data.draw(st.integers(0, 255))
    decoded = targets.decode_aws_chunked(bytes(body), decoded_length=len(payload),
                                         trailer_names=["x-amz-checksum-crc32"],
                                         verifier=targets.chunk_verifier() if signed else None)
    if signed and decoded is not None:  # a signed body cannot be altered unnoticed, except in
        assert decoded[0] == payload   # its framing's free text (hex case, extensions, trailer name case)


# ------------------------------------------------------------------ Complete / DeleteObjects XML

xml_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff"),
                   max_size=20).filter(lambda t: all(c in "\t\n\r" or ord(c) >= 0x20 for c in t))


def _escape_all(value: str) -> str:
    """XML text with carriage returns as character references (a raw CR is read back as LF)."""
    return escape(value).replace("\r", "&#13;")


@st.composite
def complete_documents(draw: st.DrawFn) -> bytes:
    """Complete bodies with the right shape and arbitrary field contents."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        fields = draw(st.lists(st.sampled_from(["PartNumber", "ETag", "ChecksumCRC32", "ChecksumSHA256", "Other"]),
                               max_size=4))
        inner = "".join(f"<{name}>{_escape_all(draw(digit_text | xml_text))}</{name}>" for name in fields)
        parts.append(f"<Part>{inner}</Part>")
    root = draw(st.sampled_from(["CompleteMultipartUpload", "Complete", "x:CompleteMultipartUpload"]))
    namespace = draw(st.sampled_from(['', ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', ' xmlns:x="urn:x"']))
    return f"<{root}{namespace}>{''.join(parts)}</{root}>".encode()


@BOUNDED
@given(complete_documents() | st.binary(max_size=300))
@example(b"<CompleteMultipartUpload><Part><PartNumber>" + b"1" * 5000 + b"</PartNumber><ETag>e</ETag></Part>"
         b"</CompleteMultipartUpload>")
@example('<CompleteMultipartUpload><Part><PartNumber>²</PartNumber><ETag>e</ETag></Part>'
         '</CompleteMultipartUpload>'.encode())
@example(b'<!DOCTYPE a [<!ENTITY b "b"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
         b"<CompleteMultipartUpload>&c;</CompleteMultipartUpload>")
def test_any_complete_body_parses_or_is_refused_with_an_s3_error(body):
    targets.parse_complete_body(body)


@BOUNDED
@given(st.lists(st.tuples(st.integers(1, 10000), xml_text.filter(lambda t: t.strip() == t and t)), min_size=1,
                max_size=6, unique_by=lambda part: part[0]))
def test_complete_part_lists_read_back_in_order(parts):
    parts.sort()
    body = "<CompleteMultipartUpload>" + "".join(
        f"<Part><ETag>{_escape_all(etag)}</ETag><PartNumber>{number}</PartNumber></Part>" for number, etag in parts
    ) + "</CompleteMultipartUpload>"
    parsed = targets.parse_complete_body(body.encode())
    assert [(part.number, part.etag) for part in parsed] == parts


@st.composite
def delete_documents(draw: st.DrawFn) -> bytes:
    objects = "".join(
        "<Object>" + "".join(f"<{name}>{_escape_all(draw(xml_text))}</{name}>"
                             for name in draw(st.lists(st.sampled_from(["Key", "VersionId", "X"]), max_size=3)))
        + "</Object>" for _ in range(draw(st.integers(0, 3))))
    quiet = draw(st.sampled_from(["", "<Quiet>true</Quiet>", "<Quiet> TRUE </Quiet>", "<Quiet>x</Quiet>"]))
    return f"<Delete>{quiet}{objects}</Delete>".encode()


@BOUNDED
@given(delete_documents() | st.binary(max_size=300))
def test_any_delete_body_parses_or_is_refused_with_an_s3_error(body):
    targets.parse_delete_body(body)


@BOUNDED
@given(st.lists(st.tuples(xml_text, st.none() | xml_text.filter(bool)), max_size=5), st.booleans())
@example([("a\rb", None)], False)
@example([("a\r\nb", "v\r")], True)
def test_the_delete_batch_forwarded_upstream_names_exactly_the_keys_checked(objects, quiet):
    """The gateway checks the client's keys for reserved ones, then renders its own document for
    the upstream: it must name the very same keys, or another key than the one checked is deleted."""
    assert targets.parse_delete_body(delete_body(objects, quiet)) == (objects, quiet)


# ------------------------------------------------------------------ Range, partNumber


@BOUNDED
@given(st.builds(lambda a, b, sep: f"bytes={a}{sep}{b}", digit_text, digit_text, st.sampled_from(["-", ",", "--"]))
       | wire_text, st.integers(0, 2**63))
@example("bytes=" + "1" * 5000 + "-", 10)
@example("bytes=-" + "1" * 5000, 10)
@example("bytes=0-" + "1" * 5000, 10)
@example("bytes=٣-", 10)
def test_any_range_header_is_a_range_within_the_object_ignored_or_unsatisfiable(value, size):
    result = targets.parse_range(value, size)
    if isinstance(result, tuple):
        start, end = result
        assert 0 <= start <= end < size


@BOUNDED
@given(digit_text | wire_text)
@example("1" * 5000)
@example("0" * 5000 + "1")
@example("²")
def test_any_part_number_is_1_to_10000_or_invalid_argument(value):
    number = targets.parse_part(value)
    assert number is None or (1 <= number <= 10000 and str(number) == value.lstrip("0"))


# ------------------------------------------------------------------ content lengths, copy ranges, upstream sizes


@BOUNDED
@given(digit_text | wire_text, st.booleans())
@example("²", True)  # isdigit() but int() refuses it: was a 500
@example("٣", True)  # was read as 3
@example("1" * 5000, True)  # over int()'s 4300-digit limit: was a 500
@example("0" * 5000 + "7", False)
@example(" 12 ", True)
def test_any_content_length_is_its_ascii_decimal_or_an_s3_error(value, framed):
    length = targets.parse_length(value, framed)
    digits = value.strip().lstrip("0") or ("0" if value.strip() else "")
    if digits.isascii() and digits.isdigit() and len(digits) <= 12 and int(digits) <= MAX_UPLOAD_SIZE:
        assert length == int(digits)
    else:
        assert length is None


@BOUNDED
@given(st.builds(lambda a, b: f"bytes={a}-{b}", digit_text, digit_text) | wire_text, st.integers(0, 2**63))
@example("bytes=²-3", 10)  # was a 500
@example("bytes=0-٣", 10)  # was read as 0-3
@example("bytes=0-" + "9" * 5000, 10)  # was a 500
@example("bytes=" + "0" * 5000 + "-1", 10)
def test_any_copy_source_range_lies_within_the_source_or_is_invalid_argument(value, size):
    result = targets.parse_copy_source_range(value, size)
    if result is not None:
        first, last = result
        assert 0 <= first <= last < size
        assert value.strip() == f"bytes={value.strip()[6:]}" and value.isascii()


def _listing(size: str, etag: str, count: str) -> bytes:
    return (f"<ListBucketResult><KeyCount>{escape(count)}</KeyCount><Contents><Key>.s3gw/m</Key></Contents>"
            f"<Contents><Key>k</Key><Size>{escape(size)}</Size><ETag>{escape(etag)}</ETag></Contents>"
            f"<Part><PartNumber>1</PartNumber><Size>{escape(size)}</Size></Part></ListBucketResult>").encode()


upstream_number = digit_text | st.integers(-5, 2**70).map(str) | st.text(PRINTABLE, max_size=8)


@BOUNDED
@given(upstream_number, upstream_number.map(lambda n: f'"{"a" * 32}-{n}"') | st.text(PRINTABLE, max_size=40),
       upstream_number)
@example("²", '"e"', "1")  # isdigit() but int() refuses it: was a 500
@example("1" * 5000, '"e"', "1")
@example("100000", '"' + "a" * 32 + '-' + "9" * 5000 + '"', "1")  # part count over int()'s limit
@example("100000", '"' + "a" * 32 + '-٣"', "1")
@example("100000", '"e"', "²")
def test_upstream_listings_with_any_sizes_counts_and_etags_are_rewritten_or_refused(size, etag, count):
    targets.rewrite_upstream_listing(_listing(size, etag, count))
    count_of = targets.part_count_from_etag(etag)
    assert count_of is None or 0 <= count_of <= 10001


# ------------------------------------------------------------------ reserved metadata, upload tokens

reserved_names = st.sampled_from([metadata.VERSION, metadata.MODE, metadata.PARAMS, metadata.SEALED_KEY,
                                  metadata.PLAINTEXT_SIZE, metadata.KMS_KEY_ARN, metadata.WRAPPED_DATA_KEY,
                                  metadata.KMS_CONTEXT, metadata.SSEC_SALT, metadata.SSEC_CHECK, metadata.UPLOAD_TAG])
b64u_of = st.binary(max_size=80).map(metadata.b64u)


def _sized(size: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=size, max_size=size)


@st.composite
def encryption_infos(draw: st.DrawFn) -> EncryptionInfo:
    mode = draw(st.sampled_from(list(SseMode)))
    sealed_key = draw(_sized(SEALED_KEY_SIZE))
    if mode is SseMode.CUSTOMER:
        seal = CustomerKeySeal(sealed_key, salt=draw(_sized(SSEC_SALT_SIZE)), check=draw(_sized(SSEC_CHECK_SIZE)))
    else:
        seal = KmsSeal(mode, sealed_key,
                       kms_key_arn=draw(st.text(PRINTABLE, min_size=1, max_size=40).filter(lambda a: a.strip() == a)),
                       wrapped_data_key=draw(st.binary(min_size=1, max_size=64)),
                       kms_context=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)))
    if draw(st.booleans()):
        return EncryptionInfo(seal, Multipart(metadata.new_upload_tag()))
    params = StreamParams.decode(draw(_sized(StreamParams.ENCODED_SIZE)))
    return EncryptionInfo(seal, SingleStream(params, draw(st.integers(0, 2**62))))


@BOUNDED
@given(encryption_infos())
def test_encryption_metadata_round_trips(info):
    assert metadata.decode(metadata.encode(info)) == info


@BOUNDED
@given(encryption_infos(), st.dictionaries(reserved_names, b64u_of | digit_text | wire_text, max_size=4))
@example(None, {metadata.VERSION: "1", metadata.MODE: "aws:kms", metadata.KMS_CONTEXT: metadata.b64u(b"[1]")})
def test_any_reserved_metadata_decodes_or_is_an_integrity_error(info, changes):
    headers = {**(metadata.encode(info) if info is not None else {}), **changes}
    targets.decode_metadata(headers)


@BOUNDED
@given(st.dictionaries(reserved_names, st.text(PRINTABLE, max_size=30), max_size=6), st.text(max_size=20),
       st.integers(1, 10000), st.text(PRINTABLE, max_size=20))
@example({}, "u", 1, "-00")  # an upstream ETag holding a dash: the token used to be cut there
@example({}, "u", 1, '" 0')
def test_issued_upload_ids_and_part_etags_read_back(fields, upstream_id, part_number, upstream_etag):
    client_id = targets.TOKENS.issue_upload_id("bkt", "key", upstream_id, fields)
    upload = targets.TOKENS.parse_upload_id("bkt", "key", client_id)
    assert upload == Upload(client_id, upstream_id, fields)
    params = StreamParams.decode(bytes(range(StreamParams.ENCODED_SIZE)))
    etag = targets.TOKENS.issue_part_etag(upload, part_number, upstream_etag, params, {})
    record = targets.TOKENS.parse_part_etag(upload, part_number, etag)
    assert (record.upstream_etag, record.params) == (upstream_etag.strip().strip('"').strip(), params)


@BOUNDED
@given(st.sampled_from(["gw1.", "gw1.e30.", ""]).flatmap(lambda p: wire_text.map(lambda t: p + t)),
       st.sampled_from(['"', '"e-', "e-"]).flatmap(lambda p: (b64u_of | wire_text).map(lambda t: p + t)),
       st.integers(1, 10000))
def test_any_upload_id_and_part_etag_parse_or_are_forged_tokens(upload_id, etag, part_number):
    targets.parse_upload_tokens(upload_id, etag, part_number)
