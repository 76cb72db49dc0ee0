"""``gateway serve`` started as an operator starts it, with one mistake each: a misspelt section, an upstream
that is down or refuses the gateway's credential, a port in use, a missing, malformed or foreign root key.
Each stops the start before ``listening`` with exactly one line on stderr and a non-zero exit code, never a
traceback. A log level is accepted in any case; a development-mode start says its upstream keeps objects in
memory only and logs none of that upstream's own lines."""
from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.clients import s3_client
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, free_port, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, KEYSERVICE_ROOT_KEY

CREDENTIAL_SETTINGS = ("check upstream.access_key and upstream.secret_key (GATEWAY_UPSTREAM_ACCESS_KEY, "
                       "GATEWAY_UPSTREAM_SECRET_KEY)")


def gateway_toml(tmp_path: Path, upstream_url: str, access_key: str, secret_key: str, *, extra: str = "",
                 gateway_extra: str = "") -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(f'''
[gateway]
data_dir = "{tmp_path / "data"}"
{gateway_extra}

[[gateway.credentials]]
access_key = "{GATEWAY_ACCESS_KEY}"
secret_key = "{GATEWAY_SECRET_KEY}"

[upstream]
url = "{upstream_url}"
access_key = "{access_key}"
secret_key = "{secret_key}"
{extra}
''')
    return config


def moto_toml(moto: MotoServer, tmp_path: Path, **kwargs: str) -> Path:
    return gateway_toml(tmp_path, moto.url, moto.access_key, moto.secret_key, **kwargs)


