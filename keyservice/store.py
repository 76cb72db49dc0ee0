"""Durable key storage: SQLite (WAL, synchronous=FULL), one table per entity.

Every secret (backing keys, private keys, HMAC keys, import wrapping keys) is AES-256-GCM-wrapped
under the root key with the row identity as AAD, so a row copied onto another row fails to unwrap.
Non-secret metadata is stored as JSON; the service keeps it all in memory and writes through.
"""

import fcntl
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from common.aead import Aead, AuthenticationFailed, derive
from common.files import private_dir, touch_private

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
CREATE TABLE IF NOT EXISTS canary (name TEXT PRIMARY KEY, wrapped BLOB NOT NULL);
"""
_CANARY = ("canary", "root-key")  # table and identity of the value that proves the root key at open
_SECRET_TABLES = {"backing_keys": "key_id || '|' || backing_id", "import_params": "key_id"}


class StoreCorruption(Exception):
    """A wrapped secret failed to unwrap: wrong root key or a tampered row."""


@dataclass
class BackingKeyRow:
    """One version of a key's material (a rotation adds one)."""

    key_id: str
    backing_id: str
    created: float
    rotation_type: str | None
    material: bytes


class RootKeyMismatch(ValueError):
    """The root key given is not the one the store's secrets are wrapped under: refused at open, before
    any call would fail with KMSInternalException."""


class StoreInUse(OSError):
    """Another process has the key store open."""


