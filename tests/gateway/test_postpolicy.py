"""The POST object policy verifier (gateway/postpolicy.py) on its own: SigV4 and SigV2 form signatures as
botocore makes them, each condition kind, expiry, extra fields, and malformed policy documents, each with
the S3 error S3 answers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import boto3
import pytest
from botocore.config import Config
from hypothesis import given
from hypothesis import strategies as st

from common.sigv4 import signing_key
from gateway.postpolicy import authenticate_form, check_length, check_policy, parse_policy
from gateway.s3errors import S3Error
from tests.support.properties import BOUNDED, wire_text

ACCESS, SECRET = "AKIDPOSTTEST", "post-secret-key"
SECRETS = {ACCESS: SECRET}.get
NOW = time.time()


def _presigned(conditions: list | None = None, fields: dict | None = None, *, signature_version: str = "s3v4",
               expires: int = 600) -> dict[str, str]:
    """The form fields botocore's generate_presigned_post gives (lower-case names, as the gateway sees them)."""
    client = boto3.client("s3", endpoint_url="http://gw.test", region_name="us-east-1", aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, config=Config(signature_version=signature_version))
    post = client.generate_presigned_post("bkt", "up/${filename}", Fields=fields, Conditions=conditions,
                                          ExpiresIn=expires)
    return {name.lower(): value for name, value in post["fields"].items()}


def _v4_form(policy: dict, date: str = "20260101T000000Z", region: str = "us-east-1",
             access: str = ACCESS, secret: str = SECRET, service: str = "s3") -> dict[str, str]:
    encoded = base64.b64encode(json.dumps(policy).encode()).decode()
    key = signing_key(secret, date[:8], region, service)
    return {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": f"{access}/{date[:8]}/{region}/{service}/aws4_request",
            "x-amz-date": date, "policy": encoded,
            "x-amz-signature": hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()}


def _signed_raw(encoded: str) -> dict[str, str]:
    """A SigV4 form whose (validly signed) policy field is ``encoded`` as it is."""
    key = signing_key(SECRET, "20260101", "us-east-1", "s3")
    return {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": f"{ACCESS}/20260101/us-east-1/s3/aws4_request",
            "x-amz-date": "20260101T000000Z", "policy": encoded,
            "x-amz-signature": hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()}


def _error(call) -> tuple[str, int, str]:
    with pytest.raises(S3Error) as caught:
        call()
    return caught.value.code, caught.value.status, caught.value.message


def _auth(fields):
    return authenticate_form(fields, SECRETS, region="us-east-1", now=NOW)


def _policy(*conditions, expires_in: float = 600) -> dict:
    expiration = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW + expires_in))
    return {"expiration": expiration, "conditions": list(conditions)}


def _check(policy: dict, form: dict[str, str]) -> None:
    parsed = parse_policy(base64.b64encode(json.dumps(policy).encode()).decode(), now=NOW)
    check_policy(parsed, {**form, "bucket": "bkt"}, now=NOW)


# ---------------------------------------------------------------- signatures


def test_a_botocore_sigv4_form_authenticates_as_its_credential_and_passes_its_own_policy():
    fields = _presigned([["content-length-range", 1, 100]])
    auth = _auth(fields)
    assert (auth.access_key, auth.scheme, auth.policy.length_range) == (ACCESS, "v4-post", (1, 100))
    check_policy(auth.policy, {**fields, "bucket": "bkt", "key": "up/a.txt"}, now=NOW)


def test_a_botocore_sigv2_form_authenticates_as_its_credential():
    fields = _presigned(signature_version="s3")
    assert set(fields) == {"key", "awsaccesskeyid", "policy", "signature"}
    auth = _auth(fields)
    assert (auth.access_key, auth.scheme) == (ACCESS, "v2-post")
    check_policy(auth.policy, {**fields, "bucket": "bkt", "key": "up/x"}, now=NOW)


@pytest.mark.parametrize("version, field", [("s3v4", "x-amz-signature"), ("s3", "signature")])
def test_a_signature_made_with_another_secret_or_over_another_policy_is_403_signature_does_not_match(version, field):
    fields = _presigned(signature_version=version)
    tampered = {**fields, "policy": base64.b64encode(b'{"expiration":"2099-01-01T00:00:00Z","conditions":[]}').decode()}
    assert _error(lambda: _auth(tampered))[:2] == ("SignatureDoesNotMatch", 403)
    flipped = {**fields, field: fields[field][:-2] + ("00" if not fields[field].endswith("00") else "11")}
    assert _error(lambda: _auth(flipped))[:2] == ("SignatureDoesNotMatch", 403)
    assert _error(lambda: _auth({**fields, field: "sig\u00e9"}))[:2] == ("SignatureDoesNotMatch", 403)


