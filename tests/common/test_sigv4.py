"""SigV4/SigV2 verification against requests signed by botocore's real signers."""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.auth import HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from multidict import CIMultiDict

from common import sigv4
from common.sigv4 import AuthError, verify

AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CREDS = Credentials(AK, SK)
HOST = "127.0.0.1:9000"


def lookup(access_key: str) -> str | None:
    return SK if access_key == AK else None


def wire(request: AWSRequest) -> tuple[str, str, str, CIMultiDict]:
    """What the server sees: method, raw path, raw query and headers (with Host)."""
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = CIMultiDict(prepared.headers.items())
    headers.setdefault("Host", parts.netloc)
    return prepared.method, parts.path, parts.query, headers


def signed_s3(method: str = "GET", path: str = "/bkt/key", query: str = "", body: bytes = b"",
              headers: dict | None = None) -> tuple[str, str, str, CIMultiDict]:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    return wire(request)


def check(method, path, query, headers, **kw) -> sigv4.AuthResult:
    kw.setdefault("service", "s3")
    kw.setdefault("now", time.time())
    return verify(method, path, query, headers, lookup, **kw)


def expect_error(code: str, status: int, *args, **kw) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(*args, **kw)
    assert (info.value.code, info.value.status) == (code, status)
    return info.value


# ------------------------------------------------------------------ header auth


def test_header_signed_get_verifies_with_hex_payload_hash():
    result = check(*signed_s3())
    assert result.access_key == AK
    assert result.scheme == "v4-header"
    assert result.payload_hash == sigv4.EMPTY_SHA256
    assert result.signed_headers == ("host", "x-amz-content-sha256", "x-amz-date")
    assert result.chunk_verifier is None


def test_header_signed_put_with_body_and_extra_headers_verifies():
    body = b"hello world"
    req = signed_s3("PUT", "/bkt/obj", body=body, headers={
        "x-amz-meta-a": "  two   spaces  ", "Content-Type": "text/plain",
        "x-amz-server-side-encryption": "aws:kms"})
    result = check(*req)
    assert result.payload_hash == hashlib.sha256(body).hexdigest()
    assert "x-amz-server-side-encryption" in result.signed_headers


@pytest.mark.parametrize("path", [
    "/bkt/with%20space", "/bkt/caf%C3%A9/%E2%82%AC", "/bkt/a%2Bb", "/bkt/a%2Fb/c", "/bkt/tilde~x",
    "/bkt/", "/", "/bkt/a//b/../c",
])
def test_header_signed_awkward_paths_verify(path):
    assert check(*signed_s3(path=path)).access_key == AK


@pytest.mark.parametrize("query", [
    "uploads", "uploads=", "list-type=2&prefix=a%20b&delimiter=%2F&encoding-type=url",
    "uploadId=x%2By&partNumber=3", "prefix=%E2%82%AC&max-keys=10", "b=2&a=1&a=0",
])
def test_header_signed_queries_verify(query):
    assert check(*signed_s3(query=query)).access_key == AK


def test_path_sent_unencoded_but_signed_encoded_verifies():
    method, _, query, headers = signed_s3(path="/bkt/a%21b")
    assert check(method, "/bkt/a!b", query, headers).access_key == AK


def test_s3cmd_style_authorization_without_spaces_verifies():
    method, path, query, headers = signed_s3()
    headers["Authorization"] = headers["Authorization"].replace(", ", ",")
    assert check(method, path, query, headers).access_key == AK


