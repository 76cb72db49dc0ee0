"""POST object (browser form uploads) through the gateway, on moto and Ceph RGW: boto3's
generate_presigned_post makes the form, `requests` posts it as a browser would (multipart/form-data, the
file last), and the object is read back through the gateway (exact bytes) and straight from the upstream
(ciphertext). Every refusal is S3's error with its exact code and status, and stores nothing."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError

from common.sigv4 import signing_key
from tests.gateway.both_upstreams import gateway, upstream_s3  # noqa: F401 (moto and RGW)
from tests.gateway.conftest import DEFAULT_KMS_ALIAS
from tests.support.clients import s3_client, signed_request, upstream_keys
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

MiB = 1024 * 1024
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
ORIGIN = "https://app.example"


def _post(gateway, bucket: str, fields: dict[str, str], body: bytes, filename: str = "upload.bin",
          **headers: str) -> requests.Response:
    """The form as a browser sends it: the fields, then the file."""
    return requests.post(f"{gateway.url}/{bucket}", data=fields, files={"file": (filename, body)}, headers=headers,
                         timeout=120, allow_redirects=False)


def _presigned(gateway, bucket: str, key: str = "upload.bin", fields: dict | None = None,
               conditions: list | None = None, *, signature_version: str = "s3v4",
               access_key: str = GATEWAY_ACCESS_KEY, secret_key: str = GATEWAY_SECRET_KEY) -> dict[str, str]:
    """The form fields of boto3's generate_presigned_post (SigV4 unless asked otherwise)."""
    signer = s3_client(gateway.url, access_key, secret_key, signature_version=signature_version)
    return signer.generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions, ExpiresIn=600)["fields"]


def _signed_form(policy: dict, key: str, **fields: str) -> dict[str, str]:
    """A SigV4 form for the gateway credential over ``policy`` as it is (expired ones too)."""
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    encoded = base64.b64encode(json.dumps(policy).encode()).decode()
    signing = signing_key(GATEWAY_SECRET_KEY, date[:8], "us-east-1", "s3")
    return {"key": key, "x-amz-algorithm": "AWS4-HMAC-SHA256",
            "x-amz-credential": f"{GATEWAY_ACCESS_KEY}/{date[:8]}/us-east-1/s3/aws4_request", "x-amz-date": date,
            "policy": encoded, "x-amz-signature": hmac.new(signing, encoded.encode(), hashlib.sha256).hexdigest(),
            **fields}


def _error(answer: requests.Response) -> tuple[int, str, str]:
    root = ET.fromstring(answer.content)
    return answer.status_code, root.findtext("Code"), root.findtext("Message")


def _absent(upstream_s3, bucket: str) -> bool:
    return upstream_keys(upstream_s3, bucket) == []


# ---------------------------------------------------------------- uploads


def test_a_form_upload_round_trips_exact_bytes_encrypted_upstream(gateway, s3, upstream_s3, bucket):
    body = os.urandom(70_000)
    answer = _post(gateway, bucket, _presigned(gateway, bucket), body)
    assert (answer.status_code, answer.content) == (204, b"")
    got = s3.get_object(Bucket=bucket, Key="upload.bin")
    assert got["Body"].read() == body
    assert answer.headers["ETag"] == got["ETag"]
    assert answer.headers["Location"] == f"{gateway.url}/{bucket}/upload.bin"
    stored = upstream_s3.get_object(Bucket=bucket, Key="upload.bin")["Body"].read()
    assert len(stored) > len(body) and body[:4096] not in stored


def test_a_sigv2_form_uploads_as_its_credential(gateway, s3, bucket):
    """The gateway takes SigV2 in presigned URLs (common/sigv4.py), and so in forms."""
    fields = _presigned(gateway, bucket, "v2.txt", signature_version="s3")
    assert "AWSAccessKeyId" in fields and "signature" in fields
    assert _post(gateway, bucket, fields, b"signed the old way").status_code == 204
    assert s3.get_object(Bucket=bucket, Key="v2.txt")["Body"].read() == b"signed the old way"


def test_filename_in_the_key_is_the_file_parts_name(gateway, s3, bucket):
    fields = _presigned(gateway, bucket, "user/42/${filename}", conditions=[["starts-with", "$key", "user/42/"]])
    assert _post(gateway, bucket, fields, b"a photo", filename="photo.jpg").status_code == 204
    assert s3.get_object(Bucket=bucket, Key="user/42/photo.jpg")["Body"].read() == b"a photo"


