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

The service itself runs on its own thread (``keyservice.worker``): its store writes wait for an
fsync and must not stall the caller's event loop. Quota and audit stay on the caller's loop, so a
throttled call is refused at once, never queued behind the service's work.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from keyservice.audit import AuditLog, AuditUnavailable
from keyservice.errors import KMSError
from keyservice.quota import QuotaLimiter
from keyservice.service import CallContext, KeyService
from keyservice.storeapi import StoreChange
from keyservice.worker import ServiceWorker

INTERNAL_ERROR = "KMSInternalException"
# Operations that change nothing about whether or how a key may be used: reads, listings and the
# cryptographic operations. Every other operation, including any added later, is announced to the
# change listeners after it succeeds (a listener dropping a cache entry too often costs little; one
# told too rarely serves a disabled key).
READ_ONLY_OPERATIONS = frozenset({
    "DescribeKey", "ListKeys", "ListAliases", "GetKeyRotationStatus", "ListKeyRotations", "GetKeyPolicy",
    "ListKeyPolicies", "ListResourceTags", "ListGrants", "ListRetirableGrants", "GetParametersForImport",
    "DescribeCustomKeyStores",
})
ChangeListener = Callable[[str, "str | None"], None]
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
        self._worker = ServiceWorker()
        self._on_worker: set[asyncio.Task[Any]] = set()  # calls in flight there, for close
        self._closing = False
        self._listeners: list[ChangeListener] = []
        self._store_changes: asyncio.Queue[StoreChange] | None = None  # follow_store's, while it runs
        # The operations announced to change listeners when they succeed (see READ_ONLY_OPERATIONS).
        self.change_operations = service.OPERATIONS - READ_ONLY_OPERATIONS - service.CRYPTOGRAPHIC_OPERATIONS

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(operation, key_arn)`` after every successful key-changing call, whoever made
        it, and after every time-driven change (``DeleteKey``, ``RotateKey``, ``DeleteExpiredKeyMaterial``,
        CloudTrail's names for them) applied in a purge or lazily in a call. ``key_arn`` is None when a
        call names no single key. Listeners run on the caller's event loop and must not block."""
        self._listeners.append(listener)

    async def call(self, operation: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Run one KMS operation for ``ctx``; raises ``KMSError`` (AWS error shapes).

        A call the service can answer from memory is answered here; any other runs on the service's
        thread, shielded: once started it finishes, and is audited, even if its caller goes away.
        Once `close` began, calls are refused (KMSInternalException) rather than met by a closed store."""
        if self._closing:
            raise KMSError(INTERNAL_ERROR, "The key service is shutting down.", 500)
        try:
            self._admit(operation, params, ctx)
            result = self._worker.if_idle(lambda: self.service.handle_in_memory(operation, params, ctx))
        except Exception as exc:
            return await self._answer(operation, params, ctx, error=exc)
        if result is None:
            task = asyncio.ensure_future(self._call_on_worker(operation, params, ctx))
            self._on_worker.add(task)
            task.add_done_callback(self._on_worker.discard)
            return await asyncio.shield(task)
        return await self._answer(operation, params, ctx, result=result)

    def start_on_service(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on the service's thread with no caller waiting for it (a multi-region key's new
        version on its way to the replicas: keyservice/multiregion.py); ``close`` waits for it too."""
        task = asyncio.ensure_future(self._worker.run(work))
        self._on_worker.add(task)
        task.add_done_callback(self._on_worker.discard)

    async def _call_on_worker(self, operation: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        try:
            result = await self._worker.run(self.service.handle(operation, params, ctx))
        except Exception as exc:
            if not isinstance(exc, KMSError) and self._store_changes is not None:
                self._store_changes.put_nowait(None)  # a failed write may have left memory ahead of the store
            return await self._answer(operation, params, ctx, error=exc)
        return await self._answer(operation, params, ctx, result=result)

    async def _answer(self, operation: str, params: dict[str, Any], ctx: CallContext, *,
                      result: dict[str, Any] | None = None, error: Exception | None = None) -> dict[str, Any]:
        """Write the call's one audit record, announce changes, then return its result or raise its error."""
        self._announce_maintenance()
        if error is not None:
            outcome = error.type if isinstance(error, KMSError) else INTERNAL_ERROR
            await self._audit(ctx, operation, params, outcome, required=False)
            raise error
        await self._audit(ctx, operation, params, "ok",
                          required=operation in self.service.CRYPTOGRAPHIC_OPERATIONS)
        assert result is not None
        if operation in self.change_operations:
            self._announce(operation, ctx.key_arn)
        return result

    def _announce_maintenance(self) -> None:
        events = self.service.maintenance_events
        while events:
            self._announce(*events.popleft())

    def _announce(self, operation: str, key_arn: str | None) -> None:
        """Tell every listener; one that fails is logged and does not fail the call (its change is made)."""
        for listener in self._listeners:
            try:
                listener(operation, key_arn)
            except Exception:
                log.exception("a key change listener failed on %s of %s", operation, key_arn)

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
        """Refuse unknown and throttled calls before any work. ``quota_class`` only looks keys and
        aliases up (single dict reads, atomic while the worker thread changes them): safe here."""
        if operation not in self.service.OPERATIONS:
            raise KMSError("UnknownOperationException", f"Unknown operation {operation}")
        quota_class = self.service.quota_class(operation, params)
        if not self.quotas.try_acquire(ctx.account_id, quota_class):
            raise KMSError("ThrottlingException", "Rate exceeded", 400)

    async def purge_due_keys(self) -> None:
        """The service's periodic maintenance (deletions, rotations), on the service's thread."""
        try:
            await self._worker.run(self._purge())
        finally:
            self._announce_maintenance()

    async def _purge(self) -> None:
        result = self.service.purge_due_keys()
        if inspect.isawaitable(result):
            await result

    async def maintain_forever(self, interval: float) -> None:
        """Purge due keys every ``interval`` seconds until cancelled (run it as a task); on a store
        shared with other nodes, follow their changes meanwhile (``follow_store``)."""
        follower = asyncio.ensure_future(self.follow_store())
        try:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.purge_due_keys()
                except Exception:
                    log.exception("periodic key maintenance failed")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def follow_store(self) -> None:
        """Apply the changes other nodes make to a shared store (keyservice/pgstore.py) until cancelled,
        then tell the change listeners (``KeyStoreChange``, the key's ARN), so a host's caches follow.

        The store reports changed rows from its own thread; they queue here and are reloaded on the
        service's thread, in batches, between calls (``KeyService.apply_store_changes``). Every
        ``resync_interval`` seconds everything is reloaded anyway: a notification lost is caught then."""
        store = self.service.store
        if not store.shared:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[StoreChange] = asyncio.Queue()
        self._store_changes = queue

        def heard(change: StoreChange) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to tell
                loop.call_soon_threadsafe(queue.put_nowait, change)
        await asyncio.to_thread(store.watch, heard)
        next_full = loop.time() + store.resync_interval
        while True:
            try:
                changes = [await asyncio.wait_for(queue.get(), max(0.0, next_full - loop.time()))]
            except asyncio.TimeoutError:
                changes = [None]
            while not queue.empty():
                changes.append(queue.get_nowait())
            if None in changes:
                next_full = loop.time() + store.resync_interval
            try:
                events = await self._worker.run(self._apply(changes))
            except Exception:
                log.exception("applying other nodes' key store changes failed; everything is reloaded next")
                queue.put_nowait(None)
                await asyncio.sleep(1)
                continue
            self._announce_maintenance()
            for event in events:
                self._announce(*event)

    async def _apply(self, changes: list[StoreChange]) -> list[tuple[str, str | None]]:
        return self.service.apply_store_changes(changes)

    async def close(self) -> None:
        """Let the calls in flight finish, close the service and its thread, then the audit log (after
        the batch in flight is written)."""
        self._closing = True
        if self._on_worker:
            await asyncio.wait(self._on_worker)
        try:
            await self._worker.close(self.service.close())
        finally:
            await self.audit.close()