def test_kms_json_request_verifies_with_caller_payload_hash():
    body = b'{"KeyId": "alias/x"}'
    request = AWSRequest(method="POST", url="http://127.0.0.1:8000/", data=body,
                         headers={"X-Amz-Target": "TrentService.Encrypt",
                                  "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(CREDS, "kms", "us-east-1").add_auth(request)
    args = wire(request)
    result = check(*args, service="kms", payload_hash=hashlib.sha256(body).hexdigest())
    assert result.payload_hash == hashlib.sha256(body).hexdigest()
    expect_error("SignatureDoesNotMatch", 403, *args, service="kms",
                 payload_hash=hashlib.sha256(b"{}").hexdigest())


def test_kms_path_is_normalised_and_double_encoded():
    request = AWSRequest(method="POST", url="http://127.0.0.1:8000/a%20b/./c", data=b"{}")
    SigV4Auth(CREDS, "kms", "us-east-1").add_auth(request)
    method, path, query, headers = wire(request)
    assert check(method, path, query, headers, service="kms",
                 payload_hash=hashlib.sha256(b"{}").hexdigest()).access_key == AK
    assert sigv4.canonical_uris("/a%20b/./c", "kms") == ["/a%2520b/c"]


def test_unknown_access_key_is_invalid_access_key_id():
    method, path, query, headers = signed_s3()
    headers["Authorization"] = headers["Authorization"].replace(AK, "NOPE")
    err = expect_error("InvalidAccessKeyId", 403, method, path, query, headers)
    assert err.extra["AWSAccessKeyId"] == "NOPE"


def test_wrong_secret_is_signature_does_not_match_with_diagnostics():
    method, path, query, headers = signed_s3()
    with pytest.raises(AuthError) as info:
        verify(method, path, query, headers, lambda ak: "other", service="s3", now=time.time())
    err = info.value
    assert (err.code, err.status) == ("SignatureDoesNotMatch", 403)
    assert err.extra["CanonicalRequest"].startswith("GET\n/bkt/key\n\nhost:127.0.0.1:9000\n")
    assert err.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n" + headers["X-Amz-Date"])


@pytest.mark.parametrize("tamper", ["path", "query", "header", "method"])
def test_tampered_request_is_signature_does_not_match(tamper):
    method, path, query, headers = signed_s3("PUT", "/bkt/key", "partNumber=1",
                                             headers={"x-amz-meta-a": "1"})
    if tamper == "path":
        path = "/bkt/key2"
    elif tamper == "query":
        query = "partNumber=2"
    elif tamper == "header":
        headers["x-amz-meta-a"] = "2"
    else:
        method = "POST"
    expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)


def test_unsigned_amz_header_is_access_denied():
    method, path, query, headers = signed_s3()
    headers["x-amz-server-side-encryption"] = "AES256"
    err = expect_error("AccessDenied", 403, method, path, query, headers)
    assert err.extra["HeadersNotSigned"] == "x-amz-server-side-encryption"


@pytest.mark.parametrize("offset", [-901, 901])
def test_clock_skew_beyond_limit_is_request_time_too_skewed(offset):
    args = signed_s3()
    err = expect_error("RequestTimeTooSkewed", 403, *args, now=time.time() + offset)
    assert err.extra["RequestTime"] == args[3]["X-Amz-Date"]
    assert err.extra["MaxAllowedSkewMilliseconds"] == "900000"
    assert set(err.extra) == {"RequestTime", "ServerTime", "MaxAllowedSkewMilliseconds"}


@pytest.mark.parametrize("authorization, code, status", [
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/s3/aws4_request", "AuthorizationHeaderMalformed", 400),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab", "AuthorizationHeaderMalformed", 400),
    ("AWS4-HMAC-SHA256 garbage", "AuthorizationHeaderMalformed", 400),
    ("AWS AKIDEXAMPLE:c2lnbmF0dXJl", "InvalidArgument", 400),
    ("AWS4-ECDSA-P256-SHA256 Credential=x", "InvalidArgument", 400),
])
def test_malformed_authorization_is_rejected(authorization, code, status):
    method, path, query, headers = signed_s3()
    headers["Authorization"] = authorization
    expect_error(code, status, method, path, query, headers)