def test_content_headers_and_metadata_fields_are_stored_with_the_object(gateway, s3, bucket):
    extra = {"Content-Type": "image/png", "Cache-Control": "max-age=60", "Content-Disposition": "inline",
             "x-amz-meta-owner": "priya"}
    fields = _presigned(gateway, bucket, "meta.png", fields=extra, conditions=[{name: value} for name, value in extra.items()])
    assert _post(gateway, bucket, fields, b"\x89PNG").status_code == 204
    head = s3.head_object(Bucket=bucket, Key="meta.png")
    assert (head["ContentType"], head["CacheControl"], head["ContentDisposition"], head["Metadata"]) == (
        "image/png", "max-age=60", "inline", {"owner": "priya"})


TAGGING = ("<Tagging><TagSet><Tag><Key>project</Key><Value>blue sky</Value></Tag>"
           "<Tag><Key>tier</Key><Value>a+b/c=d</Value></Tag></TagSet></Tagging>")


def test_the_tagging_field_tags_the_object(gateway, s3, bucket):
    fields = _presigned(gateway, bucket, "tagged.bin", fields={"tagging": TAGGING},
                        conditions=[{"tagging": TAGGING}])
    answer = _post(gateway, bucket, fields, b"tagged")
    assert answer.status_code == 204, answer.text
    tags = s3.get_object_tagging(Bucket=bucket, Key="tagged.bin")["TagSet"]
    assert sorted((t["Key"], t["Value"]) for t in tags) == [("project", "blue sky"), ("tier", "a+b/c=d")]
    assert s3.get_object(Bucket=bucket, Key="tagged.bin")["Body"].read() == b"tagged"


@pytest.mark.parametrize("document", ["not xml", "<Other/>", "<Tagging/>",
                                      "<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
                                      "<Tagging><TagSet><Tag><Key>k</Key><Value>a<b/>c</Value></Tag></TagSet></Tagging>"])
def test_a_tagging_field_that_is_not_a_tagging_document_is_400_malformed_xml(gateway, upstream_s3, bucket, document):
    fields = _presigned(gateway, bucket, "bad-tags.bin", fields={"tagging": document},
                        conditions=[{"tagging": document}])
    assert _error(_post(gateway, bucket, fields, b"x"))[:2] == (400, "MalformedXML")
    assert _absent(upstream_s3, bucket)


def test_sse_kms_form_fields_encrypt_under_the_named_key(gateway, s3, upstream_s3, bucket):
    sse = {"x-amz-server-side-encryption": "aws:kms", "x-amz-server-side-encryption-aws-kms-key-id": DEFAULT_KMS_ALIAS}
    fields = _presigned(gateway, bucket, "kms.txt", fields=sse, conditions=[{name: value} for name, value in sse.items()])
    answer = _post(gateway, bucket, fields, b"kms secret")
    assert (answer.status_code, answer.headers["x-amz-server-side-encryption"]) == (204, "aws:kms")
    head = s3.head_object(Bucket=bucket, Key="kms.txt")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].startswith("arn:aws:kms:")
    assert s3.get_object(Bucket=bucket, Key="kms.txt")["Body"].read() == b"kms secret"
    assert b"kms secret" not in upstream_s3.get_object(Bucket=bucket, Key="kms.txt")["Body"].read()


