"""The upstream URL as an operator may write it: a host name in upper case. aiohttp would send the Host header
as written while SigV4 signs it lower-cased, so the upstream (moto with IAM auth, which checks the signature
over the Host it got) refused every request; the gateway now sends the Host it signed."""
from __future__ import annotations

import dataclasses
import uuid

from tests.gateway.conftest import _start_gateway
from tests.support.clients import s3_client
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY


def test_an_upstream_url_with_an_upper_case_host_name_works(moto, upstream_s3, tmp_path):
    shouting = dataclasses.replace(moto, url=moto.url.replace("127.0.0.1", "LOCALHOST"))
    server = _start_gateway(shouting, tmp_path / "gw", None)
    try:
        s3 = s3_client(server.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"upper-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"through LOCALHOST")
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"through LOCALHOST"
        assert upstream_s3.get_object(Bucket=bucket, Key="k")["Body"].read() != b"through LOCALHOST"  # encrypted
    finally:
        assert server.stop() == 0, server.log()
