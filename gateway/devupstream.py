"""A local development upstream: moto's S3 server in a thread, for a one-command try-out.

moto is a development dependency only, so it is imported lazily and its absence explained.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import replace

from gateway.config import ConfigError, UpstreamConfig

log = logging.getLogger("gateway.devupstream")
DEV_CREDENTIALS = ("test", "test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevUpstream:
    """moto's ThreadedMotoServer on a free loopback port."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise ConfigError("no upstream.url is set and moto is not installed for the development "
                              "upstream: pip install '.[dev]'") from None
        self.port = _free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self, configured: UpstreamConfig) -> UpstreamConfig:
        """``configured`` (its region and pool settings) pointed at the development upstream."""
        self._server.start()
        url = f"http://127.0.0.1:{self.port}"
        log.warning("no upstream.url configured: started a development upstream (moto) at %s", url)
        return replace(configured, url=url, access_key=DEV_CREDENTIALS[0], secret_key=DEV_CREDENTIALS[1])

    def stop(self) -> None:
        self._server.stop()
