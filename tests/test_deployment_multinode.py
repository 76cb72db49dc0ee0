"""config/docker-compose.multinode.yml and its HAProxy configurations (config/multinode/), checked without Docker
(which cannot run here): the images are pinned, every long-running service has a healthcheck on the endpoint it
serves, both gateways read one gateway secret and both key services one root key and one key store, each
balancer's backends are exactly the services it fronts (on their listening and admin ports), the secrets are
never files of the repository and the one-shot ``secrets`` service writes each of them once."""
from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "config" / "docker-compose.multinode.yml"
COMPOSE_COMMAND = "docker compose -f config/docker-compose.multinode.yml up --build --wait"
HEALTH_PROBE = "urllib.request.urlopen(os.environ['HEALTH_URL'], timeout=4)"
GATEWAYS = ["gateway-1", "gateway-2"]
KEYSERVICES = ["keyservice-1", "keyservice-2"]
BALANCERS = {"s3-balancer": ("gateways", GATEWAYS, "GATEWAY_"),
             "kms-balancer": ("keyservices", KEYSERVICES, "KEYSERVICE_")}
PASSWORD = "${S3GW_POSTGRES_PASSWORD:?set S3GW_POSTGRES_PASSWORD}"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def balancer_config(services: dict, balancer: str) -> str:
    """The HAProxy configuration file the ``balancer`` service mounts."""
    [volume] = services[balancer]["volumes"]
    source, target, mode = volume.split(":")
    assert (target, mode) == ("/usr/local/etc/haproxy/haproxy.cfg", "ro")
    return (COMPOSE_FILE.parent / source).read_text()


def section(config: str, kind: str, name: str = "") -> list[str]:
    """The lines of HAProxy section ``kind name`` (up to the next section), stripped, comments left out."""
    lines, inside = [], False
    for line in config.splitlines():
        if line and not line[0].isspace():
            inside = line.split() == [kind, name] if name else line.split() == [kind]
            continue
        if inside and line.strip() and not line.strip().startswith("#"):
            lines.append(line.strip())
    assert lines, f"no section {kind} {name}"
    return lines


def test_every_image_is_pinned_to_a_release(services):
    minio_compose = yaml.safe_load((REPO / "config" / "docker-compose.minio.yml").read_text())
    assert services["minio"]["image"] == minio_compose["services"]["minio"]["image"]
    assert re.fullmatch(r"postgres:\d+\.\d+-bookworm", services["postgres"]["image"])
    for balancer in BALANCERS:
        assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+-alpine", services[balancer]["image"])
    built = {name for name, service in services.items() if "build" in service}
    assert built == {"secrets", *GATEWAYS, *KEYSERVICES}
    assert {services[name]["image"] for name in built} == {"s3gw:dev"}
    assert all(services[name]["build"] == ".." for name in built)


