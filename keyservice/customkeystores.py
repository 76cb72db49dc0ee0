"""Custom key stores backed by PKCS#11 tokens: AWS KMS's AWS CloudHSM key stores.

A store is a token from the configuration (``CloudHsmClusterId`` = the ``[keyservice.pkcs11.NAME]`` table's
NAME, keyservice/pkcs11backend.py) and the token's user PIN (``KeyStorePassword``), kept wrapped by the
root key in the store's row like every other secret, never logged, never returned. Its KMS keys (origin
AWS_CLOUDHSM, symmetric only) have their material generated in the token, non-extractable; their
cryptographic operations run there (``TokenKey``).

Connection state as AWS reports it: CONNECTED (a logged-in session), CONNECTING (logging in),
FAILED (the last attempt failed, with its ConnectionErrorCode; disconnect before retrying),
DISCONNECTED. ConnectCustomKeyStore logs in on a thread of its own, so a slow token (a network HSM)
stalls no other call, and answers once the outcome is known (a token answers in milliseconds): callers
polling DescribeCustomKeyStores, as AWS's asynchronous connect needs, see CONNECTING meanwhile.
Whether a store should be connected is saved, so a restarted key service reconnects the stores that
were connected (before it serves), as AWS keeps them connected.
While a store is not connected its keys are ``Unavailable``: cryptographic operations on them are
KMSInvalidStateException, store operations that need a connection CustomKeyStoreInvalidStateException.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import params as p
from .errors import KMSError, validation
from .keys import KeyRecord
from .pkcs11backend import TokenConfig, TokenConnection, TokenError, TokenOperationFailed
from .store import StoreCorruption

if TYPE_CHECKING:
    from .service import CallContext, KeyService
    from .store import KeyStore

log = logging.getLogger(__name__)

CLOUDHSM = "AWS_CLOUDHSM"
MAX_STORES = 10  # AWS's quota of custom key stores per account and region
CONNECTED, CONNECTING, FAILED, DISCONNECTED = "CONNECTED", "CONNECTING", "FAILED", "DISCONNECTED"
InThread = Callable[..., Awaitable[Any]]


@dataclass
class StoreRecord:
    """Everything non-secret about one custom key store (the password is wrapped in the same row)."""

    store_id: str
    name: str
    cluster_id: str
    trust_anchor: str
    created: float
    connect_wanted: bool = False  # ConnectCustomKeyStore called and not DisconnectCustomKeyStore since


class TokenKey:
    """One key version in a token with ``common.aead.Aead``'s seal/open, for keyservice/blob.py."""

    def __init__(self, stores: "CustomKeyStores", store_id: str, key_id: str, backing_id: str) -> None:
        self._stores = stores
        self._store_id = store_id
        self._key_id = key_id
        self._backing_id = backing_id

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        connection = self._stores.connection_for(self._store_id, self._key_id)
        with _token_failures(self._key_id):
            return connection.seal(self._key_id, self._backing_id, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        connection = self._stores.connection_for(self._store_id, self._key_id)
        with _token_failures(self._key_id):
            return connection.open(self._key_id, self._backing_id, sealed, aad)


@contextlib.contextmanager
def _token_failures(key_id: str) -> Iterator[None]:
    """A token failing mid-operation is the service's failure (500), logged; a bad tag passes through
    (``AuthenticationFailed``: the blob is invalid, as for a key in the store)."""
    try:
        yield
    except TokenOperationFailed as exc:
        log.error("custom key store operation on key %s failed: %s", key_id, exc)
        raise KMSError("KMSInternalException", "The custom key store's token could not complete the operation.",
                       500) from None


class CustomKeyStores:
    """The account's custom key stores, their token sessions, and what KMS keys need of them."""

    def __init__(self, store: "KeyStore", tokens: Mapping[str, TokenConfig]) -> None:
        self._store = store
        self.tokens = dict(tokens)
        self.records = {s: StoreRecord(**m) for s, m in store.load_custom_key_stores().items()}
        self._connections: dict[str, TokenConnection] = {}
        self._errors: dict[str, str] = {}  # store id -> ConnectionErrorCode of its FAILED state
        self._connecting: set[str] = set()  # logging in on a thread; a disconnect meanwhile removes it
        self._following: set[asyncio.Task[None]] = set()  # connections another node's change asked for

    def reconnect(self) -> None:
        """At start: connect again every store that was connected (as AWS keeps them connected)."""
        for rec in self.records.values():
            if rec.connect_wanted:
                self._reconnect_one(rec)

    def _reconnect_one(self, rec: StoreRecord) -> None:
        try:
            password = self._store.custom_key_store_password(rec.store_id)
        except StoreCorruption as exc:  # one bad row fails its store, not the whole service
            log.error("custom key store %s cannot be connected: %s", rec.store_id, exc)
            self._errors[rec.store_id] = "INTERNAL_ERROR"
            return
        self._settle(rec, _login(self.tokens.get(rec.cluster_id), rec, password))

    def reload(self, store_id: str, meta: dict[str, Any] | None) -> None:
        """Another node of a shared key store changed this store's row (None: deleted it): take the record
        as stored, and follow its connection: sessions are each node's own (every node logs in to its
        token), so a store connected on another node is connected here too (logging in on a thread, as
        ConnectCustomKeyStore does), one disconnected or deleted there is disconnected here."""
        if meta is None:
            self.records.pop(store_id, None)
            self._disconnect(store_id)
            return
        rec = self.records[store_id] = StoreRecord(**meta)
        state = self.state(store_id)
        if not rec.connect_wanted and state != DISCONNECTED:
            self._disconnect(store_id)
        elif rec.connect_wanted and state == DISCONNECTED:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._reconnect_one(rec)
                return
            task = loop.create_task(self.connect(rec, asyncio.to_thread))
            self._following.add(task)
            task.add_done_callback(self._following.discard)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    # --- state -----------------------------------------------------------------------------
    def state(self, store_id: str) -> str:
        if store_id in self._connections:
            return CONNECTED
        if store_id in self._connecting:
            return CONNECTING
        return FAILED if store_id in self._errors else DISCONNECTED

    async def connect(self, rec: StoreRecord, in_thread: InThread) -> None:
        """Log in to the store's token on a thread (CONNECTING meanwhile): then CONNECTED, or FAILED with
        the reason's ConnectionErrorCode; a session opened after a disconnect was asked for is closed."""
        password = self._store.custom_key_store_password(rec.store_id)  # the store is this thread's
        self._errors.pop(rec.store_id, None)
        self._connecting.add(rec.store_id)
        try:
            outcome = await in_thread(_login, self.tokens.get(rec.cluster_id), rec, password)
        finally:
            wanted = rec.store_id in self._connecting
            self._connecting.discard(rec.store_id)
        if not wanted:
            if isinstance(outcome, TokenConnection):
                outcome.close()
            return
        self._settle(rec, outcome)

    def _settle(self, rec: StoreRecord, outcome: TokenConnection | TokenError) -> None:
        if isinstance(outcome, TokenError):
            self._errors[rec.store_id] = outcome.code
            log.warning("custom key store %s (%s) failed to connect: %s: %s", rec.store_id, rec.cluster_id,
                        outcome.code, outcome)
            return
        self._connections[rec.store_id] = outcome
        log.info("custom key store %s connected to token %r", rec.store_id, outcome.config.token_label)

    def _disconnect(self, store_id: str) -> None:
        self._connecting.discard(store_id)
        connection = self._connections.pop(store_id, None)
        if connection is not None:
            connection.close()
        self._errors.pop(store_id, None)

    def _save(self, rec: StoreRecord, password: str | None = None) -> None:
        self._store.put_custom_key_store(rec.store_id, asdict(rec), password)
        self.records[rec.store_id] = rec

    # --- what KMS keys need ----------------------------------------------------------------
    def unavailable(self, rec: KeyRecord) -> bool:
        """AWS's ``Unavailable`` key state: an enabled or disabled key of a store that is not connected."""
        return (rec.custom_key_store_id is not None and rec.state in ("Enabled", "Disabled")
                and rec.custom_key_store_id not in self._connections)

    def key_metadata(self, rec: KeyRecord, meta: dict[str, Any]) -> dict[str, Any]:
        """KeyMetadata with the store's fields, and ``Unavailable`` while the store is not connected."""
        if rec.custom_key_store_id is None:
            return meta
        meta["CustomKeyStoreId"] = rec.custom_key_store_id
        store = self.records.get(rec.custom_key_store_id)
        if store is not None:
            meta["CloudHsmClusterId"] = store.cluster_id
        if self.unavailable(rec):
            meta["KeyState"] = "Unavailable"
            meta["Enabled"] = False
        return meta

    def key_for(self, rec: KeyRecord, backing_id: str) -> TokenKey | None:
        """The token key of one version (an HSM key has one: rotation is not supported), else None."""
        if rec.custom_key_store_id is None or backing_id != rec.current_backing:
            return None
        return TokenKey(self, rec.custom_key_store_id, rec.key_id, backing_id)

    def connection_for(self, store_id: str, key_id: str) -> TokenConnection:
        connection = self._connections.get(store_id)
        if connection is None:  # checked before (require_usable); a store can only go in between calls
            raise KMSError("KMSInvalidStateException", f"The custom key store of key {key_id} is not connected.")
        return connection

    def generate_key(self, store_id: str, rec: KeyRecord, backing_id: str) -> None:
        """CreateKey's material, in the token of a store that must exist and be connected."""
        store = self.records.get(store_id)
        if store is None:
            raise _store_not_found(store_id)
        connection = self._connections.get(store_id)
        if connection is None:
            raise _invalid_state(store_id, self.state(store_id), "CreateKey needs a CONNECTED custom key store")
        with _token_failures(rec.key_id):
            connection.generate_key(rec.key_id, backing_id)

    def forget_key(self, rec: KeyRecord) -> None:
        """The key's deletion waiting period ended: destroy its material in the token. A store that is
        not connected keeps it (as AWS leaves it in the cluster): logged, for an operator to remove."""
        if rec.custom_key_store_id is None:
            return
        connection = self._connections.get(rec.custom_key_store_id)
        if connection is None:
            log.warning("key %s deleted while its custom key store %s is not connected: its material stays in "
                        "the token (label %s)", rec.arn, rec.custom_key_store_id, rec.key_id)
            return
        try:
            connection.destroy_key(rec.key_id)
        except TokenOperationFailed as exc:
            log.warning("key %s deleted, but its material stays in the token: %s", rec.arn, exc)

    def random(self, store_id: Any, size: int) -> bytes:
        """GenerateRandom with CustomKeyStoreId: random bytes from the store's token."""
        p.checked_str(store_id, "CustomKeyStoreId", 1, 64)
        if store_id not in self.records:
            raise _store_not_found(store_id)
        connection = self._connections.get(store_id)
        if connection is None:
            raise _invalid_state(store_id, self.state(store_id), "GenerateRandom needs a CONNECTED custom key store")
        with _token_failures("(random)"):
            return connection.random(size)

    def keys_in(self, svc: "KeyService", store_id: str) -> list[KeyRecord]:
        return [rec for rec in svc.keys.values() if rec.custom_key_store_id == store_id]

    def entry(self, rec: StoreRecord) -> dict[str, Any]:
        """The CustomKeyStoresListEntry of DescribeCustomKeyStores (never the password)."""
        state = self.state(rec.store_id)
        entry: dict[str, Any] = {
            "CustomKeyStoreId": rec.store_id, "CustomKeyStoreName": rec.name, "CloudHsmClusterId": rec.cluster_id,
            "TrustAnchorCertificate": rec.trust_anchor, "ConnectionState": state, "CreationDate": rec.created,
            "CustomKeyStoreType": CLOUDHSM}
        if state == FAILED:
            entry["ConnectionErrorCode"] = self._errors[rec.store_id]
        return entry


def _login(config: TokenConfig | None, rec: StoreRecord, password: str) -> TokenConnection | TokenError:
    """A logged-in session on the store's token, or why not (blocking: run on a thread of its own)."""
    try:
        if config is None:
            raise TokenError("CLUSTER_NOT_FOUND", f"no [keyservice.pkcs11.{rec.cluster_id}] is configured")
        return TokenConnection.login(config, password)
    except TokenError as exc:
        return exc


def _store_not_found(store_id: str) -> KMSError:
    return KMSError("CustomKeyStoreNotFoundException", f"Custom key store {store_id} does not exist.")


def _invalid_state(store_id: str, state: str, why: str) -> KMSError:
    return KMSError("CustomKeyStoreInvalidStateException",
                    f"Custom key store {store_id} is {state}: {why}.")


# --- operations ------------------------------------------------------------------------------
def _stores(svc: "KeyService") -> CustomKeyStores:
    return svc.custom_key_stores


def _existing(svc: "KeyService", params: dict[str, Any]) -> StoreRecord:
    store_id = p.required_str(params, "CustomKeyStoreId", 64)
    rec = _stores(svc).records.get(store_id)
    if rec is None:
        raise _store_not_found(store_id)
    return rec


def _cluster(svc: "KeyService", params: dict[str, Any], name: str, required: bool,
             except_store: str | None = None) -> str | None:
    """A CloudHsmClusterId: a configured token, used by no other store."""
    cluster_id = p.required_str(params, name, 24) if required else p.optional_str(params, name, 1, 24)
    if cluster_id is None:
        return None
    if cluster_id not in _stores(svc).tokens:
        raise KMSError("CloudHsmClusterNotFoundException",
                       f"No PKCS#11 token is configured as {cluster_id} ([keyservice.pkcs11.{cluster_id}]).")
    for other in _stores(svc).records.values():
        if other.cluster_id == cluster_id and other.store_id != except_store:
            raise KMSError("CloudHsmClusterInUseException",
                           f"{cluster_id} is already associated with custom key store {other.store_id}.")
    return cluster_id


def _name_free(svc: "KeyService", name: str) -> None:
    if any(r.name == name for r in _stores(svc).records.values()):
        raise KMSError("CustomKeyStoreNameInUseException", f"A custom key store named {name} already exists.")


def create_custom_key_store(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    svc.require_own_account("CreateCustomKeyStore", ctx)
    name = p.required_str(params, "CustomKeyStoreName", 256)
    kind = p.enum(params, "CustomKeyStoreType", {CLOUDHSM, "EXTERNAL_KEY_STORE"}, CLOUDHSM)
    if kind != CLOUDHSM:
        raise KMSError("UnsupportedOperationException", "External key stores (XKS) are not supported; "
                                                        "custom key stores are AWS_CLOUDHSM (PKCS#11 tokens).")
    anchor = p.required_str(params, "TrustAnchorCertificate", 5000)
    password = p.required_str(params, "KeyStorePassword", 32)
    p.checked_str(password, "KeyStorePassword", 7, 32)
    stores = _stores(svc)
    _name_free(svc, name)
    cluster_id = _cluster(svc, params, "CloudHsmClusterId", required=True)
    assert cluster_id is not None
    if len(stores.records) >= MAX_STORES:
        raise KMSError("LimitExceededException", f"An account can have at most {MAX_STORES} custom key stores.")
    rec = StoreRecord(store_id="cks-" + os.urandom(9).hex()[:17], name=name, cluster_id=cluster_id,
                      trust_anchor=anchor, created=svc.now())
    stores._save(rec, password)
    return {"CustomKeyStoreId": rec.store_id}


def describe_custom_key_stores(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    store_id = p.optional_str(params, "CustomKeyStoreId", 1, 64)
    name = p.optional_str(params, "CustomKeyStoreName", 1, 256)
    if store_id is not None and name is not None:
        raise validation("Specify either CustomKeyStoreId or CustomKeyStoreName, not both.")
    records = [] if svc.is_foreign(ctx) else sorted(_stores(svc).records.values(), key=lambda r: r.store_id)
    if store_id is not None or name is not None:
        records = [r for r in records if r.store_id == store_id or r.name == name]
        if not records:
            raise KMSError("CustomKeyStoreNotFoundException",
                           f"Custom key store {store_id or name} does not exist.")
    page, extra = p.paginate(records, lambda r: r.store_id, params)
    return {"CustomKeyStores": [_stores(svc).entry(r) for r in page], **extra}


async def connect_custom_key_store(svc: "KeyService", params: dict[str, Any],
                                   ctx: "CallContext") -> dict[str, Any]:
    """Connect; the outcome (CONNECTED, or FAILED and why) is in DescribeCustomKeyStores, as in AWS."""
    svc.require_own_account("ConnectCustomKeyStore", ctx)
    rec = _existing(svc, params)
    stores = _stores(svc)
    state = stores.state(rec.store_id)
    if state == FAILED:
        raise _invalid_state(rec.store_id, state, "disconnect it (DisconnectCustomKeyStore) before connecting again")
    if state in (CONNECTED, CONNECTING):
        return {}
    rec.connect_wanted = True
    stores._save(rec)
    await stores.connect(rec, svc.in_thread)
    return {}


def disconnect_custom_key_store(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    svc.require_own_account("DisconnectCustomKeyStore", ctx)
    rec = _existing(svc, params)
    stores = _stores(svc)
    state = stores.state(rec.store_id)
    if state == DISCONNECTED:
        raise _invalid_state(rec.store_id, state, "it is not connected")
    rec.connect_wanted = False
    stores._save(rec)
    stores._disconnect(rec.store_id)
    return {}


async def update_custom_key_store(svc: "KeyService", params: dict[str, Any],
                                  ctx: "CallContext") -> dict[str, Any]:
    """A new name at any time; a new password or token (CloudHsmClusterId) only while DISCONNECTED. A
    store with keys moves only to a token holding all of them (AWS: a cluster sharing the backup
    history), else CloudHsmClusterNotRelatedException: its keys would not work there."""
    svc.require_own_account("UpdateCustomKeyStore", ctx)
    rec = _existing(svc, params)
    stores = _stores(svc)
    name = p.optional_str(params, "NewCustomKeyStoreName", 1, 256)
    password = p.optional_str(params, "KeyStorePassword", 7, 32)
    cluster_given = params.get("CloudHsmClusterId") is not None
    if (password is not None or cluster_given) and stores.state(rec.store_id) != DISCONNECTED:
        raise _invalid_state(rec.store_id, stores.state(rec.store_id),
                             "its password and cluster can only be changed while it is DISCONNECTED")
    if name is not None and name != rec.name:
        _name_free(svc, name)
    cluster_id = _cluster(svc, params, "CloudHsmClusterId", required=False, except_store=rec.store_id)
    key_ids = [k.key_id for k in stores.keys_in(svc, rec.store_id)]
    if cluster_id is not None and cluster_id != rec.cluster_id and key_ids:
        outcome = await svc.in_thread(_missing_keys, stores.tokens[cluster_id], rec,
                                      password or svc.store.custom_key_store_password(rec.store_id), key_ids)
        if isinstance(outcome, TokenError):
            raise KMSError("CloudHsmClusterInvalidConfigurationException",
                           f"Cannot log in to {cluster_id} to check it holds the store's keys: {outcome.code}.")
        if outcome:
            raise KMSError("CloudHsmClusterNotRelatedException",
                           f"{cluster_id} does not hold the keys of custom key store {rec.store_id} "
                           f"({len(outcome)} of {len(key_ids)} missing).")
    rec.name = name or rec.name
    rec.cluster_id = cluster_id or rec.cluster_id
    stores._save(rec, password)
    return {}


def _missing_keys(config: TokenConfig, rec: StoreRecord, password: str, key_ids: list[str]) -> list[str] | TokenError:
    """Which of ``key_ids`` the token has no key for, or why it could not be asked (blocking)."""
    outcome = _login(config, rec, password)
    if isinstance(outcome, TokenError):
        return outcome
    try:
        return [key_id for key_id in key_ids if not outcome.holds(key_id)]
    finally:
        outcome.close()


def delete_custom_key_store(svc: "KeyService", params: dict[str, Any], ctx: "CallContext") -> dict[str, Any]:
    svc.require_own_account("DeleteCustomKeyStore", ctx)
    rec = _existing(svc, params)
    stores = _stores(svc)
    if stores.state(rec.store_id) != DISCONNECTED:
        raise _invalid_state(rec.store_id, stores.state(rec.store_id), "only a DISCONNECTED store can be deleted")
    if stores.keys_in(svc, rec.store_id):
        raise KMSError("CustomKeyStoreHasCMKsException",
                       f"Custom key store {rec.store_id} still has KMS keys; delete them first.")
    svc.store.delete_custom_key_store(rec.store_id)
    del stores.records[rec.store_id]
    return {}


def check_create_key(params: dict[str, Any], origin: str, spec: str, usage: str) -> str | None:
    """CreateKey's custom key store parameters: the store id for a key in a store, else None."""
    store_id = p.optional_str(params, "CustomKeyStoreId", 1, 64)
    if store_id is None:
        if origin == CLOUDHSM:
            raise validation("Origin AWS_CLOUDHSM requires a CustomKeyStoreId.")
        return None
    if origin != CLOUDHSM:
        raise validation("A key in a custom key store needs Origin AWS_CLOUDHSM.")
    if spec != "SYMMETRIC_DEFAULT" or usage != "ENCRYPT_DECRYPT":
        raise KMSError("UnsupportedOperationException",
                       "Custom key stores support only SYMMETRIC_DEFAULT keys for ENCRYPT_DECRYPT.")
    if params.get("MultiRegion"):
        raise KMSError("UnsupportedOperationException", "Keys in custom key stores cannot be multi-Region keys.")
    return store_id


HANDLERS = {
    "CreateCustomKeyStore": create_custom_key_store, "DescribeCustomKeyStores": describe_custom_key_stores,
    "ConnectCustomKeyStore": connect_custom_key_store, "DisconnectCustomKeyStore": disconnect_custom_key_store,
    "UpdateCustomKeyStore": update_custom_key_store, "DeleteCustomKeyStore": delete_custom_key_store,
}
