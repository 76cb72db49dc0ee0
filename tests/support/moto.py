"""A real moto S3/IAM server on loopback with IAM authentication switched on.

moto only verifies SigV4 signatures once ``INITIAL_NO_AUTH_ACTION_COUNT`` unauthenticated calls have
been spent; we spend exactly those calls creating an IAM user with s3:* and its access key, so every
later request (the gateway's re-signed ones included) must carry a valid signature for that key.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from dataclasses import dataclass

import boto3
from botocore.config import Config

from tests.support import secrets
from tests.support.process import STARTED, VENV_BIN, Server, free_port, wait_for_port

# create_user, put_user_policy, create_access_key: the only calls made without auth.
BOOTSTRAP_CALLS = 3
REGION = "us-east-1"
S3_ALL_POLICY = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
})


@dataclass
class MotoServer:
    """The moto process and the IAM key it accepts."""

    server: Server
    url: str
    access_key: str
    secret_key: str

    def stop(self) -> int:
        return self.server.stop()


def _pump(proc: subprocess.Popen, sink: list[str]) -> None:
    """Drain moto's output so a full pipe never blocks it; kept for failure messages."""
    for line in proc.stdout:  # type: ignore[union-attr]
        sink.append(line)


def _spawn(port: int) -> Server:
    """moto prints its own banner, not ``listening on``, so wait for the port instead."""
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(BOOTSTRAP_CALLS),
               PYTHONUNBUFFERED="1", MOTO_ALLOW_NONEXISTENT_REGION="true")
    # moto_server, but keeping PUT bodies sent with a form Content-Type (gateway/devupstream.py says why).
    launch = ["-c", "import sys; from gateway.devupstream import serve_moto; serve_moto(sys.argv[1:])"]
    proc = subprocess.Popen([str(VENV_BIN / "python"), *launch, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    output: list[str] = []
    threading.Thread(target=_pump, args=(proc, output), daemon=True).start()
    server = Server(proc=proc, url=f"http://127.0.0.1:{port}", output=output)
    STARTED.append(server)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
    except TimeoutError:
        server.kill()
        raise RuntimeError(f"moto_server did not start:\n{server.log()}")
    return server


def _create_s3_user(url: str) -> tuple[str, str]:
    """Spend the unauthenticated calls on an IAM user allowed s3:* and return its key."""
    iam = boto3.client("iam", endpoint_url=url, region_name=REGION, aws_access_key_id="bootstrap",
                       aws_secret_access_key="bootstrap", config=Config(retries={"max_attempts": 1}))
    iam.create_user(UserName="gateway-upstream")
    iam.put_user_policy(UserName="gateway-upstream", PolicyName="s3-all", PolicyDocument=S3_ALL_POLICY)
    key = iam.create_access_key(UserName="gateway-upstream")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def start_moto() -> MotoServer:
    """Start moto_server on a free loopback port with IAM auth enforced after bootstrap."""
    port = free_port()
    server = _spawn(port)
    try:
        access_key, secret_key = _create_s3_user(server.url)
    except Exception:
        server.stop()
        raise
    secrets.register("moto upstream secret key", secret_key, signs=True)
    return MotoServer(server=server, url=server.url, access_key=access_key, secret_key=secret_key)
