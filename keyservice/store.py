"""Durable key storage: SQLite (WAL, synchronous=FULL), one table per entity.

Every secret (backing keys, private keys, HMAC keys, import wrapping keys) is AES-256-GCM-wrapped
under the root key with the row identity as AAD, so a row copied onto another row fails to unwrap.
Non-secret metadata is stored as JSON; the service keeps it all in memory and writes through.
"""

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, ContextManager

from common.files import private_dir, touch_private

from .metamac import StoreCorruption  # noqa: F401  (re-exported: where callers have always found it)
from .rowstore import UNMACED_ROWS, RowStore, Statement
from .storeapi import (SCHEMA_VERSION, TABLES, BackingKeyRow, Meta, RootKeyMismatch,  # noqa: F401
                       StoreChange, StoreSchemaTooNew, no_lock)

CHANGE_POLL_INTERVAL = 0.5
"""Seconds between two looks of a worker at whether another worker of its server wrote the shared SQLite
store (``PRAGMA data_version``): a change is reloaded within this plus the reload's own time."""
_HELD_FOR_WORKERS: dict[Path, IO[bytes] | None] = {}
"""The stores whose lock the parent of ``--workers N`` holds for its workers (``hold_for_workers``); None
until it does (while its first worker starts)."""


def share_with_workers(data_dir: Path) -> None:
    """In the parent of ``--workers N`` (common/workers.py), before forking: its workers open this store
    shared -- each polls for the others' changes and serializes its key maintenance with theirs
    (``KeyStore``), none takes the store's lock. Nothing is written: a first worker that fails its start-up
    checks leaves the data directory as it was."""
    _HELD_FOR_WORKERS.setdefault(_lock_path(data_dir), None)


def hold_for_workers(data_dir: Path) -> None:
    """In the parent, once its first worker made the store: take the store's exclusive lock for this process
    and every worker it forks from now on (another server on the same data directory is refused, as
    before; one that took it meanwhile makes this raise StoreInUse)."""
    path = _lock_path(data_dir)
    if _HELD_FOR_WORKERS.get(path) is None:
        private_dir(data_dir)
        _HELD_FOR_WORKERS[path] = _exclusive(path)


def _lock_path(data_dir: Path) -> Path:
    return (Path(data_dir) / "keys.lock").resolve()

# Schema 1, the tables as the first stores had them; ``_upgrade`` takes them to SCHEMA_VERSION.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS backing_keys (
    key_id TEXT NOT NULL, backing_id TEXT NOT NULL, created REAL NOT NULL,
    rotation_type TEXT, wrapped BLOB NOT NULL, PRIMARY KEY (key_id, backing_id));
CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, key_id TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grants (grant_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tags (
    key_id TEXT NOT NULL, tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, PRIMARY KEY (key_id, tag_key));
CREATE TABLE IF NOT EXISTS import_params (
    key_id TEXT PRIMARY KEY, meta TEXT NOT NULL, wrapped BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS custom_key_stores (
    store_id TEXT PRIMARY KEY, meta TEXT NOT NULL, wrapped BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS canary (name TEXT PRIMARY KEY, wrapped BLOB NOT NULL);
"""


class StoreInUse(OSError):
    """Another process has the key store open."""


class KeyStore(RowStore):
    """The SQLite database at data_dir/keys.db; each write is committed before it returns.

    One process at a time: the service keeps every key's state in memory, loaded once, so a second
    process on the same store would never see the first one's changes (a key disabled there would still
    encrypt here). An exclusive lock on data_dir/keys.lock, held while the store is open, refuses it.
    Several processes share keys through PostgreSQL instead (keyservice/pgstore.py).

    The workers of one ``--workers N`` server share it (``hold_for_workers``): the parent holds that lock
    for them; each worker's connection polls ``PRAGMA data_version`` every CHANGE_POLL_INTERVAL seconds
    and, when another connection committed, has everything reloaded (``watch``, the path a PostgreSQL
    change notification takes); due maintenance runs holding data_dir/keys.maintenance.lock, judged on the
    row as stored then, so a rotation or deletion is made once, not once per worker.

    The schema is versioned (table schema_version): a store from before it (version 1, no MACs) is
    upgraded at open, in one transaction, by computing every row's MAC under the root key."""

    def __init__(self, data_dir: Path, root_key: bytes) -> None:
        super().__init__(root_key)
        private_dir(data_dir)
        self.shared = _lock_path(data_dir) in _HELD_FOR_WORKERS
        self._lock = None if self.shared else _exclusive(data_dir / "keys.lock")
        self._maintenance_lock = data_dir / "keys.maintenance.lock"
        self._db_lock = threading.Lock()  # the change poller's thread and the service's share the connection
        self._stop_watching = threading.Event()
        touch_private(data_dir / "keys.db")  # SQLite makes it 0644; its -wal and -shm copy its mode
        self._db = sqlite3.connect(data_dir / "keys.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._upgrade(str(data_dir))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stop_watching.set()
        with self._db_lock:
            self._db.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock

    def _upgrade(self, where: str) -> None:
        """Create the tables, or bring an older store to SCHEMA_VERSION; refuse a newer one, and a root key
        that does not open the store (before any MAC is computed under it)."""
        with self._transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)
            found = self._db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 1
            if found > SCHEMA_VERSION:
                raise StoreSchemaTooNew(found)
            for sql, args in self._root_key_check(where):
                self._db.execute(_sqlite(sql), args)
            if found < 2:
                for table in TABLES:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN mac BLOB")
                rows = {t: self._db.execute(sql).fetchall() for t, sql in UNMACED_ROWS.items()}
                for sql, args in self.mac_statements(rows):
                    self._db.execute(_sqlite(sql), args)
            if found < SCHEMA_VERSION:
                self._db.execute("DELETE FROM schema_version")
                self._db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    # --- the primitives of RowStore ---------------------------------------------------------
    def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._db_lock:
            return self._db.execute(_sqlite(sql), args).fetchall()

    def _write(self, statements: list[Statement], changed: Iterable[tuple[str, str]]) -> None:
        with self._db_lock, self._transaction():
            for sql, args in statements:
                self._db.execute(_sqlite(sql), args)

    def exclusive_key(self, key_id: str) -> ContextManager[Meta | None]:
        """The key's row as stored, held against the other workers of a shared store (one lock for every
        key: maintenance is rare and short); alone, nothing to lock."""
        if not self.shared:
            return no_lock(self.get_key(key_id))
        return self._held_key(key_id)

    @contextlib.contextmanager
    def _held_key(self, key_id: str) -> Iterator[Meta | None]:
        touch_private(self._maintenance_lock)
        with open(self._maintenance_lock, "rb+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # waited for: released when the holder's block ends (or it dies)
            yield self.get_key(key_id)

    def watch(self, on_change: Callable[[StoreChange], None]) -> None:
        """On a shared store: call ``on_change(None)`` (reload everything) from a poller thread once it
        watches (as PostgreSQL's listener does when it starts listening), then whenever another worker
        committed, CHANGE_POLL_INTERVAL seconds apart at most; alone, nothing to report."""
        if self.shared:
            threading.Thread(target=self._poll_changes, args=(on_change,), name="keystore-changes",
                             daemon=True).start()

    def _poll_changes(self, on_change: Callable[[StoreChange], None]) -> None:
        last = self._data_version()
        on_change(None)  # what was committed between loading the keys and now is caught up at once
        while not self._stop_watching.wait(CHANGE_POLL_INTERVAL):
            try:
                version = self._data_version()
            except sqlite3.ProgrammingError:  # closed meanwhile
                return
            if version != last:
                last = version
                on_change(None)

    def _data_version(self) -> int:
        """Changes when another connection commits to the database (never for this connection's own)."""
        with self._db_lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    # --- secret wrapping (the layout of keyservice/metamac.py) -------------------------------
    def _wrap(self, table: str, identity: str, secret: bytes) -> bytes:
        return self._sealer.wrap(table, identity, secret)

    def _unwrap(self, table: str, identity: str, wrapped: bytes) -> bytes:
        return self._sealer.unwrap(table, identity, wrapped)

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


def _sqlite(sql: str) -> str:
    """RowStore's ``$1`` placeholders as SQLite's numbered ``?1``."""
    return sql.replace("$", "?")


class _Transaction:
    """BEGIN/COMMIT around several statements (the connection is in autocommit mode otherwise)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type | None, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _exclusive(path: Path) -> IO[bytes]:
    """``path`` opened and locked exclusively for this process's lifetime of the store (released on
    close, or when the process dies): StoreInUse when another process holds it."""
    touch_private(path)
    handle = open(path, "rb+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreInUse(f"the key store in {path.parent} is in use by another process: run one key service "
                         "on it and point the others at it ([kms] endpoint), or give each its own data_dir") from None
    return handle
