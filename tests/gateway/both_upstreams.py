"""Fixtures that make every test of a module run on both upstreams, moto and Ceph RGW: a module imports
them (``from tests.gateway.both_upstreams import gateway, upstream_s3``), and its ``gateway``,
``gateway_tls`` and ``upstream_s3`` (and so ``s3``, ``bucket`` and ``legacy_bucket``) are then those of the
parametrized ``upstream`` (tests/gateway/conftest.py)."""
from __future__ import annotations

import pytest

from tests.gateway.conftest import on_upstream


@pytest.fixture
def gateway(gateway, upstream, request):
    return on_upstream(request, upstream, gateway, "rgw_gateway")


@pytest.fixture
def gateway_tls(gateway_tls, upstream, request):
    return on_upstream(request, upstream, gateway_tls, "rgw_gateway_tls")


@pytest.fixture
def upstream_s3(upstream_s3, upstream, request):
    return on_upstream(request, upstream, upstream_s3, "rgw_s3")
