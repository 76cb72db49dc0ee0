"""Session fixtures for the gateway's end-to-end tests: one moto, one gateway (http and https).

moto runs with IAM auth enforced, so the gateway must re-sign every upstream request with the IAM
user's key; a gateway bug in re-signing shows up as moto's SignatureDoesNotMatch (which clients get as the
gateway's 503 ServiceUnavailable naming its upstream credential, and in its log), not as a silent pass.
The embedded key service creates ``alias/s3-gateway-default`` at start (default_kms_key_id is
empty), which is the CMK the SSE-KMS tests name.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clients import Endpoint, s3_client
from tests.support.faultproxy import FaultProxy
from tests.support.moto import MotoServer, start_moto
from tests.support.process import VENV_BIN, Server, start_server
from tests.support.rgw import SKIP_ENV, RgwServer, skipped as rgw_skipped, start_rgw
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY
from tests.support.tls import CertFiles, write_self_signed

DEFAULT_KMS_ALIAS = "alias/s3-gateway-default"


@dataclass
class Gateway:
    """A running gateway process and how clients reach it."""

    server: Server
    url: str
    ca_file: Path | None = None

    def endpoint(self, workdir: Path) -> Endpoint:
        return Endpoint(url=self.url, access_key=GATEWAY_ACCESS_KEY, secret_key=GATEWAY_SECRET_KEY,
                        workdir=workdir, ca_file=self.ca_file)


def _config_toml(moto: MotoServer | RgwServer, data_dir: Path, tls: CertFiles | None,
                 allow_unencrypted_reads: bool = True, tables: str = "", allow_ssec_over_http: bool = True) -> str:
    """The gateway config; ``tables`` appends TOML tables (e.g. per-bucket policies)."""
    cert, key = (str(tls.cert_file), str(tls.key_file)) if tls else ("", "")
    return f'''
[gateway]
data_dir = "{data_dir}"
region = "us-east-1"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
allow_ssec_over_http = {str(allow_ssec_over_http).lower()}
allow_unencrypted_reads = {str(allow_unencrypted_reads).lower()}
default_encryption = "aws:kms"

[[gateway.credentials]]
access_key = "{GATEWAY_ACCESS_KEY}"
secret_key = "{GATEWAY_SECRET_KEY}"

[upstream]
url = "{moto.url}"
region = "us-east-1"
access_key = "{moto.access_key}"
secret_key = "{moto.secret_key}"
{tables}
'''


def _start_gateway(moto: MotoServer | RgwServer, workdir: Path, tls: CertFiles | None,
                   allow_unencrypted_reads: bool = True, tables: str = "", allow_ssec_over_http: bool = True) -> Server:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", tls, allow_unencrypted_reads, tables,
                                   allow_ssec_over_http))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config),
                         "--listen", "127.0.0.1:0"], cwd=workdir, timeout=60)


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = start_moto()
    yield server
    server.stop()


def _session_gateway(upstream: MotoServer | RgwServer, workdir: Path, *, https: bool) -> Iterator[Gateway]:
    """A gateway process for the session in front of ``upstream``, over http or https (self-signed)."""
    tls = write_self_signed(workdir) if https else None
    server = _start_gateway(upstream, workdir, tls=tls)
    yield Gateway(server=server, url=server.url, ca_file=tls.cert_file if tls else None)
    server.stop()


@pytest.fixture(scope="session")
def gateway(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _session_gateway(moto, tmp_path_factory.mktemp("gateway-http"), https=False)


@pytest.fixture(scope="session")
def gateway_tls(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _session_gateway(moto, tmp_path_factory.mktemp("gateway-https"), https=True)


# ---- Ceph RGW as the upstream (tests/support/rgw.py) ----
# A test module runs its tests on both upstreams by asking for ``upstream`` (parametrized "moto", "rgw") and
# overriding ``gateway`` / ``gateway_tls`` / ``upstream_s3`` with ``on_upstream(...)`` (test_e2e_cli.py does).

UPSTREAMS = ["moto", pytest.param("rgw", marks=pytest.mark.rgw)]


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RgwServer]:
    """One Ceph RGW (memstore) for the session; its failure to start fails every RGW test (S3GW_SKIP_RGW=1 skips)."""
    if rgw_skipped():
        pytest.skip(f"{SKIP_ENV} is set: the tests against Ceph RGW are skipped")
    server = start_rgw(tmp_path_factory.mktemp("rgw"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw_gateway(rgw: RgwServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway over http whose upstream is the session's RGW (its S3 user is the [upstream] credential)."""
    yield from _session_gateway(rgw, tmp_path_factory.mktemp("rgw-gateway-http"), https=False)


