"""CORS for browsers: preflight requests answered, and actual requests given their CORS headers, per the
bucket's CORS configuration, as S3 does.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is unsigned: it cannot be
re-signed for the upstream as the client's, and upstreams differ in whether they answer it. So the gateway
reads the bucket's configuration itself (GetBucketCors upstream, with its own credential; the rules are not
secret) and evaluates it with S3's rules: the first rule whose AllowedOrigin, AllowedMethod and
AllowedHeader cover the request decides. The configuration is cached for ``bucket_config_ttl`` seconds and
forgotten at once when PutBucketCors or DeleteBucketCors goes through this process.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.s3client import S3Client, UpstreamError
from gateway.s3errors import S3Error
from gateway.s3xml import children, parse_response, text
from gateway.upstream import Upstream



@dataclass(frozen=True)
class CorsRule:
    origins: tuple[re.Pattern[str], ...]
    any_origin: bool
    methods: tuple[str, ...]
    headers: tuple[re.Pattern[str], ...]
    expose: tuple[str, ...]
    max_age: str | None

    def allows(self, origin: str, method: str, requested_headers: list[str]) -> bool:
        return (method in self.methods and any(p.fullmatch(origin) for p in self.origins)
                and all(any(p.fullmatch(h) for p in self.headers) for h in requested_headers))


def _wildcard(value: str, lower: bool = False) -> re.Pattern[str]:
    """S3's CORS patterns: one ``*`` matches any run of characters; everything else is literal."""
    value = value.lower() if lower else value
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.IGNORECASE if lower else 0)


def parse_rules(body: bytes) -> list[CorsRule]:
    """The rules of a ``CORSConfiguration`` document, in order."""
    rules = []
    for rule in children(parse_response(body), "CORSRule"):
        origins = [item.text or "" for item in children(rule, "AllowedOrigin")]
        rules.append(CorsRule(
            origins=tuple(_wildcard(origin) for origin in origins), any_origin="*" in origins,
            methods=tuple((item.text or "").strip().upper() for item in children(rule, "AllowedMethod")),
            headers=tuple(_wildcard((item.text or "").strip(), lower=True) for item in children(rule, "AllowedHeader")),
            expose=tuple((item.text or "").strip() for item in children(rule, "ExposeHeader")),
            max_age=text(rule, "MaxAgeSeconds")))
    return rules


def _requested_headers(value: str | None) -> list[str]:
    return [h.strip().lower() for h in (value or "").split(",") if h.strip()]


def allow_headers(rule: CorsRule, origin: str, method_list: str) -> dict[str, str]:
    headers = {"Access-Control-Allow-Origin": "*" if rule.any_origin else origin,
               "Access-Control-Allow-Methods": method_list,
               "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"}
    if not rule.any_origin:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.expose:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    if rule.max_age:
        headers["Access-Control-Max-Age"] = rule.max_age.strip()
    return headers


def forbidden() -> S3Error:
    return S3Error("AccessForbidden", "CORSResponse: This CORS request is not allowed. This is usually because the "
                   "evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-"
                   "Headers are not whitelisted by the resource's CORS spec.", 403, Method="OPTIONS",
                   ResourceType="OBJECT")


class BucketCors:
    """The buckets' CORS rules, read upstream and cached."""

    def __init__(self, upstream: Upstream, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = S3Client(upstream)
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, list[CorsRule]]] = {}
        self._lookups: dict[str, asyncio.Task[list[CorsRule]]] = {}

    async def rules(self, bucket: str) -> list[CorsRule]:
        """The bucket's rules (none: no configuration, or the bucket does not exist)."""
        cached = self._cache.get(bucket)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        lookup = self._lookups.get(bucket)
        if lookup is None:
            lookup = self._lookups[bucket] = asyncio.ensure_future(self._read(bucket))
            lookup.add_done_callback(lambda done: self._finished(bucket, done))
        return await asyncio.shield(lookup)  # a caller going away does not cancel the others' read

    def _finished(self, bucket: str, lookup: asyncio.Task[list[CorsRule]]) -> None:
        """As BucketStates' lookups: the failure is retrieved here too, every waiter may have gone away."""
        if self._lookups.get(bucket) is lookup:
            del self._lookups[bucket]
        if not lookup.cancelled():
            lookup.exception()

    async def _read(self, bucket: str) -> list[CorsRule]:
        try:
            body = await self._client.bucket_cors(bucket)
        except UpstreamError as exc:
            if not exc.not_found:
                raise exc.s3_error() from None
            body = None  # no bucket: no rule allows anything
        rules = parse_rules(body) if body else []
        self._cache[bucket] = (self._clock() + self._ttl, rules)
        return rules

    def forget(self, bucket: str) -> None:
        self._cache.pop(bucket, None)

    async def preflight(self, bucket: str, headers: Mapping[str, str]) -> dict[str, str]:
        """The answer headers of a preflight, or S3's error for it."""
        origin = headers.get("Origin")
        method = headers.get("Access-Control-Request-Method")
        if not origin:
            raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", 400)
        if not method:
            raise S3Error("BadRequest", "Invalid Access-Control-Request-Method: null", 400)
        requested = _requested_headers(headers.get("Access-Control-Request-Headers"))
        for rule in await self.rules(bucket) if bucket else []:
            if rule.allows(origin, method.upper(), requested):
                answer = allow_headers(rule, origin, ", ".join(rule.methods))
                if requested:
                    answer["Access-Control-Allow-Headers"] = ", ".join(requested)
                return answer
        raise forbidden()

    async def actual(self, bucket: str, origin: str, method: str) -> dict[str, str]:
        """The CORS headers an actual (signed) request from ``origin`` gets; none when no rule allows it."""
        for rule in await self.rules(bucket):
            if rule.allows(origin, method.upper(), []):
                return allow_headers(rule, origin, ", ".join(rule.methods))
        return {}