def test_sse_c_form_fields_encrypt_with_the_customer_key(gateway, s3, upstream_s3, bucket):
    key = os.urandom(32)
    sse_c = {"x-amz-server-side-encryption-customer-algorithm": "AES256",
             "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
             "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    fields = _presigned(gateway, bucket, "ssec.txt", fields=sse_c, conditions=[{name: value} for name, value in sse_c.items()])
    answer = _post(gateway, bucket, fields, b"customer secret")
    assert (answer.status_code, answer.headers["x-amz-server-side-encryption-customer-algorithm"]) == (204, "AES256")
    got = s3.get_object(Bucket=bucket, Key="ssec.txt", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == b"customer secret"
    with pytest.raises(ClientError) as without:
        s3.get_object(Bucket=bucket, Key="ssec.txt")
    assert without.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert b"customer secret" not in upstream_s3.get_object(Bucket=bucket, Key="ssec.txt")["Body"].read()


def test_the_bucket_default_encryption_applies_to_a_form_without_sse_fields(gateway, s3, bucket):
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    assert _post(gateway, bucket, _presigned(gateway, bucket, "default.txt"), b"by default").status_code == 204
    assert s3.head_object(Bucket=bucket, Key="default.txt")["ServerSideEncryption"] == "AES256"


def test_success_action_status_201_answers_a_post_response_document(gateway, s3, bucket):
    fields = _presigned(gateway, bucket, "doc.txt", fields={"success_action_status": "201"},
                        conditions=[{"success_action_status": "201"}])
    answer = _post(gateway, bucket, fields, b"with a receipt")
    assert answer.status_code == 201
    root = ET.fromstring(answer.content)
    assert root.tag == f"{S3_NS}PostResponse"
    assert {child.tag.removeprefix(S3_NS): child.text for child in root} == {
        "Location": f"{gateway.url}/{bucket}/doc.txt", "Bucket": bucket, "Key": "doc.txt",
        "ETag": s3.head_object(Bucket=bucket, Key="doc.txt")["ETag"]}


def test_success_action_status_200_answers_200_and_an_unknown_status_204(gateway, s3, bucket):
    for status, expected in (("200", 200), ("299", 204)):
        fields = _presigned(gateway, bucket, f"s{status}", fields={"success_action_status": status},
                            conditions=[{"success_action_status": status}])
        answer = _post(gateway, bucket, fields, b"x")
        assert (answer.status_code, answer.content) == (expected, b"")


def test_success_action_redirect_is_303_with_bucket_key_and_etag(gateway, s3, bucket):
    target = "https://app.example/done?from=form"
    fields = _presigned(gateway, bucket, "redirected.txt", fields={"success_action_redirect": target},
                        conditions=[{"success_action_redirect": target}])
    answer = _post(gateway, bucket, fields, b"then go back")
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "app.example", "/done")
    assert parse_qs(location.query) == {"from": ["form"], "bucket": [bucket], "key": ["redirected.txt"],
                                        "etag": [s3.head_object(Bucket=bucket, Key="redirected.txt")["ETag"]]}


def test_a_20_mib_file_streams_through(gateway, s3, upstream_s3, bucket):
    body = os.urandom(20 * MiB)
    fields = _presigned(gateway, bucket, "big.bin", conditions=[["content-length-range", 0, 25 * MiB]])
    assert _post(gateway, bucket, fields, body).status_code == 204
    assert hashlib.sha256(s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()).digest() == \
        hashlib.sha256(body).digest()
    assert upstream_s3.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] > len(body)


def test_fields_are_case_insensitive_and_x_ignore_fields_need_no_condition(gateway, s3, bucket):
    fields = {name.upper() if name == "policy" else name: value for name, value in _presigned(gateway, bucket).items()}
    assert _post(gateway, bucket, {**fields, "x-ignore-tracker": "1"}, b"any case").status_code == 204


def test_a_cross_origin_form_upload_gets_the_buckets_cors_headers(gateway, s3, bucket):
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [ORIGIN], "AllowedMethods": ["POST"], "ExposeHeaders": ["ETag"]}]})
    answer = _post(gateway, bucket, _presigned(gateway, bucket), b"from a page", Origin=ORIGIN)
    assert (answer.status_code, answer.headers["Access-Control-Allow-Origin"]) == (204, ORIGIN)
    refused = _post(gateway, bucket, {"key": "anonymous"}, b"x", Origin=ORIGIN)
    assert (refused.status_code, refused.headers["Access-Control-Allow-Origin"]) == (403, ORIGIN)


# ---------------------------------------------------------------- refusals


def test_content_length_range_refuses_too_large_and_too_small_files(gateway, s3, upstream_s3, bucket):
    fields = _presigned(gateway, bucket, conditions=[["content-length-range", 10, 20]])
    assert _error(_post(gateway, bucket, fields, b"x" * 21))[:2] == (400, "EntityTooLarge")
    assert _error(_post(gateway, bucket, fields, b"x" * 9))[:2] == (400, "EntityTooSmall")
    assert _absent(upstream_s3, bucket)
    assert _post(gateway, bucket, fields, b"x" * 20).status_code == 204


