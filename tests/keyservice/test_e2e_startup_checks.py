"""``keyservice serve`` started as an operator starts it, with one mistake each: no credential, a misspelt
section, a port in use, a missing, malformed or foreign root key. Each stops the start before ``listening``
with exactly one line on stderr and a non-zero exit code, never a traceback; a lower-case log level is
accepted."""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.keyservice.conftest import ROOT, ROOT_KEY_B64, kms_client, launch, write_config
from tests.support.process import start_server

CREDENTIAL = {"KEYSERVICE_ACCESS_KEY": ROOT[0], "KEYSERVICE_SECRET_KEY": ROOT[1]}


def refused_start(tmp_path: Path, env: dict[str, str], *args: str, listen: str = "127.0.0.1:0") -> tuple[int, str]:
    """Run ``python -m keyservice serve ARGS``, which must stop without listening: its exit code and the last
    line of its stderr, after checking there is no traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KEYSERVICE_"))}
    proc = subprocess.run([sys.executable, "-m", "keyservice", "serve", *args, "--listen", listen],
                          capture_output=True, text=True, timeout=60,
                          env={**base, "KEYSERVICE_DATA_DIR": str(tmp_path / "data"), **env})
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "listening on" not in proc.stdout, proc.stdout
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


def test_no_credential_configured_refuses_the_start_saying_how_to_add_one(tmp_path):
    assert refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY": ROOT_KEY_B64}) == (
        2, "keyservice: no credential is configured, so every request would be refused: add a "
           "[[keyservice.credentials]] table or set KEYSERVICE_ACCESS_KEY and KEYSERVICE_SECRET_KEY")


def test_a_misspelt_section_refuses_the_start_naming_it(tmp_path):
    config = tmp_path / "keyservice.toml"
    config.write_text(write_config(tmp_path / "good.toml").read_text() + '\n[keyservce]\nlisten = "127.0.0.1:9"\n')
    assert refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY": ROOT_KEY_B64}, "--config", str(config)) == (
        2, f"keyservice: unknown section(s) in {config}: [keyservce] (the key service reads [keyservice])")


def test_a_port_in_use_refuses_the_start_in_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, line = refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY": ROOT_KEY_B64, **CREDENTIAL},
                                   listen=f"127.0.0.1:{port}")
    assert (code, line) == (1, f"keyservice: cannot listen on 127.0.0.1:{port}: Address already in use (another "
                               "process listens there: stop it or choose another address with --listen)")


def test_a_missing_root_key_file_refuses_the_start_in_one_line(tmp_path):
    missing = tmp_path / "root.key"
    assert refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY_FILE": str(missing), **CREDENTIAL}) == (
        1, f"keyservice: root key file {missing} (root_key_file, KEYSERVICE_ROOT_KEY_FILE) cannot be read: "
           "No such file or directory")


def test_a_root_key_file_of_the_wrong_length_refuses_the_start_without_printing_it(tmp_path):
    short = tmp_path / "root.key"
    short.write_text(base64.b64encode(b"\x07" * 16).decode())
    assert refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY_FILE": str(short), **CREDENTIAL}) == (
        1, f"keyservice: root key file {short} must hold 32 bytes: raw, hex or base64")


def test_a_root_key_that_is_not_the_stores_refuses_the_start_and_the_right_one_still_serves(tmp_path):
    ks = launch(tmp_path)
    key_id = kms_client(ks.url).create_key()["KeyMetadata"]["KeyId"]
    assert ks.server.stop() == 0, ks.server.log()
    other = base64.b64encode(bytes(range(100, 132))).decode()
    assert refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY": other, **CREDENTIAL}) == (
        1, f"keyservice: the root key does not open the key store in {tmp_path / 'data'}: it is not the key the "
           "store was created with (check root_key_file / KEYSERVICE_ROOT_KEY_FILE, KEYSERVICE_ROOT_KEY or "
           "KEYSERVICE_ROOT_PASSPHRASE)")
    again = launch(tmp_path)
    try:
        assert kms_client(again.url).describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    finally:
        assert again.server.stop() == 0, again.server.log()


def test_a_lower_case_log_level_is_accepted(tmp_path):
    server = start_server([sys.executable, "-m", "keyservice", "serve", "--listen", "127.0.0.1:0"],
                          {"KEYSERVICE_ROOT_KEY": ROOT_KEY_B64, "KEYSERVICE_DATA_DIR": str(tmp_path / "data"),
                           "KEYSERVICE_LOG_LEVEL": "debug", **CREDENTIAL})
    assert server.stop() == 0, server.log()


def test_a_tls_certificate_that_is_not_pem_refuses_the_start_in_one_line(tmp_path):
    cert = tmp_path / "tls.pem"
    cert.write_text("not a certificate\n")
    assert refused_start(tmp_path, {"KEYSERVICE_ROOT_KEY": ROOT_KEY_B64, "KEYSERVICE_TLS_CERT_FILE": str(cert),
                                    "KEYSERVICE_TLS_KEY_FILE": str(cert), **CREDENTIAL}) == (
        1, f"keyservice: the TLS certificate {cert} and key {cert} are not a PEM certificate chain and its private key")
