"""The AWS KMS JSON API on the gateway's own listener.

With the embedded key service the gateway is the only process that may open its key store, so the
only way to manage the keys it uses (``aws kms create-key``, ``create-alias``, ``put-key-policy``...)
while it runs is through the gateway itself. A KMS request (``POST /`` with ``X-Amz-Target:
TrentService.<Operation>``, SigV4-signed for service ``kms``) is told apart from every S3 request by
that header (no S3 operation is a POST to ``/`` carrying it) and handed, before S3 authentication, to
the embedded key service's own front (``EmbeddedKeyService.kms_frontend``): the same codec,
validation, errors, quotas and audit as ``keyservice serve``. Changes take effect on the next S3
request, since both go to the one key service.

Accepted credentials: the key service's own and the gateway's client credentials, each client acting
as its principal (``Credential.principal_in``), so key policies decide what each may do. With a remote
key service (``[kms] endpoint``) the keys live there: such requests get a KMS error saying where.
"""
from __future__ import annotations

import json
import uuid
from typing import Protocol

from aiohttp import web

from gateway.config import GatewayConfig
from gateway.kms import EmbeddedKeyProvider, RemoteKeyProvider
from keyservice.embedded import EmbeddedKeyService

TARGET_PREFIX = "TrentService."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"


class KmsEndpoint(Protocol):
    async def handle(self, request: web.Request) -> web.Response: ...


def is_kms_request(request: web.Request) -> bool:
    """Whether a request is an AWS KMS JSON 1.1 call rather than an S3 request."""
    return (request.method == "POST" and request.rel_url.raw_path == "/"
            and request.headers.get("X-Amz-Target", "").startswith(TARGET_PREFIX))


def endpoint_for(provider: EmbeddedKeyProvider | RemoteKeyProvider, config: GatewayConfig) -> KmsEndpoint:
    """The KMS endpoint of a gateway running with ``provider``."""
    if isinstance(provider, RemoteKeyProvider):
        return RemoteKeysEndpoint()
    return embedded_endpoint(provider.keys, config)


def embedded_endpoint(keys: EmbeddedKeyService, config: GatewayConfig) -> KmsEndpoint:
    """The embedded key service's KMS front, accepting the gateway's client credentials as well as its own
    (``ConfigError`` for an access key in both with different secrets: the gateway then refuses to start)."""
    clients = [(c.access_key, c.secret_key, c.principal_in(keys.account_id)) for c in config.credentials]
    return keys.kms_frontend(clients)


class RemoteKeysEndpoint:
    """The answer to KMS requests when the gateway's keys live in a remote key service: where to send them."""

    def __init__(self) -> None:
        # The endpoint's address is not told: the request is not authenticated, and the operator knows it.
        self.message = ("This gateway's keys are managed by a remote key service (its [kms] endpoint); "
                        "send KMS requests there.")

    async def handle(self, request: web.Request) -> web.Response:
        body = json.dumps({"__type": "UnsupportedOperationException", "message": self.message})
        return web.Response(body=body.encode(), status=400, content_type=JSON_CONTENT_TYPE,
                            headers={"x-amzn-RequestId": str(uuid.uuid4())})
