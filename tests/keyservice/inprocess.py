"""Helpers for in-process key service tests: call operations as the account root and expect errors."""
from __future__ import annotations

import pytest

from keyservice.errors import KMSError
from keyservice.service import CallContext, KeyService

ACCOUNT = "111122223333"
ROOT_ARN = f"arn:aws:iam::{ACCOUNT}:root"
START = 1_700_000_000.0
DAY = 86400.0


async def call(svc: KeyService, op: str, **params):
    return await svc.handle(op, params, CallContext(ROOT_ARN, ACCOUNT, "req"))


async def fails(svc: KeyService, op: str, error: str, **params) -> KMSError:
    """The call fails with this AWS error type and HTTP 400."""
    with pytest.raises(KMSError) as info:
        await call(svc, op, **params)
    assert (info.value.type, info.value.status) == (error, 400), info.value.message
    return info.value


async def new_key(svc: KeyService, **params) -> str:
    return (await call(svc, "CreateKey", **params))["KeyMetadata"]["KeyId"]
