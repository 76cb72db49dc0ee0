"""The key store on PostgreSQL (asyncpg): several key service nodes serving the same keys.

The rows, their wrapped secrets and metadata MACs are keyservice/rowstore.py's, as for SQLite; here:

- Why a private event loop thread: the store's API is synchronous -- a KMS handler calls it in the middle
  of one call's synchronous stretch on the service's thread (keyservice/worker.py), which is what keeps
  memory and store in step without locks. asyncpg is asynchronous only, and blocking the service's loop
  on a coroutine scheduled on that same loop would deadlock. So the store owns an event loop on a daemon
  thread of its own, with the connection pool and the listening connection on it; each store method
  submits a coroutine there (``run_coroutine_threadsafe``) and waits for its result, exactly as the
  SQLite store waits for its fsync. The service's thread is the only caller that waits, so one pooled
  connection at a time serves it (two while a key is held for maintenance).
- Durability: each change is one transaction, committed with ``synchronous_commit = on`` (set on every
  connection, whatever the server's default) before the call returns: an acknowledged change survives
  a node (or the database server) being killed.
- Other nodes' changes: every transaction also ``pg_notify``s channel ``keyservice_changes`` with
  "node table identity" for each row it changes, delivered to every listening node when it commits.
  ``watch`` hands them (other nodes' only) to the service, which reloads those rows (keyservice/api.py).
  Bound: a change is applied on every other node as soon as its service thread is free, typically
  within milliseconds; a notification lost while a node's listening connection was down is caught by
  the full reload that node makes when it reconnects, and by the periodic one (``resync_interval``).
- Maintenance runs once across nodes: ``exclusive_key`` holds a session advisory lock on the key while
  a due deletion or rotation is judged on the row as stored and made.
- Schema: table schema_version; created, or upgraded, at start under an advisory lock (nodes starting
  together); a newer version than this code knows is refused (``StoreSchemaTooNew``). The root key is
  proved at start by the canary row, as in SQLite (``RootKeyMismatch``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from .rowstore import RowStore, Statement
from .storeapi import RESYNC_INTERVAL, SCHEMA_VERSION, Meta, StoreChange, StoreSchemaTooNew

T = TypeVar("T")
log = logging.getLogger("keyservice.pgstore")
CHANNEL = "keyservice_changes"
_SCHEMA_LOCK = 0x6B6D7331  # the advisory lock nodes take to create or upgrade the schema
_TIMEOUT = 60.0  # a database that does not answer a statement in this long fails the call
_RECONNECT_DELAY = 1.0
_SETTINGS = {"synchronous_commit": "on", "application_name": "keyservice"}
_LISTENER_SETTINGS = {**_SETTINGS, "application_name": "keyservice-listener"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, meta TEXT NOT NULL, mac BYTEA);
CREATE TABLE IF NOT EXISTS backing_keys (
    key_id TEXT NOT NULL, backing_id TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, rotation_type TEXT,
    wrapped BYTEA NOT NULL, mac BYTEA, seq BIGSERIAL, PRIMARY KEY (key_id, backing_id));
CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, key_id TEXT NOT NULL, meta TEXT NOT NULL, mac BYTEA);
CREATE TABLE IF NOT EXISTS grants (grant_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, meta TEXT NOT NULL, mac BYTEA);
CREATE TABLE IF NOT EXISTS tags (
    key_id TEXT NOT NULL, tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, mac BYTEA, PRIMARY KEY (key_id, tag_key));
CREATE TABLE IF NOT EXISTS import_params (
    key_id TEXT PRIMARY KEY, meta TEXT NOT NULL, wrapped BYTEA NOT NULL, mac BYTEA);
CREATE TABLE IF NOT EXISTS custom_key_stores (
    store_id TEXT PRIMARY KEY, meta TEXT NOT NULL, wrapped BYTEA NOT NULL, mac BYTEA);
CREATE TABLE IF NOT EXISTS canary (name TEXT PRIMARY KEY, wrapped BYTEA NOT NULL);
"""


class StoreUnavailable(OSError):
    """The database cannot be reached or refuses the connection (at start)."""


