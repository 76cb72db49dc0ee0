"""The key service inside another process (the gateway): the few typed calls that process needs.

The host uses the key service through this module only. It does not build a ``KmsApi`` or a
``CallContext``, read the ``[keyservice]`` table or catch ``KMSError``: it opens an
``EmbeddedKeyService`` from its config file, environment and a default data directory, calls it as
its own account's root principal, and gets ``KeyServiceError`` (AWS's error type and message) for
any refusal, to map as it sees fit. Calls go through ``KmsApi`` exactly as over HTTP: quotas, the
audit log and the service's own thread (``keyservice.worker``) included.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyservice.api import KmsApi
from keyservice.config import ConfigError, Credential, KeyServiceConfig, build_api, log_secrets
from keyservice.errors import KMSError
from keyservice.principals import principal_account
from keyservice.server import KmsFrontend
from keyservice.service import CallContext

__all__ = ["Caller", "ConfigError", "EmbeddedKeyService", "KeyServiceError", "KmsDataKey", "KmsFrontend",
           "settings_secrets"]
log = logging.getLogger("keyservice.embedded")
_SECRET_VARIABLES = ("KEYSERVICE_ROOT_KEY", "KEYSERVICE_ROOT_PASSPHRASE", "KEYSERVICE_SECRET_KEY")


class KeyServiceError(Exception):
    """The key service refused a call: AWS KMS's error type (``NotFoundException``, ...) and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


@dataclass(frozen=True)
class KmsDataKey:
    """A data key: its plaintext, the ciphertext blob that unwraps it, and the ARN of its KMS key."""

    plaintext: bytes
    ciphertext_blob: bytes
    key_arn: str


@dataclass(frozen=True)
class Caller:
    """A principal the host calls the key service for (a client of the gateway), and the AWS service it
    calls through (``kms:ViaService``, e.g. ``s3.us-east-1.amazonaws.com``) for key policies to test."""

    principal: str
    access_key: str | None = None
    via_service: str | None = None

    @property
    def account_id(self) -> str:
        account = principal_account(self.principal)
        if account is None:
            raise ValueError(f"{self.principal!r} is not an IAM or STS principal ARN")
        return account


