"""Run real S3 clients (awscli, s3cmd, rclone) and hand-signed requests against an endpoint.

Every CLI runs as a subprocess with configuration isolated in a temporary directory, so nothing
from the developer's ~/.aws, ~/.s3cfg or rclone.conf leaks in. Each helper returns
``(returncode, stdout, stderr)`` for the tests to assert on.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import boto3
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.process import VENV_BIN

REGION = "us-east-1"
RCLONE = "/usr/bin/rclone"
CliResult = tuple[int, str, str]


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects, with which key, and (for https) which CA file to trust."""

    url: str
    access_key: str
    secret_key: str
    workdir: Path
    ca_file: Path | None = None

    @property
    def hostport(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")


def s3_client(url: str, access_key: str, secret_key: str, verify: str | None = None, **config: object):
    """A path-style boto3 S3 client for ``url`` that does not retry (tests assert first answers);
    ``verify`` names the CA file of an https endpoint. (botocore's legacy ``max_attempts: 1`` still
    retries once on a connection error or a 5xx; pass ``retries={"total_max_attempts": 1}`` for none.)"""
    cfg = Config(s3={"addressing_style": "path"}, **{"retries": {"max_attempts": 1}, **config})
    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, config=cfg, verify=verify)


RESERVED_PREFIX = ".s3gw/"


def refused_code(call: Callable[[], object]) -> str | None:
    """The AWS error code a boto3 call is refused with, None when it succeeds."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return None


def upstream_keys(upstream_s3, bucket: str, prefix: str = "", *, reserved: bool = False) -> list[str]:
    """The keys the upstream holds in ``bucket`` (under ``prefix``), the gateway's own reserved keys
    (manifests, the bucket state record) left out unless ``reserved``."""
    listed = upstream_s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed if reserved or not o["Key"].startswith(RESERVED_PREFIX)]


def _run(args: list[str], home: Path, env: dict[str, str], timeout: float = 120) -> CliResult:
    full_env = {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "HOME": str(home), "LANG": "C.UTF-8", **env}
    proc = subprocess.run(args, env=full_env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _home(endpoint: Endpoint, tool: str) -> Path:
    """A private HOME per tool so no user-level configuration is read."""
    home = endpoint.workdir / f"home-{tool}"
    home.mkdir(parents=True, exist_ok=True)
    return home


def aws(endpoint: Endpoint, *args: str) -> CliResult:
    """``aws --endpoint-url URL ARGS`` with credentials only from the environment."""
    home = _home(endpoint, "aws")
    for name in ("config", "credentials"):
        (home / name).touch()
    env = {"AWS_ACCESS_KEY_ID": endpoint.access_key,
           "AWS_SECRET_ACCESS_KEY": endpoint.secret_key, "AWS_DEFAULT_REGION": REGION,
           "AWS_CONFIG_FILE": str(home / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1"}
    if endpoint.ca_file:
        env["AWS_CA_BUNDLE"] = str(endpoint.ca_file)
    return _run([str(VENV_BIN / "aws"), "--endpoint-url", endpoint.url, *args], home, env)


def _s3cmd_config(endpoint: Endpoint, home: Path) -> Path:
    config = home / "s3cfg"
    config.write_text("\n".join([
        "[default]",
        f"access_key = {endpoint.access_key}",
        f"secret_key = {endpoint.secret_key}",
        f"host_base = {endpoint.hostport}",
        f"host_bucket = {endpoint.hostport}",
        f"use_https = {endpoint.https}",
        "signature_v2 = False",
        f"bucket_location = {REGION}",
        "check_ssl_certificate = False",
        "check_ssl_hostname = False",
        "",
    ]))
    return config


def s3cmd(endpoint: Endpoint, *args: str) -> CliResult:
    """``s3cmd -c CONFIG ARGS`` with a generated path-style SigV4 configuration."""
    home = _home(endpoint, "s3cmd")
    config = _s3cmd_config(endpoint, home)
    return _run([str(VENV_BIN / "python"), str(VENV_BIN / "s3cmd"), "-c", str(config), *args],
                home, {})


def rclone(endpoint: Endpoint, *args: str) -> CliResult:
    """``rclone ARGS`` with a remote named ``gw:`` defined purely by environment variables."""
    home = _home(endpoint, "rclone")
    (home / "rclone.conf").touch()
    env = {"RCLONE_CONFIG": str(home / "rclone.conf"),
           "RCLONE_CONFIG_GW_TYPE": "s3", "RCLONE_CONFIG_GW_PROVIDER": "Other",
           "RCLONE_CONFIG_GW_ENDPOINT": endpoint.url,
           "RCLONE_CONFIG_GW_ACCESS_KEY_ID": endpoint.access_key,
           "RCLONE_CONFIG_GW_SECRET_ACCESS_KEY": endpoint.secret_key,
           "RCLONE_CONFIG_GW_REGION": REGION, "RCLONE_CONFIG_GW_FORCE_PATH_STYLE": "true"}
    extra = ["--ca-cert", str(endpoint.ca_file)] if endpoint.ca_file else []
    return _run([RCLONE, *extra, *args], home, env)


@contextlib.contextmanager
def signing_clock(skew: datetime.timedelta) -> Iterator[None]:
    """Make botocore's signers (pure-Python and CRT) believe the time is now + ``skew``."""
    def shifted_now(remove_tzinfo: bool = True) -> datetime.datetime:
        now = datetime.datetime.now(datetime.timezone.utc) + skew
        return now.replace(tzinfo=None) if remove_tzinfo else now

    with mock.patch("botocore.auth.get_current_datetime", shifted_now), \
            mock.patch("botocore.crt.auth.get_current_datetime", shifted_now):
        yield


def signed_request(method: str, url: str, access_key: str, secret_key: str, *,
                   body: bytes = b"", headers: dict[str, str] | None = None,
                   clock_skew: datetime.timedelta = datetime.timedelta(0),
                   body_on_wire: bytes | None = None) -> requests.Response:
    """Send one SigV4-signed S3 request, optionally signed as if our clock were ``clock_skew`` off.

    The payload hash signs ``body``; ``body_on_wire``, when given, is what is actually sent, which
    is how a body that does not match its signed x-amz-content-sha256 is produced.

    botocore always signs with the current time; the skew is applied by patching its clock here
    (never in the server), so the server sees an honest request from a client with a wrong clock.
    """
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    with signing_clock(clock_skew):
        S3SigV4Auth(Credentials(access_key, secret_key), "s3", REGION).add_auth(request)
    sent = body if body_on_wire is None else body_on_wire
    return requests.request(method, url, data=sent, headers=dict(request.headers), timeout=30)


def presigned_get_url(url: str, access_key: str, secret_key: str, bucket: str, key: str, *,
                      signature_version: str = "s3", expires_in: int = 3600,
                      clock_skew: datetime.timedelta = datetime.timedelta(0)) -> str:
    """A presigned GET URL: ``s3`` is botocore's us-east-1 default (SigV2 query), ``s3v4`` SigV4.

    A SigV2 URL expires at ``now + expires_in`` (so a negative value is already expired); a SigV4
    URL is dated by the signing clock, so ``clock_skew`` into the past expires it.
    """
    client = s3_client(url, access_key, secret_key, signature_version=signature_version)
    with signing_clock(clock_skew):
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                             ExpiresIn=expires_in)
