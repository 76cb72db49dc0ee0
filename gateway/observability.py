"""The gateway's access log, metrics and admin endpoints, put on its application in one place.

What is generic -- the per-request record and middleware, the access-log line, the HTTP metrics, the
admin listener and readiness -- lives in common/ and serves the key service too. What is the gateway's:

* the S3 fields of a record: the classified operation, bucket, key and caller (``note_route``, called by
  the pipeline once it knows them), an authentication refusal's reason (``auth_rejected``), the S3 error
  code and SSE mode of the answer (``describe``);
* the metrics of what it asks of others: the upstream (its pool's requests: latency to the answer's
  headers, failures) and the key provider (every GenerateDataKey/Decrypt with its latency and
  errors, counted on the request's record as well), and the data-key caches' hits and misses;
* readiness: the upstream and the key service answer (gateway/probes.py).

Metrics are collected when there is somewhere to read them, the admin listener (``admin_listen``); the
access log unless ``access_log = "off"``. With both off the middleware is not even installed.
"""
from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from common.accesslog import GATEWAY_FIELDS, OFF, AccessLog, RequestRecord
from common.admin import ADMIN_KEY, Admin, Readiness
from common.metrics import LATENCY_BUCKETS, HttpMetrics, new_registry
from common.observe import Observer, current
from common.sigv4 import AuthError, AuthResult
from gateway.config import GatewayConfig
from gateway.datakeys import DataKeys, Requester
from gateway.probes import probe_key_provider, probe_upstream
from gateway.s3errors import S3Error, from_auth_error
from gateway.s3request import S3Request

PREFIX = "s3gw"
REQUEST_ID_HEADER = "x-amz-request-id"
_XML_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")
OBSERVABILITY_KEY: web.AppKey["GatewayObservability"] = web.AppKey("observability")


def note_route(s3: S3Request, auth: AuthResult) -> None:
    """The pipeline classified the request: its operation, bucket, key and caller go on its record."""
    record = current()
    if record is not None:
        record.operation, record.bucket, record.key = s3.operation, s3.bucket or "", s3.key or ""
        record.access_key = auth.access_key


def note_error(code: str) -> None:
    """The S3 error the gateway answers with (a HEAD's answer has no body to read it from)."""
    record = current()
    if record is not None:
        record.error = code


def auth_rejected(exc: AuthError) -> S3Error:
    """The S3 error for an authentication failure, its reason counted (``s3gw_auth_rejections_total``)."""
    record = current()
    if record is not None:
        record.auth_rejection = exc.code
    return from_auth_error(exc)


def describe(record: RequestRecord, request: web.BaseRequest, response: web.StreamResponse) -> None:
    """What only the answer tells: the S3 error code of an error (from its XML when the gateway relayed
    the upstream's) and the SSE mode. (A KMS API call on the gateway's endpoint notes its action and caller
    itself: keyservice/server.py.)"""
    if response.status >= 300 and not record.error and isinstance(response, web.Response):
        body = response.body
        if isinstance(body, bytes) and (found := _XML_CODE.search(body)):
            record.error = found.group(1).decode("utf-8", "replace")
    record.sse = _sse_mode(response.headers) or _sse_mode(request.headers)


def _sse_mode(headers: Mapping[str, str]) -> str:
    if "x-amz-server-side-encryption-customer-algorithm" in headers:
        return "SSE-C"
    return headers.get("x-amz-server-side-encryption", "")


