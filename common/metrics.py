"""Prometheus metrics of both servers (prometheus-client), each server on a registry of its own.

Names follow MinIO's and KES's conventions: a prefix per server (``s3gw_`` for the gateway, ``kms_`` for
the key service), ``_total`` counters, ``_seconds`` histograms, ``_bytes_total`` for traffic. A registry per
application, never prometheus-client's global one: several servers in one process (tests, the gateway's
embedded key service) each count only their own requests.

``HttpMetrics`` is what every HTTP server of the project counts per request (from the finished
``RequestRecord``); the gateway adds its upstream and KMS client metrics (gateway/observability.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector

from common.accesslog import RequestRecord

# Seconds: from a cached-key small object (~1 ms) to a multi-gigabyte transfer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)
disable_created_metrics()  # no ``_created`` twin of every series: a third fewer series for the same facts
NO_OPERATION = "-"  # the label of a request refused before its operation was known (authentication)


def new_registry() -> CollectorRegistry:
    """A registry of one server, with the process's own metrics (CPU, memory, open files) in it."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess mode: set (by common/workers.py for ``--workers N`` with an admin listener)
before prometheus-client is imported, every counter, histogram and gauge of every worker is kept in files
there, and any worker's /metrics adds them all up."""


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format, and its content type. In multiprocess mode the metrics are
    every worker's, summed (MultiProcessCollector); what only exists in this worker's memory -- the
    process's own CPU and memory, collectors computed at scrape time (the data-key caches) -- is this
    worker's, the one that answered the scrape."""
    if not multiprocess():
        return generate_latest(registry), CONTENT_TYPE_LATEST
    merged = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(merged)
    shared = list(merged.collect())
    names = {family.name for family in shared}
    local = [family for family in registry.collect() if family.name not in names]
    out = CollectorRegistry(auto_describe=False)
    out.register(_Families(shared + local))
    return generate_latest(out), CONTENT_TYPE_LATEST


class _Families:
    """Collected metric families, as a collector."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class HttpMetrics:
    """The per-request metrics of one server, under ``prefix``."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(f"{prefix}_requests", "Requests answered, by operation and HTTP status",
                                ["operation", "status"], registry=registry)
        self.errors = Counter(f"{prefix}_errors", "Error answers, by error code (S3 code or KMS error type)",
                              ["code"], registry=registry)
        # A plain count kept by the middleware (one event loop: no lock needed), read at scrape time; with
        # workers (multiprocess mode) also written to the shared files at each change, summed over the live
        # workers.
        self._in_flight = 0
        self._shared_in_flight: Gauge | None = None
        gauge = Gauge(f"{prefix}_requests_in_flight", "Requests being handled now", registry=registry,
                      multiprocess_mode="livesum")
        if multiprocess():
            self._shared_in_flight = gauge
        else:
            gauge.set_function(lambda: self._in_flight)
        self.ttfb = Histogram(f"{prefix}_ttfb_seconds", "Time until the answer's headers were ready, by operation",
                              ["operation"], buckets=LATENCY_BUCKETS, registry=registry)
        self.duration = Histogram(f"{prefix}_request_duration_seconds",
                                  "Time until the whole answer was written, by operation",
                                  ["operation"], buckets=LATENCY_BUCKETS, registry=registry)
        self.received = Counter(f"{prefix}_received_bytes", "Request body bytes received (plaintext)",
                                registry=registry)
        self.sent = Counter(f"{prefix}_sent_bytes", "Response body bytes sent (plaintext)", registry=registry)
        self.auth_rejections = Counter(f"{prefix}_auth_rejections", "Requests refused by authentication, by reason",
                                       ["reason"], registry=registry)
        # The labelled children in use, looked up once: ``labels()`` checks and locks on every call, a
        # measurable part of a small request's cost. Operations and statuses are few (the servers name
        # operations from a fixed set), so these stay small.
        self._requests: dict[tuple[str, int], Any] = {}
        self._timings: dict[str, tuple[Any, Any]] = {}

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self._in_flight = value
        if self._shared_in_flight is not None:
            self._shared_in_flight.set(value)

    def observe(self, record: RequestRecord) -> None:
        """Count one finished request."""
        operation = record.operation or NO_OPERATION
        requests = self._requests.get((operation, record.status))
        if requests is None:
            requests = self._requests[(operation, record.status)] = self.requests.labels(operation, str(record.status))
        requests.inc()
        timings = self._timings.get(operation)
        if timings is None:
            timings = self._timings[operation] = (self.ttfb.labels(operation), self.duration.labels(operation))
        if record.error:
            self.errors.labels(record.error).inc()
        if record.auth_rejection:
            self.auth_rejections.labels(record.auth_rejection).inc()
        if record.ttfb is not None:
            timings[0].observe(record.ttfb)
        timings[1].observe(record.duration)
        if record.bytes_in:
            self.received.inc(record.bytes_in)
        if record.bytes_out:
            self.sent.inc(record.bytes_out)