def test_scope_date_differing_from_amz_date_is_malformed():
    method, path, query, headers = signed_s3()
    headers["Authorization"] = headers["Authorization"].replace(
        "/" + headers["X-Amz-Date"][:8] + "/", "/19990101/")
    expect_error("AuthorizationHeaderMalformed", 400, method, path, query, headers)


def test_wrong_service_and_region_are_malformed():
    args = signed_s3()
    expect_error("AuthorizationHeaderMalformed", 400, *args, service="kms", payload_hash="x")
    expect_error("AuthorizationHeaderMalformed", 400, *args, region="eu-west-1")
    assert check(*args, region="us-east-1").access_key == AK


def test_host_not_signed_is_malformed():
    method, path, query, headers = signed_s3()
    headers["Authorization"] = headers["Authorization"].replace("SignedHeaders=host;", "SignedHeaders=")
    expect_error("AuthorizationHeaderMalformed", 400, method, path, query, headers)


def test_missing_content_sha256_for_s3_is_invalid_request():
    request = AWSRequest(method="GET", url=f"http://{HOST}/bkt/key")
    SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)
    expect_error("InvalidRequest", 400, *wire(request))


def test_bad_content_sha256_value_is_invalid_argument():
    method, path, query, headers = signed_s3()
    headers["X-Amz-Content-SHA256"] = "nothex"
    expect_error("InvalidArgument", 400, method, path, query, headers)


def test_missing_amz_date_is_access_denied():
    method, path, query, headers = signed_s3()
    del headers["X-Amz-Date"]
    expect_error("AccessDenied", 403, method, path, query, headers)


def test_no_authentication_is_access_denied():
    expect_error("AccessDenied", 403, "GET", "/bkt/key", "", CIMultiDict(Host=HOST))


def test_streaming_signed_payload_returns_chunk_verifier_seeded_with_request_signature():
    request = AWSRequest(method="PUT", url=f"http://{HOST}/bkt/key", headers={
        "X-Amz-Content-SHA256": sigv4.STREAMING_SIGNED, "X-Amz-Decoded-Content-Length": "5"})
    SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)  # keeps the preset payload hash
    method, path, query, hdrs = wire(request)
    result = check(method, path, query, hdrs)
    assert result.payload_hash == sigv4.STREAMING_SIGNED
    assert result.chunk_verifier is not None
    assert result.chunk_verifier.previous_signature == hdrs["Authorization"].rsplit("=", 1)[1]


# ------------------------------------------------------------------ presigned v4


def presigned_v4(method: str = "GET", path: str = "/bkt/key", query: str = "", expires: int = 3600,
                 headers: dict | None = None):
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=headers or {})
    S3SigV4QueryAuth(CREDS, "s3", "us-east-1", expires=expires).add_auth(request)
    return wire(request)


def test_presigned_v4_verifies_as_unsigned_payload():
    result = check(*presigned_v4(query="response-content-type=text%2Fplain"))
    assert (result.scheme, result.payload_hash, result.signed_headers) == ("v4-query", "UNSIGNED-PAYLOAD", ("host",))


def test_boto3_generated_v4_presigned_url_verifies():
    client = boto3.client("s3", endpoint_url=f"http://{HOST}", region_name="us-east-1",
                          aws_access_key_id=AK, aws_secret_access_key=SK,
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    url = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "a b/c+d~é"})
    parts = urlsplit(url)
    assert check("GET", parts.path, parts.query, CIMultiDict(Host=parts.netloc)).scheme == "v4-query"


def test_expired_presigned_v4_is_access_denied():
    args = presigned_v4(expires=60)
    err = expect_error("AccessDenied", 403, *args, now=time.time() + 61)
    assert err.message == "Request has expired"
    assert err.extra["X-Amz-Expires"] == "60"


def test_presigned_v4_from_the_future_is_access_denied():
    err = expect_error("AccessDenied", 403, *presigned_v4(), now=time.time() - 1000)
    assert err.message == "Request is not valid yet"


