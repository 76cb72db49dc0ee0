"""config/two-applications.toml followed as its comments say, with the aws CLI against a gateway process on moto:
the operator makes two scoped keys and a Decrypt grant through the gateway's KMS endpoint, then each application
writes under its own key only, and the reporting credential reads app1's objects but cannot write them."""
from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Endpoint, aws
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "two-applications.toml"
CREDENTIALS = {c["principal"].rsplit("/", 1)[-1]: c for c in tomllib.loads(EXAMPLE.read_text())["gateway"]["credentials"]}


@pytest.fixture(scope="module")
def example_gateway(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("two-applications")
    env = {"GATEWAY_DATA_DIR": str(workdir / "data"), "GATEWAY_UPSTREAM_URL": moto.url,
           "GATEWAY_UPSTREAM_ACCESS_KEY": moto.access_key, "GATEWAY_UPSTREAM_SECRET_KEY": moto.secret_key}
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(EXAMPLE), "--listen", "127.0.0.1:0"],
                          env, cwd=REPO, timeout=60)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def _as(server: Server, who: str, workdir: Path, *args: str) -> tuple[int, str, str]:
    credential = CREDENTIALS[who]
    return aws(Endpoint(server.url, credential["access_key"], credential["secret_key"], workdir / who), *args)


def _ok(result: tuple[int, str, str]) -> dict:
    code, out, err = result
    assert code == 0, err
    return json.loads(out) if out.strip() else {}


def test_the_two_applications_example_works_as_documented(example_gateway, tmp_path):
    gw = example_gateway
    arns = {}
    for app in ("app1", "app2"):
        policy = f"file://{REPO / 'config' / 'policies' / f'{app}-key.json'}"
        arns[app] = _ok(_as(gw, "operator", tmp_path, "kms", "create-key", "--policy", policy))["KeyMetadata"]["Arn"]
        _ok(_as(gw, "operator", tmp_path, "kms", "create-alias", "--alias-name", f"alias/{app}",
                "--target-key-id", arns[app]))
    _ok(_as(gw, "operator", tmp_path, "kms", "create-grant", "--key-id", arns["app1"], "--operations", "Decrypt",
            "--grantee-principal", CREDENTIALS["reporting"]["principal"]))

    bucket = f"two-apps-{uuid.uuid4().hex[:10]}"
    _ok(_as(gw, "app1", tmp_path, "s3api", "create-bucket", "--bucket", bucket))
    body = tmp_path / "body"
    body.write_bytes(b"app1's numbers")
    put = _ok(_as(gw, "app1", tmp_path, "s3api", "put-object", "--bucket", bucket, "--key", "report.csv", "--body",
                  str(body), "--server-side-encryption", "aws:kms", "--ssekms-key-id", "alias/app1"))
    assert put["SSEKMSKeyId"] == arns["app1"]

    code, _, err = _as(gw, "app2", tmp_path, "s3api", "put-object", "--bucket", bucket, "--key", "x", "--body",
                       str(body), "--server-side-encryption", "aws:kms", "--ssekms-key-id", "alias/app1")
    assert code != 0 and "AccessDenied" in err and "kms:GenerateDataKey" in err
    code, _, err = _as(gw, "app2", tmp_path, "s3api", "get-object", "--bucket", bucket, "--key", "report.csv",
                       str(tmp_path / "stolen"))
    assert code != 0 and "AccessDenied" in err
    code, _, err = _as(gw, "app2", tmp_path, "kms", "put-key-policy", "--key-id", arns["app1"], "--policy-name",
                       "default", "--policy", '{"Statement":[]}')
    assert code != 0 and "AccessDeniedException" in err

    _ok(_as(gw, "reporting", tmp_path, "s3api", "get-object", "--bucket", bucket, "--key", "report.csv",
            str(tmp_path / "read")))
    assert (tmp_path / "read").read_bytes() == b"app1's numbers"
    code, _, err = _as(gw, "reporting", tmp_path, "s3api", "put-object", "--bucket", bucket, "--key", "y", "--body",
                       str(body), "--server-side-encryption", "aws:kms", "--ssekms-key-id", "alias/app1")
    assert code != 0 and "AccessDenied" in err
