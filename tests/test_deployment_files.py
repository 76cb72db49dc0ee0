"""config/docker-compose.minio.yml and the Dockerfile, checked without Docker (which cannot run here): the
compose file parses, pins its images, has a healthcheck on MinIO, the key service and the gateway against the
endpoints they serve, gives the gateway the credentials config/minio.toml and the README name, keeps the root key
out of the repository, and references only files that exist; the image runs as a non-root user with a
HEALTHCHECK and contains every package."""
from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "config" / "docker-compose.minio.yml"
COMPOSE_COMMAND = "docker compose -f config/docker-compose.minio.yml up --build --wait"
HEALTH_PROBE = "urllib.request.urlopen(os.environ['HEALTH_URL'], timeout=4)"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def minio_toml() -> dict:
    return tomllib.loads((REPO / "config" / "minio.toml").read_text())


def test_every_image_is_pinned_to_a_release(compose):
    images = {name: service["image"] for name, service in compose["services"].items()}
    assert images["minio"] == "minio/minio:RELEASE.2025-06-13T11-33-47Z"
    built = {name for name, service in compose["services"].items() if "build" in service}
    assert built == {"keyservice", "gateway"} and {images[n] for n in built} == {"s3gw:dev"}
    base = re.search(r"^FROM (\S+)", (REPO / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base


def test_minio_the_key_service_and_the_gateway_have_healthchecks_on_their_health_endpoints(compose):
    services = compose["services"]
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    for name, admin in (("keyservice", "KEYSERVICE_ADMIN_LISTEN"), ("gateway", "GATEWAY_ADMIN_LISTEN")):
        service = services[name]
        port = service["environment"][admin].rpartition(":")[2]
        assert service["environment"]["HEALTH_URL"] == f"http://127.0.0.1:{port}/health/ready"
        assert service["healthcheck"]["test"][:3] == ["CMD", "python", "-c"]
        assert HEALTH_PROBE in service["healthcheck"]["test"][3]
    assert services["gateway"]["depends_on"] == {"minio": {"condition": "service_healthy"},
                                                 "keyservice": {"condition": "service_healthy"}}


def test_the_gateway_reads_config_minio_toml_whose_credentials_minio_and_the_readme_use(compose, minio_toml):
    services = compose["services"]
    gateway, minio = services["gateway"], services["minio"]
    assert gateway["command"] == ["--config", "config/minio.toml"]
    upstream = minio_toml["upstream"]
    assert (minio["environment"]["MINIO_ROOT_USER"], minio["environment"]["MINIO_ROOT_PASSWORD"]) == (
        upstream["access_key"], upstream["secret_key"])
    assert gateway["environment"]["GATEWAY_UPSTREAM_URL"] == "http://minio:9000"
    assert not any(name.startswith("GATEWAY_UPSTREAM_") and name != "GATEWAY_UPSTREAM_URL"
                   for name in gateway["environment"])  # the credential comes from config/minio.toml only
    [client] = minio_toml["gateway"]["credentials"]
    readme = (REPO / "README.md").read_text()
    assert COMPOSE_COMMAND in readme
    for text in (readme.replace("`", ""), COMPOSE_FILE.read_text()):
        assert f"{client['access_key']} / {client['secret_key']}" in text
        assert f"{upstream['access_key']} / {upstream['secret_key']}" in text


def test_the_gateway_and_the_key_service_share_one_kms_credential(compose):
    services = compose["services"]
    keyservice, gateway = services["keyservice"]["environment"], services["gateway"]["environment"]
    assert (gateway["GATEWAY_KMS_ACCESS_KEY"], gateway["GATEWAY_KMS_SECRET_KEY"]) == (
        keyservice["KEYSERVICE_ACCESS_KEY"], keyservice["KEYSERVICE_SECRET_KEY"])
    assert gateway["GATEWAY_KMS_ENDPOINT"] == f"http://keyservice:{keyservice['KEYSERVICE_LISTEN'].rpartition(':')[2]}"


def test_the_root_key_is_generated_into_a_volume_never_a_file_of_the_repository(compose):
    assert "secrets" not in compose  # no `file:` secret to ship or to commit
    keyservice = compose["services"]["keyservice"]
    assert keyservice["volumes"] == ["root-key:/etc/s3gw", "keyservice-data:/var/lib/s3gw"]  # apart from the store
    assert keyservice["environment"]["KEYSERVICE_ROOT_KEY_FILE"] == "/etc/s3gw/root.key"
    assert keyservice["environment"]["S3GW_ROOT_KEY"] == "${S3GW_ROOT_KEY:-}"
    python, flag, script = keyservice["entrypoint"]
    compile(script, "keyservice entrypoint", "exec")
    assert (python, flag) == ("python", "-c")
    assert "os.urandom(32)" in script and "O_EXCL" in script and "0o600" in script
    assert script.rstrip().endswith('os.execvp("keyservice", ["keyservice", "serve"])')
    assert not any("root-key" in volume for volume in compose["services"]["gateway"]["volumes"])
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "*.key" in ignored and ".env" in ignored


def test_every_path_the_compose_file_and_the_dockerfile_name_exists(compose):
    for service in compose["services"].values():
        if "build" in service:
            assert (COMPOSE_FILE.parent / service["build"] / "Dockerfile").is_file()
    dockerfile = (REPO / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (REPO / source).exists(), source
    copied = set(re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE))
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied  # every package the image installs


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck():
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    [healthcheck] = re.findall(r"^HEALTHCHECK .*?CMD (.+)$", dockerfile, re.MULTILINE | re.DOTALL)
    assert HEALTH_PROBE in healthcheck
    assert "HEALTH_URL=http://127.0.0.1:9091/health/live" in dockerfile
    assert "GATEWAY_ADMIN_LISTEN=0.0.0.0:9091" in dockerfile


def _run_entrypoint(compose: dict, key_path: Path, root_key: str = "") -> subprocess.CompletedProcess:
    """The key service's entrypoint script as the container runs it, with its key at ``key_path`` and
    ``true`` in place of ``keyservice serve``."""
    script = compose["services"]["keyservice"]["entrypoint"][2]
    assert script.count('"/etc/s3gw/root.key"') == 1 and script.count('os.execvp("keyservice", ') == 1
    script = script.replace('"/etc/s3gw/root.key"', repr(str(key_path))).replace(
        'os.execvp("keyservice", ["keyservice", "serve"])', 'os.execvp("true", ["true"])')
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "S3GW_ROOT_KEY": root_key})


