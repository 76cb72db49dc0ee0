"""aws-chunked decoding of bodies framed by botocore's real AwsChunkedWrapper and of signed
chunk streams built with the verifier's own string-to-sign."""

from __future__ import annotations

import hashlib
import io

import pytest
from botocore.httpchecksum import AwsChunkedWrapper, CrtCrc32Checksum

from common import sigv4
from gateway.awschunked import AwsChunkedDecoder
from gateway.s3errors import S3Error

PAYLOAD = bytes(range(256)) * 1300  # 332800 bytes
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE, SCOPE = "20130524T000000Z", "20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"


def botocore_body(payload: bytes, chunk_size: int = 65536, trailer: bool = True) -> bytes:
    wrapper = AwsChunkedWrapper(io.BytesIO(payload), checksum_cls=CrtCrc32Checksum if trailer else None,
                                checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size)
    return wrapper.read()


def crc32_b64(payload: bytes) -> str:
    checksum = CrtCrc32Checksum()
    checksum.update(payload)
    return checksum.b64digest()


def verifier() -> sigv4.ChunkSignatureVerifier:
    key = sigv4.signing_key(SECRET, "20130524", "us-east-1", "s3")
    return sigv4.ChunkSignatureVerifier(key, DATE, SCOPE, SEED)


def signed_body(payload: bytes, chunk_size: int = 65536, trailers: dict | None = None) -> bytes:
    """Frame and sign like a STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] client."""
    signer = verifier()
    out = bytearray()
    chunks = [payload[i:i + chunk_size] for i in range(0, len(payload), chunk_size)] + [b""]
    for chunk in chunks:
        signature = signer.sign_chunk(hashlib.sha256(chunk).hexdigest())
        signer.previous_signature = signature
        out += b"%x;chunk-signature=%s\r\n" % (len(chunk), signature.encode())
        out += chunk + b"\r\n" if chunk else b""
    if trailers is not None:
        canonical = "".join(f"{k}:{v}\n" for k, v in trailers.items()).encode()
        for name, value in trailers.items():
            out += f"{name}:{value}\r\n".encode()
        out += b"x-amz-trailer-signature:" + signer.sign_trailer(canonical).encode() + b"\r\n"
    out += b"\r\n"
    return bytes(out)


async def pieces(body: bytes, size: int):
    for i in range(0, len(body), size):
        yield body[i:i + size]


async def decode(body: bytes, split: int = 131072, **kw) -> tuple[bytes, dict]:
    kw.setdefault("decoded_length", None)
    decoder = AwsChunkedDecoder(pieces(body, split), **kw)
    out = bytearray()
    async for data in decoder:
        out += data
    return bytes(out), decoder.trailers


async def expect(code: str, status: int, body: bytes, **kw) -> S3Error:
    with pytest.raises(S3Error) as info:
        await decode(body, **kw)
    assert (info.value.code, info.value.status) == (code, status)
    return info.value


@pytest.mark.parametrize("split", [1, 2, 3, 5, 7, 4096, 65535, 65536, 65537, 65541, 131072, 10**7])
async def test_botocore_body_decodes_at_every_read_split(split):
    body = botocore_body(PAYLOAD)
    data, trailers = await decode(body, split, decoded_length=len(PAYLOAD), trailer_names=["x-amz-checksum-crc32"])
    assert data == PAYLOAD
    assert trailers == {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}


async def test_botocore_default_one_mib_chunks_decode():
    payload = b"x" * (3 * 1024 * 1024 + 5)
    body = botocore_body(payload, chunk_size=1024 * 1024)
    data, _ = await decode(body, decoded_length=len(payload))
    assert data == payload


async def test_empty_body_with_trailer_decodes():
    body = botocore_body(b"")
    assert body == b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    assert await decode(body, 1, decoded_length=0) == (b"", {"x-amz-checksum-crc32": "AAAAAA=="})


async def test_body_without_trailer_decodes():
    body = botocore_body(PAYLOAD, trailer=False)
    assert body.endswith(b"\r\n0\r\n\r\n")
    assert await decode(body, 7, decoded_length=len(PAYLOAD)) == (PAYLOAD, {})


async def test_body_ending_right_after_final_chunk_decodes():
    body = botocore_body(PAYLOAD, trailer=False)[:-2]
    assert await decode(body, decoded_length=len(PAYLOAD)) == (PAYLOAD, {})


async def test_js_style_pieces_and_upper_hex_and_spaced_trailer_decode():
    frames = [b"A\r\n", b"0123456789", b"\r\n", b"0\r\n", b"X-Amz-Checksum-Crc32 : abc=\r\n", b"\r\n"]

    async def source():
        for frame in frames:
            yield frame

    decoder = AwsChunkedDecoder(source(), decoded_length=10)
    assert b"".join([d async for d in decoder]) == b"0123456789"
    assert decoder.trailers == {"x-amz-checksum-crc32": "abc="}


