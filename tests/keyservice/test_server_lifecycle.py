"""The server process: its listen line, clean exit on SIGTERM/SIGINT, refusal of bad config."""
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.keyservice.conftest import ROOT, ROOT_KEY_B64, kms_client, launch
from tests.support.tls import write_self_signed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_real_port_and_exits_zero_on_signal(tmp_path: Path, sig: int) -> None:
    ks = launch(tmp_path)
    assert ks.url.startswith("http://127.0.0.1:") and not ks.url.endswith(":0")
    assert kms_client(ks.url).list_keys()["Keys"] == []
    assert ks.server.stop(sig) == 0
    assert "Traceback" not in ks.server.log()
    assert ks.audit_log.read_text().count("\n") == 1


def test_python_m_keyservice_rejects_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[keyservice]\nlisten = 12\n")
    proc = subprocess.run([sys.executable, "-m", "keyservice", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "listen must be a str" in proc.stderr


def test_bad_root_key_fails_to_start_with_a_message(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "keyservice", "serve", "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=30,
                          env={"KEYSERVICE_ROOT_KEY": "tooshort", "KEYSERVICE_DATA_DIR": str(tmp_path),
                               "KEYSERVICE_ACCESS_KEY": ROOT[0], "KEYSERVICE_SECRET_KEY": ROOT[1],
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and "root key" in proc.stderr and "Traceback" not in proc.stderr
    assert ROOT_KEY_B64 not in proc.stderr


def test_serves_https_when_given_a_certificate(tmp_path: Path) -> None:
    certs = write_self_signed(tmp_path)
    ks = launch(tmp_path, env={"KEYSERVICE_TLS_CERT_FILE": str(certs.cert_file),
                               "KEYSERVICE_TLS_KEY_FILE": str(certs.key_file)})
    try:
        assert ks.url.startswith("https://127.0.0.1:")
        kms = kms_client(ks.url, verify=str(certs.cert_file))
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"over tls")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over tls"
    finally:
        assert ks.server.stop() == 0


def test_a_signal_right_after_the_listening_line_stops_cleanly(tmp_path: Path) -> None:
    """The stop signals are handled from before the line is printed: a script that stops the server as soon
    as it reads the line gets a clean stop (exit 0), never the default action of SIGTERM."""
    for attempt in range(3):
        (tmp_path / str(attempt)).mkdir()
        ks = launch(tmp_path / str(attempt))
        assert ks.server.stop() == 0, ks.server.log()
