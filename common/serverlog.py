"""The logger both servers (gateway and key service) hand to aiohttp's HTTP protocol.

aiohttp logs every request it cannot parse (a garbage request line, a bad header, a TLS hello or
any other non-HTTP client on the port) and every connection a client drops mid-request with a full
traceback. Those are facts about a peer, not faults of the server: one line each, so that a port
scan cannot bury real failures in the log. Anything else keeps its traceback.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError


class PeerErrorsOnOneLine(logging.LoggerAdapter):
    """aiohttp's server logger, with malformed requests and dropped connections logged on one line."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(exc, HttpProcessingError):
            message = " ".join(str(exc.message).split())[:200]
            self.logger.warning("%s: malformed request (%s %s)", msg % args if args else msg, exc.code, message)
            return
        if isinstance(exc, ConnectionError):
            self.logger.info("%s: connection lost (%s)", msg % args if args else msg, exc)
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)


def server_logger(name: str = "aiohttp.server") -> logging.LoggerAdapter:
    """The ``logger`` argument for ``web.AppRunner``."""
    return PeerErrorsOnOneLine(logging.getLogger(name), {})