async def test_unsigned_chunk_data_streams_before_chunk_ends():
    """A 1 MiB chunk is released as its pieces arrive, not buffered whole."""
    body = botocore_body(b"y" * 1048576, chunk_size=1048576, trailer=False)
    decoder = AwsChunkedDecoder(pieces(body, 4096), decoded_length=None)
    first = await anext(aiter(decoder))
    assert len(first) < 4096


@pytest.mark.parametrize("split", [1, 13, 8192, 65536 + 90, 10**7])
async def test_signed_chunks_verify_at_every_split(split):
    body = signed_body(PAYLOAD)
    data, trailers = await decode(body, split, decoded_length=len(PAYLOAD), chunk_verifier=verifier())
    assert (data, trailers) == (PAYLOAD, {})


async def test_aws_documented_signed_body_decodes():
    payload = b"a" * 66560
    body = signed_body(payload)
    assert b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648" in body
    assert len(body) == 66824  # the documented Content-Length
    assert (await decode(body, 1000, decoded_length=66560, chunk_verifier=verifier()))[0] == payload


async def test_signed_trailer_verifies():
    trailers = {"x-amz-checksum-crc32": crc32_b64(PAYLOAD)}
    body = signed_body(PAYLOAD, trailers=trailers)
    data, got = await decode(body, 333, decoded_length=len(PAYLOAD), chunk_verifier=verifier(),
                             trailer_names=["x-amz-checksum-crc32"])
    assert (data, got) == (PAYLOAD, trailers)


async def test_tampered_signed_trailer_is_signature_does_not_match():
    body = signed_body(PAYLOAD, trailers={"x-amz-checksum-crc32": crc32_b64(PAYLOAD)})
    body = body.replace(b"x-amz-checksum-crc32:", b"x-amz-checksum-crc32:A", 1)
    await expect("SignatureDoesNotMatch", 403, body, chunk_verifier=verifier())


async def test_tampered_signed_chunk_data_is_signature_does_not_match_before_release():
    body = bytearray(signed_body(PAYLOAD))
    body[200] ^= 1
    decoder = AwsChunkedDecoder(pieces(bytes(body), 4096), decoded_length=None, chunk_verifier=verifier())
    released = bytearray()
    with pytest.raises(S3Error) as info:
        async for data in decoder:
            released += data
    assert (info.value.code, info.value.status, released) == ("SignatureDoesNotMatch", 403, b"")


async def test_missing_chunk_signature_is_signature_does_not_match():
    await expect("SignatureDoesNotMatch", 403, botocore_body(PAYLOAD), chunk_verifier=verifier())


async def test_dropped_signed_chunk_is_signature_does_not_match():
    body = signed_body(PAYLOAD)
    first_end = body.index(b"\r\n", body.index(b"\r\n") + 2 + 65536) + 2
    second_end = body.index(b"\r\n", body.index(b"\r\n", first_end) + 2 + 65536) + 2
    await expect("SignatureDoesNotMatch", 403, body[:first_end] + body[second_end:], chunk_verifier=verifier())


@pytest.mark.parametrize("cut", [1, 4, 10, 65541, 65543, -3, -1])
async def test_truncated_body_is_incomplete_body(cut):
    body = botocore_body(PAYLOAD)
    await expect("IncompleteBody", 400, body[:cut] if cut > 0 else body[:cut],
                 trailer_names=["x-amz-checksum-crc32"])


async def test_decoded_length_mismatch_is_incomplete_body():
    body = botocore_body(PAYLOAD)
    await expect("IncompleteBody", 400, body, decoded_length=len(PAYLOAD) + 1)
    await expect("IncompleteBody", 400, body, decoded_length=len(PAYLOAD) - 1)


@pytest.mark.parametrize("body", [
    b"zz\r\nab\r\n0\r\n\r\n",            # size not hex
    b"2\r\nabXY0\r\n\r\n",               # data not followed by CRLF
    b"-1\r\n\r\n",                       # negative size
    b"2\r\nab\r\n0\r\n\r\ngarbage",      # data after the end
    b"1" * 5000,                         # header line never ends
])
async def test_malformed_framing_is_invalid_request(body):
    await expect("InvalidRequest", 400, body)


async def test_chunk_larger_than_limit_is_invalid_request():
    await expect("InvalidRequest", 400, b"1000\r\n" + b"a" * 4096 + b"\r\n0\r\n\r\n", max_chunk_size=4095)


async def test_announced_trailer_missing_is_malformed_trailer():
    await expect("MalformedTrailerError", 400, b"1\r\na\r\n0\r\n\r\n", trailer_names=["x-amz-checksum-crc32"])


async def test_trailer_line_without_colon_is_malformed_trailer():
    await expect("MalformedTrailerError", 400, b"1\r\na\r\n0\r\nnocolon\r\n\r\n")
