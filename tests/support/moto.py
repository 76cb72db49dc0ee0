"""A real moto S3/IAM server on loopback with IAM authentication switched on.

moto only verifies SigV4 signatures once ``INITIAL_NO_AUTH_ACTION_COUNT`` unauthenticated calls have
been spent; we spend exactly those calls creating an IAM user with s3:* and its access key, so every
later request (the gateway's re-signed ones included) must carry a valid signature for that key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import boto3
from botocore.config import Config

from bench.support import start_moto as bench_start_moto
from tests.support import secrets
from tests.support.process import Server, registered

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


def _spawn() -> Server:
    """moto_server (``bench.support.start_moto``: PUT bodies kept raw, gateway/devupstream.py says
    why) with IAM authentication switched on after the bootstrap calls; registered for the scan."""
    return registered(lambda: bench_start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}))


def _create_s3_user(url: str) -> tuple[str, str]:
    """Spend the unauthenticated calls on an IAM user allowed s3:* and return its key."""
    iam = boto3.client("iam", endpoint_url=url, region_name=REGION, aws_access_key_id="bootstrap",
                       aws_secret_access_key="bootstrap", config=Config(retries={"max_attempts": 1}))
    iam.create_user(UserName="gateway-upstream")
    iam.put_user_policy(UserName="gateway-upstream", PolicyName="s3-all", PolicyDocument=S3_ALL_POLICY)
    key = iam.create_access_key(UserName="gateway-upstream")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def start_moto_with_users(policies: dict[str, str]) -> tuple[MotoServer, dict[str, tuple[str, str]]]:
    """A moto of its own with one IAM user per entry of ``policies`` (name -> policy document), each with an
    access key; IAM auth is enforced once they exist. The MotoServer's key is the first user's."""
    calls = str(BOOTSTRAP_CALLS * len(policies))
    server = registered(lambda: bench_start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": calls}))
    try:
        iam = boto3.client("iam", endpoint_url=server.url, region_name=REGION, aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap", config=Config(retries={"max_attempts": 1}))
        users = {}
        for name, policy in policies.items():
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="policy", PolicyDocument=policy)
            key = iam.create_access_key(UserName=name)["AccessKey"]
            users[name] = (key["AccessKeyId"], key["SecretAccessKey"])
            secrets.register(f"moto user {name} secret key", key["SecretAccessKey"], signs=True)
    except Exception:
        server.stop()
        raise
    first = users[next(iter(policies))]
    return MotoServer(server=server, url=server.url, access_key=first[0], secret_key=first[1]), users


def start_moto() -> MotoServer:
    """Start moto_server on a free loopback port with IAM auth enforced after bootstrap."""
    server = _spawn()
    try:
        access_key, secret_key = _create_s3_user(server.url)
    except Exception:
        server.stop()
        raise
    secrets.register("moto upstream secret key", secret_key, signs=True)
    return MotoServer(server=server, url=server.url, access_key=access_key, secret_key=secret_key)
