"""The gateway in-process for handler tests: ``create_app(config)`` under aiohttp's test server.

The upstream is the suite's real moto server and the key service the real embedded one (its store in
the test's tmp_path); only the gateway's own listener is in-process, so a handler's edge cases are
reached in milliseconds instead of through a gateway process. Requests are signed with botocore as an
SDK signs them (tests/support/clients.py does the same for processes).
"""
from __future__ import annotations

import contextlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.config import Credential, GatewayConfig, UpstreamConfig
from tests.support.moto import MotoServer
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

REGION = "us-east-1"
MIB = 1024 * 1024


def moto_upstream(moto: MotoServer) -> UpstreamConfig:
    return UpstreamConfig(url=moto.url, region=REGION, access_key=moto.access_key, secret_key=moto.secret_key)


def gateway_config(upstream: UpstreamConfig, data_dir: Path) -> GatewayConfig:
    """The suite's gateway settings (tests/gateway/conftest.py), for an in-process gateway."""
    return GatewayConfig(listen="127.0.0.1:0", data_dir=data_dir, region=REGION, allow_ssec_over_http=True,
                         credentials=(Credential(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY),), upstream=upstream)


@contextlib.asynccontextmanager
async def inprocess(app: web.Application) -> AsyncIterator["Gateway"]:
    """``app`` served by aiohttp's test server on a loopback port (its start-up and cleanup included)."""
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Gateway(client)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


@dataclass(frozen=True)
class Answer:
    """A response, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def xml(self) -> dict[str, str]:
        """The text of each child of the XML root, by local name (S3's namespace or none)."""
        return {_local(child.tag): child.text or "" for child in ET.fromstring(self.body)}

    def all(self, tag: str) -> list[ET.Element]:
        """Every element named ``tag`` (local name) anywhere in the XML body."""
        return [element for element in ET.fromstring(self.body).iter() if _local(element.tag) == tag]

    def error(self) -> tuple[int, str]:
        """Status and S3 error code."""
        return self.status, self.xml()["Code"]


class Gateway:
    """SigV4-signed requests to the in-process gateway."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def url(self, path: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.client.port}{path}" + (f"?{query}" if query else "")

    async def send(self, method: str, path: str, query: str = "", *, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> Answer:
        """``path`` and ``query`` as they go on the wire (already percent-encoded)."""
        url = self.url(path, query)
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
        S3SigV4Auth(Credentials(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), "s3", REGION).add_auth(request)
        async with self.client.session.request(method, URL(url, encoded=True), headers=dict(request.headers),
                                               data=body or None) as response:
            return Answer(response.status, response.headers, await response.read())

    async def put(self, bucket: str, key: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        answer = await self.send("PUT", f"/{bucket}/{key}", body=body, headers=headers)
        assert answer.status == 200, answer.body
        return answer

    async def new_bucket(self) -> str:
        bucket = f"inproc-{uuid.uuid4().hex[:16]}"
        answer = await self.send("PUT", f"/{bucket}")
        assert answer.status == 200, answer.body
        return bucket

    async def create_upload(self, bucket: str, key: str, headers: dict[str, str] | None = None) -> str:
        answer = await self.send("POST", f"/{bucket}/{key}", "uploads", headers=headers)
        assert answer.status == 200, answer.body
        return answer.xml()["UploadId"]

    async def upload_part(self, bucket: str, key: str, upload_id: str, number: int, body: bytes) -> str:
        answer = await self.send("PUT", f"/{bucket}/{key}", f"partNumber={number}&uploadId={upload_id}", body=body)
        assert answer.status == 200, answer.body
        return answer.headers["ETag"]

    async def complete(self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]) -> Answer:
        listed = "".join(f"<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
                         for number, etag in parts)
        body = f"<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>".encode()
        return await self.send("POST", f"/{bucket}/{key}", f"uploadId={upload_id}", body=body)

    async def multipart_object(self, bucket: str, key: str, parts: list[bytes]) -> Answer:
        """An object uploaded in ``parts``, completed."""
        upload_id = await self.create_upload(bucket, key)
        etags = [(number, await self.upload_part(bucket, key, upload_id, number, data))
                 for number, data in enumerate(parts, 1)]
        answer = await self.complete(bucket, key, upload_id, etags)
        assert answer.status == 200, answer.body
        return answer
