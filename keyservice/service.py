"""KeyService: the in-process AWS-KMS-compatible key service.

`handle(operation, params, ctx)` takes and returns the AWS KMS JSON shapes (binary fields as raw
bytes). All state lives in memory and is written through to the key store (``KeyStoreBackend``: SQLite,
or PostgreSQL shared with other nodes, whose changes ``apply_store_changes`` reloads) before a call
returns, so the hot path (GenerateDataKey, Encrypt, Decrypt) never reads the database. Time-driven
changes (deletion after the waiting period, automatic rotation, imported material expiry) happen
lazily when a key is touched and in `purge_due_keys()`, which a server calls periodically.

Writes wait for an fsync, so the API layer runs the service on a thread of its own
(``keyservice.worker``), one call's synchronous stretch at a time as on an event loop; the hot path
needs no store and ``handle_in_memory`` answers it without leaving the caller's thread.
"""

import asyncio
import collections
import contextlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

from cryptography.hazmat.primitives.serialization import load_der_private_key

from common.aead import Aead

from . import blob, crypto_ops, customkeystores, grant_ops, grants, imports, management, multiregion
from .clock import Clock, SystemClock
from .errors import KMSError, validation
from .keys import DAY, KeyRecord, new_backing_id, new_material, quota_class_for
from .peers import Peer
from .pkcs11backend import TokenConfig
from .policy import CompiledPolicy, Request, compile_policy
from .store import BackingKeyRow, StoreCorruption
from .storeapi import KeyStoreBackend, StoreChange, open_store

log = logging.getLogger(__name__)


@dataclass
class CallContext:
    """Who is calling; the service fills `key_arn` once it knows which key the call is about."""

    principal_arn: str
    account_id: str
    request_id: str
    access_key: str | None = None
    source: str | None = None
    key_arn: str | None = None
    warning: str | None = None  # what the audit record of the call should also say (a deletion's known usage)
    via_service: str | None = None  # kms:ViaService: the AWS service that called on the principal's behalf


Handler = Callable[["KeyService", dict[str, Any], CallContext], dict[str, Any] | Awaitable[dict[str, Any]]]
_HANDLERS: dict[str, Handler] = {**management.HANDLERS, **crypto_ops.HANDLERS, **grant_ops.HANDLERS,
                                 **imports.HANDLERS, **customkeystores.HANDLERS, **multiregion.HANDLERS}

# The actions AWS lets a principal of another account perform on a key: exactly the operations whose
# AWS KMS API Reference page says "Cross-account use: Yes" (checked operation by operation against the
# KMS service model botocore 1.43 ships, the text the API Reference is generated from). ReEncryptFrom and
# ReEncryptTo are the permissions of ReEncrypt ("Yes"). GenerateRandom is "Not applicable" (no key);
# ListRetirableGrants ("You must specify a principal in your account") is checked in grant_ops; every
# other operation is "No": a key policy's permission for it has no effect for another account.
CROSS_ACCOUNT_ACTIONS = frozenset({
    "CreateGrant", "Decrypt", "DeriveSharedSecret", "DescribeKey", "Encrypt", "GenerateDataKey",
    "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyWithoutPlaintext", "GenerateMac",
    "GetKeyRotationStatus", "GetPublicKey", "ListGrants", "ReEncryptFrom", "ReEncryptTo", "RetireGrant",
    "RevokeGrant", "Sign", "Verify", "VerifyMac",
})

# Operations whose hot path needs nothing but memory once the key is ready (``handle_in_memory``).
IN_MEMORY_OPERATIONS = frozenset({"Encrypt", "Decrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext"})


