"""A gateway with a remote key service ([kms] endpoint) checks it at start, against real ``keyservice serve``
processes: an unreachable endpoint, refused credentials, a missing or disabled configured default key and a
default alias it may not create each stop the start with one line and exit code 2; a missing default alias
it may create is created. Such a gateway answers KMS requests on its own endpoint by naming the key service."""
from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.gateway.conftest import (DEFAULT_KMS_ALIAS, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, remote_kms_toml,
                                    start_gateway_with_remote_kms)
from tests.keyservice.conftest import OTHER, ROOT, KeyServiceProcess, kms_client, launch, raw_post, signed_headers
from tests.support.clients import s3_client
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, free_port

TIMEOUT = 2.0


def refused_start(moto: MotoServer, tmp_path: Path, kms_url: str, default_key: str,
                  creds: tuple[str, str] = ROOT) -> tuple[int, str]:
    """Run ``gateway serve`` with [kms] at ``kms_url``: its exit code and the last line of its output."""
    config = tmp_path / "gateway.toml"
    config.write_text(remote_kms_toml(moto, tmp_path / "gw", kms_url, default_key, kms_credentials=creds,
                                      kms_settings=f"timeout = {TIMEOUT}"))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KEYSERVICE_"))},
           "GATEWAY_LOG_LEVEL": "INFO"}
    proc = subprocess.run([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, env=env, timeout=60)
    return proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-1]


@pytest.fixture
def keyservice(tmp_path: Path):
    (tmp_path / "ks").mkdir()
    ks = launch(tmp_path / "ks")
    yield ks
    assert ks.server.stop() == 0, ks.server.log()


def test_an_unreachable_key_service_refuses_the_start_naming_it(moto, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    assert refused_start(moto, tmp_path, url, "") == (
        2, f"gateway: the key service at {url} cannot be reached within 2 s; check [kms] endpoint "
           "(GATEWAY_KMS_ENDPOINT)")


def test_a_key_service_that_accepts_and_never_answers_refuses_the_start_within_its_timeout(moto, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections wait in its backlog, never answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code, line = refused_start(moto, tmp_path, url, "")
        elapsed = time.monotonic() - started
    assert (code, line) == (2, f"gateway: the key service at {url} cannot be reached within 2 s; check [kms] "
                               "endpoint (GATEWAY_KMS_ENDPOINT)")
    assert elapsed < TIMEOUT + 10  # the process's own start-up included


@pytest.mark.parametrize("creds, code", [((ROOT[0], "not-the-secret"), "InvalidSignatureException"),
                                         (("AKIANOBODY0000000000", "x"), "UnrecognizedClientException")])
def test_refused_kms_credentials_refuse_the_start(moto, tmp_path, keyservice: KeyServiceProcess, creds, code):
    assert refused_start(moto, tmp_path, keyservice.url, "", creds) == (
        2, f"gateway: the key service at {keyservice.url} refused the [kms] access_key/secret_key ({code}): "
           "check GATEWAY_KMS_ACCESS_KEY and GATEWAY_KMS_SECRET_KEY")


def test_a_configured_default_key_that_does_not_exist_refuses_the_start_naming_it(moto, tmp_path, keyservice):
    missing = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000"
    assert refused_start(moto, tmp_path, keyservice.url, missing) == (
        2, f"gateway: the default KMS key {missing} (default_kms_key_id) does not exist at the key service at "
           f"{keyservice.url}")


def test_a_disabled_default_key_refuses_the_start(moto, tmp_path, keyservice):
    kms = kms_client(keyservice.url)
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    kms.disable_key(KeyId=arn)
    assert refused_start(moto, tmp_path, keyservice.url, arn) == (
        2, f"gateway: the default KMS key {arn} is Disabled at the key service at {keyservice.url}: enable it or set "
           "GATEWAY_DEFAULT_KMS_KEY_ID to another key")


def test_a_default_alias_the_credential_may_not_create_refuses_the_start_saying_what_to_do(moto, tmp_path, keyservice):
    """OTHER is another account's principal: the key service refuses it CreateKey (it hosts one account)."""
    assert refused_start(moto, tmp_path, keyservice.url, "", OTHER) == (
        2, f"gateway: the default KMS key {DEFAULT_KMS_ALIAS} does not exist at the key service at {keyservice.url} "
           "and the [kms] credential may not create it: create it there (aws kms create-key, then create-alias "
           f"--alias-name {DEFAULT_KMS_ALIAS}) or set GATEWAY_DEFAULT_KMS_KEY_ID to an existing key")
    assert kms_client(keyservice.url).list_keys()["Keys"] == []


def test_a_missing_default_alias_is_created_at_start_and_kms_requests_to_the_gateway_name_the_key_service(
        moto, tmp_path, keyservice):
    gateway = start_gateway_with_remote_kms(moto, tmp_path, keyservice.url, "")
    try:
        arn = kms_client(keyservice.url).describe_key(KeyId=DEFAULT_KMS_ALIAS)["KeyMetadata"]["Arn"]
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"remote-default-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"under the created default key")
        assert s3.head_object(Bucket=bucket, Key="k")["SSEKMSKeyId"] == arn
        status, headers, body = raw_post(gateway.url, b"{}", signed_headers(
            gateway.url, b"{}", "TrentService.CreateKey", (GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)))
    finally:
        assert gateway.stop() == 0, gateway.log()
    assert (status, headers["content-type"], body) == (400, "application/x-amz-json-1.1", {
        "__type": "UnsupportedOperationException",
        "message": "This gateway's keys are managed by a remote key service (its [kms] endpoint); send KMS "
                   "requests there."})
    assert f"created the default KMS key {arn} as {DEFAULT_KMS_ALIAS} at {keyservice.url}" in gateway.log()
    assert len(kms_client(keyservice.url).list_keys()["Keys"]) == 1