@pytest.mark.parametrize("expires", ["0", "604801", "abc"])
def test_presigned_v4_bad_expires_is_query_parameters_error(expires):
    method, path, query, headers = presigned_v4()
    query = query.replace("X-Amz-Expires=3600", f"X-Amz-Expires={expires}")
    expect_error("AuthorizationQueryParametersError", 400, method, path, query, headers)


def test_presigned_v4_missing_parameter_is_query_parameters_error():
    method, path, query, headers = presigned_v4()
    query = "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Date="))
    expect_error("AuthorizationQueryParametersError", 400, method, path, query, headers)


def test_presigned_v4_tampered_query_is_signature_does_not_match():
    method, path, query, headers = presigned_v4(query="versionId=1")
    expect_error("SignatureDoesNotMatch", 403, method, path, query.replace("versionId=1", "versionId=2"), headers)


# ------------------------------------------------------------------ presigned v2


def presigned_v2(method: str = "GET", path: str = "/bkt/key", query: str = "", headers: dict | None = None,
                 expires: int = 3600):
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=headers or {})
    HmacV1QueryAuth(CREDS, expires=expires).add_auth(request)
    return wire(request)


@pytest.mark.parametrize("path, query", [
    ("/bkt/key", ""), ("/bkt/a%20b/caf%C3%A9", ""), ("/bkt/key", "versionId=abc%2Bd"),
    ("/bkt/key", "uploads"), ("/bkt/key", "uploadId=u1&partNumber=2"),
    ("/bkt/key", "response-content-disposition=attachment%3B%20filename%3Dx&foo=bar"),
])
def test_presigned_v2_verifies(path, query):
    result = check(*presigned_v2(path=path, query=query))
    assert (result.access_key, result.scheme, result.payload_hash) == (AK, "v2-query", None)


def test_presigned_v2_with_content_type_and_amz_header_verifies():
    args = presigned_v2("PUT", headers={"Content-Type": "text/plain", "x-amz-acl": "private"})
    assert check(*args).scheme == "v2-query"


def test_boto3_default_presigned_url_is_v2_and_verifies():
    client = boto3.client("s3", endpoint_url=f"http://{HOST}", region_name="us-east-1",
                          aws_access_key_id=AK, aws_secret_access_key=SK)
    url = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k y"})
    parts = urlsplit(url)
    assert "AWSAccessKeyId=" in parts.query
    assert check("GET", parts.path, parts.query, CIMultiDict(Host=parts.netloc)).scheme == "v2-query"


def test_expired_presigned_v2_is_access_denied():
    err = expect_error("AccessDenied", 403, *presigned_v2(expires=10), now=time.time() + 11)
    assert err.message == "Request has expired"


def test_presigned_v2_tampered_path_is_signature_does_not_match():
    method, path, query, headers = presigned_v2()
    err = expect_error("SignatureDoesNotMatch", 403, method, "/bkt/other", query, headers)
    assert err.extra["StringToSign"].endswith("\n/bkt/other")


def test_presigned_v2_unknown_key_is_invalid_access_key_id():
    method, path, query, headers = presigned_v2()
    expect_error("InvalidAccessKeyId", 403, method, path, query.replace(f"AWSAccessKeyId={AK}", "AWSAccessKeyId=X"), headers)


# ------------------------------------------------------------------ chunk signatures (AWS example)

