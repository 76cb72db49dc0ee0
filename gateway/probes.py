"""Is what the gateway depends on answering? One cheap request to each, for readiness (/health/ready).

Each probe returns None when the dependency answers as it should, else one line saying what is wrong. They
never raise for the dependency's failure: a probe is asked on every readiness check (cached briefly by
common/admin.py), and an exception there would be a failed endpoint, not an answer.
"""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from gateway.s3errors import S3Error
from gateway.upstream import Upstream

_REFUSED_CREDENTIAL = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                                 "InvalidClientTokenId"})


async def probe_upstream(upstream: Upstream) -> str | None:
    """A signed ListBuckets (``GET /``) with the gateway's upstream credential: None on 200; the status
    (and S3 error code) it answered otherwise, or why it could not be reached."""
    try:
        response = await upstream.request("GET", "/", [], {})
    except S3Error as exc:  # the pool is busy (SlowDown): the upstream answers, the gateway is saturated
        return f"{exc.code}: {exc.message}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return f"cannot be reached at {upstream.target.url} ({type(exc).__name__})"
    try:
        if response.status == 200:
            return None
        code = _xml_code(await response.read())
        if code in _REFUSED_CREDENTIAL:
            return f"refuses the gateway's [upstream] credential ({code})"
        return f"answers {response.status}{f' {code}' if code else ''}"
    finally:
        response.release()


async def probe_key_provider(provider: Any) -> str | None:
    """The embedded key service is part of the process: ready while it serves. A remote key service must
    answer a DescribeKey of the default key; a refusal still is an answer (its key policy may deny the
    gateway DescribeKey), only no answer (503 ServiceUnavailable) counts as down."""
    default_key = getattr(provider, "default_key_id", None)
    if getattr(provider, "endpoint", None) is None or default_key is None:
        return None
    try:
        await provider.key_arn(default_key)
    except S3Error as exc:
        if exc.code == "ServiceUnavailable":
            return f"no answer from {provider.endpoint}"
    return None


def _xml_code(body: bytes) -> str:
    start = body.find(b"<Code>")
    end = body.find(b"</Code>", start)
    return body[start + 6:end].decode("utf-8", "replace") if start >= 0 and end > start else ""
