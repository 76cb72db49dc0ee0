"""The object layer for a command-line tool: what `gateway serve` starts for its handlers, without a server.

Tools read the same configuration file and environment as `gateway serve`. They need a real upstream
(no development upstream is started: its objects would be gone when the tool ends) and the key
service the gateways use. An embedded key store is owned by one process at a time
(keyservice/store.py): with the gateway running on it, a tool is refused at start and says so; run
the tool while the gateway is stopped, or share a standalone key service (`[kms] endpoint`).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common.files import private_dir
from gateway.config import ConfigError, GatewayConfig
from gateway.kms import start_key_provider
from gateway.objects.store import ObjectStore
from gateway.secret import load_gateway_secret
from gateway.upstream import Upstream, UpstreamTarget


@asynccontextmanager
async def object_store(config: GatewayConfig) -> AsyncIterator[ObjectStore]:
    """The object layer over a started upstream pool and key provider; both stopped on exit."""
    up = config.upstream
    if not up.url:
        raise ConfigError("upstream.url (GATEWAY_UPSTREAM_URL) must name the store the tool works on")
    private_dir(config.data_dir)
    upstream = Upstream(UpstreamTarget(up.url, up.region, up.access_key, up.secret_key),
                        pool_size=up.pool_size, pool_wait=up.pool_wait, read_timeout=up.read_timeout)
    await upstream.start()
    try:
        provider = await start_key_provider(config)
        try:
            yield ObjectStore.over(config, upstream, provider, load_gateway_secret(config.secret_path))
        finally:
            await provider.close()
    finally:
        await upstream.close()
