"""SSE-KMS encryption context through the gateway: round trip, and the reserved key refused."""
from __future__ import annotations

import base64
import json

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import DEFAULT_KMS_ALIAS


def _context(pairs: dict[str, str]) -> str:
    return base64.b64encode(json.dumps(pairs).encode()).decode()


def test_encryption_context_round_trips(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"ctx body", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=DEFAULT_KMS_ALIAS, SSEKMSEncryptionContext=_context({"team": "a"}))
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"ctx body"


def test_context_setting_s3_arn_is_invalid_argument_and_stores_nothing(s3, bucket, upstream_s3):
    with pytest.raises(ClientError) as error:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSEncryptionContext=_context({"aws:s3:arn": "arn:aws:s3:::other/k"}))
    assert error.value.response["Error"]["Code"] == "InvalidArgument"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Contents" not in upstream_s3.list_objects_v2(Bucket=bucket)
