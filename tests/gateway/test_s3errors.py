"""S3 error rendering and conversions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway import s3errors
from gateway.s3errors import S3Error, error_xml
from common.sigv4 import AuthError


def test_error_xml_has_code_message_fields_resource_and_request_id_in_order():
    err = S3Error("NoSuchKey", "The specified key does not exist.", 404, Key="a&b")
    body = error_xml(err, request_id="RID1", resource="/bkt/a&b")
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    assert root.tag == "Error"
    assert [(c.tag, c.text) for c in root] == [
        ("Code", "NoSuchKey"), ("Message", "The specified key does not exist."),
        ("Key", "a&b"), ("Resource", "/bkt/a&b"), ("RequestId", "RID1")]


def test_error_without_resource_omits_it():
    root = ET.fromstring(error_xml(s3errors.access_denied(), request_id="R"))
    assert [c.tag for c in root] == ["Code", "Message", "RequestId"]


def test_auth_error_converts_with_diagnostic_fields():
    err = s3errors.from_auth_error(AuthError("SignatureDoesNotMatch", "bad", 403, StringToSign="s"))
    assert (err.code, err.status, err.fields) == ("SignatureDoesNotMatch", 403, {"StringToSign": "s"})


def test_extra_headers_are_kept():
    err = S3Error("SlowDown", "x", 503, headers={"Retry-After": "1"})
    assert err.headers == {"Retry-After": "1"}


def test_common_constructors_have_s3_codes_and_statuses():
    cases = [
        (s3errors.no_such_key("k"), "NoSuchKey", 404), (s3errors.no_such_bucket("b"), "NoSuchBucket", 404),
        (s3errors.no_such_upload("u"), "NoSuchUpload", 404), (s3errors.access_denied(), "AccessDenied", 403),
        (s3errors.invalid_argument("m", "n", "v"), "InvalidArgument", 400),
        (s3errors.invalid_request("m"), "InvalidRequest", 400), (s3errors.invalid_range(10), "InvalidRange", 416),
        (s3errors.not_implemented(), "NotImplemented", 501), (s3errors.internal_error(), "InternalError", 500),
        (s3errors.slow_down(), "SlowDown", 503), (s3errors.precondition_failed("If-Match"), "PreconditionFailed", 412),
        (s3errors.method_not_allowed("POST"), "MethodNotAllowed", 405),
        (s3errors.entity_too_large(5, 6), "EntityTooLarge", 400), (s3errors.entity_too_small(), "EntityTooSmall", 400),
        (s3errors.missing_content_length(), "MissingContentLength", 411),
        (s3errors.incomplete_body(), "IncompleteBody", 400), (s3errors.invalid_digest(), "InvalidDigest", 400),
        (s3errors.bad_digest(), "BadDigest", 400), (s3errors.malformed_xml(), "MalformedXML", 400),
        (s3errors.malformed_trailer(), "MalformedTrailerError", 400),
        (s3errors.invalid_part(), "InvalidPart", 400), (s3errors.invalid_part_order(), "InvalidPartOrder", 400),
        (s3errors.invalid_bucket_name("B"), "InvalidBucketName", 400),
        (s3errors.kms_not_found("m"), "KMS.NotFoundException", 400),
        (s3errors.kms_disabled("m"), "KMS.DisabledException", 400),
        (s3errors.kms_invalid_state("m"), "KMS.KMSInvalidStateException", 400),
    ]
    assert [(e.code, e.status) for e, _, _ in cases] == [(c, s) for _, c, s in cases]


@pytest.mark.parametrize("kms_type, code, status", [
    ("DisabledException", "KMS.DisabledException", 400), ("NotFoundException", "KMS.NotFoundException", 400),
    ("ThrottlingException", "SlowDown", 503), ("AccessDeniedException", "AccessDenied", 403),
    ("KMSInternalException", "ServiceUnavailable", 503), ("DependencyTimeoutException", "ServiceUnavailable", 503),
    ("KMSInvalidSignatureException", "InternalError", 500),
    ("503", "ServiceUnavailable", 503), ("502", "ServiceUnavailable", 503), ("500", "InternalError", 500),
])
def test_kms_errors_map_to_what_s3_returns(kms_type, code, status):
    err = s3errors.from_kms_error(kms_type, "m")
    assert (err.code, err.status) == (code, status)


LB_502_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize("status, body, expected", [
    (502, LB_502_PAGE, ("ServiceUnavailable", 503)),
    (503, b"<html><body>Service Temporarily Unavailable</body></html>", ("ServiceUnavailable", 503)),
    (504, b"upstream request timeout", ("ServiceUnavailable", 503)),
    (500, b"<!DOCTYPE html><html><p>oops</p></html>", ("InternalError", 500)),
    (599, b"", ("InternalError", 500)),
    (403, b"Forbidden", ("AccessDenied", 403)),
    (404, b"", ("NotFound", 404)),
    (429, b"<html>Too Many Requests</html>", ("InvalidRequest", 429)),
    (500, b"<Error><Code>InternalError", ("InternalError", 500)),  # truncated XML is not an S3 error
])
def test_upstream_error_that_is_not_s3_xml_becomes_the_s3_error_of_its_status_class(status, body, expected):
    err = s3errors.from_upstream(status, body, {"Content-Type": "text/html"})
    assert (err.code, err.status) == expected
    assert err.fields == {} and err.headers == {}
    assert b"<html" not in error_xml(err, request_id="R")


def test_upstream_s3_error_keeps_code_message_fields_status_and_retry_after():
    body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your '
            b'request rate.</Message><Key>k</Key><RequestId>UPSTREAM</RequestId><HostId>h</HostId></Error>')
    err = s3errors.from_upstream(503, body, {"Retry-After": "7", "Server": "x"})
    assert (err.code, err.message, err.status) == ("SlowDown", "Please reduce your request rate.", 503)
    assert err.fields == {"Key": "k"} and err.headers == {"Retry-After": "7"}


def test_parse_s3_error_accepts_only_error_documents_with_a_code():
    assert s3errors.parse_s3_error(b"<Error><Code>NoSuchKey</Code></Error>") is not None
    assert s3errors.parse_s3_error(b"<Error><Message>m</Message></Error>") is None
    assert s3errors.parse_s3_error(b"<ListBucketResult/>") is None
    assert s3errors.parse_s3_error(LB_502_PAGE) is None


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"])
def test_an_upstream_refusal_of_the_gateways_own_credential_is_the_gateways_503(code):
    body = f"<Error><Code>{code}</Code><Message>upstream's words</Message></Error>".encode()
    err = s3errors.from_upstream(403 if code != "AuthorizationHeaderMalformed" else 400, body)
    assert (err.code, err.status, err.message) == (
        "ServiceUnavailable", 503, f"The upstream store refused the gateway's own credential ({code}); the "
                                   "gateway's operator must correct its upstream credential.")


def test_an_upstream_access_denied_is_relayed_as_the_clients():
    err = s3errors.from_upstream(403, b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")
    assert (err.code, err.status, err.message) == ("AccessDenied", 403, "Access Denied")