class KeyStore:
    """The SQLite database at data_dir/keys.db; each write is committed before it returns.

    One process at a time: the service keeps every key's state in memory, loaded once, so a second
    process on the same store would never see the first one's changes (a key disabled there would still
    encrypt here). An exclusive lock on data_dir/keys.lock, held while the store is open, refuses it."""

    def __init__(self, data_dir: Path, root_key: bytes) -> None:
        private_dir(data_dir)
        self._lock = _exclusive(data_dir / "keys.lock")
        touch_private(data_dir / "keys.db")  # SQLite makes it 0644; its -wal and -shm copy its mode
        self._aead = Aead(root_key)
        # Keys fingerprints of imported material (to recognise a re-import) without storing it.
        self.fingerprint_key = derive(root_key, salt=None, info=b"imported-material-fingerprint")
        self._db = sqlite3.connect(data_dir / "keys.db", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        try:
            self._check_root_key(data_dir)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._db.close()
        self._lock.close()  # releases the lock

    # --- secret wrapping -------------------------------------------------------------------
    # Stored as nonce || AES-256-GCM(root key) with AAD "table|identity": a row copied onto another fails.
    def _wrap(self, table: str, identity: str, secret: bytes) -> bytes:
        return self._aead.seal(secret, f"{table}|{identity}".encode())

    def _unwrap(self, table: str, identity: str, wrapped: bytes) -> bytes:
        try:
            return self._aead.open(wrapped, f"{table}|{identity}".encode())
        except AuthenticationFailed as exc:
            raise StoreCorruption(f"cannot unwrap {table} row {identity}") from exc

    def _check_root_key(self, data_dir: Path) -> None:
        """The root key opens the store's canary (written on first open), or -- for a store from before
        canaries -- its first secret row: else RootKeyMismatch, as the wrong key would fail every call."""
        row = self._db.execute("SELECT wrapped FROM canary WHERE name = ?", (_CANARY[1],)).fetchone()
        samples = [(_CANARY[0], _CANARY[1], row[0])] if row else [
            (table, *found) for table, identity in _SECRET_TABLES.items()
            if (found := self._db.execute(f"SELECT {identity}, wrapped FROM {table} LIMIT 1").fetchone())]
        for table, identity, wrapped in samples:
            try:
                self._unwrap(table, identity, wrapped)
            except StoreCorruption:
                raise RootKeyMismatch(
                    f"the root key does not open the key store in {data_dir}: it is not the key the store was "
                    "created with (check root_key_file / KEYSERVICE_ROOT_KEY_FILE, KEYSERVICE_ROOT_KEY or "
                    "KEYSERVICE_ROOT_PASSPHRASE)") from None
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO canary VALUES (?, ?)",
                             (_CANARY[1], self._wrap(*_CANARY, b"root key canary")))

    # --- keys ------------------------------------------------------------------------------
    def load_keys(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(m) for k, m in self._db.execute("SELECT key_id, meta FROM keys")}

    def put_key(self, key_id: str, meta: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?)", (key_id, json.dumps(meta)))

    def destroy_key(self, key_id: str) -> None:
        """Delete a key and everything hanging off it, secrets first, in one transaction."""
        with self._transaction():
            for table in ("backing_keys", "import_params", "tags", "grants", "aliases", "keys"):
                self._db.execute(f"DELETE FROM {table} WHERE key_id = ?", (key_id,))

    # --- backing keys ----------------------------------------------------------------------
    def add_backing_key(self, row: BackingKeyRow, meta: dict[str, Any] | None = None) -> None:
        """Store a backing key, and optionally the key's updated metadata, atomically."""
        wrapped = self._wrap("backing_keys", f"{row.key_id}|{row.backing_id}", row.material)
        with self._transaction():
            self._db.execute("INSERT INTO backing_keys VALUES (?, ?, ?, ?, ?)",
                             (row.key_id, row.backing_id, row.created, row.rotation_type, wrapped))
            if meta is not None:
                self._db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?)", (row.key_id, json.dumps(meta)))

    def backing_keys(self, key_id: str) -> list[BackingKeyRow]:
        rows = self._db.execute("SELECT backing_id, created, rotation_type, wrapped FROM backing_keys "
                                "WHERE key_id = ? ORDER BY created, rowid", (key_id,))
        return [BackingKeyRow(key_id, b, c, r, self._unwrap("backing_keys", f"{key_id}|{b}", w))
                for b, c, r, w in rows]

    def delete_backing_keys(self, key_id: str, meta: dict[str, Any]) -> None:
        """Destroy a key's material (imported material expiring or deleted) and save its new state."""
        with self._transaction():
            self._db.execute("DELETE FROM backing_keys WHERE key_id = ?", (key_id,))
            self._db.execute("INSERT OR REPLACE INTO keys VALUES (?, ?)", (key_id, json.dumps(meta)))

    # --- aliases ---------------------------------------------------------------------------
    def load_aliases(self) -> dict[str, dict[str, Any]]:
        return {n: json.loads(m) for n, m in self._db.execute("SELECT name, meta FROM aliases")}

    def put_alias(self, name: str, meta: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (name, meta["key_id"], json.dumps(meta)))

    def delete_alias(self, name: str) -> None:
        self._db.execute("DELETE FROM aliases WHERE name = ?", (name,))

    # --- grants ----------------------------------------------------------------------------
    def load_grants(self) -> dict[str, dict[str, Any]]:
        return {g: json.loads(m) for g, m in self._db.execute("SELECT grant_id, meta FROM grants")}

    def put_grant(self, grant_id: str, meta: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO grants VALUES (?, ?, ?)", (grant_id, meta["KeyId"], json.dumps(meta)))

    def delete_grant(self, grant_id: str) -> None:
        self._db.execute("DELETE FROM grants WHERE grant_id = ?", (grant_id,))

    # --- tags ------------------------------------------------------------------------------
    def load_tags(self) -> dict[str, dict[str, str]]:
        tags: dict[str, dict[str, str]] = {}
        for key_id, k, v in self._db.execute("SELECT key_id, tag_key, tag_value FROM tags"):
            tags.setdefault(key_id, {})[k] = v
        return tags

    def set_tags(self, key_id: str, tags: dict[str, str]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)",
                                 [(key_id, k, v) for k, v in tags.items()])

    def delete_tags(self, key_id: str, tag_keys: list[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM tags WHERE key_id = ? AND tag_key = ?", [(key_id, k) for k in tag_keys])

    # --- import parameters -----------------------------------------------------------------
    def put_import_params(self, key_id: str, meta: dict[str, Any], private_key_der: bytes) -> None:
        wrapped = self._wrap("import_params", key_id, private_key_der)
        self._db.execute("INSERT OR REPLACE INTO import_params VALUES (?, ?, ?)", (key_id, json.dumps(meta), wrapped))

    def import_params(self, key_id: str) -> tuple[dict[str, Any], bytes] | None:
        row = self._db.execute("SELECT meta, wrapped FROM import_params WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), self._unwrap("import_params", key_id, row[1])

    # --- custom key stores (keyservice/customkeystores.py): the wrapped secret is the token's user PIN,
    # wrapped as every other secret (AAD "custom_key_stores|<store id>")
    def load_custom_key_stores(self) -> dict[str, dict[str, Any]]:
        return {s: json.loads(m) for s, m in self._db.execute("SELECT store_id, meta FROM custom_key_stores")}

    def put_custom_key_store(self, store_id: str, meta: dict[str, Any], password: str | None = None) -> None:
        """Save a store's metadata, and its password when given (else the one saved is kept)."""
        if password is None:
            self._db.execute("UPDATE custom_key_stores SET meta = ? WHERE store_id = ?", (json.dumps(meta), store_id))
            return
        wrapped = self._wrap("custom_key_stores", store_id, password.encode())
        self._db.execute("INSERT OR REPLACE INTO custom_key_stores VALUES (?, ?, ?)",
                         (store_id, json.dumps(meta), wrapped))

    def custom_key_store_password(self, store_id: str) -> str:
        row = self._db.execute("SELECT wrapped FROM custom_key_stores WHERE store_id = ?", (store_id,)).fetchone()
        return self._unwrap("custom_key_stores", store_id, row[0]).decode()

    def delete_custom_key_store(self, store_id: str) -> None:
        self._db.execute("DELETE FROM custom_key_stores WHERE store_id = ?", (store_id,))

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)


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
