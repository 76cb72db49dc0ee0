"""The key store as the service sees it: one interface, two databases.

``KeyStoreBackend`` is everything ``KeyService`` (and the custom key stores) ask of a store; it does not
know which database is behind it. ``open_store`` picks one: SQLite in the data directory (one process,
keyservice/store.py), or PostgreSQL when ``store_url`` names one (several nodes, keyservice/pgstore.py).
Both keep the same tables, wrap every secret and MAC every row's metadata under the root key
(keyservice/metamac.py), and commit every change before the call that made it returns.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Protocol

# 1: the tables of keyservice/store.py without MACs; 2: every row carries the MAC of its metadata.
SCHEMA_VERSION = 2
TABLES = ("keys", "backing_keys", "aliases", "grants", "tags", "import_params", "custom_key_stores")
# What a node whose store is shared does when nothing was announced for this long: reload everything
# (a notification lost while the listening connection was down is caught up at the latest then).
RESYNC_INTERVAL = 30.0

Meta = dict[str, Any]
# (table, row identity) of a row another node changed; None: reload everything.
StoreChange = tuple[str, str] | None


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


class StoreSchemaTooNew(ValueError):
    """The database was upgraded by a newer key service than this one: refuse to start."""

    def __init__(self, found: int) -> None:
        super().__init__(f"the key store's schema is version {found}, newer than this key service knows "
                         f"({SCHEMA_VERSION}): run the newer key service (or restore a backup from before it)")


class KeyStoreBackend(Protocol):
    """Durable key state; every write is committed (and durable) before it returns."""

    fingerprint_key: bytes
    shared: bool  # other processes may change it (then ``watch`` reports their changes)
    resync_interval: float
    refused: set[tuple[str, str]]  # (table, identity) of rows refused for failing their MAC

    def close(self) -> None: ...
    # keys
    def load_keys(self) -> dict[str, Meta]: ...
    def get_key(self, key_id: str) -> Meta | None: ...
    def put_key(self, key_id: str, meta: Meta) -> None: ...
    def destroy_key(self, key_id: str) -> None: ...
    def exclusive_key(self, key_id: str) -> ContextManager[Meta | None]: ...
    # backing keys
    def add_backing_key(self, row: BackingKeyRow, meta: Meta | None = None) -> None: ...
    def add_backing_keys(self, key_id: str, rows: list[BackingKeyRow], meta: Meta) -> None: ...
    def backing_keys(self, key_id: str) -> list[BackingKeyRow]: ...
    def delete_backing_keys(self, key_id: str, meta: Meta) -> None: ...
    # aliases, grants, tags
    def load_aliases(self) -> dict[str, Meta]: ...
    def get_alias(self, name: str) -> Meta | None: ...
    def put_alias(self, name: str, meta: Meta) -> None: ...
    def delete_alias(self, name: str) -> None: ...
    def load_grants(self) -> dict[str, Meta]: ...
    def get_grant(self, grant_id: str) -> Meta | None: ...
    def put_grant(self, grant_id: str, meta: Meta) -> None: ...
    def delete_grant(self, grant_id: str) -> None: ...
    def load_tags(self) -> dict[str, dict[str, str]]: ...
    def tags_of(self, key_id: str) -> dict[str, str]: ...
    def set_tags(self, key_id: str, tags: dict[str, str]) -> None: ...
    def delete_tags(self, key_id: str, tag_keys: list[str]) -> None: ...
    # import parameters, custom key stores
    def put_import_params(self, key_id: str, meta: Meta, private_key_der: bytes) -> None: ...
    def import_params(self, key_id: str) -> tuple[Meta, bytes] | None: ...
    def load_custom_key_stores(self) -> dict[str, Meta]: ...
    def get_custom_key_store(self, store_id: str) -> Meta | None: ...
    def put_custom_key_store(self, store_id: str, meta: Meta, password: str | None = None) -> None: ...
    def custom_key_store_password(self, store_id: str) -> str: ...
    def delete_custom_key_store(self, store_id: str) -> None: ...
    # other nodes' changes
    def watch(self, on_change: Callable[[StoreChange], None]) -> None: ...


def open_store(data_dir: Path, root_key: bytes, store_url: str | None = None) -> KeyStoreBackend:
    """PostgreSQL when ``store_url`` is given, else SQLite in ``data_dir`` (the driver is imported only
    when used)."""
    if store_url:
        from .pgstore import PgKeyStore
        return PgKeyStore(store_url, root_key)
    from .store import KeyStore
    return KeyStore(data_dir, root_key)


def no_lock(meta: Meta | None) -> ContextManager[Meta | None]:
    """``exclusive_key`` of a store only this process writes: the row as stored, nothing to lock."""
    return contextlib.nullcontext(meta)