def _where(url: str) -> str:
    """HOST:PORT/DB of a URL, without its user and password (for messages)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


class PgKeyStore(RowStore):
    """The key store in the PostgreSQL database ``url`` names, shared with other nodes."""

    shared = True
    _ORDER = "seq"

    def __init__(self, url: str, root_key: bytes, *, resync_interval: float = RESYNC_INTERVAL) -> None:
        super().__init__(root_key)
        self.resync_interval = resync_interval
        self.node = uuid.uuid4().hex  # tells this node's own notifications from the others'
        self._url = url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="keyservice-pgstore", daemon=True)
        self._thread.start()
        self._listener: asyncio.Task[None] | None = None
        try:
            try:
                self._pool: asyncpg.Pool = self._run(_open_pool(url))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise StoreUnavailable(f"cannot open the key store on PostgreSQL at {_where(url)}: {exc}") from None
            try:
                self._run(self._upgrade())
                self._write(self._root_key_check(f"PostgreSQL at {_where(url)}"), [])
            except BaseException:
                with contextlib.suppress(Exception):
                    self._run(self._pool.close())
                raise
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._listener is not None:
                self._run(_cancelled(self._listener))
            self._run(self._pool.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def _run(self, work: Awaitable[T]) -> T:
        """``work``'s result, awaited on the store's loop (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(_awaited(work), self._loop).result(_TIMEOUT)

    async def _upgrade(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            found = await conn.fetchval("SELECT max(version) FROM schema_version")
            if found is not None and found > SCHEMA_VERSION:
                raise StoreSchemaTooNew(found)
            if found is None:  # a new database: the current schema at once (nothing to upgrade)
                await conn.execute(_SCHEMA)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", SCHEMA_VERSION)

    # --- the primitives of RowStore ---------------------------------------------------------
    def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(self._pool.fetch(sql, *args))]

    def _write(self, statements: list[Statement], changed: Iterable[tuple[str, str]]) -> None:
        self._run(self._transaction(statements, [f"{self.node} {t} {i}" for t, i in dict.fromkeys(changed)]))

    async def _transaction(self, statements: list[Statement], notices: list[str]) -> None:
        """The statements and their notifications in one transaction: the others hear of it once committed."""
        async with self._pool.acquire() as conn, conn.transaction():
            for sql, args in statements:
                await conn.execute(sql, *args)
            for notice in notices:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, notice)

    @contextlib.contextmanager
    def exclusive_key(self, key_id: str) -> Iterator[Meta | None]:
        """Hold ``key_id`` against every other node (a session advisory lock, waited for) and give its row as
        stored once held: a second node doing the same due change waits, then finds it done."""
        conn = self._run(self._pool.acquire())
        try:
            self._run(conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key_id))
            try:
                yield self.get_key(key_id)
            finally:
                self._run(conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key_id))
        finally:
            self._run(self._pool.release(conn))

    # --- other nodes' changes ---------------------------------------------------------------
    def watch(self, on_change: Callable[[StoreChange], None]) -> None:
        """Call ``on_change((table, identity))`` (on the store's thread) for each row another node changes,
        and ``on_change(None)`` after the listening connection was re-established (changes may have been
        missed: reload everything). Must not block, nor call the store."""
        async def start() -> None:
            self._listener = asyncio.ensure_future(self._listen(on_change))
        self._run(start())

    async def _listen(self, on_change: Callable[[StoreChange], None]) -> None:
        """Keep a connection LISTENing on CHANNEL, reconnecting after it is lost."""
        first = True  # a full reload after each LISTEN begins: what changed before it was heard nowhere
        while True:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._url, server_settings=_LISTENER_SETTINGS)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("key store change listener cannot connect (%s); retrying", exc)
                await asyncio.sleep(_RECONNECT_DELAY)
                continue
            try:
                conn.add_termination_listener(lambda _: lost.set())
                await conn.add_listener(CHANNEL, lambda _c, _p, _ch, payload: self._heard(payload, on_change))
                if not first:
                    log.warning("key store change listener reconnected: reloading every key")
                on_change(None)
                first = False
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5)
                    if not lost.is_set():
                        await conn.execute("SELECT 1")  # notices a dead connection
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("key store change listener lost its connection (%s); reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
            await asyncio.sleep(_RECONNECT_DELAY)

    def _heard(self, payload: str, on_change: Callable[[StoreChange], None]) -> None:
        node, table, identity = payload.split(" ", 2)
        if node != self.node:
            on_change((table, identity))


async def _cancelled(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _awaited(work: Awaitable[T]) -> T:
    """A coroutine of any awaitable (asyncpg's pool and acquire contexts are awaitables, not coroutines)."""
    return await work


async def _open_pool(url: str) -> asyncpg.Pool:
    """The connection pool, made on the store's loop (a pool belongs to the loop it is created on)."""
    return await asyncpg.create_pool(url, min_size=1, max_size=4, server_settings=_SETTINGS)