# The AWS documentation's example for STREAMING-AWS4-HMAC-SHA256-PAYLOAD ("sigv4-streaming"):
# 66560 bytes of 'a' in 64 KiB chunks, signed 20130524T000000Z in us-east-1 for s3.
DOC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DOC_DATE = "20130524T000000Z"
DOC_SCOPE = "20130524/us-east-1/s3/aws4_request"
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_CHUNKS = [
    (65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]


def doc_verifier() -> sigv4.ChunkSignatureVerifier:
    key = sigv4.signing_key(DOC_SECRET, "20130524", "us-east-1", "s3")
    return sigv4.ChunkSignatureVerifier(key, DOC_DATE, DOC_SCOPE, DOC_SEED)


def test_aws_documented_chunk_signatures_verify_in_order():
    verifier = doc_verifier()
    for size, signature in DOC_CHUNKS:
        verifier.verify_chunk(hashlib.sha256(b"a" * size).hexdigest(), signature)
    assert verifier.previous_signature == DOC_CHUNKS[-1][1]


def test_aws_documented_seed_signature_matches_header_verification():
    headers = CIMultiDict({
        "Host": "s3.amazonaws.com", "x-amz-date": DOC_DATE, "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "66560",
        "Content-Length": "66824", "x-amz-content-sha256": sigv4.STREAMING_SIGNED,
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                         "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                         f"x-amz-decoded-content-length;x-amz-storage-class,Signature={DOC_SEED}",
    })
    now = sigv4._parse_amz_date(DOC_DATE)
    result = verify("PUT", "/examplebucket/chunkObject.txt", "", headers,
                    {"AKIAIOSFODNN7EXAMPLE": DOC_SECRET}.get, service="s3", now=now)
    assert result.chunk_verifier is not None
    result.chunk_verifier.verify_chunk(hashlib.sha256(b"a" * 65536).hexdigest(), DOC_CHUNKS[0][1])


def test_reordered_chunk_signature_is_signature_does_not_match():
    verifier = doc_verifier()
    with pytest.raises(AuthError) as info:
        verifier.verify_chunk(hashlib.sha256(b"a" * 1024).hexdigest(), DOC_CHUNKS[1][1])
    assert (info.value.code, info.value.status) == ("SignatureDoesNotMatch", 403)


def test_trailer_signature_chains_after_final_chunk():
    verifier = doc_verifier()
    for size, signature in DOC_CHUNKS:
        verifier.verify_chunk(hashlib.sha256(b"a" * size).hexdigest(), signature)
    trailer = b"x-amz-checksum-crc32c:sOO8/Q==\n"
    expected = sigv4.hmac.new(sigv4.signing_key(DOC_SECRET, "20130524", "us-east-1", "s3"),
                              ("AWS4-HMAC-SHA256-TRAILER\n" + DOC_DATE + "\n" + DOC_SCOPE + "\n"
                               + DOC_CHUNKS[-1][1] + "\n" + hashlib.sha256(trailer).hexdigest()).encode(),
                              hashlib.sha256).hexdigest()
    verifier.verify_trailer(trailer, expected)
    with pytest.raises(AuthError):
        doc_verifier().verify_trailer(trailer, expected)


# ------------------------------------------------------------------ more edge cases


def signed_with_payload_header(payload_hash: str):
    request = AWSRequest(method="PUT", url=f"http://{HOST}/bkt/key",
                         headers={"X-Amz-Content-SHA256": payload_hash})
    SigV4Auth(CREDS, "s3", "us-east-1").add_auth(request)  # keeps the preset payload hash
    return wire(request)


@pytest.mark.parametrize("payload", ["UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"])
def test_unsigned_payload_modes_verify_without_chunk_verifier(payload):
    result = check(*signed_with_payload_header(payload))
    assert (result.payload_hash, result.chunk_verifier) == (payload, None)


def test_signed_trailer_mode_returns_chunk_verifier():
    result = check(*signed_with_payload_header(sigv4.STREAMING_SIGNED_TRAILER))
    assert result.chunk_verifier is not None


def test_garbled_amz_date_header_is_access_denied():
    method, path, query, headers = signed_s3()
    headers["X-Amz-Date"] = headers["X-Amz-Date"][:8] + "Tnoon"
    expect_error("AccessDenied", 403, method, path, query, headers)


def test_garbled_presigned_amz_date_is_query_parameters_error():
    method, path, query, headers = presigned_v4()
    amz_date = next(p.split("=")[1] for p in query.split("&") if p.startswith("X-Amz-Date="))
    query = query.replace(f"X-Amz-Date={amz_date}", f"X-Amz-Date={amz_date[:8]}Tnoon")
    expect_error("AuthorizationQueryParametersError", 400, method, path, query, headers)


def test_presigned_v4_wrong_region_is_query_parameters_error():
    expect_error("AuthorizationQueryParametersError", 400, *presigned_v4(), region="eu-west-1")


def test_presigned_v4_unknown_key_is_invalid_access_key_id():
    method, path, query, headers = presigned_v4()
    expect_error("InvalidAccessKeyId", 403, method, path, query.replace(f"Credential={AK}", "Credential=X"), headers)


def test_presigned_v2_missing_expires_is_access_denied():
    method, path, query, headers = presigned_v2()
    query = "&".join(p for p in query.split("&") if not p.startswith("Expires="))
    expect_error("AccessDenied", 403, method, path, query, headers)


def test_repeated_header_values_are_joined_with_commas():
    headers = CIMultiDict([("X-Amz-Meta-A", " one "), ("x-amz-meta-a", "two  three")])
    assert sigv4.canonical_headers(headers, ["x-amz-meta-a"]) == "x-amz-meta-a:one,two three\n"


def test_canonical_query_decodes_reencodes_and_sorts():
    pairs = sigv4._parse_query("b=%7e&a=x+y&uploads&a=%2f&c=%C3%A9")
    assert sigv4.canonical_query(pairs) == "a=%2F&a=x%2By&b=~&c=%C3%A9&uploads="


# ------------------------------------------------------------------ unsigned x-amz-* on presigned URLs


@pytest.mark.parametrize("added, not_signed", [
    ({"x-amz-copy-source": "otherbucket/secret"}, "x-amz-copy-source"),
    ({"x-amz-meta-x": "1"}, "x-amz-meta-x"),
    ({"x-amz-server-side-encryption": "AES256", "X-Amz-Acl": "public-read", "x-amz-tagging": "a=b"},
     "x-amz-acl, x-amz-server-side-encryption, x-amz-tagging"),
    ({"x-amz-security-token": "token"}, "x-amz-security-token"),
])
def test_presigned_v4_with_an_added_amz_header_is_access_denied_naming_it(added, not_signed):
    method, path, query, headers = presigned_v4("PUT")
    headers.update(added)
    err = expect_error("AccessDenied", 403, method, path, query, headers)
    assert err.message == "There were headers present in the request which were not signed"
    assert err.extra == {"HeadersNotSigned": not_signed}


def test_presigned_v4_that_signed_its_amz_headers_verifies():
    signed = {"x-amz-meta-x": "1", "x-amz-server-side-encryption": "aws:kms", "Content-Type": "text/plain"}
    method, path, query, headers = presigned_v4("PUT", headers=signed)
    result = check(method, path, query, headers)
    assert result.signed_headers == ("content-type", "host", "x-amz-meta-x", "x-amz-server-side-encryption")


def test_presigned_v4_may_carry_an_unsigned_content_sha256_header():
    """S3 exempts it: it is the canonical request's payload hash, so a changed one fails anyway."""
    method, path, query, headers = presigned_v4()
    headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    assert check(method, path, query, headers).payload_hash == "UNSIGNED-PAYLOAD"
    headers["x-amz-content-sha256"] = sigv4.EMPTY_SHA256
    expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)


