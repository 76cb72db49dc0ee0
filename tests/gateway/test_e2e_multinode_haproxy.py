"""tests/gateway/test_e2e_multinode.py's tests with the example's own balancers: HAProxy running
config/multinode/s3-balancer.cfg and kms-balancer.cfg as shipped, on loopback (tests/support/haproxy.py), so
the configuration the compose file uses is shown to balance, health-check and fail over."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.test_e2e_multinode import (  # noqa: F401  (collected here too, on this module's cluster)
    Balancer, Cluster, Node, start_cluster, stop_cluster,
    test_a_key_disabled_through_one_key_service_node_is_refused_by_the_other_and_through_both_gateways,
    test_a_key_service_node_killed_during_a_workload_costs_no_client_request,
    test_a_multipart_upload_through_the_balancer_one_connection_per_request_uses_both_gateways,
    test_a_multipart_upload_whose_parts_alternate_between_the_gateways_reads_back_exactly,
    test_an_object_written_through_one_gateway_reads_through_the_other)
from tests.support.haproxy import HAProxy, requires_haproxy
from tests.support.moto import MotoServer
from tests.support.postgres import PostgresServer, postgres  # noqa: F401

pytestmark = requires_haproxy
CONFIG = Path(__file__).resolve().parents[2] / "config" / "multinode"
FRONTEND_PORTS = {"s3": 8080, "kms": 7000}  # where each file's frontend binds, as the compose file's services


@pytest.fixture(scope="module")
def cluster(moto: MotoServer, postgres: PostgresServer,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("multinode-haproxy")

    def haproxy(kind: str, nodes: list[Node]) -> Balancer:
        servers = {node.name: (int(node.url.rsplit(":", 1)[1]), node.admin_port) for node in nodes}
        return HAProxy(CONFIG / f"{kind}-balancer.cfg", workdir, FRONTEND_PORTS[kind], servers).start()

    cluster = start_cluster(moto, postgres, workdir, haproxy)
    yield cluster
    stop_cluster(cluster)
