"""Per-account request quotas as token buckets, with AWS KMS's default per-second rates.

AWS throttles instead of queueing: a call over quota fails at once with ThrottlingException. The
limiter runs on the event loop only (no locks) and does O(1) work per call: one dict lookup and a
refill computed from the time elapsed since the bucket was last touched.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping

# AWS KMS default request quotas (requests per second), from the "Request quotas" page of the
# AWS KMS developer guide (symmetric is 5,500 in the smallest Regions, up to 100,000 elsewhere).
# Cryptographic operations share one bucket per key family; HMAC keys count as symmetric, as AWS
# documents. AWS's separate GenerateDataKeyPair quotas are not modelled.
DEFAULT_RATES: dict[str, float] = {
    "symmetric": 5500,
    "rsa": 500,
    "ecc": 300,
    "CancelKeyDeletion": 5,
    "CreateAlias": 5,
    "CreateGrant": 50,
    "CreateKey": 5,
    "DeleteAlias": 15,
    "DeleteImportedKeyMaterial": 15,
    "DescribeKey": 2000,
    "DisableKey": 5,
    "DisableKeyRotation": 5,
    "EnableKey": 5,
    "EnableKeyRotation": 15,
    "GetKeyPolicy": 1000,
    "GetKeyRotationStatus": 1000,
    "GetParametersForImport": 1,
    "GetPublicKey": 2000,
    "ImportKeyMaterial": 15,
    "ListAliases": 500,
    "ListGrants": 100,
    "ListKeyPolicies": 100,
    "ListKeyRotations": 100,
    "ListKeys": 500,
    "ListResourceTags": 2000,
    "ListRetirableGrants": 100,
    "PutKeyPolicy": 15,
    "RetireGrant": 50,
    "RevokeGrant": 50,
    "RotateKeyOnDemand": 5,
    "ScheduleKeyDeletion": 15,
    "TagResource": 10,
    "UntagResource": 5,
    "UpdateAlias": 5,
    "UpdateKeyDescription": 5,
}

# Classes that share another class's bucket unless a rate is configured for them explicitly.
SHARED_CLASSES: dict[str, str] = {"hmac": "symmetric"}

# Rate for an operation AWS lists no quota for (kept modest, like AWS's management quotas).
FALLBACK_RATE = 100.0


class QuotaLimiter:
    """Token buckets keyed by (account, quota class); each holds one second of burst (at least 1)."""

    def __init__(self, rates: Mapping[str, float] | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        configured = dict(rates or {})
        self._rates = {**DEFAULT_RATES, **configured}
        self._aliases = {k: v for k, v in SHARED_CLASSES.items() if k not in configured}
        self._monotonic = monotonic
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def rate(self, quota_class: str) -> float:
        """The requests-per-second rate the class draws on (after sharing)."""
        return self._rates.get(self._aliases.get(quota_class, quota_class), FALLBACK_RATE)

    def try_acquire(self, account_id: str, quota_class: str) -> bool:
        """Take one token; False (nothing is queued) when the bucket is empty."""
        bucket_class = self._aliases.get(quota_class, quota_class)
        rate = self._rates.get(bucket_class, FALLBACK_RATE)
        now = self._monotonic()
        key = (account_id, bucket_class)
        bucket = self._buckets.get(key)
        capacity = max(rate, 1.0)
        if bucket is None:
            bucket = self._buckets[key] = [capacity, now]
        tokens = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