def test_header_signed_request_checks_unsigned_amz_headers_before_the_signature():
    method, path, query, headers = signed_s3("PUT", body=b"x")
    headers["x-amz-copy-source"] = "otherbucket/secret"
    err = expect_error("AccessDenied", 403, method, path, query, headers)
    assert err.extra == {"HeadersNotSigned": "x-amz-copy-source"}


def test_kms_requests_are_not_held_to_the_s3_header_rule():
    request = AWSRequest(method="POST", url=f"http://{HOST}/", data=b"{}",
                         headers={"X-Amz-Target": "TrentService.ListKeys"})
    SigV4Auth(CREDS, "kms", "us-east-1").add_auth(request)
    method, path, query, headers = wire(request)
    headers["x-amz-user-agent"] = "unsigned"
    result = check(method, path, query, headers, service="kms",
                   payload_hash=hashlib.sha256(b"{}").hexdigest())
    assert result.scheme == "v4-header"


@pytest.mark.parametrize("added", [{"x-amz-copy-source": "otherbucket/secret"}, {"x-amz-meta-x": "1"}])
def test_presigned_v2_with_an_added_amz_header_is_signature_does_not_match(added):
    """SigV2 signs every x-amz-* header sent, so an added one changes the string to sign."""
    method, path, query, headers = presigned_v2("PUT")
    headers.update(added)
    err = expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)
    assert f"\n{next(iter(added))}:" in err.extra["StringToSign"]