def test_an_unknown_access_key_is_403_invalid_access_key_id():
    assert _error(lambda: _auth(_v4_form(_policy(), access="NOBODY")))[:2] == ("InvalidAccessKeyId", 403)
    v2 = {**_presigned(signature_version="s3"), "awsaccesskeyid": "NOBODY"}
    assert _error(lambda: _auth(v2))[:2] == ("InvalidAccessKeyId", 403)


@pytest.mark.parametrize("change, message", [
    ({"region": "eu-west-1"}, "Error parsing the X-Amz-Credential parameter; the region 'eu-west-1' is wrong; "
                              "expecting 'us-east-1'"),
    ({"service": "ec2"}, 'Error parsing the X-Amz-Credential parameter; incorrect service "ec2". '
                         'This endpoint belongs to "s3".'),
])
def test_a_credential_scope_for_another_region_or_service_is_400_invalid_argument(change, message):
    assert _error(lambda: _auth(_v4_form(_policy(), **change))) == ("InvalidArgument", 400, message)


def test_a_credential_date_other_than_x_amz_date_and_a_malformed_credential_are_400_invalid_argument():
    fields = {**_v4_form(_policy()), "x-amz-date": "20260102T000000Z"}
    assert _error(lambda: _auth(fields))[:2] == ("InvalidArgument", 400)
    fields = {**_v4_form(_policy()), "x-amz-credential": "AKID/20260101/us-east-1/s3"}
    assert _error(lambda: _auth(fields))[:2] == ("InvalidArgument", 400)
    fields = {**_v4_form(_policy()), "x-amz-date": "2026-01-01"}
    assert _error(lambda: _auth(fields))[:2] == ("InvalidArgument", 400)


