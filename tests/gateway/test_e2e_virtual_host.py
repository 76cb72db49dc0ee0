"""Virtual-hosted-style requests (``BUCKET.<domain>``, `[gateway] domain`) from boto3 and the aws CLI, the
signature checked over the Host as received; behind a proxy, over X-Forwarded-Host when trusted.

No DNS names the test domain here, so the clients reach the gateway as their HTTP proxy: they send the
virtual-hosted URL and Host exactly as they would to the gateway's own name."""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.gateway.conftest import _config_toml
from tests.support.moto import MotoServer
from tests.support.process import VENV_BIN, Server, start_server
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

DOMAIN = "s3.gateway.test"


@pytest.fixture(scope="module")
def hosted(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("virtual-host")
    config = workdir / "gateway.toml"
    config.write_text(_config_toml(moto, workdir / "data", None))
    server = start_server([str(VENV_BIN / "gateway"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                          {"GATEWAY_DOMAIN": DOMAIN, "GATEWAY_TRUST_FORWARDED_HOST": "true"}, cwd=workdir, timeout=60)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def _client(gateway: Server, style: str):
    return boto3.client("s3", endpoint_url=f"http://{DOMAIN}", region_name="us-east-1",
                        aws_access_key_id=GATEWAY_ACCESS_KEY, aws_secret_access_key=GATEWAY_SECRET_KEY,
                        config=Config(s3={"addressing_style": style}, proxies={"http": gateway.url},
                                      retries={"total_max_attempts": 1}))


def test_boto3_virtual_hosted_requests_round_trip_encrypted(hosted, upstream_s3):
    s3 = _client(hosted, "virtual")
    bucket = f"vhost-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="dir/a b.txt", Body=b"virtual hosted")
    assert s3.get_object(Bucket=bucket, Key="dir/a b.txt")["Body"].read() == b"virtual hosted"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dir/a b.txt"]
    assert "x-gw-v" in upstream_s3.head_object(Bucket=bucket, Key="dir/a b.txt")["Metadata"]
    presigned = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "dir/a b.txt"})
    assert requests.get(presigned, proxies={"http": hosted.url}, timeout=10).content == b"virtual hosted"
    assert _client(hosted, "path").get_object(Bucket=bucket, Key="dir/a b.txt")["Body"].read() == b"virtual hosted"


def test_a_signature_over_another_host_is_refused(hosted):
    s3 = _client(hosted, "virtual")
    bucket = f"vhost-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    request = AWSRequest(method="GET", url=f"http://{bucket}.{DOMAIN}/", headers={})
    S3SigV4Auth(Credentials(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), "s3", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    headers["Host"] = f"other.{DOMAIN}"
    answer = requests.get(f"http://other.{DOMAIN}/", headers=headers, proxies={"http": hosted.url}, timeout=10)
    assert (answer.status_code, b"<Code>SignatureDoesNotMatch</Code>" in answer.content) == (403, True)


def test_behind_a_trusted_proxy_the_forwarded_host_is_the_one_signed(hosted):
    s3 = _client(hosted, "virtual")
    bucket = f"vhost-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"through a proxy")
    request = AWSRequest(method="GET", url=f"http://{bucket}.{DOMAIN}/k", headers={})
    S3SigV4Auth(Credentials(GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY), "s3", "us-east-1").add_auth(request)
    headers = {**dict(request.headers.items()), "X-Forwarded-Host": f"{bucket}.{DOMAIN}"}
    headers.pop("host", None)
    answer = requests.get(f"{hosted.url}/k", headers=headers, timeout=10)  # Host: the gateway's own address
    assert (answer.status_code, answer.content) == (200, b"through a proxy")


def test_the_aws_cli_copies_virtual_hosted(hosted, tmp_path: Path):
    s3 = _client(hosted, "virtual")
    bucket = f"vhost-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "f").write_bytes(b"cli virtual")
    (tmp_path / "config").write_text("[default]\ns3 =\n    addressing_style = virtual\n")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": GATEWAY_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": GATEWAY_SECRET_KEY,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "HTTP_PROXY": hosted.url, "NO_PROXY": "",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for args in (["cp", str(tmp_path / "f"), f"s3://{bucket}/f"], ["cp", f"s3://{bucket}/f", str(tmp_path / "g")]):
        done = subprocess.run([str(VENV_BIN / "aws"), "--endpoint-url", f"http://{DOMAIN}", "s3", *args],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "g").read_bytes() == b"cli virtual"


def test_a_form_upload_to_a_virtual_hosted_bucket_answers_its_virtual_hosted_location(hosted):
    s3 = _client(hosted, "virtual")
    bucket = f"vhost-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    post = s3.generate_presigned_post(bucket, "dir/form.txt")
    assert post["url"] == f"http://{bucket}.{DOMAIN}/"
    answer = requests.post(post["url"], data=post["fields"], files={"file": ("form.txt", b"posted")},
                           proxies={"http": hosted.url}, timeout=10)
    assert (answer.status_code, answer.headers["Location"]) == (204, f"http://{bucket}.{DOMAIN}/dir/form.txt")
    assert s3.get_object(Bucket=bucket, Key="dir/form.txt")["Body"].read() == b"posted"