def test_presigned_v2_query_value_shadowed_by_a_sent_header_is_not_signed():
    """A header sent under a query parameter's name is what SigV2 signs; the query value is not,
    so query_borne_headers' caller must let the header win."""
    method, path, query, headers = presigned_v2("PUT", headers={"x-amz-acl": "private"})
    assert "x-amz-acl=private" in query
    headers["x-amz-acl"] = "private"
    assert check(method, path, query.replace("x-amz-acl=private", "x-amz-acl=public-read"), headers)


@pytest.mark.parametrize("subresource", ["retention", "legal-hold", "encryption", "publicAccessBlock",
                                         "ownershipControls", "attributes"])
def test_presigned_v2_with_an_appended_operation_subresource_is_signature_does_not_match(subresource):
    """`?retention` appended to a presigned PutObject would make it a PutObjectRetention."""
    method, path, query, headers = presigned_v2("PUT")
    err = expect_error("SignatureDoesNotMatch", 403, method, path, f"{query}&{subresource}", headers)
    assert err.extra["StringToSign"].endswith(f"/bkt/key?{subresource}")


def test_every_query_parameter_that_selects_the_operation_is_signed_by_sigv2():
    from gateway.s3request import OPERATION_SUBRESOURCES
    assert OPERATION_SUBRESOURCES <= sigv4.V2_SUBRESOURCES


def test_botocore_subresources_are_all_signed_by_sigv2():
    assert set(HmacV1QueryAuth.QSAOfInterest) <= sigv4.V2_SUBRESOURCES


class _MinioStyleV2QueryAuth(HmacV1QueryAuth):
    """A SigV2 signer that signs the object-lock sub-resources, as MinIO's clients do."""

    QSAOfInterest = [*HmacV1QueryAuth.QSAOfInterest, "retention", "legal-hold"]


@pytest.mark.parametrize("subresource", ["retention", "legal-hold"])
def test_presigned_v2_that_signed_an_object_lock_subresource_verifies(subresource):
    request = AWSRequest(method="PUT", url=f"http://{HOST}/bkt/key?{subresource}")
    _MinioStyleV2QueryAuth(CREDS).add_auth(request)
    assert check(*wire(request)).scheme == "v2-query"


def test_query_borne_headers_are_the_presigners_header_parameters():
    pairs = [("X-Amz-Algorithm", "a"), ("X-Amz-Credential", "c"), ("X-Amz-Date", "d"), ("X-Amz-Expires", "1"),
             ("X-Amz-SignedHeaders", "host"), ("X-Amz-Signature", "s"), ("X-Amz-Security-Token", "t"),
             ("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"), ("x-amz-meta-a", "1"),
             ("X-Amz-Server-Side-Encryption", "aws:kms"), ("content-type", "text/plain"), ("versionId", "v")]
    assert sigv4.query_borne_headers("v4-query", pairs) == [("x-amz-meta-a", "1"),
                                                             ("x-amz-server-side-encryption", "aws:kms")]
    v2 = [("AWSAccessKeyId", "k"), ("Signature", "s"), ("Expires", "1"), ("x-amz-meta-a", "1"),
          ("content-type", "text/plain"), ("Content-MD5", "m"), ("versionId", "v")]
    assert sigv4.query_borne_headers("v2-query", v2) == [("x-amz-meta-a", "1"), ("content-type", "text/plain"),
                                                         ("content-md5", "m")]
    assert sigv4.query_borne_headers("v4-header", pairs) == []


