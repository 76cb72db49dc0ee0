"""S3's limits are enforced from the request headers, before the gateway spends a KMS call or an upstream
request: bodies over 5 GiB (PutObject, UploadPart, plain or aws-chunked) are EntityTooLarge, and an SSE-KMS
key id no KMS key can have is S3's 400 KMS.NotFoundException rather than a key-service failure (500).

The gateway here calls a standalone key service, whose audit log shows every KMS call it made.
"""
from __future__ import annotations

import http.client
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from gateway.limits import MAX_UPLOAD_SIZE
from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, start_gateway_with_remote_kms
from tests.keyservice.conftest import KeyServiceProcess, kms_client, launch
from tests.support.clients import REGION, s3_client, upstream_keys
from tests.support.moto import MotoServer
from tests.support.process import Server

TOO_LARGE = MAX_UPLOAD_SIZE + 1


@dataclass
class Deployment:
    keyservice: KeyServiceProcess
    gateway: Server

    def kms_operations(self) -> list[str]:
        return [record["operation"] for record in self.keyservice.audit_records()]


@pytest.fixture(scope="module")
def deployment(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("limits")
    keyservice = launch(workdir)
    key_arn = kms_client(keyservice.url).create_key(Description="limits CMK")["KeyMetadata"]["Arn"]
    gateway = start_gateway_with_remote_kms(moto, workdir, keyservice.url, key_arn)
    yield Deployment(keyservice, gateway)
    gateway.stop()
    keyservice.server.stop()


@pytest.fixture
def client(deployment: Deployment):
    return s3_client(deployment.gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)


@pytest.fixture
def fresh_bucket(client) -> str:
    name = f"limits-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def headers_only(url: str, method: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Send a signed request's headers (a Content-Length of >5 GiB included) and no body; the answer."""
    request = AWSRequest(method=method, url=url, headers=headers)
    S3SigV4Auth(Credentials(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), "s3", REGION).add_auth(request)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    try:
        connection.putrequest(method, f"{parts.path}?{parts.query}" if parts.query else parts.path,
                              skip_accept_encoding=True)
        for name, value in request.headers.items():
            connection.putheader(name, value.encode())  # UTF-8, as SigV4 signs non-ASCII values
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def error_of(body: bytes) -> dict[str, str | None]:
    root = ET.fromstring(body)
    return {name: root.findtext(name) for name in ("Code", "Message", "ProposedSize", "MaxSizeAllowed")}


ENTITY_TOO_LARGE = {"Code": "EntityTooLarge", "Message": "Your proposed upload exceeds the maximum allowed size",
                    "ProposedSize": str(TOO_LARGE), "MaxSizeAllowed": str(MAX_UPLOAD_SIZE)}
PLAIN = {"Content-Length": str(TOO_LARGE), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
CHUNKED = {"Content-Length": str(TOO_LARGE + 100_000), "Content-Encoding": "aws-chunked",
           "x-amz-decoded-content-length": str(TOO_LARGE),
           "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}


@pytest.mark.parametrize("framing", [pytest.param(PLAIN, id="content-length"),
                                     pytest.param(CHUNKED, id="aws-chunked")])
def test_a_put_over_5_gib_is_entity_too_large_before_any_kms_call_or_upstream_write(
        deployment, fresh_bucket, upstream_s3, framing):
    before = deployment.kms_operations()
    status, body = headers_only(f"{deployment.gateway.url}/{fresh_bucket}/big", "PUT", dict(framing))
    assert (status, error_of(body)) == (400, ENTITY_TOO_LARGE)
    assert deployment.kms_operations() == before
    assert upstream_keys(upstream_s3, fresh_bucket) == []


@pytest.mark.parametrize("framing", [pytest.param(PLAIN, id="content-length"),
                                     pytest.param(CHUNKED, id="aws-chunked")])
def test_an_upload_part_over_5_gib_is_entity_too_large_before_any_kms_call_or_upstream_write(
        deployment, client, fresh_bucket, upstream_s3, framing):
    upload_id = client.create_multipart_upload(Bucket=fresh_bucket, Key="big")["UploadId"]
    before = deployment.kms_operations()
    url = f"{deployment.gateway.url}/{fresh_bucket}/big?partNumber=1&uploadId={upload_id}"
    status, body = headers_only(url, "PUT", dict(framing))
    assert (status, error_of(body)) == (400, ENTITY_TOO_LARGE)
    assert deployment.kms_operations() == before
    upstream_id = upload_id.rsplit(".", 1)[1]
    assert "Parts" not in upstream_s3.list_parts(Bucket=fresh_bucket, Key="big", UploadId=upstream_id)


@pytest.mark.parametrize("value", [pytest.param("²", id="superscript"), pytest.param("٣", id="arabic-indic-3"),
                                   pytest.param("1" * 5000, id="5000-digits"), pytest.param("12a", id="letters")])
def test_an_invalid_decoded_content_length_is_s3s_411_missing_content_length_not_a_500(
        deployment, fresh_bucket, upstream_s3, value):
    headers = {**CHUNKED, "Content-Length": "40", "x-amz-decoded-content-length": value}
    before = deployment.kms_operations()
    status, body = headers_only(f"{deployment.gateway.url}/{fresh_bucket}/odd", "PUT", headers)
    if value == "1" * 5000:  # a number, only too large
        assert (status, error_of(body)["Code"], error_of(body)["ProposedSize"]) == (400, "EntityTooLarge", None)
    else:
        assert (status, error_of(body)["Code"]) == (411, "MissingContentLength"), body
    assert deployment.kms_operations() == before
    assert upstream_keys(upstream_s3, fresh_bucket) == []


@pytest.mark.parametrize("key_id, message", [
    pytest.param("k" * 5000, "Invalid keyId", id="5000-characters"),
    pytest.param("alias/a\tb", "Invalid keyId", id="control-character"),
    pytest.param("not a key", "Invalid keyId not a key", id="invalid-form"),
    pytest.param("arn:aws:kms:us-east-1:111122223333:bucket/x", "Invalid keyId arn:aws:kms:us-east-1:111122223333:bucket/x",
                 id="not-a-key-arn"),
])
def test_an_invalid_sse_kms_key_id_is_400_kms_not_found_before_any_kms_call(
        deployment, client, fresh_bucket, upstream_s3, key_id, message):
    before = deployment.kms_operations()
    with pytest.raises(ClientError) as err:
        client.put_object(Bucket=fresh_bucket, Key="k", Body=b"data", ServerSideEncryption="aws:kms",
                          SSEKMSKeyId=key_id)
    answer = err.value.response
    assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"], answer["Error"]["Message"]) == (
        400, "KMS.NotFoundException", message)
    assert deployment.kms_operations() == before
    assert upstream_keys(upstream_s3, fresh_bucket) == []


def test_a_well_formed_unknown_key_id_is_still_the_key_services_not_found(client, fresh_bucket):
    with pytest.raises(ClientError) as err:
        client.put_object(Bucket=fresh_bucket, Key="k", Body=b"data", ServerSideEncryption="aws:kms",
                          SSEKMSKeyId="alias/no-such-key")
    assert err.value.response["Error"]["Code"] == "KMS.NotFoundException"
