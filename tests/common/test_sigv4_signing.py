"""The gateway's own SigV4 signer (common/sigv4_signing.py) signs exactly as botocore's S3SigV4Auth does:
the same Authorization header, byte for byte, for any method, encoded path, query and headers; and what
it signs verifies with the gateway's verifier."""
from __future__ import annotations

import datetime
from unittest import mock
from urllib.parse import quote, urlsplit

from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from common import sigv4
from common.sigv4_signing import SigV4Signer, canonical_query_as_sent, host_of

NOW = 1_700_000_000.25  # 2023-11-14T22:13:20Z
ACCESS, SECRET = "AKIDUPSTREAM", "upstream/secret+key"
PRINTABLE_HEADER_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from(" \t"),
                                 max_size=24)
HEADER_NAMES = st.sampled_from(["content-type", "Content-MD5", "x-amz-meta-a", "X-Amz-Meta-A", "X-Amz-Meta-B",
                                "x-amz-acl", "if-match", "x-amz-server-side-encryption", "user-agent", "expect",
                                "x-amzn-trace-id", "range", "cache-control", "x-amz-copy-source"])
ENCODED_SEGMENT = st.text(max_size=12).map(lambda s: quote(s, safe="-_.~!$'()*+,;=:@"))
QUERY_PAIR = st.tuples(ENCODED_SEGMENT, ENCODED_SEGMENT, st.booleans()).map(
    lambda p: f"{p[0]}={p[1]}" if p[2] else p[0])
BASES = ["http://127.0.0.1:9000", "https://s3.example.com", "http://localhost", "https://host:443",
         "http://[::1]:8080", "http://UPPER.example.com:80"]


def botocore_headers(method: str, url: str, headers: dict[str, str], payload_hash: str) -> dict[str, str]:
    """What botocore's S3 signer makes of the same request at ``NOW``."""
    class Signer(botocore_auth.S3SigV4Auth):
        def payload(self, request: AWSRequest) -> str:
            return payload_hash

    request = AWSRequest(method=method, url=url, headers=dict(headers))
    frozen = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=frozen):
        Signer(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


@given(method=st.sampled_from(["GET", "PUT", "HEAD", "POST", "DELETE"]),
       base=st.sampled_from(BASES),
       segments=st.lists(ENCODED_SEGMENT, max_size=4),
       query=st.lists(QUERY_PAIR, max_size=5),
       headers=st.dictionaries(HEADER_NAMES, PRINTABLE_HEADER_VALUE, max_size=6),
       payload_hash=st.sampled_from([sigv4.UNSIGNED_PAYLOAD, sigv4.EMPTY_SHA256]))
@example(method="PUT", base="http://127.0.0.1:9000", segments=["bucket", "a%20b"], query=["uploads", "x=1"],
         headers={"x-amz-meta-a": "  two   spaces  "}, payload_hash=sigv4.UNSIGNED_PAYLOAD)
@example(method="GET", base="http://127.0.0.1:9000", segments=["b", "k"], query=[],
         headers={"x-amz-meta-a": "1 ", "X-Amz-Meta-A": " 2"}, payload_hash=sigv4.EMPTY_SHA256)
def test_signs_exactly_as_botocore(method: str, base: str, segments: list[str], query: list[str],
                                   headers: dict[str, str], payload_hash: str) -> None:
    url = base + "/" + "/".join(segments) + ("?" + "&".join(query) if query else "")
    ours = SigV4Signer(ACCESS, SECRET, "us-east-1").sign(method, url, headers, payload_hash, now=NOW)
    theirs = botocore_headers(method, url, headers, payload_hash)
    if len({name.lower() for name in headers}) == len(headers):
        assert ours == theirs
    else:  # a name given in two cases: sent once, its values joined, and signed as sent (botocore signs the
        # values joined but its dict keeps one of them); what goes on the wire verifies
        assert len({name.lower() for name in ours}) == len(ours)
        sent = SigV4Signer(ACCESS, SECRET, "us-east-1").sign(method, base + "/bucket/key", headers, payload_hash,
                                                             now=NOW)
        wire = CIMultiDict(sent, host=host_of(*urlsplit(base)[:2]))
        assert sigv4.verify(method, "/bucket/key", "", wire, {ACCESS: SECRET}.get, service="s3",
                            now=NOW).access_key == ACCESS


def test_replaces_the_callers_own_auth_and_date_headers() -> None:
    headers = {"Authorization": "AWS4-HMAC-SHA256 old", "x-amz-date": "20000101T000000Z", "Date": "yesterday",
               "X-Amz-Content-SHA256": "stale", "content-type": "text/plain"}
    signed = SigV4Signer(ACCESS, SECRET, "us-east-1").sign("PUT", "http://h:1/b/k", headers,
                                                            sigv4.UNSIGNED_PAYLOAD, now=NOW)
    assert signed["X-Amz-Date"] == "20231114T221320Z"
    assert signed["X-Amz-Content-SHA256"] == sigv4.UNSIGNED_PAYLOAD
    assert signed["content-type"] == "text/plain"
    assert {name.lower() for name in signed} == {"authorization", "x-amz-date", "x-amz-content-sha256",
                                                  "content-type"}
    assert "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date," in signed["Authorization"]


def test_what_it_signs_verifies_with_the_gateways_verifier() -> None:
    headers = {"content-type": "application/octet-stream", "x-amz-meta-note": "a  b", "user-agent": "x"}
    url = "http://127.0.0.1:9000/bucket/dir/k%C3%A9y?partNumber=2&uploadId=abc"
    signed = SigV4Signer(ACCESS, SECRET, "us-east-1").sign("PUT", url, headers, sigv4.UNSIGNED_PAYLOAD, now=NOW)
    wire = CIMultiDict(signed, host="127.0.0.1:9000")  # aiohttp's Host from the URL
    result = sigv4.verify("PUT", "/bucket/dir/k%C3%A9y", "partNumber=2&uploadId=abc", wire,
                          {ACCESS: SECRET}.get, service="s3", now=NOW)
    assert result.access_key == ACCESS
    assert result.payload_hash == sigv4.UNSIGNED_PAYLOAD


def test_a_session_token_is_sent_and_signed() -> None:
    signed = SigV4Signer(ACCESS, SECRET, "us-east-1", session_token="TOKEN").sign(
        "GET", "http://h:1/b", {}, sigv4.EMPTY_SHA256, now=NOW)
    assert signed["X-Amz-Security-Token"] == "TOKEN"
    assert "x-amz-security-token" in signed["Authorization"]


def test_the_secret_stays_out_of_the_signers_repr() -> None:
    assert SECRET not in repr(SigV4Signer(ACCESS, SECRET, "us-east-1"))


def test_host_drops_only_the_schemes_default_port() -> None:
    assert host_of("http", "Example.COM:80") == "example.com"
    assert host_of("http", "bücher.example:9000") == "xn--bcher-kva.example:9000"
    assert host_of("https", "example.com:80") == "example.com:80"
    assert host_of("https", "example.com:443") == "example.com"
    assert host_of("http", "[::1]:8080") == "[::1]:8080"


def test_the_canonical_query_sorts_pairs_as_sent() -> None:
    assert canonical_query_as_sent("b=2&a&a=1&c=%20") == "a=&a=1&b=2&c=%20"
    assert canonical_query_as_sent("") == ""