class EmbeddedKeyService:
    """The key service in-process, called as the root principal of its own account."""

    def __init__(self, api: KmsApi, config: KeyServiceConfig, *, source: str) -> None:
        self._api = api
        self._config = config
        self._principal = config.root_principal
        self._source = source
        self._maintenance: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, config_path: Path | None, env: Mapping[str, str], default_data_dir: Path, *,
                   source: str) -> "EmbeddedKeyService":
        """Open the key service the ``[keyservice]`` table and KEYSERVICE_* variables describe, its
        store in ``default_data_dir`` unless they name one; ``source`` names the caller in the audit
        log. Raises ``ConfigError`` for unusable settings. The root key (scrypt for a passphrase) and
        the store are opened in a thread: the host's event loop may already serve other things."""
        config = KeyServiceConfig.load(config_path, env, default_data_dir=default_data_dir)
        return cls(await asyncio.to_thread(build_api, config), config, source=source)

    @property
    def account_id(self) -> str:
        """The account the key service hosts: the default principal of a gateway credential is a user of it."""
        return self._config.account_id

    @property
    def region(self) -> str:
        return self._config.region

    async def _call(self, operation: str, params: dict[str, Any], on_behalf: Caller | None = None) -> dict[str, Any]:
        """``operation`` as the account root, or as ``on_behalf``'s principal (its account taken from its
        ARN, so another account's principal is a cross-account caller), with its kms:ViaService."""
        if on_behalf is None:
            ctx = CallContext(principal_arn=self._principal, account_id=self._config.account_id,
                              request_id=str(uuid.uuid4()), access_key=None, source=self._source)
        else:
            ctx = CallContext(principal_arn=on_behalf.principal, account_id=on_behalf.account_id,
                              request_id=str(uuid.uuid4()), access_key=on_behalf.access_key, source=self._source,
                              via_service=on_behalf.via_service)
        try:
            return await self._api.call(operation, params, ctx)
        except KMSError as exc:
            raise KeyServiceError(exc.type, exc.message) from None

    async def generate_data_key(self, key_id: str, context: Mapping[str, str],
                                on_behalf: Caller | None = None) -> KmsDataKey:
        """A fresh 256-bit data key under ``key_id`` (id, ARN or alias), bound to ``context``; asked for
        by ``on_behalf`` (key policy and grants decide), else by the account root."""
        out = await self._call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256",
                                                    "EncryptionContext": dict(context)}, on_behalf)
        return KmsDataKey(out["Plaintext"], out["CiphertextBlob"], out["KeyId"])

    async def decrypt(self, ciphertext_blob: bytes, context: Mapping[str, str],
                      on_behalf: Caller | None = None) -> KmsDataKey:
        """Unwrap a data key made by ``generate_data_key`` with the same ``context``."""
        out = await self._call("Decrypt", {"CiphertextBlob": ciphertext_blob, "EncryptionContext": dict(context)},
                               on_behalf)
        return KmsDataKey(out["Plaintext"], ciphertext_blob, out["KeyId"])

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        """TagResource: set (or replace) tags on the key ``key_id`` names."""
        await self._call("TagResource", {"KeyId": key_id,
                                         "Tags": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]})

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the key ``key_id`` (id, ARN or alias) names (DescribeKey)."""
        return (await self._call("DescribeKey", {"KeyId": key_id}))["KeyMetadata"]["Arn"]

    async def ensure_alias_key(self, alias: str, description: str) -> str:
        """The ARN of the key ``alias`` names, creating the key and the alias on first use."""
        try:
            return (await self._call("DescribeKey", {"KeyId": alias}))["KeyMetadata"]["Arn"]
        except KeyServiceError as exc:
            if exc.error_type != "NotFoundException":
                raise
        meta = (await self._call("CreateKey", {"Description": description}))["KeyMetadata"]
        await self._call("CreateAlias", {"AliasName": alias, "TargetKeyId": meta["KeyId"]})
        log.info("created the key %s as %s", meta["Arn"], alias)
        return meta["Arn"]

    def on_change(self, callback: Callable[[str, str | None], None]) -> None:
        """Call ``callback(operation, key_arn)`` after every successful call that can change whether or
        how a key may be used -- made by the host, by the KMS API on the host's listener or by the
        periodic maintenance -- so the host can drop what it cached about the key. The operations are
        ``KmsApi.change_operations`` (every one but the reads, listings and cryptographic ones), plus
        ``DeleteKey``, ``RotateKey`` and ``DeleteExpiredKeyMaterial`` for the time-driven changes, and
        ``KeyStoreChange`` for a change another node of a shared (PostgreSQL) key store made.
        ``key_arn`` is None when the call names no single key; for an alias operation it is the key the
        alias names after it (before it, for DeleteAlias): the key an alias named before UpdateAlias is
        not given, so a cache keyed by alias name drops its alias entries on any alias operation.
        Runs on the event loop: must not block."""
        self._api.add_change_listener(callback)

    def kms_frontend(self, extra_credentials: Iterable[tuple[str, str, str]] = ()) -> KmsFrontend:
        """The KMS JSON API over this key service, for the host's own HTTP listener: answered exactly as
        ``keyservice serve`` answers (its ``handle(request)``), SigV4 in this service's region.

        It accepts the key service's own credentials and ``extra_credentials`` (access key, secret key,
        principal ARN): the host's clients, each acting as its principal, which key policies judge. An
        access key in both with another secret is a ``ConfigError`` (which secret signs would be a
        guess); with the same secret the key service's own entry, and principal, is used."""
        own = {c.access_key: c for c in self._config.credentials}
        merged = dict(own)
        for access_key, secret_key, principal in extra_credentials:
            mine = own.get(access_key)
            if mine is not None:
                if mine.secret_key != secret_key:
                    raise ConfigError(f"access key {access_key} is both a gateway credential and a [keyservice] "
                                      "credential, with different secret keys: give it one secret or rename one")
                continue
            cred = Credential(access_key, secret_key, principal)
            _ = cred.account_id  # raises ConfigError for a principal whose account cannot be told
            merged[access_key] = cred
        return KmsFrontend(self._api, merged.values(), self._config.region)

    def start_maintenance(self) -> None:
        """Run the periodic work (scheduled deletions, rotations) every ``purge_interval`` seconds, as
        ``keyservice serve`` does."""
        if self._maintenance is None:
            self._maintenance = asyncio.create_task(self._api.maintain_forever(self._config.purge_interval))

    async def close(self) -> None:
        """Stop the periodic work, then flush and close the key store and the audit log."""
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
        await self._api.close()


def settings_secrets(config_path: Path | None, env: Mapping[str, str]) -> list[str]:
    """Every secret the embedded key service's settings hold, for a log filter to redact: read as
    ``EmbeddedKeyService.open`` reads them. Settings it would refuse still have their secret
    variables named, so a start-up that fails cannot print them either."""
    try:
        return log_secrets(KeyServiceConfig.load(config_path, env))
    except ConfigError:
        return [env.get(name, "") for name in _SECRET_VARIABLES]
