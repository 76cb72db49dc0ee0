"""What every handler receives: the gateway's shared state and the authenticated, classified request."""
from __future__ import annotations

from dataclasses import dataclass
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.crypto.sse import SseC, SseKms
from gateway.s3request import S3Request
from gateway.sigv4 import AuthResult
from gateway.upstream import Upstream


@dataclass
class Gateway:
    """Long-lived state built once at start: settings, the upstream pool and the SSE modes."""

    config: GatewayConfig
    upstream: Upstream
    sse_kms: SseKms
    sse_c: SseC


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
