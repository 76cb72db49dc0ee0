"""The one entry point for KMS calls, shared by the HTTP server and the embedded gateway.

Order matters: the quota is checked before any work (a throttled call costs nothing and is
never queued), then the service runs the operation, then exactly one audit record is written
whatever happened -- success, a KMS error, throttling or a bug -- and is on disk before the
call answers.

A cryptographic operation hands out plaintext, data keys or signatures only once its record is
durable: when it cannot be written (disk full, I/O error) the call is refused with
KMSInternalException (500), unless ``audit_on_failure = "warn"``, which answers and logs a
warning. Other operations are answered either way (their changes are already committed to the
key store, so an error would misreport them), and the lost record is logged as an error.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from keyservice.audit import AuditLog, AuditUnavailable
from keyservice.errors import KMSError
from keyservice.quota import QuotaLimiter
from keyservice.service import CallContext, KeyService

INTERNAL_ERROR = "KMSInternalException"
AUDIT_POLICIES = ("refuse", "warn")
log = logging.getLogger(__name__)


class KmsApi:
    """Quota, service and audit behind one ``call``; ``maintain_forever`` runs key upkeep."""

    def __init__(self, service: KeyService, quotas: QuotaLimiter, audit: AuditLog, *,
                 audit_on_failure: str = "refuse") -> None:
        if audit_on_failure not in AUDIT_POLICIES:
            raise ValueError(f"audit_on_failure must be one of {AUDIT_POLICIES}, not {audit_on_failure!r}")
        self.service = service
        self.quotas = quotas
        self.audit = audit
        self.refuse_unaudited = audit_on_failure == "refuse"

    async def call(self, operation: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Run one KMS operation for ``ctx``; raises ``KMSError`` (AWS error shapes)."""
        try:
            self._admit(operation, params, ctx)
            result = await self.service.handle(operation, params, ctx)
        except KMSError as e:
            await self._audit(ctx, operation, params, e.type, required=False)
            raise
        except Exception:
            await self._audit(ctx, operation, params, INTERNAL_ERROR, required=False)
            raise
        await self._audit(ctx, operation, params, "ok",
                          required=operation in self.service.CRYPTOGRAPHIC_OPERATIONS)
        return result

    async def _audit(self, ctx: CallContext, operation: str, params: dict[str, Any], outcome: str, *,
                     required: bool) -> None:
        """Make the call's record durable; ``required``: the answer must not leave without it."""
        try:
            await self.audit.append(ctx, operation, params, outcome)
        except AuditUnavailable as exc:
            if required and self.refuse_unaudited:
                log.error("refused %s (request %s): its audit record cannot be written: %s",
                          operation, ctx.request_id, exc)
                raise KMSError(INTERNAL_ERROR, "The request could not be audited; it was not carried out.",
                               500) from None
            log.log(logging.WARNING if required else logging.ERROR,
                    "audit record of %s (request %s, outcome %s) lost: %s", operation, ctx.request_id,
                    outcome, exc)

    def _admit(self, operation: str, params: dict[str, Any], ctx: CallContext) -> None:
        if operation not in self.service.OPERATIONS:
            raise KMSError("UnknownOperationException", f"Unknown operation {operation}")
        quota_class = self.service.quota_class(operation, params)
        if not self.quotas.try_acquire(ctx.account_id, quota_class):
            raise KMSError("ThrottlingException", "Rate exceeded", 400)

    async def purge_due_keys(self) -> None:
        """The service's periodic maintenance (deletions, rotations); it may be sync or async."""
        result = self.service.purge_due_keys()
        if inspect.isawaitable(result):
            await result

    async def maintain_forever(self, interval: float) -> None:
        """Purge due keys every ``interval`` seconds until cancelled (run it as a task)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge_due_keys()
            except Exception:
                log.exception("periodic key maintenance failed")

    async def close(self) -> None:
        """Close the service, then the audit log (after the batch in flight is written)."""
        try:
            await self.service.close()
        finally:
            await self.audit.close()