def test_every_server_has_a_healthcheck_on_the_endpoint_it_serves(services):
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name in GATEWAYS + KEYSERVICES:
        prefix = "GATEWAY_" if name.startswith("gateway") else "KEYSERVICE_"
        environment = services[name]["environment"]
        assert environment["HEALTH_URL"] == (
            f"http://127.0.0.1:{port_of(environment[prefix + 'ADMIN_LISTEN'])}/health/ready")
        assert services[name]["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
        assert HEALTH_PROBE in services[name]["healthcheck"]["test"][3]
    for balancer in BALANCERS:
        health = section(balancer_config(services, balancer), "frontend", "health")
        bind = next(line for line in health if line.startswith("bind "))
        uri = next(line for line in health if line.startswith("monitor-uri ")).split()[1]
        assert services[balancer]["healthcheck"]["test"] == [
            "CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port_of(bind.split()[1])}{uri}"]
    assert "healthcheck" not in services["secrets"]  # a one-shot job: the others wait for it to complete
    assert services["secrets"]["restart"] == "no"


def test_each_node_starts_once_what_it_needs_is_healthy(services):
    done, healthy = {"condition": "service_completed_successfully"}, {"condition": "service_healthy"}
    for name in KEYSERVICES:
        assert services[name]["depends_on"] == {"secrets": done, "postgres": healthy}
    for name in GATEWAYS:
        assert services[name]["depends_on"] == {"secrets": done, "minio": healthy, "kms-balancer": healthy}
    for balancer, (_, fronted, _) in BALANCERS.items():
        assert services[balancer]["depends_on"] == {name: healthy for name in fronted}


def test_both_gateways_read_one_gateway_secret_one_upstream_and_one_kms_endpoint(services):
    gateways = [services[name] for name in GATEWAYS]
    shared = ("GATEWAY_SECRET_FILE", "GATEWAY_UPSTREAM_URL", "GATEWAY_KMS_ENDPOINT", "GATEWAY_KMS_ACCESS_KEY",
              "GATEWAY_KMS_SECRET_KEY")
    assert gateways[0]["environment"] == gateways[1]["environment"]
    assert all(gateway["command"] == ["--config", "config/minio.toml"] for gateway in gateways)
    secret_file = Path(gateways[0]["environment"]["GATEWAY_SECRET_FILE"])
    for gateway, data in zip(gateways, ("gateway-1-data", "gateway-2-data")):
        assert gateway["volumes"] == [f"gateway-secret:{secret_file.parent}:ro", f"{data}:/var/lib/s3gw"]
    assert {name: gateways[0]["environment"][name] for name in shared} == {
        "GATEWAY_SECRET_FILE": "/etc/s3gw/gateway.secret", "GATEWAY_UPSTREAM_URL": "http://minio:9000",
        "GATEWAY_KMS_ENDPOINT": "http://kms-balancer:7000", "GATEWAY_KMS_ACCESS_KEY": "gateway-kms",
        "GATEWAY_KMS_SECRET_KEY": "gateway-kms-secret"}


def test_both_key_services_share_one_root_key_and_one_key_store_on_the_postgresql_service(services):
    keyservices = [services[name] for name in KEYSERVICES]
    assert keyservices[0]["environment"] == keyservices[1]["environment"]
    environment = keyservices[0]["environment"]
    assert keyservices[0]["entrypoint"] == ["keyservice", "serve"]
    root_key = Path(environment["KEYSERVICE_ROOT_KEY_FILE"])
    for keyservice, data in zip(keyservices, ("keyservice-1-data", "keyservice-2-data")):
        assert keyservice["volumes"] == [f"root-key:{root_key.parent}:ro", f"{data}:/var/lib/s3gw"]
    postgres = services["postgres"]["environment"]
    url = environment["KEYSERVICE_STORE_URL"]
    assert url == (f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@postgres:5432/"
                   f"{postgres['POSTGRES_DB']}")
    assert postgres["POSTGRES_PASSWORD"] == PASSWORD  # from the environment, required, in both places
    gateway = services[GATEWAYS[0]]["environment"]
    assert (gateway["GATEWAY_KMS_ACCESS_KEY"], gateway["GATEWAY_KMS_SECRET_KEY"]) == (
        environment["KEYSERVICE_ACCESS_KEY"], environment["KEYSERVICE_SECRET_KEY"])


def test_each_balancer_fronts_exactly_its_services_on_their_ports_and_checks_their_readiness(services):
    for balancer, (backend, fronted, prefix) in BALANCERS.items():
        config = balancer_config(services, balancer)
        lines = section(config, "backend", backend)
        servers = [line.split() for line in lines if line.startswith("server ")]
        environment = services[fronted[0]]["environment"]
        listen, admin = port_of(environment[prefix + "LISTEN"]), port_of(environment[prefix + "ADMIN_LISTEN"])
        assert servers == [["server", name, f"{name}:{listen}"] for name in fronted]
        assert "balance roundrobin" in lines and "option httpchk GET /health/ready" in lines
        [defaults] = [line.split() for line in lines if line.startswith("default-server ")]
        assert defaults[1:4] == ["check", "port", str(admin)]
        [frontend] = [line for line in config.splitlines() if line.startswith("frontend ") and "health" not in line]
        front = section(config, *frontend.split())
        assert f"default_backend {backend}" in front
        assert f"bind :{listen}" in front  # the balancer listens where its services do
        assert "mode tcp" in section(config, "defaults")  # bytes as they are: the Host clients signed included
        assert f"monitor fail if {{ nbsrv({backend}) lt 1 }}" in section(config, "frontend", "health")
    kms_endpoint = urlsplit(services[GATEWAYS[0]]["environment"]["GATEWAY_KMS_ENDPOINT"])
    assert (kms_endpoint.hostname, kms_endpoint.port) == (
        "kms-balancer", port_of(services[KEYSERVICES[0]]["environment"]["KEYSERVICE_LISTEN"]))
    assert services["s3-balancer"]["ports"] == ["127.0.0.1:8080:8080"]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)")