def test_signed_header_with_a_non_utf8_byte_is_a_verdict_not_a_crash():
    """aiohttp hands a non-UTF-8 header byte over as a lone surrogate; encoding it plainly raised
    UnicodeEncodeError (a 500). The signature is now computed over the byte as sent."""
    method, path, query, headers = signed_s3("PUT", headers={"x-amz-meta-a": "caf"})
    headers["x-amz-meta-a"] = "caf\udce9"
    err = expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)
    assert "x-amz-meta-a:caf\udce9\n" in err.extra["CanonicalRequest"]


def test_signed_header_with_utf8_text_verifies():
    assert check(*signed_s3("PUT", headers={"x-amz-meta-a": "café ☕"})).scheme == "v4-header"


@pytest.mark.parametrize("expires", ["²", "٣٦٠٠", "9" * 5000])
def test_presigned_v4_expires_that_is_not_an_ascii_number_in_range_is_query_parameters_error(expires):
    method, path, query, headers = presigned_v4()
    query = query.replace("X-Amz-Expires=3600", f"X-Amz-Expires={quote(expires)}")
    expect_error("AuthorizationQueryParametersError", 400, method, path, query, headers)


@pytest.mark.parametrize("expires", ["²", "٣٦٠٠"])
def test_presigned_v2_expires_that_is_not_an_ascii_number_is_access_denied(expires):
    method, path, query, headers = presigned_v2()
    query = re.sub(r"Expires=\d+", f"Expires={quote(expires)}", query)
    err = expect_error("AccessDenied", 403, method, path, query, headers)
    assert err.message.startswith("Invalid date")


def test_presigned_v2_with_a_far_future_expires_still_checks_the_signature():
    method, path, query, headers = presigned_v2()
    query = re.sub(r"Expires=\d+", "Expires=" + "9" * 5000, query)
    expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)


def test_amz_date_in_another_scripts_digits_is_access_denied():
    """`\\d` matched them, and int() reads them: such a date was accepted as a valid one."""
    method, path, query, headers = signed_s3()
    date = headers["x-amz-date"]
    arabic = date.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    headers["x-amz-date"] = arabic
    headers["Authorization"] = headers["Authorization"].replace(f"/{date[:8]}/", f"/{arabic[:8]}/")
    err = expect_error("AccessDenied", 403, method, path, query, headers)
    assert err.message == "AWS authentication requires a valid Date or x-amz-date header"


@pytest.mark.parametrize("signature", ["é" * 64, "\udcff"])
def test_non_ascii_signature_is_signature_does_not_match(signature):
    """hmac.compare_digest raised TypeError (a 500) on a non-ASCII string."""
    method, path, query, headers = signed_s3()
    headers["Authorization"] = headers["Authorization"].rsplit("=", 1)[0] + "=" + signature
    expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)
    method, path, query, headers = presigned_v2()
    query = re.sub(r"Signature=[^&]+", "Signature=%C3%A9", query)
    expect_error("SignatureDoesNotMatch", 403, method, path, query, headers)


def test_path_holding_a_surrogate_escaped_byte_is_a_verdict_not_a_crash():
    """Found by the fuzzer: re-encoding such a path for the second canonical-URI candidate raised
    UnicodeEncodeError."""
    method, path, query, headers = signed_s3()
    expect_error("SignatureDoesNotMatch", 403, method, "/bkt/%FF\udcff", query, headers)
