"""Properties of the SigV4/SigV2 verifier: any request whatsoever gets a verdict (a result or an
AuthError, never another exception, which would be a 500), and any request botocore's real signers
sign, with arbitrary keys, query parameters and headers, verifies."""
from __future__ import annotations

import time
from urllib.parse import quote, urlsplit

from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from common import sigv4
from tests.fuzz.targets import ACCESS_KEY, verify_request
from tests.support.properties import BOUNDED, PRINTABLE, digit_text, wire_text

V4_QUERY_NAMES = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
                  "X-Amz-Signature"]
V2_QUERY_NAMES = ["AWSAccessKeyId", "Signature", "Expires"]
HEADER_NAMES = ["authorization", "x-amz-date", "x-amz-content-sha256", "host", "x-amz-meta-a", "content-type",
                "content-md5", "x-amz-copy-source"]

credential = st.builds(lambda key, date, region, service, tail: "/".join([key, date, region, service, tail]),
                       st.sampled_from([ACCESS_KEY, "AKIDOTHER", ""]), st.sampled_from(["20231114", "2023111"]) | digit_text,
                       st.sampled_from(["us-east-1", ""]) | wire_text, st.sampled_from(["s3", "kms"]),
                       st.sampled_from(["aws4_request", "x"]))
amz_date = st.sampled_from(["20231114T221320Z", "20231114T226020Z", "99991231T235959Z"]) | digit_text | wire_text
query_value = {
    "X-Amz-Algorithm": st.sampled_from([sigv4.ALGORITHM, "AWS4-HMAC-SHA1"]) | wire_text,
    "X-Amz-Credential": credential,
    "X-Amz-Date": amz_date,
    "X-Amz-Expires": digit_text | wire_text,
    "X-Amz-SignedHeaders": st.sampled_from(["host", "host;x-amz-meta-a", "Host", ";", ""]) | wire_text,
    "X-Amz-Signature": st.text(alphabet="0123456789abcdef", max_size=64) | wire_text,
    "AWSAccessKeyId": st.sampled_from([ACCESS_KEY, "nobody"]) | wire_text,
    "Signature": wire_text,
    "Expires": digit_text | wire_text,
}
authorization = st.builds(
    lambda fields, sep: sigv4.ALGORITHM + " " + sep.join(fields),
    st.lists(st.one_of(credential.map(lambda c: "Credential=" + c),
                       st.sampled_from(["SignedHeaders=host;x-amz-date", "SignedHeaders=", "Signature=00"]),
                       wire_text), max_size=4),
    st.sampled_from([", ", ",", " "]),
) | st.sampled_from(["AWS AKID:sig", ""]) | wire_text


@st.composite
def any_requests(draw: st.DrawFn) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Requests shaped like each auth scheme's, with every field perturbed."""
    names = draw(st.lists(st.sampled_from(V4_QUERY_NAMES + V2_QUERY_NAMES) | wire_text, max_size=8))
    query = "&".join(
        quote(name, safe="", errors="surrogateescape") + "=" + quote(draw(query_value.get(name, wire_text)), safe="", errors="surrogateescape")
        if draw(st.booleans()) else name
        for name in names
    )
    if draw(st.booleans()):
        query = draw(wire_text) + query
    header_names = draw(st.lists(st.sampled_from(HEADER_NAMES) | wire_text.filter(bool), max_size=6))
    headers = [(name, draw(authorization if name == "authorization" else
                           amz_date if name == "x-amz-date" else wire_text)) for name in header_names]
    method = draw(st.sampled_from(["GET", "PUT", "POST", "HEAD"]) | wire_text)
    return method, draw(st.sampled_from(["/bkt/key", "/", ""]) | wire_text), query, headers


@BOUNDED
@given(any_requests())
@example(("GET", "/b/k", f"X-Amz-Algorithm={sigv4.ALGORITHM}&X-Amz-Credential={ACCESS_KEY}/20231114/us-east-1/s3/"
          "aws4_request&X-Amz-Date=20231114T221320Z&X-Amz-Expires=%C2%B2&X-Amz-SignedHeaders=host&X-Amz-Signature=0",
          [("host", "h")]))  # X-Amz-Expires "²": str.isdigit() is true, int() fails
