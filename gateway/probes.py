"""Is the upstream store usable with the gateway's credential, is the key service answering?

Asked once before the gateway listens (gateway/app.py: a failure stops the start with its one line) and
again by whatever watches the gateway's health (a readiness endpoint). Each probe is one small request,
bounded by ``PROBE_TIMEOUT``, changes nothing, and returns None when healthy or one line naming what failed
and what to check -- the text an operator reads in the start-up error or the readiness answer.
"""
from __future__ import annotations

import asyncio
import os
import xml.etree.ElementTree as ET

import aiohttp

from gateway.kms import EmbeddedKeyProvider, RemoteKeyProvider
from gateway.s3errors import UPSTREAM_CREDENTIAL_REFUSALS, UPSTREAM_REGION_REFUSALS, S3Error, parse_s3_error
from gateway.upstream import Upstream, read_up_to

PROBE_TIMEOUT = 5.0  # seconds one probe may take in all (connect, answer, body)
_BODY_LIMIT = 64 * 1024  # of a ListBuckets answer: enough to tell an S3 answer from anything else
_CREDENTIAL_SETTINGS = "check upstream.access_key and upstream.secret_key (GATEWAY_UPSTREAM_ACCESS_KEY, " \
                       "GATEWAY_UPSTREAM_SECRET_KEY)"


async def probe_upstream(upstream: Upstream) -> str | None:
    """A signed ListBuckets (``GET /``): None when the upstream answers it as S3 does -- with the list, or
    with AccessDenied (the credential is valid, it may only not list buckets) -- else why not."""
    url = upstream.target.url
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            response = await upstream.request("GET", "/", [], {})
            try:
                status, body = response.status, await read_up_to(response, _BODY_LIMIT)
            finally:
                response.release()
    except TimeoutError:
        return f"upstream {url} did not answer within {PROBE_TIMEOUT:g} s; check upstream.url (GATEWAY_UPSTREAM_URL)"
    except S3Error:  # SlowDown: every pooled connection stayed busy for pool_wait (gateway/upstream.py)
        return f"upstream {url}: every pooled connection is in use (upstream.pool_size); the probe was not sent"
    except (aiohttp.ClientError, OSError) as exc:
        return f"upstream {url} cannot be reached ({_reason(exc)}); check upstream.url (GATEWAY_UPSTREAM_URL)"
    return _judged(upstream, status, body)


def _judged(upstream: Upstream, status: int, body: bytes) -> str | None:
    """What a ListBuckets answer says about the upstream and the gateway's credential."""
    url = upstream.target.url
    error = parse_s3_error(body)
    code = None if error is None else (error.findtext("Code") or "").strip()
    if status == 200 and _is_bucket_list(body):
        return None
    if code in UPSTREAM_CREDENTIAL_REFUSALS:
        return f"upstream {url} refused the gateway's credential ({code}): {_CREDENTIAL_SETTINGS}"
    if code in UPSTREAM_REGION_REFUSALS:
        return (f"upstream {url} refused the gateway's signing region {upstream.target.region!r} ({code}: "
                f"{(error.findtext('Message') or '').strip()}); check upstream.region (GATEWAY_UPSTREAM_REGION)")
    if code == "AccessDenied":
        return None  # signature and key accepted; ListBuckets is merely not allowed to this credential
    described = f"{status} {code}" if code else f"{status} and a body that is not an S3 answer"
    return f"upstream {url} answered a signed ListBuckets with {described}; is upstream.url an S3 endpoint?"


def _is_bucket_list(body: bytes) -> bool:
    """Whether the answer's root element is ListAllMyBucketsResult: only the start is read, as a store with
    many buckets answers more than the bytes read."""
    parser = ET.XMLPullParser(events=("start",))
    try:
        parser.feed(body)
        first = next(parser.read_events(), None)
    except ET.ParseError:
        return False
    return first is not None and first[1].tag.rsplit("}", 1)[-1] == "ListAllMyBucketsResult"


def _reason(exc: BaseException) -> str:
    """A connection failure in a few words (aiohttp's texts repeat the address)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        return os.strerror(cause.errno) if cause.errno else (str(cause) or type(cause).__name__)
    return str(exc) or type(exc).__name__


async def probe_key_provider(provider: EmbeddedKeyProvider | RemoteKeyProvider) -> str | None:
    """The embedded key service runs in-process: healthy while the gateway is (nothing to call, and every
    call it answers is audited). A remote one must answer DescribeKey on the default key within its timeout
    (a refusal of DescribeKey by the key's policy is an answer too)."""
    if not isinstance(provider, RemoteKeyProvider):
        return None
    where, hint = f"the key service at {provider.endpoint}", "check [kms] endpoint (GATEWAY_KMS_ENDPOINT)"
    bound = min(provider.timeout, PROBE_TIMEOUT) + 1.0  # past the provider's own bound, which answers first
    try:
        async with asyncio.timeout(bound):
            await provider.key_arn(provider.default_key_id)
    except TimeoutError:
        return f"{where} cannot be reached within {bound:g} s; {hint}"
    except S3Error as exc:
        if exc.code == "ServiceUnavailable":  # no answer within [kms] timeout (logged by the provider)
            return f"{where} cannot be reached within {provider.timeout:g} s; {hint}"
        if exc.code == "AccessDenied":
            return None
        return f"{where} refused DescribeKey of {provider.default_key_id} ({exc.code}: {exc.message})"
    return None