def test_haproxy_accepts_both_balancer_configurations(services):
    for balancer in BALANCERS:
        [volume] = services[balancer]["volumes"]
        result = subprocess.run(["haproxy", "-c", "-f", str(COMPOSE_FILE.parent / volume.split(":")[0])],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr


def test_no_secret_is_a_file_of_the_repository_and_each_node_mounts_only_its_own(compose, services):
    assert "secrets" not in compose  # no `file:` secret to ship or to commit
    assert services["secrets"]["volumes"] == ["root-key:/etc/s3gw", "gateway-secret:/var/lib/s3gw"]
    assert services["secrets"]["environment"] == {"S3GW_ROOT_KEY": "${S3GW_ROOT_KEY:-}",
                                                  "S3GW_GATEWAY_SECRET": "${S3GW_GATEWAY_SECRET:-}"}
    for name in GATEWAYS:
        assert not any(volume.startswith("root-key:") for volume in services[name]["volumes"])
    for name in KEYSERVICES:
        assert not any(volume.startswith("gateway-secret:") for volume in services[name]["volumes"])
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in ignored


def test_every_path_the_compose_file_names_exists(services):
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (COMPOSE_FILE.parent / volume.split(":")[0]).is_file(), volume
    assert (REPO / "config" / "minio.toml").is_file()
    assert COMPOSE_COMMAND in (REPO / "README.md").read_text()


def _run_secrets(services: dict, workdir: Path, **given: str) -> subprocess.CompletedProcess:
    """The ``secrets`` service's script as the container runs it, its two files under ``workdir``."""
    python, flag, script = services["secrets"]["entrypoint"]
    assert (python, flag) == ("python", "-c")
    for path in ("/etc/s3gw/root.key", "/var/lib/s3gw/gateway.secret"):
        assert script.count(f'"{path}"') == 1
        script = script.replace(f'"{path}"', repr(str(workdir / Path(path).name)))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], **given})


def test_the_secrets_service_generates_the_root_key_and_the_gateway_secret_once_and_then_keeps_them(
        services, tmp_path):
    first = _run_secrets(services, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"root key generated in {tmp_path / 'root.key'}: back it up\n"
                            f"gateway secret generated in {tmp_path / 'gateway.secret'}: back it up\n")
    files = [tmp_path / "root.key", tmp_path / "gateway.secret"]
    kept = [path.read_bytes() for path in files]
    assert [len(key) for key in kept] == [32, 32] and kept[0] != kept[1]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files)
    again = _run_secrets(services, tmp_path, S3GW_ROOT_KEY=base64.b64encode(b"\x01" * 32).decode())
    assert (again.returncode, again.stdout, [path.read_bytes() for path in files]) == (0, "", kept)


def test_the_secrets_service_stores_given_secrets_and_refuses_a_wrong_length(services, tmp_path):
    root, secret = bytes(range(32)), bytes(range(32, 64))
    stored = _run_secrets(services, tmp_path, S3GW_ROOT_KEY=base64.b64encode(root).decode(),
                          S3GW_GATEWAY_SECRET=base64.b64encode(secret).decode())
    assert stored.returncode == 0 and "root key stored in" in stored.stdout
    assert ((tmp_path / "root.key").read_bytes(), (tmp_path / "gateway.secret").read_bytes()) == (root, secret)
    (tmp_path / "other").mkdir()
    short = _run_secrets(services, tmp_path / "other", S3GW_GATEWAY_SECRET=base64.b64encode(b"x" * 16).decode())
    assert short.returncode == 1 and short.stderr.strip().splitlines()[-1] == (
        "S3GW_GATEWAY_SECRET must be 32 bytes, base64-encoded (e.g. openssl rand -base64 32)")
    assert not (tmp_path / "other" / "gateway.secret").exists()