@example(("GET", "/b/k", "AWSAccessKeyId=AKIDFUZZ&Signature=x&Expires=%C2%B2", []))  # the same in SigV2
@example(("GET", "/b/k", "AWSAccessKeyId=AKIDFUZZ&Signature=x&Expires=" + "9" * 4400, []))  # int() digit limit
@example(("GET", "/b/\udcf0", "AWSAccessKeyId=AKIDFUZZ&Signature=abc%3D&Expires=1700000100", [("host", "h")]))
def test_any_request_gets_a_verdict_or_an_auth_error(wire_request):
    method, path, query, headers = wire_request
    verify_request(method, path, query, headers)


# ------------------------------------------------------------------ round trip through botocore's signers

object_keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)
# Names a presigner leaves alone (not its own parameters, nor header names it hoists), and the
# sub-resources botocore signs (those it leaves out of SigV2 URLs make them fail, by design).
query_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda n: not n.lower().startswith("x-amz-") and n not in sigv4.V2_SUBRESOURCES
    and n.lower() not in ("awsaccesskeyid", "signature", "expires", "content-type", "content-md5")
) | st.sampled_from(sorted(HmacV1QueryAuth.QSAOfInterest))
query_pairs = st.lists(st.tuples(query_names, st.text(st.characters(exclude_categories=("Cs",)), max_size=12)),
                       max_size=4, unique_by=lambda pair: pair[0])
amz_headers = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10).map(lambda n: "x-amz-meta-" + n),
    st.text(PRINTABLE, max_size=20).map(str.strip), max_size=3)
secrets = st.text(PRINTABLE, min_size=1, max_size=40)


def _wire(request: AWSRequest) -> tuple[str, str, str, CIMultiDict]:
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = CIMultiDict(prepared.headers.items())
    headers.setdefault("Host", parts.netloc)
    return prepared.method, parts.path, parts.query, headers


def _request(method: str, key: str, pairs: list[tuple[str, str]], headers: dict[str, str]) -> AWSRequest:
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    url = "http://127.0.0.1:9000/bkt/" + quote(key, safe="/~") + (f"?{query}" if query else "")
    return AWSRequest(method=method, url=url, headers=dict(headers), data=b"")


def _verifies(request: AWSRequest, secret: str) -> sigv4.AuthResult:
    method, path, query, headers = _wire(request)
    return sigv4.verify(method, path, query, headers, {"AKIDPROP": secret}.get, service="s3", now=time.time(),
                        region="us-east-1")


@BOUNDED
@given(st.sampled_from(["GET", "PUT", "DELETE"]), object_keys, query_pairs, amz_headers, secrets)
def test_botocore_header_signed_requests_verify(method, key, pairs, headers, secret):
    request = _request(method, key, pairs, headers)
    S3SigV4Auth(Credentials("AKIDPROP", secret), "s3", "us-east-1").add_auth(request)
    assert _verifies(request, secret).scheme == "v4-header"


@BOUNDED
@given(st.sampled_from(["GET", "PUT"]), object_keys, query_pairs, amz_headers, secrets)
def test_botocore_sigv4_presigned_requests_verify(method, key, pairs, headers, secret):
    request = _request(method, key, pairs, headers)
    S3SigV4QueryAuth(Credentials("AKIDPROP", secret), "s3", "us-east-1", expires=600).add_auth(request)
    assert _verifies(request, secret).scheme == "v4-query"


@BOUNDED
@given(st.sampled_from(["GET", "PUT"]), object_keys, query_pairs, amz_headers, secrets)
def test_botocore_sigv2_presigned_requests_verify(method, key, pairs, headers, secret):
    request = _request(method, key, pairs, headers)
    HmacV1QueryAuth(Credentials("AKIDPROP", secret), expires=600).add_auth(request)
    for name in headers:  # botocore moved them into the query; the client sends the URL alone
        del request.headers[name]
    assert _verifies(request, secret).scheme == "v2-query"

