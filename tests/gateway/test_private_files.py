"""Secrets on disk are private whatever the umask, and the gateway secret is created once even when
several gateways start together on an empty data directory."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.gateway.conftest import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY, _config_toml
from tests.keyservice.conftest import kms_client, write_config
from tests.support.clients import s3_client
from tests.support.process import VENV_BIN, start_server

UMASK_000 = ["sh", "-c", 'umask 000 && exec "$0" "$@"']  # run the server as if the umask were 000


def modes(root: Path) -> dict[str, str]:
    """Every path under root (and root itself) and its permission bits, as octal text."""
    found = {".": oct(stat.S_IMODE(root.stat().st_mode))}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = oct(stat.S_IMODE(path.stat().st_mode))
    return found


def assert_private(found: dict[str, str], root: Path) -> None:
    for name, mode in found.items():
        expected = "0o700" if (root / name).is_dir() else "0o600"
        assert mode == expected, (name, mode, found)


def test_keyservice_data_dir_is_private_under_umask_000(tmp_path: Path) -> None:
    """Store, WAL, shared memory, audit log and generated root key: 0600 in a 0700 directory."""
    data_dir = tmp_path / "new" / "ks-data"
    config = write_config(tmp_path / "ks.toml")
    server = start_server([*UMASK_000, sys.executable, "-m", "keyservice", "serve", "--config", str(config),
                           "--listen", "127.0.0.1:0"], {"KEYSERVICE_DATA_DIR": str(data_dir)})
    try:
        kms = kms_client(server.url)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
        found = modes(data_dir)
    finally:
        assert server.stop() == 0, server.log()
    assert {"keys.db", "keys.db-wal", "keys.db-shm", "audit.log", "root.key"} <= set(found), found
    assert_private(found, data_dir)
    assert oct(stat.S_IMODE((tmp_path / "new").stat().st_mode)) == "0o700"


def test_gateway_data_dir_and_secret_are_private_under_umask_000(moto, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    data_dir = tmp_path / "data"
    config.write_text(_config_toml(moto, data_dir, None))
    server = start_server([*UMASK_000, str(VENV_BIN / "gateway"), "serve", "--config", str(config),
                           "--listen", "127.0.0.1:0"], cwd=tmp_path, timeout=60)
    try:
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        s3.create_bucket(Bucket="private-files")
        s3.put_object(Bucket="private-files", Key="k", Body=b"x")
        found = modes(data_dir)
    finally:
        assert server.stop() == 0, server.log()
    assert {"gateway.secret", "keyservice", "keyservice/keys.db", "keyservice/audit.log"} <= set(found), found
    assert_private(found, data_dir)


RACER = """
import sys, time
from pathlib import Path
from gateway.secret import load_gateway_secret
start, dirs = float(sys.argv[1]), sys.argv[2:]
secrets = []
for i, d in enumerate(dirs):
    time.sleep(max(0.0, start + i * 0.25 - time.time()))
    secrets.append(load_gateway_secret(Path(d) / "gateway.secret").hex())
print(" ".join(secrets))
"""


def test_gateways_starting_together_share_one_whole_secret(tmp_path: Path) -> None:
    """Eight processes create the secret in each of six empty directories at the same instant:
    none fails, and all use the one secret that ends up on disk."""
    dirs = [str(tmp_path / f"round{i}" / "data") for i in range(6)]
    start = time.time() + 6  # after every process has imported the gateway
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(start), *dirs], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 8, [err for _, err in outputs]
    per_process = [out.split() for out, _ in outputs]
    for i, d in enumerate(dirs):
        on_disk = (Path(d) / "gateway.secret").read_bytes().hex()
        assert {secrets[i] for secrets in per_process} == {on_disk}
        assert os.listdir(d) == ["gateway.secret"]  # no temporary file left behind
