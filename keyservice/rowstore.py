"""The rows of a key store, written once for both databases (SQLite and PostgreSQL).

A subclass supplies three primitives -- read rows, write statements in one transaction, and the column
that keeps insertion order -- and this class does the rest the same way for both: the statements
(``$1`` placeholders and ``INSERT ... ON CONFLICT``, which both databases speak), wrapping secrets and
MAC'ing metadata (keyservice/metamac.py), and refusing rows that fail their MAC. A refused row is
logged, recorded in ``refused`` and left out of what is loaded, so one tampered row costs its key (or
alias, grant, ...), not the service.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from common.aead import derive

from .metamac import RowSealer, RowTampered
from .metamac import StoreCorruption
from .storeapi import RESYNC_INTERVAL, BackingKeyRow, Meta, RootKeyMismatch, StoreChange

log = logging.getLogger("keyservice.store")
CANARY = ("canary", "root-key")  # table and identity of the value that proves the root key at open
# Where a store from before canaries has a secret to prove the root key with: table -> its identity in SQL.
_SECRET_TABLES = {"backing_keys": "key_id || '|' || backing_id", "import_params": "key_id"}
Statement = tuple[str, tuple[Any, ...]]
# table -> (identity columns, other columns) of the upserted tables
_COLUMNS = {
    "keys": (("key_id",), ("meta", "mac")),
    "aliases": (("name",), ("key_id", "meta", "mac")),
    "grants": (("grant_id",), ("key_id", "meta", "mac")),
    "tags": (("key_id", "tag_key"), ("tag_value", "mac")),
    "import_params": (("key_id",), ("meta", "wrapped", "mac")),
    "custom_key_stores": (("store_id",), ("meta", "wrapped", "mac")),
}


def upsert(table: str) -> str:
    """INSERT of a whole row that replaces the row of the same identity (SQLite >= 3.24 and PostgreSQL)."""
    ids, others = _COLUMNS[table]
    columns = ids + others
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in others)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(ids)}) DO UPDATE SET {updates}")


class RowStore:
    """Every entity method of ``KeyStoreBackend`` over ``_fetch``/``_write``."""

    shared = False
    resync_interval = RESYNC_INTERVAL
    _ORDER = "rowid"  # the column that orders a key's backing keys created in the same instant

    def __init__(self, root_key: bytes) -> None:
        self._sealer = RowSealer(root_key)
        # Keys fingerprints of imported material (to recognise a re-import) without storing it.
        self.fingerprint_key = derive(root_key, salt=None, info=b"imported-material-fingerprint")
        self.refused: set[tuple[str, str]] = set()

    # --- primitives --------------------------------------------------------------------------
    def _fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write(self, statements: list[Statement], changed: Iterable[tuple[str, str]]) -> None:
        """Run ``statements`` in one transaction, committed durably; ``changed``: (table, identity) of the
        rows it changes, for the other nodes of a shared store to reload."""
        raise NotImplementedError

    def watch(self, on_change: Callable[[StoreChange], None]) -> None:
        """Nobody else writes an unshared store: nothing to report."""

    # --- the root key ------------------------------------------------------------------------
    def _root_key_check(self, where: str) -> list[Statement]:
        """RootKeyMismatch unless the root key opens the store's canary or -- a store from before canaries --
        its first secret row (the wrong key would fail every call, and MAC no row); returns the statement
        that writes the canary when there is none yet."""
        rows = self._fetch("SELECT wrapped FROM canary WHERE name = $1", CANARY[1])
        samples = [(*CANARY, rows[0][0])] if rows else [
            (table, *found[0]) for table, identity in _SECRET_TABLES.items()
            if (found := self._fetch(f"SELECT {identity}, wrapped FROM {table} LIMIT 1"))]
        for table, identity, wrapped in samples:
            try:
                self._sealer.unwrap(table, identity, bytes(wrapped))
            except StoreCorruption:
                raise RootKeyMismatch(
                    f"the root key does not open the key store in {where}: it is not the key the store was "
                    "created with (check root_key_file / KEYSERVICE_ROOT_KEY_FILE, KEYSERVICE_ROOT_KEY or "
                    "KEYSERVICE_ROOT_PASSPHRASE)") from None
        if rows:
            return []
        return [("INSERT INTO canary (name, wrapped) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                 (CANARY[1], self._sealer.wrap(*CANARY, b"root key canary")))]

    # --- rows and their MACs ------------------------------------------------------------------
    def _meta_row(self, table: str, identity: str, meta: Meta) -> tuple[str, bytes]:
        return self._sealer.seal_meta(table, identity, meta)

    def _checked(self, table: str, rows: Iterable[tuple[Any, ...]]) -> dict[str, Meta]:
        """identity -> metadata of the rows (identity, meta text, mac) whose MAC holds; the others refused."""
        found = {}
        for identity, text, mac in rows:
            try:
                found[identity] = self._sealer.open_meta(table, identity, text, mac)
            except RowTampered as exc:
                self._refuse(exc)
        return found

    def _refuse(self, exc: RowTampered) -> None:
        log.error("key store integrity failure: %s", exc)
        self.refused.add((exc.table, exc.identity))

    def _one(self, table: str, identity: str, sql: str) -> Meta | None:
        """The metadata of one row (None if absent); RowTampered if it fails its MAC."""
        rows = self._fetch(sql, identity)
        if not rows:
            self.refused.discard((table, identity))
            return None
        text, mac = rows[0]
        try:
            meta = self._sealer.open_meta(table, identity, text, mac)
        except RowTampered as exc:
            self._refuse(exc)
            raise
        self.refused.discard((table, identity))
        return meta

    # --- keys -------------------------------------------------------------------------------
    def load_keys(self) -> dict[str, Meta]:
        return self._checked("keys", self._fetch("SELECT key_id, meta, mac FROM keys"))

    def get_key(self, key_id: str) -> Meta | None:
        return self._one("keys", key_id, "SELECT meta, mac FROM keys WHERE key_id = $1")

    def _put_key(self, key_id: str, meta: Meta) -> Statement:
        return upsert("keys"), (key_id, *self._meta_row("keys", key_id, meta))

    def put_key(self, key_id: str, meta: Meta) -> None:
        self._write([self._put_key(key_id, meta)], [("keys", key_id)])

    def destroy_key(self, key_id: str) -> None:
        """Delete a key and everything hanging off it, secrets first, in one transaction."""
        tables = ("backing_keys", "import_params", "tags", "grants", "aliases", "keys")
        self._write([(f"DELETE FROM {t} WHERE key_id = $1", (key_id,)) for t in tables], [("keys", key_id)])

    # --- backing keys -----------------------------------------------------------------------
    def _insert_backing_key(self, row: BackingKeyRow) -> Statement:
        identity = f"{row.key_id}|{row.backing_id}"
        wrapped = self._sealer.wrap("backing_keys", identity, row.material)
        text, mac = self._meta_row("backing_keys", identity, [row.created, row.rotation_type])
        return ("INSERT INTO backing_keys (key_id, backing_id, created, rotation_type, wrapped, mac) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                (row.key_id, row.backing_id, row.created, row.rotation_type, wrapped, mac))

    def add_backing_key(self, row: BackingKeyRow, meta: Meta | None = None) -> None:
        """Store a backing key, and optionally the key's updated metadata, atomically."""
        statements = [self._insert_backing_key(row)]
        if meta is not None:
            statements.append(self._put_key(row.key_id, meta))
        self._write(statements, [("backing_keys", row.key_id), ("keys", row.key_id)])

    def add_backing_keys(self, key_id: str, rows: list[BackingKeyRow], meta: Meta) -> None:
        """Store several backing keys and the key's metadata in one transaction: a multi-region key's replica
        (keyservice/multiregion.py) is written whole or not at all."""
        statements = [self._insert_backing_key(row) for row in rows] + [self._put_key(key_id, meta)]
        self._write(statements, [("backing_keys", key_id), ("keys", key_id)])

    def backing_keys(self, key_id: str) -> list[BackingKeyRow]:
        rows = self._fetch("SELECT backing_id, created, rotation_type, wrapped, mac FROM backing_keys "
                           f"WHERE key_id = $1 ORDER BY created, {self._ORDER}", key_id)
        found = []
        for backing_id, created, rotation_type, wrapped, mac in rows:
            identity = f"{key_id}|{backing_id}"
            try:
                self._sealer.check("backing_keys", identity, json.dumps([created, rotation_type]), mac)
            except RowTampered as exc:
                self._refuse(exc)
                raise
            material = self._sealer.unwrap("backing_keys", identity, bytes(wrapped))
            found.append(BackingKeyRow(key_id, backing_id, created, rotation_type, material))
        return found

    def delete_backing_keys(self, key_id: str, meta: Meta) -> None:
        """Destroy a key's material (imported material expiring or deleted) and save its new state."""
        self._write([("DELETE FROM backing_keys WHERE key_id = $1", (key_id,)), self._put_key(key_id, meta)],
                    [("backing_keys", key_id), ("keys", key_id)])

    # --- aliases ----------------------------------------------------------------------------
    def load_aliases(self) -> dict[str, Meta]:
        return self._checked("aliases", self._fetch("SELECT name, meta, mac FROM aliases"))

    def get_alias(self, name: str) -> Meta | None:
        return self._one("aliases", name, "SELECT meta, mac FROM aliases WHERE name = $1")

    def put_alias(self, name: str, meta: Meta) -> None:
        self._write([(upsert("aliases"), (name, meta["key_id"], *self._meta_row("aliases", name, meta)))],
                    [("aliases", name)])

    def delete_alias(self, name: str) -> None:
        self._write([("DELETE FROM aliases WHERE name = $1", (name,))], [("aliases", name)])

    # --- grants -----------------------------------------------------------------------------
    def load_grants(self) -> dict[str, Meta]:
        return self._checked("grants", self._fetch("SELECT grant_id, meta, mac FROM grants"))

    def get_grant(self, grant_id: str) -> Meta | None:
        return self._one("grants", grant_id, "SELECT meta, mac FROM grants WHERE grant_id = $1")

    def put_grant(self, grant_id: str, meta: Meta) -> None:
        self._write([(upsert("grants"), (grant_id, meta["KeyId"], *self._meta_row("grants", grant_id, meta)))],
                    [("grants", grant_id)])

    def delete_grant(self, grant_id: str) -> None:
        self._write([("DELETE FROM grants WHERE grant_id = $1", (grant_id,))], [("grants", grant_id)])

    # --- tags (the value is the row's authenticated text) ------------------------------------
    def _tags(self, rows: Iterable[tuple[Any, ...]]) -> dict[str, dict[str, str]]:
        tags: dict[str, dict[str, str]] = {}
        for key_id, tag_key, value, mac in rows:
            try:
                tags.setdefault(key_id, {})[tag_key] = self._sealer.check("tags", f"{key_id}|{tag_key}", value, mac)
            except RowTampered as exc:
                self._refuse(exc)
        return tags

    def load_tags(self) -> dict[str, dict[str, str]]:
        return self._tags(self._fetch("SELECT key_id, tag_key, tag_value, mac FROM tags"))

    def tags_of(self, key_id: str) -> dict[str, str]:
        rows = self._fetch("SELECT key_id, tag_key, tag_value, mac FROM tags WHERE key_id = $1", key_id)
        return self._tags(rows).get(key_id, {})

    def set_tags(self, key_id: str, tags: dict[str, str]) -> None:
        self._write([(upsert("tags"), (key_id, k, v, self._sealer.mac("tags", f"{key_id}|{k}", v)))
                     for k, v in tags.items()], [("tags", key_id)])

    def delete_tags(self, key_id: str, tag_keys: list[str]) -> None:
        self._write([("DELETE FROM tags WHERE key_id = $1 AND tag_key = $2", (key_id, k)) for k in tag_keys],
                    [("tags", key_id)])

    # --- import parameters ------------------------------------------------------------------
    def put_import_params(self, key_id: str, meta: Meta, private_key_der: bytes) -> None:
        wrapped = self._sealer.wrap("import_params", key_id, private_key_der)
        text, mac = self._meta_row("import_params", key_id, meta)
        self._write([(upsert("import_params"), (key_id, text, wrapped, mac))], [("import_params", key_id)])

    def import_params(self, key_id: str) -> tuple[Meta, bytes] | None:
        rows = self._fetch("SELECT meta, wrapped, mac FROM import_params WHERE key_id = $1", key_id)
        if not rows:
            return None
        text, wrapped, mac = rows[0]
        try:
            meta = self._sealer.open_meta("import_params", key_id, text, mac)
        except RowTampered as exc:
            self._refuse(exc)
            raise
        return meta, self._sealer.unwrap("import_params", key_id, bytes(wrapped))

    # --- custom key stores (keyservice/customkeystores.py): the wrapped secret is the token's user PIN
    def load_custom_key_stores(self) -> dict[str, Meta]:
        return self._checked("custom_key_stores", self._fetch("SELECT store_id, meta, mac FROM custom_key_stores"))

    def get_custom_key_store(self, store_id: str) -> Meta | None:
        return self._one("custom_key_stores", store_id, "SELECT meta, mac FROM custom_key_stores WHERE store_id = $1")

    def put_custom_key_store(self, store_id: str, meta: Meta, password: str | None = None) -> None:
        """Save a store's metadata, and its password when given (else the one saved is kept)."""
        text, mac = self._meta_row("custom_key_stores", store_id, meta)
        if password is None:
            statement = ("UPDATE custom_key_stores SET meta = $1, mac = $2 WHERE store_id = $3", (text, mac, store_id))
        else:
            wrapped = self._sealer.wrap("custom_key_stores", store_id, password.encode())
            statement = (upsert("custom_key_stores"), (store_id, text, wrapped, mac))
        self._write([statement], [("custom_key_stores", store_id)])

    def custom_key_store_password(self, store_id: str) -> str:
        [(wrapped,)] = self._fetch("SELECT wrapped FROM custom_key_stores WHERE store_id = $1", store_id)
        return self._sealer.unwrap("custom_key_stores", store_id, bytes(wrapped)).decode()

    def delete_custom_key_store(self, store_id: str) -> None:
        self._write([("DELETE FROM custom_key_stores WHERE store_id = $1", (store_id,))],
                    [("custom_key_stores", store_id)])

    # --- upgrade ----------------------------------------------------------------------------
    def mac_statements(self, rows: dict[str, list[tuple[Any, ...]]]) -> list[Statement]:
        """The UPDATEs giving every row of a store written before MACs its MAC (schema 1 -> 2), computed
        once under the root key: ``rows`` maps each table to its rows' (identity columns..., MAC'd text)."""
        statements: list[Statement] = []
        for key_id, text in rows["keys"]:
            statements.append(("UPDATE keys SET mac = $1 WHERE key_id = $2",
                               (self._sealer.mac("keys", key_id, text), key_id)))
        for key_id, backing_id, created, rotation_type in rows["backing_keys"]:
            mac = self._sealer.mac("backing_keys", f"{key_id}|{backing_id}", json.dumps([created, rotation_type]))
            statements.append(("UPDATE backing_keys SET mac = $1 WHERE key_id = $2 AND backing_id = $3",
                               (mac, key_id, backing_id)))
        for table, column in (("aliases", "name"), ("grants", "grant_id"), ("import_params", "key_id"),
                              ("custom_key_stores", "store_id")):
            for identity, text in rows[table]:
                statements.append((f"UPDATE {table} SET mac = $1 WHERE {column} = $2",
                                   (self._sealer.mac(table, identity, text), identity)))
        for key_id, tag_key, value in rows["tags"]:
            statements.append(("UPDATE tags SET mac = $1 WHERE key_id = $2 AND tag_key = $3",
                               (self._sealer.mac("tags", f"{key_id}|{tag_key}", value), key_id, tag_key)))
        return statements


# What mac_statements needs of each table, read by a store upgrading from schema 1.
UNMACED_ROWS = {
    "keys": "SELECT key_id, meta FROM keys",
    "backing_keys": "SELECT key_id, backing_id, created, rotation_type FROM backing_keys",
    "aliases": "SELECT name, meta FROM aliases",
    "grants": "SELECT grant_id, meta FROM grants",
    "import_params": "SELECT key_id, meta FROM import_params",
    "custom_key_stores": "SELECT store_id, meta FROM custom_key_stores",
    "tags": "SELECT key_id, tag_key, tag_value FROM tags",
}
