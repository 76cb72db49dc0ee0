"""Every malformed, unauthenticated or unknown request gets an AWS-shaped error, never a 500."""
from collections.abc import Iterator

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from keyservice.server import input_shape
from tests.keyservice.conftest import (ROOT, KeyServiceProcess, launch, raw_post, signed_call,
                                       signed_headers)


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyServiceProcess]:
    unthrottled = {operation: 1_000_000 for operation in OPERATIONS}  # garbage must reach the service
    server = launch(tmp_path_factory.mktemp("ks-errors"), quotas=unthrottled)
    yield server
    assert server.server.stop() == 0


def assert_error(response: tuple[int, dict, dict], status: int, type_: str) -> None:
    code, headers, body = response
    assert (code, body.get("__type")) == (status, type_), body
    assert isinstance(body.get("message"), str) and body["message"]
    assert headers["x-amzn-requestid"]


def test_missing_authentication(ks: KeyServiceProcess) -> None:
    response = raw_post(ks.url, b"{}", {"X-Amz-Target": "TrentService.ListKeys",
                                        "Content-Type": "application/x-amz-json-1.1"})
    assert_error(response, 400, "MissingAuthenticationTokenException")


def test_unknown_access_key(ks: KeyServiceProcess) -> None:
    assert_error(signed_call(ks.url, "ListKeys", {}, creds=("AKIANOBODY", "x")), 400,
                 "UnrecognizedClientException")


def test_wrong_secret(ks: KeyServiceProcess) -> None:
    assert_error(signed_call(ks.url, "ListKeys", {}, creds=(ROOT[0], "wrong")), 400,
                 "InvalidSignatureException")


def test_body_changed_after_signing(ks: KeyServiceProcess) -> None:
    headers = signed_headers(ks.url, b'{"Limit": 1}', "TrentService.ListKeys")
    assert_error(raw_post(ks.url, b'{"Limit": 2}', headers), 400, "InvalidSignatureException")


def test_skewed_signature_time(ks: KeyServiceProcess) -> None:
    headers = signed_headers(ks.url, b"{}", "TrentService.ListKeys",
                             extra={"X-Amz-Date": "20200101T000000Z"})
    headers["X-Amz-Date"] = "20200101T000000Z"
    code, _, body = raw_post(ks.url, b"{}", headers)
    assert code == 400 and body["__type"] in ("InvalidSignatureException", "IncompleteSignatureException")


def test_missing_target(ks: KeyServiceProcess) -> None:
    assert_error(raw_post(ks.url, b"{}", signed_headers(ks.url, b"{}", None)), 400,
                 "UnknownOperationException")


def test_unknown_operation(ks: KeyServiceProcess) -> None:
    assert_error(signed_call(ks.url, "LaunchRockets", {}), 400, "UnknownOperationException")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_json(ks: KeyServiceProcess, body: bytes) -> None:
    assert_error(signed_call(ks.url, "ListKeys", body), 400, "SerializationException")


def test_invalid_base64_blob(ks: KeyServiceProcess) -> None:
    assert_error(signed_call(ks.url, "Decrypt", {"CiphertextBlob": "!!notbase64!!"}), 400,
                 "SerializationException")


@pytest.mark.parametrize("operation, params", [
    ("DescribeKey", {"KeyId": 123}),
    ("DescribeKey", {}),
    ("ListKeys", {"Limit": "ten"}),
    ("Encrypt", {"KeyId": "alias/x", "Plaintext": "aGk=", "EncryptionContext": ["a"]}),
    ("CreateKey", {"Tags": {"TagKey": "a"}}),
    ("CreateKey", {"Surprise": True}),
])
def test_wrong_types_and_missing_members(ks: KeyServiceProcess, operation: str, params: dict) -> None:
    assert_error(signed_call(ks.url, operation, params), 400, "ValidationException")


def test_oversize_body(ks: KeyServiceProcess) -> None:
    body = b"{" + b" " * (1 << 20) + b"}"
    code, headers, response = raw_post(ks.url, body, signed_headers(ks.url, body, "TrentService.ListKeys"))
    assert code == 413 and response["__type"] == "ValidationException" and headers["x-amzn-requestid"]


@pytest.mark.parametrize("method, path", [("GET", "/"), ("POST", "/other"), ("PUT", "/")])
def test_other_methods_and_paths(ks: KeyServiceProcess, method: str, path: str) -> None:
    code, headers, body = raw_post(ks.url, b"", {}, path=path, method=method)
    assert code == 400 and body["__type"] == "MissingAuthenticationTokenException"


GARBAGE = [None, True, -1, 1.5, 10**30, "", "x" * 5000, [None], {"a": None}, "AAAA", "alias/none"]
OPERATIONS = ["CreateKey", "Encrypt", "Decrypt", "GenerateDataKey", "ReEncrypt", "CreateAlias",
              "CreateGrant", "PutKeyPolicy", "ScheduleKeyDeletion", "ListKeys", "Sign", "Verify",
              "GenerateMac", "GetParametersForImport", "ImportKeyMaterial", "TagResource",
              "GenerateDataKeyPair", "ListGrants", "RotateKeyOnDemand"]


def garbage_requests(key_id: str) -> Iterator[tuple[str, dict]]:
    """For each operation, every member of its botocore input shape set to each garbage value."""
    for operation in OPERATIONS:
        members = input_shape(operation).members
        for member in members:
            for value in GARBAGE + [key_id]:
                yield operation, {"KeyId": key_id, member: value}


def test_no_garbage_input_causes_an_internal_error(ks: KeyServiceProcess) -> None:
    key_id = signed_call(ks.url, "CreateKey", {})[2]["KeyMetadata"]["KeyId"]
    for operation, params in garbage_requests(key_id):
        code, headers, body = signed_call(ks.url, operation, params)
        assert code < 500, (operation, params, body)
        assert headers["x-amzn-requestid"]
        assert code == 200 or "__type" in body
    assert "Traceback" not in ks.server.log()


def test_signature_scoped_to_another_region(ks: KeyServiceProcess) -> None:
    request = AWSRequest(method="POST", url=ks.url + "/", data=b"{}", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"})
    SigV4Auth(Credentials(*ROOT), "kms", "eu-west-1").add_auth(request)
    code, _, body = raw_post(ks.url, b"{}", dict(request.headers.items()))
    assert code == 400 and body["__type"] == "IncompleteSignatureException"
    assert "eu-west-1" in body["message"]
