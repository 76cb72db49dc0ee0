"""What every handler receives: the gateway's shared state and the authenticated, classified request."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from gateway.bucketstate import BucketStates
from gateway.config import GatewayConfig
from gateway.crypto.multipart import Manifest
from gateway.crypto.sse import SseC, SseKms
from gateway.s3request import S3Request
from common.sigv4 import AuthResult
from gateway.upstream import Upstream
from gateway.uploads import LruCache, UploadTokens


@dataclass
class Gateway:
    """Long-lived state built once at start: settings, the upstream pool and the SSE modes."""

    config: GatewayConfig
    upstream: Upstream
    sse_kms: SseKms
    sse_c: SseC
    tokens: UploadTokens
    bucket_states: BucketStates
    upload_keys: LruCache[str, bytes] = field(default_factory=lambda: LruCache(4096))
    manifests: LruCache[tuple[str, str, bytes], Manifest] = field(default_factory=lambda: LruCache(256))


def object_path(bucket: str, key: str) -> str:
    """The upstream path-style path of an object."""
    return f"/{quote(bucket, safe='')}/{quote(key, safe='/~')}"


@dataclass
class RequestContext:
    request: web.Request
    s3: S3Request
    auth: AuthResult
    request_id: str
    secure: bool

    @property
    def raw_path(self) -> str:
        return self.request.rel_url.raw_path

    @property
    def query(self) -> list[tuple[str, str]]:
        return list(self.request.rel_url.query.items())