def test_an_expired_policy_is_403(gateway, upstream_s3, bucket):
    policy = {"expiration": "2020-01-01T00:00:00.000Z", "conditions": [{"bucket": bucket}, {"key": "late"}]}
    assert _error(_post(gateway, bucket, _signed_form(policy, "late"), b"x")) == (
        403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    assert _absent(upstream_s3, bucket)


def test_a_failed_condition_is_403(gateway, s3, upstream_s3, bucket):
    fields = _presigned(gateway, bucket, "user/42/${filename}", conditions=[["starts-with", "$key", "user/42/"]])
    answer = _post(gateway, bucket, {**fields, "key": "user/43/x"}, b"x")
    assert _error(answer) == (403, "AccessDenied",
                              'Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "user/42/"]')
    other = _presigned(gateway, "some-other-bucket")
    assert _error(_post(gateway, bucket, other, b"x"))[:2] == (403, "AccessDenied")
    assert _absent(upstream_s3, bucket)


def test_a_field_the_policy_does_not_cover_is_403(gateway, s3, upstream_s3, bucket):
    fields = {**_presigned(gateway, bucket), "x-amz-server-side-encryption": "AES256"}
    assert _error(_post(gateway, bucket, fields, b"x")) == (
        403, "AccessDenied", "Invalid according to Policy: Extra input fields: x-amz-server-side-encryption")
    assert _absent(upstream_s3, bucket)


def test_signature_and_credential_failures_are_403(gateway, s3, upstream_s3, bucket):
    fields = _presigned(gateway, bucket)
    wrong = {**fields, "x-amz-signature": "0" * 64}
    assert _error(_post(gateway, bucket, wrong, b"x"))[:2] == (403, "SignatureDoesNotMatch")
    stranger = _presigned(gateway, bucket, access_key="AKIDSTRANGER", secret_key="not-a-gateway-secret")
    assert _error(_post(gateway, bucket, stranger, b"x"))[:2] == (403, "InvalidAccessKeyId")
    assert _absent(upstream_s3, bucket)


def test_an_anonymous_form_is_403_access_denied_and_not_forwarded(gateway, upstream_s3, bucket):
    assert _error(_post(gateway, bucket, {"key": "anonymous"}, b"x")) == (403, "AccessDenied", "Access Denied")
    assert _absent(upstream_s3, bucket)


def test_missing_key_file_or_policy_and_a_bad_policy_are_400(gateway, s3, upstream_s3, bucket):
    fields = _presigned(gateway, bucket)
    no_key = {name: value for name, value in fields.items() if name != "key"}
    assert _error(_post(gateway, bucket, no_key, b"x")) == (
        400, "InvalidArgument",
        "Bucket POST must contain a field named 'key'.  If it is specified, please check the order of the fields.")
    no_file = requests.post(f"{gateway.url}/{bucket}", files={name: (None, value) for name, value in fields.items()},
                            timeout=30)
    assert _error(no_file) == (400, "InvalidArgument", "POST requires exactly one file upload per request.")
    no_policy = {name: value for name, value in fields.items() if name != "policy"}
    assert _error(_post(gateway, bucket, no_policy, b"x"))[:2] == (400, "InvalidArgument")
    garbage = {**_signed_form({}, "k"), "policy": "bm90IGpzb24="}
    assert _error(_post(gateway, bucket, garbage, b"x"))[:2] == (403, "SignatureDoesNotMatch")
    not_json = _signed_form({}, "k")
    not_json["policy"] = base64.b64encode(b"not json").decode()
    date, encoded = not_json["x-amz-date"], not_json["policy"]
    signing = signing_key(GATEWAY_SECRET_KEY, date[:8], "us-east-1", "s3")
    not_json["x-amz-signature"] = hmac.new(signing, encoded.encode(), hashlib.sha256).hexdigest()
    assert _error(_post(gateway, bucket, not_json, b"x")) == (400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")
    assert _absent(upstream_s3, bucket)


def _raw_form(parts: list[tuple[str, bytes]], boundary: str = "formboundary", ending: bytes = b"\r\n") -> bytes:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
                    + (b'; filename="f.bin"' if name == "file" else b"") + b"\r\n\r\n" + value + b"\r\n"
                    for name, value in parts)
    return body + f"--{boundary}--".encode() + ending


def _post_raw(gateway, bucket: str, body: bytes, boundary: str = "formboundary") -> requests.Response:
    return requests.post(f"{gateway.url}/{bucket}", data=body, timeout=30,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_a_form_built_by_hand_uploads_and_one_with_fields_after_the_file_stores_nothing(gateway, s3, upstream_s3,
                                                                                        bucket):
    fields = [(name, value.encode()) for name, value in _presigned(gateway, bucket).items()]
    assert _post_raw(gateway, bucket, _raw_form([*fields, ("file", b"by hand")])).status_code == 204
    assert s3.get_object(Bucket=bucket, Key="upload.bin")["Body"].read() == b"by hand"
    s3.delete_object(Bucket=bucket, Key="upload.bin")
    trailing = _raw_form([*fields, ("file", b"by hand"), ("submit", b"Upload")])
    assert _error(_post_raw(gateway, bucket, trailing))[:2] == (400, "MalformedPOSTRequest")
    assert _absent(upstream_s3, bucket)


def test_a_body_that_is_not_multipart_and_oversized_fields_are_400(gateway, s3, upstream_s3, bucket):
    assert _error(_post_raw(gateway, bucket, b"no boundary here at all"))[:2] == (400, "MalformedPOSTRequest")
    fields = [(name, value.encode()) for name, value in _presigned(gateway, bucket).items()]
    huge = _raw_form([*fields, ("x-ignore-padding", b"p" * 30_000), ("file", b"x")])
    assert _error(_post_raw(gateway, bucket, huge))[:2] == (400, "MaxPostPreDataLengthExceededError")
    assert _absent(upstream_s3, bucket)


def test_a_post_to_a_key_under_the_reserved_prefix_is_403(gateway, s3, upstream_s3, bucket):
    fields = _presigned(gateway, bucket, ".s3gw/forged")
    assert _error(_post(gateway, bucket, fields, b"x"))[:2] == (403, "AccessDenied")
    assert ".s3gw/forged" not in upstream_keys(upstream_s3, bucket, reserved=True)


def test_a_non_ascii_filename_names_the_key_and_a_non_ascii_metadata_value_is_stored_rfc_2047_encoded(gateway, s3,
                                                                                                      bucket):
    """S3 returns a metadata value that is not US-ASCII as an RFC 2047 encoded word (a header cannot carry it)."""
    fields = _presigned(gateway, bucket, "cv/${filename}", fields={"x-amz-meta-owner": "Priya Sharm\u00e1"},
                        conditions=[["starts-with", "$key", "cv/"], {"x-amz-meta-owner": "Priya Sharm\u00e1"}])
    answer = _post(gateway, bucket, fields, b"%PDF", filename="Lebenslauf \u00fc.pdf")
    assert answer.status_code == 204, answer.content
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["cv/Lebenslauf \u00fc.pdf"]
    head = s3.head_object(Bucket=bucket, Key="cv/Lebenslauf \u00fc.pdf")
    assert head["Metadata"] == {"owner": "=?UTF-8?B?" + base64.b64encode("Priya Sharm\u00e1".encode()).decode() + "?="}


def test_a_post_to_a_bucket_that_is_not_a_form_upload_is_412_as_on_s3(gateway, upstream_s3, bucket):
    """S3's answer to a POST to a bucket whose body is not a form, signed or not."""
    signed = signed_request("POST", f"{gateway.url}/{bucket}", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, body=b"<x/>",
                            headers={"Content-Type": "application/xml"})
    anonymous = requests.post(f"{gateway.url}/{bucket}", data=b"file", headers={"Content-Type": "text/plain"},
                              timeout=30)
    for answer in (signed, anonymous):
        assert _error(answer) == (412, "PreconditionFailed",
                                  "At least one of the pre-conditions you specified did not hold")
        assert ET.fromstring(answer.content).findtext("Condition") == (
            "Bucket POST must be of the enclosure-type multipart/form-data")
    assert _absent(upstream_s3, bucket)


def test_a_signed_post_of_a_form_to_an_object_key_is_refused_with_501(gateway, upstream_s3, bucket):
    answer = signed_request("POST", f"{gateway.url}/{bucket}/key", GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY,
                            body=b"<x/>", headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert _error(answer) == (501, "NotImplemented",
                              "A POST object upload is a multipart/form-data form posted to the bucket")
    assert _absent(upstream_s3, bucket)


def test_a_form_upload_to_a_bucket_that_does_not_exist_is_404_no_such_bucket(gateway):
    missing = f"missing-{os.urandom(6).hex()}"
    assert _error(_post(gateway, missing, _presigned(gateway, missing), b"x"))[:2] == (404, "NoSuchBucket")


def test_a_checksum_field_is_verified_against_the_file(gateway, upstream_s3, bucket):
    body = b"checked on the way"
    good = base64.b64encode(hashlib.sha256(body).digest()).decode()
    bad = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    for value, key in ((bad, "bad"), (good, "good")):
        fields = _presigned(gateway, bucket, key, fields={"x-amz-checksum-sha256": value},
                            conditions=[{"x-amz-checksum-sha256": value}])
        answer = _post(gateway, bucket, fields, body)
        if value == bad:
            assert _error(answer)[:2] == (400, "BadDigest")
        else:
            assert (answer.status_code, answer.headers["x-amz-checksum-sha256"]) == (204, good)
    assert upstream_keys(upstream_s3, bucket) == ["good"]