class KeyService:
    """Every KMS operation over one account's keys in one region."""

    OPERATIONS: frozenset[str] = frozenset(_HANDLERS)
    # Operations that hand out or use key material; the API layer answers them only once audited.
    CRYPTOGRAPHIC_OPERATIONS: frozenset[str] = frozenset(crypto_ops.HANDLERS)

    def __init__(self, store: KeyStoreBackend, account_id: str, region: str, clock: Clock,
                 tokens: Mapping[str, TokenConfig] | None = None) -> None:
        self.store = store
        self.account_id = account_id
        self.region = region
        self.clock = clock
        self.keys = {k: KeyRecord.from_meta(m) for k, m in store.load_keys().items()}
        self.aliases = store.load_aliases()
        self.grants = store.load_grants()
        self.tags = store.load_tags()
        self._policies: dict[str, CompiledPolicy] = {}
        self._material: dict[str, dict[str, Any]] = {}
        self._arn_prefix = f"arn:aws:kms:{region}:{account_id}:"
        # Time-driven changes applied (CloudTrail's event name, key ARN), for the API layer to announce:
        # they happen on the service's thread, in purges and lazily in any call; a deque, as the API
        # layer drains it from the caller's loop.
        self.maintenance_events: collections.deque[tuple[str, str]] = collections.deque()
        # PKCS#11 tokens as custom key stores; those that were connected are connected again.
        self.custom_key_stores = customkeystores.CustomKeyStores(store, tokens or {})
        self.custom_key_stores.reconnect()
        # Multi-region keys (keyservice/multiregion.py): the other regions' deployments by region, and the
        # secrets of this deployment's own credentials that peers call it with (set by ``build_api``).
        self.peers: dict[str, Peer] = {}
        self.peer_secrets: dict[str, str] = {}

    @classmethod
    def open(cls, data_dir: Path, root_key: bytes, *, account_id: str = "111122223333",
             region: str = "us-east-1", clock: Clock | None = None,
             tokens: Mapping[str, TokenConfig] | None = None, store_url: str | None = None) -> "KeyService":
        """Open (creating if needed) the key store in data_dir, or the PostgreSQL one ``store_url`` names;
        ``tokens``: the configured PKCS#11 tokens."""
        return cls(open_store(Path(data_dir), root_key, store_url), account_id, region, clock or SystemClock(),
                   tokens)

    async def close(self) -> None:
        self.custom_key_stores.close()
        self.store.close()

    # --- dispatch --------------------------------------------------------------------------
    async def handle(self, operation: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        with _store_failures_internal():
            if self.store.shared and operation not in self.CRYPTOGRAPHIC_OPERATIONS:
                self._refresh_named_rows(params)
            result = self._dispatch(operation, params, ctx)
            if inspect.isawaitable(result):
                result = await result
        return result

    def handle_in_memory(self, operation: str, params: dict[str, Any], ctx: CallContext) -> dict[str, Any] | None:
        """The answer of a call that needs neither the store nor a thread, else None (call ``handle``).

        That is the hot path (Encrypt, Decrypt, GenerateDataKey of a symmetric key whose material is
        unwrapped and which has no deletion, expiry or rotation due): answered where it is asked,
        without the hop to the service's thread. A deadline passing in the microseconds between this
        check and the call is still applied, in the call: correct, merely not off the caller's loop."""
        if operation not in IN_MEMORY_OPERATIONS or not isinstance(params, dict):
            return None
        rec = self._peek_key(params.get("KeyId"), params.get("CiphertextBlob"))
        if rec is None or not rec.symmetric or rec.key_id not in self._material or _change_due(rec, self.now()):
            return None
        with _store_failures_internal():
            result = self._dispatch(operation, params, ctx)
        assert not inspect.isawaitable(result), f"{operation} has a synchronous handler"
        return result

    def _dispatch(self, operation: str, params: dict[str, Any],
                  ctx: CallContext) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        handler = _HANDLERS.get(operation)
        if handler is None:
            raise KMSError("UnknownOperationException", f"Unknown operation {operation}")
        if not isinstance(params, dict):
            raise validation("The request body must be a JSON object.")
        return handler(self, params, ctx)

    def quota_class(self, operation: str, params: dict[str, Any]) -> str:
        """The quota a call draws on: the key-spec family for crypto operations, else the operation."""
        if operation == "GenerateRandom":
            return "symmetric"
        if operation not in crypto_ops.HANDLERS:
            return operation
        rec = self._peek_key(params.get("KeyId") or params.get("SourceKeyId"), params.get("CiphertextBlob"))
        return quota_class_for(rec.key_spec) if rec else "symmetric"

    def _peek_key(self, key_param: Any, ciphertext: Any) -> KeyRecord | None:
        """Find a call's key without side effects or errors (for quota classification)."""
        try:
            if isinstance(key_param, str) and key_param:
                return self.keys.get(self._key_id_of(key_param, alias_ok=True))
            return self.keys.get(blob.parse_header(ciphertext).key_id)
        except KMSError:
            return None

    # --- naming ----------------------------------------------------------------------------
    def key_arn(self, key_id: str) -> str:
        return f"{self._arn_prefix}key/{key_id}"

    def alias_arn(self, name: str) -> str:
        return f"{self._arn_prefix}{name}"

    def now(self) -> float:
        return self.clock.now()

    def _key_id_of(self, value: str, *, alias_ok: bool) -> str:
        """Turn a key id, key ARN, alias name or alias ARN into a key id (or raise NotFound)."""
        name = value
        if value.startswith("arn:"):
            if not value.startswith(self._arn_prefix):
                raise self.not_found(value)
            name = value[len(self._arn_prefix):]
            if name.startswith("key/"):
                return name[4:]
        if name.startswith("alias/"):
            if not alias_ok:
                raise KMSError("NotFoundException", f"Invalid keyId {value}")
            alias = self.aliases.get(name)
            if alias is None:
                raise KMSError("NotFoundException", f"Alias {self.alias_arn(name)} is not found.")
            return alias["key_id"]
        return name

    def not_found(self, value: str) -> KMSError:
        arn = value if value.startswith("arn:") else self.key_arn(value)
        return KMSError("NotFoundException", f"Key '{arn}' does not exist")

    # --- key lookup and checks -------------------------------------------------------------
    def is_foreign(self, ctx: CallContext) -> bool:
        """Whether the caller belongs to another account than the one owning every key here."""
        return ctx.account_id != self.account_id

    def resolve(self, value: Any, ctx: CallContext, *, alias_ok: bool, name: str = "KeyId") -> KeyRecord:
        """The live record for a KeyId parameter, with due time-driven changes applied first.

        A bare key id or alias name names a key in the *caller's* account, so for a principal of
        another account it never reaches this account's keys (AWS: NotFoundException)."""
        if not isinstance(value, str) or not 1 <= len(value) <= 2048:
            raise validation(f"1 validation error detected: Value at '{name[0].lower() + name[1:]}' "
                             "failed to satisfy constraint: Member must have length between 1 and 2048")
        if self.is_foreign(ctx) and not value.startswith("arn:"):
            raise KMSError("NotFoundException", f"Key '{value}' does not exist")
        key_id = self._key_id_of(value, alias_ok=alias_ok)
        rec = self.keys.get(key_id)
        if rec is None and ("keys", key_id) in self.store.refused:
            raise StoreCorruption(f"key {key_id}: its row fails its integrity check (MAC); refused")
        if rec is None or not self._maintain(rec):
            raise self.not_found(value)
        ctx.key_arn = rec.arn
        return rec

    def authorize(self, rec: KeyRecord, operation: str, ctx: CallContext,
                  context: dict[str, str] | None = None, grant_tokens: Any = None) -> None:
        """Key policy, then grants: AccessDeniedException unless something allows the call."""
        grants.check_grant_tokens(grant_tokens)
        action = f"kms:{operation}"
        if self.is_foreign(ctx) and operation not in CROSS_ACCOUNT_ACTIONS:
            raise KMSError("AccessDeniedException", f"User: {ctx.principal_arn} is not authorized to perform: "
                                                    f"{action} on resource: {rec.arn} because {action} cannot "
                                                    "be used on a KMS key in a different AWS account")
        decision = self._policy(rec).decide(Request(ctx.principal_arn, ctx.account_id, action,
                                                    _condition_keys(ctx, context)))
        if decision is True:
            return
        if decision is None and any(grants.allows(g, ctx.principal_arn, operation, context)
                                    for g in self.grants.values() if g["KeyId"] == rec.key_id):
            return
        why = ("with an explicit deny in a resource-based policy" if decision is False
               else f"because no resource-based policy allows the {action} action")
        raise KMSError("AccessDeniedException", f"User: {ctx.principal_arn} is not authorized to perform: "
                                                f"{action} on resource: {rec.arn} {why}")

    def require_own_account(self, operation: str, ctx: CallContext) -> None:
        """CreateKey acts in the caller's account, which this service does not host: principals of other
        accounts are refused (the listings answer them with nothing)."""
        if self.is_foreign(ctx):
            raise KMSError("AccessDeniedException", f"User: {ctx.principal_arn} is not authorized to perform: "
                                                    f"kms:{operation} on resource: *")

    def policy_allows(self, policy: CompiledPolicy, operation: str, ctx: CallContext) -> bool:
        return policy.decide(Request(ctx.principal_arn, ctx.account_id, f"kms:{operation}",
                                     _condition_keys(ctx, None))) is True

    def _policy(self, rec: KeyRecord) -> CompiledPolicy:
        policy = self._policies.get(rec.key_id)
        if policy is None:
            policy = self._policies[rec.key_id] = compile_policy(rec.policy)
        return policy

    def key_metadata(self, rec: KeyRecord) -> dict[str, Any]:
        """DescribeKey's KeyMetadata, with the custom key store's fields and state for a key in one."""
        return self.custom_key_stores.key_metadata(rec, rec.metadata())

    def require_usable(self, rec: KeyRecord) -> None:
        """Cryptographic operations need an Enabled key (and a connected custom key store, if in one)."""
        if self.custom_key_stores.unavailable(rec):
            raise KMSError("KMSInvalidStateException", f"{rec.arn} is unavailable: its custom key store "
                                                       f"{rec.custom_key_store_id} is not connected.")
        if rec.state == "Enabled":
            return
        if rec.state == "Disabled":
            raise KMSError("DisabledException", f"{rec.arn} is disabled.")
        self.raise_invalid_state(rec)

    def require_not_pending_deletion(self, rec: KeyRecord) -> None:
        if rec.state in ("PendingDeletion", multiregion.PENDING_REPLICA_DELETION):
            self.raise_invalid_state(rec)

    @staticmethod
    def raise_invalid_state(rec: KeyRecord) -> None:
        state = "pending deletion" if rec.state == "PendingDeletion" else f"{rec.state}"
        raise KMSError("KMSInvalidStateException", f"{rec.arn} is {state}.")

    # --- persistence -----------------------------------------------------------------------
    def save(self, rec: KeyRecord) -> None:
        """Persist a changed record (committed before returning) and drop its compiled policy."""
        self.store.put_key(rec.key_id, rec.to_meta())
        self.keys[rec.key_id] = rec
        self._policies.pop(rec.key_id, None)

    def add_backing_key(self, rec: KeyRecord, material: bytes, rotation_type: str | None,
                        created: float | None = None, backing_id: str | None = None) -> None:
        """Store a new key version and make it current, with the record, in one transaction."""
        backing_id = backing_id or new_backing_id()
        created = self.now() if created is None else created
        rec.current_backing = backing_id
        if rotation_type:
            rec.rotations.append({"RotationDate": created, "RotationType": rotation_type})
        self.store.add_backing_key(BackingKeyRow(rec.key_id, backing_id, created, rotation_type, material),
                                   rec.to_meta())
        self.keys[rec.key_id] = rec
        self._material.pop(rec.key_id, None)

    def forget_material(self, key_id: str) -> None:
        """Drop a key's cached versions: its backing keys changed in the store."""
        self._material.pop(key_id, None)

    def drop_material(self, rec: KeyRecord) -> None:
        """Destroy imported material (deleted or expired): the key waits for a new import."""
        rec.state = "PendingImport"
        rec.valid_to = None
        self.store.delete_backing_keys(rec.key_id, rec.to_meta())
        self._material.pop(rec.key_id, None)

    def material(self, rec: KeyRecord, backing_id: str | None = None) -> Any:
        """The unwrapped key object for a version (Aead, private key or HMAC bytes), cached; for a key in a
        custom key store, the token key with Aead's seal/open (its material never leaves the token)."""
        if rec.custom_key_store_id is not None:
            return self.custom_key_stores.key_for(rec, backing_id or rec.current_backing)
        versions = self._material.get(rec.key_id)
        if versions is None:
            versions = self._material[rec.key_id] = {
                row.backing_id: _key_object(rec, row.material) for row in self.store.backing_keys(rec.key_id)}
        return versions.get(backing_id or rec.current_backing)

    # --- time-driven changes ---------------------------------------------------------------
    def purge_due_keys(self) -> int:
        """Apply every due deletion, rotation and expiry; returns how many keys were destroyed."""
        destroyed = 0
        for rec in list(self.keys.values()):
            try:
                destroyed += not self._maintain(rec)
            except StoreCorruption as exc:  # that key is refused from now on; the others are still maintained
                log.error("key %s left out of maintenance: %s", rec.arn, exc)
        return destroyed

    def _maintain(self, rec: KeyRecord) -> bool:
        """Apply due time-driven changes to one key; False if it has been destroyed.

        A due change is made holding the key exclusively across every node of a shared store
        (``exclusive_key``), judged on the row as stored then: a node that finds another one already
        rotated or destroyed the key adopts that instead of doing it again, so each runs once."""
        if not _change_due(rec, self.clock.now()):
            return True
        try:
            with self.store.exclusive_key(rec.key_id) as stored:
                if stored is None:  # destroyed by another node meanwhile
                    self._forget_key(rec.key_id)
                    return False
                if stored != rec.to_meta():
                    self._adopt(rec, stored)
                return self._apply_due_changes(rec)
        except StoreCorruption:
            if ("keys", rec.key_id) in self.store.refused:  # its row was forged: the key is unusable from now on
                self._forget_key(rec.key_id)
            raise

    def _apply_due_changes(self, rec: KeyRecord) -> bool:
        now = self.clock.now()
        if _deletion_due(rec, now):
            self._destroy(rec)
            self.maintenance_events.append(("DeleteKey", rec.arn))
            return False
        if _expiry_due(rec, now):
            self.drop_material(rec)
            self.maintenance_events.append(("DeleteExpiredKeyMaterial", rec.arn))
        if _rotation_due(rec, now):
            self._rotate_automatically(rec, now)
            self.maintenance_events.append(("RotateKey", rec.arn))
        return True

    def _rotate_automatically(self, rec: KeyRecord, now: float) -> None:
        assert rec.next_rotation is not None and rec.rotation_period is not None
        due = rec.next_rotation
        while rec.next_rotation <= now:
            rec.next_rotation += rec.rotation_period * DAY
        self.add_backing_key(rec, new_material("SYMMETRIC_DEFAULT"), "AUTOMATIC", created=due)

    def _destroy(self, rec: KeyRecord) -> None:
        """The waiting period is over: delete the key's material and everything attached, for good."""
        self.store.destroy_key(rec.key_id)
        self._forget_key(rec.key_id)
        log.info("key %s destroyed after its deletion waiting period", rec.arn)
        if rec.is_replica:  # its primary, waiting for its replicas to go, is told (keyservice/multiregion.py)
            self.maintenance_events.append((multiregion.REPLICA_DELETED, rec.arn_in(rec.multi_region["primary"])))

    def _forget_key(self, key_id: str) -> None:
        """Drop a destroyed key and everything attached to it from memory."""
        rec = self.keys.get(key_id)
        if rec is not None:
            self.custom_key_stores.forget_key(rec)
        for cache in (self.keys, self.tags, self._policies, self._material):
            cache.pop(key_id, None)
        self.aliases = {n: a for n, a in self.aliases.items() if a["key_id"] != key_id}
        self.grants = {g: v for g, v in self.grants.items() if v["KeyId"] != key_id}

    def _adopt(self, rec: KeyRecord, meta: dict[str, Any]) -> None:
        """Make ``rec`` (the object callers hold) what the store holds, dropping what was derived from it."""
        stored = KeyRecord.from_meta(meta)
        for name in vars(stored):
            setattr(rec, name, getattr(stored, name))
        self.keys[rec.key_id] = rec
        self._policies.pop(rec.key_id, None)
        self._material.pop(rec.key_id, None)

    # --- changes made by other nodes of a shared store (keyservice/pgstore.py) ---------------
    def apply_store_changes(self, changes: list[StoreChange]) -> list[tuple[str, str | None]]:
        """Reload the rows other nodes changed (None: everything) into memory; returns what to tell the
        change listeners: ("KeyStoreChange", key ARN or None) per key concerned."""
        if None in changes:
            return self._reload_everything()
        touched: set[str | None] = set()
        for table, identity in {c for c in changes if c is not None}:
            try:
                touched.add(self._reload_row(table, identity))
            except StoreCorruption as exc:  # refused and logged by the store; the key stops being usable
                log.error("key store change refused: %s", exc)
                if table == "keys":
                    self._forget_key(identity)
                touched.add(identity if table in ("keys", "tags", "backing_keys") else None)
        return [("KeyStoreChange", self.key_arn(k) if k else None) for k in touched]

    def _refresh_named_rows(self, params: Any) -> None:
        """Before a management call on a shared store: the key and alias it names as stored now, so a change
        another node made a moment ago (its notification still on the way) is built upon, not overwritten
        with this node's older copy of the row."""
        if not isinstance(params, dict):
            return
        alias = params.get("AliasName")
        if isinstance(alias, str) and alias.startswith("alias/"):
            self._reload_row("aliases", alias)
        for name in ("KeyId", "TargetKeyId"):
            value = params.get(name)
            if not isinstance(value, str) or not value:
                continue
            try:
                key_id = self._key_id_of(value, alias_ok=True)
            except KMSError:
                continue  # the call itself reports it
            self._reload_row("keys", key_id)

    def _reload_row(self, table: str, identity: str) -> str | None:
        """Reload one row; returns the id of the key it concerns (None if unknown)."""
        if table == "keys":
            self._take_key(identity, self.store.get_key(identity))
            return identity
        if table == "backing_keys":
            self._material.pop(identity, None)
            return identity
        if table == "tags":
            self.tags[identity] = self.store.tags_of(identity)
            return identity
        if table in ("aliases", "grants"):
            cache, key_field = (self.aliases, "key_id") if table == "aliases" else (self.grants, "KeyId")
            before = cache.pop(identity, None)
            meta = self.store.get_alias(identity) if table == "aliases" else self.store.get_grant(identity)
            if meta is not None:
                cache[identity] = meta
            return (meta or before or {}).get(key_field)
        if table == "custom_key_stores":
            self.custom_key_stores.reload(identity, self.store.get_custom_key_store(identity))
        return None  # import_params: read from the store when used

    def _take_key(self, key_id: str, meta: dict[str, Any] | None) -> None:
        """A key's row as stored (None: gone) into memory."""
        if meta is None:
            self._forget_key(key_id)
        elif key_id in self.keys:
            self._adopt(self.keys[key_id], meta)
        else:
            self.keys[key_id] = KeyRecord.from_meta(meta)

    def _reload_everything(self) -> list[tuple[str, str | None]]:
        """The safety net for lost notifications: reload every table, announce the keys that differ."""
        stored = self.store.load_keys()
        changed = {k for k in set(stored) | set(self.keys)
                   if k not in self.keys or k not in stored or stored[k] != self.keys[k].to_meta()}
        for key_id in changed:
            self._take_key(key_id, stored.get(key_id))
        aliases, grants, tags = self.store.load_aliases(), self.store.load_grants(), self.store.load_tags()
        changed |= {m["key_id"] for n, m in list(aliases.items()) + list(self.aliases.items())
                    if aliases.get(n) != self.aliases.get(n)}
        changed |= {m["KeyId"] for g, m in list(grants.items()) + list(self.grants.items())
                    if grants.get(g) != self.grants.get(g)}
        changed |= {k for k in set(tags) | set(self.tags) if tags.get(k, {}) != self.tags.get(k, {})}
        self.aliases, self.grants, self.tags = aliases, grants, tags
        stores = self.store.load_custom_key_stores()
        for store_id in set(stores) | set(self.custom_key_stores.records):
            self.custom_key_stores.reload(store_id, stores.get(store_id))
        return [("KeyStoreChange", self.key_arn(k)) for k in changed]

    # --- helpers for blocking work ---------------------------------------------------------
    @staticmethod
    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        """Run slow CPU work (RSA key generation) off the event loop."""
        return await asyncio.to_thread(fn, *args)


def _change_due(rec: KeyRecord, now: float) -> bool:
    """Whether touching the key now would change it (and write the store): see ``_maintain``."""
    return _deletion_due(rec, now) or _expiry_due(rec, now) or _rotation_due(rec, now)


def _deletion_due(rec: KeyRecord, now: float) -> bool:
    return rec.deletion_date is not None and now >= rec.deletion_date


def _expiry_due(rec: KeyRecord, now: float) -> bool:
    """Imported material past its ValidTo and not yet dropped."""
    return rec.valid_to is not None and now >= rec.valid_to and rec.state != "PendingImport"


def _rotation_due(rec: KeyRecord, now: float) -> bool:
    return rec.next_rotation is not None and now >= rec.next_rotation and rec.state == "Enabled"


@contextlib.contextmanager
def _store_failures_internal() -> Iterator[None]:
    """A secret that does not unwrap (wrong root key, tampered row) is the service's failure: 500."""
    try:
        yield
    except StoreCorruption as exc:
        log.error("key store integrity failure: %s", exc)
        raise KMSError("KMSInternalException", "The key store could not unwrap key material.", 500) from exc


def _condition_keys(ctx: CallContext, context: dict[str, str] | None) -> dict[str, Any]:
    """Policy condition keys of a call, lower-cased as policy keys are matched case-insensitively.

    A context whose keys differ only in case is refused: otherwise the caller would choose which of
    the values a policy condition sees, while the ciphertext stays bound to both."""
    keys: dict[str, Any] = {"kms:calleraccount": ctx.account_id}
    if ctx.via_service:
        keys["kms:viaservice"] = ctx.via_service
    if context:
        keys["kms:encryptioncontextkeys"] = list(context)
        for k, v in context.items():
            name = f"kms:encryptioncontext:{k.lower()}"
            if name in keys:
                raise KMSError("ValidationException", "Encryption context keys must be unique regardless of case.")
            keys[name] = v
    return keys


def _key_object(rec: KeyRecord, material: bytes) -> Any:
    """What the operations use a version's material as: an ``Aead`` for the ciphertext blobs of a
    symmetric key, the raw bytes of an HMAC key, the private key object of an asymmetric key."""
    if rec.symmetric:
        return Aead(material)
    if rec.key_usage == "GENERATE_VERIFY_MAC":
        return material
    return load_der_private_key(material, password=None)