@pytest.fixture(scope="session")
def rgw_gateway_tls(rgw: RgwServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _session_gateway(rgw, tmp_path_factory.mktemp("rgw-gateway-https"), https=True)


@pytest.fixture(params=UPSTREAMS)
def upstream(request) -> str:
    """The upstream store the test runs against: "moto" or "rgw"."""
    return request.param


def on_upstream(request, upstream: str, on_moto, rgw_fixture: str):
    """For a module's override of a moto fixture: ``on_moto`` (the overridden fixture's value) on moto, else
    the value of ``rgw_fixture``."""
    return on_moto if upstream == "moto" else request.getfixturevalue(rgw_fixture)


@pytest.fixture
def rgw_s3(rgw: RgwServer):
    """boto3 S3 client straight to RGW, to inspect what the gateway stored."""
    return s3_client(rgw.url, rgw.access_key, rgw.secret_key)


@pytest.fixture
def s3(gateway: Gateway):
    """boto3 S3 client to the gateway over http (path-style, no retries)."""
    return s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)


@pytest.fixture
def upstream_s3(moto: MotoServer):
    """boto3 S3 client straight to moto, to inspect (and tamper with) what the gateway stored."""
    return s3_client(moto.url, moto.access_key, moto.secret_key)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting TCP proxy in front of the session's moto (no fault until a test sets one)."""
    proxy = FaultProxy("127.0.0.1", int(moto.url.rsplit(":", 1)[1])).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def bucket(s3) -> str:
    """A fresh bucket per test, created through the gateway."""
    name = f"e2e-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def legacy_bucket(upstream_s3) -> str:
    """A fresh bucket created directly upstream, as data stored before the gateway: the gateway knows
    nothing about it, so objects without gateway metadata there are legacy plaintext."""
    name = f"legacy-{uuid.uuid4().hex[:16]}"
    upstream_s3.create_bucket(Bucket=name)
    return name


def remote_kms_toml(moto: MotoServer, data_dir: Path, kms_url: str, default_key: str, *,
                    kms_credentials: tuple[str, str] | None = None, gateway_settings: str = "",
                    upstream_url: str | None = None, upstream_settings: str = "", kms_settings: str = "",
                    client: bool = True, tables: str = "") -> str:
    """The settings of a gateway (or a tool) on moto whose KMS is a standalone ``keyservice serve``:
    ``kms_credentials`` default to the key service's root credential; ``client`` adds the suite's client
    credential; the other arguments are extra lines for their tables (``tables``: whole tables at the end)."""
    from tests.keyservice.conftest import ROOT
    access, secret = kms_credentials or ROOT
    client_table = (f'[[gateway.credentials]]\naccess_key = "{GATEWAY_ACCESS_KEY}"\n'
                    f'secret_key = "{GATEWAY_SECRET_KEY}"\n') if client else ""
    return f'''
[gateway]
data_dir = "{data_dir}"
default_kms_key_id = "{default_key}"
{gateway_settings}

{client_table}
[upstream]
url = "{upstream_url or moto.url}"
access_key = "{moto.access_key}"
secret_key = "{moto.secret_key}"
{upstream_settings}

[kms]
endpoint = "{kms_url}"
region = "us-east-1"
access_key = "{access}"
secret_key = "{secret}"
{kms_settings}
{tables}
'''


def start_gateway_with_remote_kms(moto: MotoServer, workdir: Path, kms_url: str, default_key_arn: str,
                                  env: dict[str, str] | None = None, *, upstream_url: str | None = None,
                                  upstream_settings: str = "") -> Server:
    """A gateway whose KMS is a standalone ``keyservice serve`` reached over the KMS API (aiobotocore),
    so tests can disable keys or exhaust quotas of the key service the gateway depends on.
    ``upstream_url`` reaches moto another way (through a fault proxy); ``upstream_settings`` are
    extra lines for its [upstream] table."""
    config = workdir / "gateway-remote-kms.toml"
    config.write_text(remote_kms_toml(moto, workdir / "gw", kms_url, default_key_arn, upstream_url=upstream_url,
                                      upstream_settings=upstream_settings))
    return start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config),
                         "--listen", "127.0.0.1:0"], env, timeout=60)