class GatewayObservability:
    """The gateway's observer (access log and metrics) and the metrics of its upstream and KMS calls."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.registry = new_registry() if config.admin_listen else None
        metrics = HttpMetrics(PREFIX, self.registry) if self.registry is not None else None
        self.observer = Observer(None, metrics, describe, REQUEST_ID_HEADER)
        self.enabled = metrics is not None or config.access_log != OFF
        if self.registry is not None:
            self.upstream_duration = Histogram(
                f"{PREFIX}_upstream_request_duration_seconds", "Upstream requests: time to the answer's headers",
                ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
            self.upstream_errors = Counter(f"{PREFIX}_upstream_errors", "Upstream requests that failed: 5xx "
                                           "status or no answer (connect, timeout, reset)", ["reason"],
                                           registry=self.registry)
            self.kms_calls = Counter(f"{PREFIX}_kms_requests", "Calls to the key service, by KMS operation",
                                     ["operation"], registry=self.registry)
            self.kms_errors = Counter(f"{PREFIX}_kms_errors", "Failed calls to the key service, by operation and "
                                      "S3 error code", ["operation", "code"], registry=self.registry)
            self.kms_duration = Histogram(f"{PREFIX}_kms_request_duration_seconds", "Calls to the key service",
                                          ["operation"], buckets=LATENCY_BUCKETS, registry=self.registry)

    @property
    def middlewares(self) -> list:
        """The observing middleware, outermost, when anything is observed."""
        return [self.observer.middleware] if self.enabled else []

    def upstream_meter(self) -> "GatewayObservability | None":
        """What measures the upstream pool's requests (``answered``, ``failed``): None without metrics."""
        return self if self.registry is not None else None

    def answered(self, method: str, seconds: float, status: int) -> None:
        self.upstream_duration.labels(method).observe(seconds)
        if status >= 500:
            self.upstream_errors.labels(str(status)).inc()

    def failed(self, exc: BaseException) -> None:
        self.upstream_errors.labels(_failure_reason(exc)).inc()

    def install(self, app: web.Application, upstream_key: web.AppKey, provider_key: web.AppKey,
                data_keys: Any) -> None:
        """Put the access log, admin endpoints and KMS measuring on ``app``: called after the application's
        other ``on_response_prepare`` hooks (the first byte is marked after them) and ``on_startup`` hooks
        (``data_keys(app)`` then gives the started gateway's ``DataKeys``: its provider is measured, its
        caches' counts collected)."""
        app[OBSERVABILITY_KEY] = self
        if not self.enabled:
            return
        app.cleanup_ctx.append(self._access_log_ctx)
        app.on_response_prepare.append(self.observer.mark_first_byte)
        if self.registry is None:
            app.on_startup.append(lambda app: self._measure_kms(data_keys(app), count_only=True))
            return
        app[ADMIN_KEY] = Admin(self.registry, Readiness({
            "upstream": lambda: probe_upstream(app[upstream_key]),
            "key service": lambda: probe_key_provider(app[provider_key]),
        }))
        app.on_startup.append(lambda app: self._measure_kms(data_keys(app), count_only=False))

    async def _access_log_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """The access log, open while the application runs (a file is closed with it)."""
        from gateway.config import secrets_of
        config = self.config
        if config.access_log != OFF:
            self.observer.access_log = AccessLog(config.access_log, config.access_log_format, GATEWAY_FIELDS,
                                                 "gateway", secrets_of(config))
        yield
        if self.observer.access_log is not None:
            self.observer.access_log.close()
            self.observer.access_log = None

    async def _measure_kms(self, keys: DataKeys, *, count_only: bool) -> None:
        """The key provider behind the caches, measured; the caches' counts collected at scrape time."""
        keys.provider = MeasuredKeyProvider(keys.provider, None if count_only else self)
        if not count_only:
            self.registry.register(DataKeyCacheCollector(keys))  # type: ignore[union-attr]


class MeasuredKeyProvider:
    """A key provider whose data-key calls are timed and counted (metrics, and the request's record);
    everything else goes to the provider as it is."""

    def __init__(self, provider: Any, metrics: GatewayObservability | None) -> None:
        self._provider = provider
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *,
                                requester: Requester) -> Any:
        return await self._measured("GenerateDataKey", self._provider.generate_data_key(
            key_id, context, requester=requester))

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *,
                               requester: Requester) -> Any:
        return await self._measured("Decrypt", self._provider.decrypt_data_key(
            ciphertext, context, requester=requester))

    async def _measured(self, operation: str, call: Any) -> Any:
        record = current()
        if record is not None:
            record.count_kms_call(operation)
        metrics = self._metrics
        if metrics is None:
            return await call
        began = time.perf_counter()
        metrics.kms_calls.labels(operation).inc()
        try:
            return await call
        except Exception as exc:
            metrics.kms_errors.labels(operation, getattr(exc, "code", type(exc).__name__)).inc()
            raise
        finally:
            metrics.kms_duration.labels(operation).observe(time.perf_counter() - began)


class DataKeyCacheCollector(Collector):
    """The data-key caches' hits and misses (gateway/datakeys.py counts them), read at scrape time."""

    KINDS = {"generate": "bucket_key", "decrypt": "unwrapped"}

    def __init__(self, keys: DataKeys) -> None:
        self._keys = keys

    def collect(self) -> Iterable[CounterMetricFamily]:
        for name, counts in (("hits", self._keys.cache_hits), ("misses", self._keys.cache_misses)):
            family = CounterMetricFamily(f"{PREFIX}_datakey_cache_{name}", f"Data-key cache {name}, by cache",
                                         labels=["cache"])
            for kind, label in self.KINDS.items():
                family.add_metric([label], counts.get(kind, 0))
            yield family


def _failure_reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        return "reset"
    return type(exc).__name__