def clean_env(**settings: str) -> dict[str, str]:
    """The test process's environment without its GATEWAY_*/KEYSERVICE_* settings, at log level INFO."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KEYSERVICE_"))}
    return {**env, "GATEWAY_LOG_LEVEL": "INFO", **settings}


def refused_start(config: Path, env: dict[str, str] | None = None, listen: str = "127.0.0.1:0") -> tuple[int, str]:
    """Run ``gateway serve --config CONFIG``, which must stop without listening: its exit code and its
    stderr's last line (the one that says why), after checking there is no traceback and no listening line."""
    proc = subprocess.run([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", listen],
                          capture_output=True, text=True, env=env or clean_env(), timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "listening on" not in proc.stdout, proc.stdout
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("section", ["gatway", "upstrem"])
def test_a_misspelt_top_level_section_refuses_the_start_naming_it(moto, tmp_path, section):
    config = moto_toml(moto, tmp_path, extra=f'[{section}]\nlisten = "127.0.0.1:9"\n')
    assert refused_start(config) == (2, f"gateway: configuration error: unknown section(s) in {config}: "
                                        f"[{section}] (known: [gateway], [upstream], [kms], [buckets], [keyservice])")


def test_a_wrong_upstream_secret_key_refuses_the_start_naming_the_credential_before_keys_are_made(moto, tmp_path):
    config = gateway_toml(tmp_path, moto.url, moto.access_key, "not-the-upstream-secret")
    assert refused_start(config) == (
        2, f"gateway: upstream {moto.url} refused the gateway's credential (SignatureDoesNotMatch): "
           f"{CREDENTIAL_SETTINGS}")
    assert list((tmp_path / "data").iterdir()) == []  # no key store, root key or gateway secret made


def test_an_unknown_upstream_access_key_refuses_the_start_naming_the_credential(moto, tmp_path):
    config = gateway_toml(tmp_path, moto.url, "AKIANOBODY0000000000", "whatever-secret")
    assert refused_start(config) == (
        2, f"gateway: upstream {moto.url} refused the gateway's credential (InvalidAccessKeyId): "
           f"{CREDENTIAL_SETTINGS}")


def test_an_unreachable_upstream_refuses_the_start_naming_it(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    config = gateway_toml(tmp_path, url, "AKIDUP", "upstream-secret")
    assert refused_start(config) == (
        2, f"gateway: upstream {url} cannot be reached (Connection refused); check upstream.url "
           "(GATEWAY_UPSTREAM_URL)")


def test_an_upstream_that_is_not_s3_refuses_the_start(tmp_path):
    """Another HTTP service given as the upstream (a console port, a web server): it answers, not as S3 does."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        config = gateway_toml(tmp_path, url, "AKIDUP", "upstream-secret")
        # an HTTP server of another kind: its answer to GET / is a 404 web page
        server = subprocess.Popen(["python3", "-c", _NOT_S3, str(listener.fileno())], pass_fds=[listener.fileno()])
        try:
            assert refused_start(config) == (
                2, f"gateway: upstream {url} answered a signed ListBuckets with 404 and a body that is not an S3 "
                   "answer; is upstream.url an S3 endpoint?")
        finally:
            server.kill()
            server.wait()


_NOT_S3 = """
import socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class NotS3(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_error(404)
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", 0), NotS3, bind_and_activate=False)
server.socket = socket.socket(fileno=int(sys.argv[1]))
server.serve_forever()
"""


def test_startup_checks_off_starts_with_the_upstream_down_and_answers_503_until_it_is_up(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    config = gateway_toml(tmp_path, url, "AKIDUP", "upstream-secret", gateway_extra="startup_checks = false")
    gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                           env={"GATEWAY_LOG_LEVEL": "INFO"}, timeout=60)
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, retries={"total_max_attempts": 1})
        with pytest.raises(Exception) as failed:
            s3.list_objects_v2(Bucket="any-bucket")
        assert failed.value.response["Error"]["Code"] == "ServiceUnavailable"  # type: ignore[attr-defined]
    finally:
        assert gateway.stop() == 0, gateway.log()
    assert f"startup_checks is off: the upstream {url} and its credential were not checked" in gateway.log()


def test_a_port_in_use_refuses_the_start_in_one_line(moto, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, line = refused_start(moto_toml(moto, tmp_path), listen=f"127.0.0.1:{port}")
    assert (code, line) == (1, f"gateway: cannot listen on 127.0.0.1:{port}: Address already in use (another "
                               "process listens there: stop it or choose another address with --listen)")


def test_a_missing_root_key_file_refuses_the_start_in_one_line(moto, tmp_path):
    missing = tmp_path / "no-such-root.key"
    config = moto_toml(moto, tmp_path, extra=f'[keyservice]\nroot_key_file = "{missing}"\n')
    assert refused_start(config) == (1, f"gateway: root key file {missing} (root_key_file, "
                                        "KEYSERVICE_ROOT_KEY_FILE) cannot be read: No such file or directory")


def test_a_root_key_file_of_the_wrong_length_refuses_the_start_in_one_line(moto, tmp_path):
    short = tmp_path / "short-root.key"
    short.write_bytes(b"\x01" * 31)
    config = moto_toml(moto, tmp_path, extra=f'[keyservice]\nroot_key_file = "{short}"\n')
    assert refused_start(config) == (1, f"gateway: root key file {short} must hold 32 bytes: raw, hex or base64")


def test_a_root_key_that_is_not_the_stores_refuses_the_start(moto, tmp_path):
    """The key store was made under one root key; the gateway is restarted with another."""
    first = clean_env(KEYSERVICE_ROOT_KEY=KEYSERVICE_ROOT_KEY.hex())
    config = moto_toml(moto, tmp_path)
    gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                           env={"KEYSERVICE_ROOT_KEY": first["KEYSERVICE_ROOT_KEY"]}, timeout=60)
    assert gateway.stop() == 0, gateway.log()
    other = clean_env(KEYSERVICE_ROOT_KEY=bytes(range(100, 132)).hex())
    assert refused_start(config, other) == (
        1, f"gateway: the root key does not open the key store in {tmp_path / 'data' / 'keyservice'}: it is not "
           "the key the store was created with (check root_key_file / KEYSERVICE_ROOT_KEY_FILE, KEYSERVICE_ROOT_KEY "
           "or KEYSERVICE_ROOT_PASSPHRASE)")


def test_a_log_level_in_lower_case_is_accepted_and_an_unknown_one_refused_in_one_line(moto, tmp_path):
    config = moto_toml(moto, tmp_path)
    gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                           env={"GATEWAY_LOG_LEVEL": "warning"}, timeout=60)
    assert gateway.stop() == 0, gateway.log()
    assert refused_start(config, clean_env(GATEWAY_LOG_LEVEL="verbose")) == (
        2, "gateway: configuration error: gateway.log_level (GATEWAY_LOG_LEVEL): unknown log level 'verbose' "
           "(use DEBUG, INFO, WARNING, ERROR or CRITICAL)")


def test_development_mode_says_its_upstream_keeps_objects_in_memory_and_logs_none_of_its_lines(tmp_path):
    config = tmp_path / "dev.toml"
    config.write_text(f'[gateway]\ndata_dir = "{tmp_path / "data"}"\n\n[[gateway.credentials]]\n'
                      f'access_key = "{GATEWAY_ACCESS_KEY}"\nsecret_key = "{GATEWAY_SECRET_KEY}"\n')
    gateway = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                           env={"GATEWAY_LOG_LEVEL": "DEBUG"}, timeout=60)
    try:
        s3 = s3_client(gateway.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"dev-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"kept in memory only")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept in memory only"
    finally:
        assert gateway.stop() == 0, gateway.log()
    log = gateway.log()
    assert "it keeps objects in memory: they are gone when the gateway stops" in log
    assert "werkzeug" not in log and '"PUT /' not in log and '"GET /' not in log, log