def test_an_algorithm_other_than_aws4_hmac_sha256_is_400_invalid_argument():
    fields = {**_v4_form(_policy()), "x-amz-algorithm": "AWS4-HMAC-SHA1"}
    assert _error(lambda: _auth(fields)) == ("InvalidArgument", 400, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')


@pytest.mark.parametrize("missing", ["policy", "x-amz-credential", "x-amz-date", "x-amz-signature"])
def test_a_sigv4_form_missing_a_signature_field_is_400_invalid_argument_naming_it(missing):
    fields = _v4_form(_policy())
    del fields[missing]
    assert _error(lambda: _auth(fields)) == (
        "InvalidArgument", 400,
        f"Bucket POST must contain a field named '{missing}'.  If it is specified, please check the order of the fields.")


def test_a_policy_without_a_signature_is_400_and_a_form_with_neither_is_403_access_denied():
    assert _error(lambda: _auth({"policy": "e30=", "key": "k"}))[:2] == ("InvalidArgument", 400)
    assert _error(lambda: _auth({"key": "k"})) == ("AccessDenied", 403, "Access Denied")
    v2 = _presigned(signature_version="s3")
    del v2["policy"]
    assert _error(lambda: _auth(v2))[:2] == ("InvalidArgument", 400)


# ---------------------------------------------------------------- the policy document


@pytest.mark.parametrize("encoded, message", [
    ("not base64!", "Invalid Policy: Invalid JSON."),
    (base64.b64encode(b"{not json").decode(), "Invalid Policy: Invalid JSON."),
    (base64.b64encode(b"[1, 2]").decode(), "Invalid Policy: Invalid JSON."),
    (base64.b64encode(b'{"conditions": []}').decode(), "Invalid Policy: Policy missing expiration."),
    (base64.b64encode(b'{"expiration": "2099-01-01T00:00:00Z"}').decode(), "Invalid Policy: Policy missing conditions."),
    (base64.b64encode(b'{"expiration": "tomorrow", "conditions": []}').decode(),
     "Invalid Policy: Invalid 'expiration' value: 'tomorrow'"),
])
def test_a_policy_that_is_not_base64_json_with_expiration_and_conditions_is_400_invalid_policy_document(encoded, message):
    assert _error(lambda: _auth(_signed_raw(encoded))) == ("InvalidPolicyDocument", 400, message)


@pytest.mark.parametrize("condition", [
    {"key": "a", "acl": "b"}, {"key": 5}, ["eq", "key", "a"], ["matches", "$key", "a"], ["eq", "$key"],
    ["content-length-range", -1, 5], ["content-length-range", "x", 5], ["content-length-range", 1], 7])
def test_a_condition_s3_does_not_accept_is_400_invalid_policy_document(condition):
    encoded = base64.b64encode(json.dumps(_policy(condition)).encode()).decode()
    assert _error(lambda: parse_policy(encoded, now=NOW))[:2] == ("InvalidPolicyDocument", 400)


def test_an_expired_policy_is_403_policy_expired():
    assert _error(lambda: _check(_policy(expires_in=-1), {})) == (
        "AccessDenied", 403, "Invalid according to Policy: Policy expired.")


# ---------------------------------------------------------------- conditions


def test_exact_matches_in_both_forms_hold_only_for_the_exact_value():
    policy = _policy({"key": "a/b"}, ["eq", "$Content-Type", "text/plain"], {"bucket": "bkt"})
    _check(policy, {"key": "a/b", "content-type": "text/plain"})
    assert _error(lambda: _check(policy, {"key": "a/B", "content-type": "text/plain"})) == (
        "AccessDenied", 403, 'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "a/b"]')
    assert _error(lambda: _check(policy, {"key": "a/b", "content-type": "text/html"}))[2] == (
        'Invalid according to Policy: Policy Condition failed: ["eq", "$Content-Type", "text/plain"]')


def test_the_bucket_condition_names_the_bucket_posted_to():
    policy = _policy({"bucket": "other"}, {"key": "k"})
    assert _error(lambda: _check(policy, {"key": "k"}))[2] == (
        'Invalid according to Policy: Policy Condition failed: ["eq", "$bucket", "other"]')


def test_starts_with_holds_for_the_prefix_and_an_empty_prefix_for_anything():
    policy = _policy(["starts-with", "$key", "user/42/"], ["starts-with", "$x-amz-meta-note", ""])
    _check(policy, {"key": "user/42/cv.pdf", "x-amz-meta-note": "anything at all"})
    _check(policy, {"key": "user/42/", "x-amz-meta-note": ""})
    assert _error(lambda: _check(policy, {"key": "user/43/cv.pdf", "x-amz-meta-note": ""})) == (
        "AccessDenied", 403,
        'Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "user/42/"]')


def test_starts_with_on_content_type_holds_for_each_listed_type():
    policy = _policy({"key": "k"}, ["starts-with", "$Content-Type", "image/"])
    _check(policy, {"key": "k", "content-type": "image/png, image/jpeg"})
    assert _error(lambda: _check(policy, {"key": "k", "content-type": "image/png, text/html"}))[:2] == (
        "AccessDenied", 403)


def test_condition_field_names_are_case_insensitive():
    _check(_policy({"Key": "k"}, ["eq", "$X-AMZ-META-A", "1"]), {"key": "k", "x-amz-meta-a": "1"})


def test_every_field_must_be_covered_except_the_exempt_ones():
    policy = _policy({"key": "k"})
    exempt = {"key": "k", "policy": "p", "x-amz-signature": "s", "signature": "s", "awsaccesskeyid": "a",
              "x-ignore-tracker": "1", "x-ignore-other": "2"}
    _check(policy, exempt)
    assert _error(lambda: _check(policy, {"key": "k", "x-amz-meta-b": "1", "acl": "private"})) == (
        "AccessDenied", 403, "Invalid according to Policy: Extra input fields: x-amz-meta-b, acl")


def test_content_length_range_bounds_are_inclusive_and_out_of_range_is_entity_too_small_or_large():
    parsed = parse_policy(base64.b64encode(json.dumps(_policy(["content-length-range", 10, "20"])).encode()).decode(),
                          now=NOW)
    check_length(parsed, 10)
    check_length(parsed, 20)
    assert _error(lambda: check_length(parsed, 21))[:2] == ("EntityTooLarge", 400)
    assert _error(lambda: check_length(parsed, 9))[:2] == ("EntityTooSmall", 400)


# ---------------------------------------------------------------- any input


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=12)
conditions = st.lists(st.one_of(
    json_values,
    st.tuples(st.sampled_from(["eq", "starts-with", "EQ", "content-length-range", "x"]),
              st.sampled_from(["$key", "$content-type", "key", "$x-amz-meta-a", 5]), json_values).map(list)), max_size=5)


@BOUNDED
@given(st.one_of(json_values, st.fixed_dictionaries({"expiration": st.one_of(st.text(max_size=30), json_values),
                                                     "conditions": st.one_of(conditions, json_values)})),
       st.dictionaries(st.sampled_from(["key", "content-type", "x-amz-meta-a", "acl", "x-ignore-z"]),
                       st.text(max_size=10), max_size=4), st.integers(0, 2**64))
def test_any_policy_document_against_any_form_either_holds_or_raises_an_s3_error(document, fields, length):
    encoded = base64.b64encode(json.dumps(document).encode()).decode()
    try:
        policy = parse_policy(encoded, now=NOW)
        check_policy(policy, {**fields, "bucket": "bkt"}, now=NOW)
        check_length(policy, length)
    except S3Error as exc:
        assert exc.status in (400, 403)


@BOUNDED
@given(st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda raw: raw.decode("latin-1"))),
       st.dictionaries(st.sampled_from(["x-amz-signature", "x-amz-algorithm", "x-amz-credential", "x-amz-date",
                                        "awsaccesskeyid", "signature"]), wire_text, max_size=6))
def test_any_policy_and_signature_fields_authenticate_or_raise_an_s3_error(encoded, fields):
    with pytest.raises(S3Error):
        _auth({**fields, "policy": encoded})
