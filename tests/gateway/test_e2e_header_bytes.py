"""A header value holding bytes that are not UTF-8 (a raw Latin-1 metadata value, signed over its bytes): the
gateway cannot send it on, so it answers 400 InvalidArgument naming the header and stores nothing, instead of
failing with a 500 after the data key was made. Sent over a raw socket: HTTP libraries refuse such a value."""
from __future__ import annotations

import hashlib
import hmac
import socket
import time
from urllib.parse import urlsplit

import pytest

from common.sigv4 import signing_key
from gateway.upstream import forwardable_headers
from gateway.s3errors import S3Error
from tests.support.clients import upstream_keys
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY


def _signed_put(url: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A SigV4-signed PUT whose headers are raw bytes (signed as they are sent)."""
    host = urlsplit(url).netloc.encode()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()).encode()
    signed = sorted([(b"host", host), (b"x-amz-content-sha256", b"UNSIGNED-PAYLOAD"), (b"x-amz-date", amz_date),
                     *headers])
    names = b";".join(name for name, _ in signed)
    canonical = b"\n".join([b"PUT", path.encode(), b"", b"".join(n + b":" + v + b"\n" for n, v in signed), names,
                            b"UNSIGNED-PAYLOAD"])
    date = amz_date[:8].decode()
    scope = f"{date}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date.decode(), scope, hashlib.sha256(canonical).hexdigest()])
    signature = hmac.new(signing_key(GATEWAY_SECRET_KEY, date, "us-east-1", "s3"), to_sign.encode(),
                         hashlib.sha256).hexdigest()
    authorization = (f"AWS4-HMAC-SHA256 Credential={GATEWAY_ACCESS_KEY}/{scope}, SignedHeaders={names.decode()}, "
                     f"Signature={signature}").encode()
    lines = [b"PUT " + path.encode() + b" HTTP/1.1", *(n + b": " + v for n, v in signed),
             b"content-length: " + str(len(body)).encode(), b"authorization: " + authorization, b"connection: close"]
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        answer = b""
        while block := conn.recv(65536):
            answer += block
    return answer


def test_a_metadata_value_that_is_not_utf8_is_400_invalid_argument_and_stores_nothing(gateway, upstream_s3, bucket):
    answer = _signed_put(gateway.url, f"/{bucket}/latin1", [(b"x-amz-meta-name", b"caf\xe9")], b"body")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"<Code>InvalidArgument</Code>" in answer
    assert b"<ArgumentName>x-amz-meta-name</ArgumentName>" in answer
    assert upstream_keys(upstream_s3, bucket) == []


def test_forwardable_headers_refuses_a_surrogate_escaped_value_and_keeps_utf8():
    assert forwardable_headers({"X-Amz-Meta-A": "café"}) == {"x-amz-meta-a": "café"}
    with pytest.raises(S3Error) as refused:
        forwardable_headers({"X-Amz-Meta-A": "caf\udce9"})
    assert (refused.value.code, refused.value.status) == ("InvalidArgument", 400)
