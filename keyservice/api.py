"""The one entry point for KMS calls, shared by the HTTP server and the embedded gateway.

Order matters: the quota is checked before any work (a throttled call costs nothing and is
never queued), then the service runs the operation, then exactly one audit line is written
whatever happened -- success, a KMS error, throttling or a bug.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from keyservice.audit import AuditLog
from keyservice.errors import KMSError
from keyservice.quota import QuotaLimiter
from keyservice.service import CallContext, KeyService

INTERNAL_ERROR = "KMSInternalException"
log = logging.getLogger(__name__)


class KmsApi:
    """Quota, service and audit behind one ``call``; ``maintain_forever`` runs key upkeep."""

    def __init__(self, service: KeyService, quotas: QuotaLimiter, audit: AuditLog) -> None:
        self.service = service
        self.quotas = quotas
        self.audit = audit

    async def call(self, operation: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Run one KMS operation for ``ctx``; raises ``KMSError`` (AWS error shapes)."""
        try:
            self._admit(operation, params, ctx)
            result = await self.service.handle(operation, params, ctx)
        except KMSError as e:
            self.audit.record(ctx, operation, params, e.type)
            raise
        except Exception:
            self.audit.record(ctx, operation, params, INTERNAL_ERROR)
            raise
        self.audit.record(ctx, operation, params, "ok")
        return result

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
        """Close the service, then the audit log (so the last calls' lines are flushed)."""
        try:
            await self.service.close()
        finally:
            self.audit.close()