def test_the_key_service_entrypoint_generates_the_root_key_once_and_then_keeps_it(compose, tmp_path):
    key_path = tmp_path / "root.key"
    first = _run_entrypoint(compose, key_path)
    assert first.returncode == 0 and first.stdout == f"root key generated in {key_path}: back it up\n"
    key = key_path.read_bytes()
    assert len(key) == 32 and stat.S_IMODE(key_path.stat().st_mode) == 0o600
    again = _run_entrypoint(compose, key_path, base64.b64encode(b"\x01" * 32).decode())
    assert (again.returncode, again.stdout, key_path.read_bytes()) == (0, "", key)


def test_the_key_service_entrypoint_stores_a_given_root_key_and_refuses_a_wrong_length(compose, tmp_path):
    given = bytes(range(32))
    stored = _run_entrypoint(compose, tmp_path / "root.key", base64.b64encode(given).decode())
    assert stored.returncode == 0 and (tmp_path / "root.key").read_bytes() == given
    short = _run_entrypoint(compose, tmp_path / "other.key", base64.b64encode(b"x" * 16).decode())
    assert short.returncode == 1 and short.stderr.strip().splitlines()[-1] == (
        "S3GW_ROOT_KEY must be 32 bytes, base64-encoded (e.g. openssl rand -base64 32)")
    assert not (tmp_path / "other.key").exists()
