"""Key providers for SSE-KMS: the embedded key service in-process, or any KMS endpoint over HTTP.

Both speak the same AWS KMS shapes and map KMS errors to the S3 errors S3 itself returns for them
(``KMS.NotFoundException`` ...), so a client cannot tell which one the gateway runs with.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any, Awaitable, Callable, Mapping

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from gateway.config import DEFAULT_KEY_ALIAS, ConfigError, GatewayConfig
from gateway.crypto.stream import IntegrityError
from gateway.datakeys import DataKey, Requester, Throttled
from gateway.s3errors import S3Error, from_kms_error, service_unavailable
from keyservice.embedded import Caller, EmbeddedKeyService, KeyServiceError, KmsDataKey

log = logging.getLogger("gateway.kms")
CONNECT_TIMEOUT = 1.0  # seconds; a key service on the network accepts a connection far faster


class KmsThrottled(S3Error, Throttled):
    """The key service throttled the call: S3's 503 SlowDown, once the retry budget is spent (gateway/datakeys.py)."""


def s3_error_for_kms(error_type: str, message: str) -> Exception:
    """The S3-side error for a KMS failure; a bad data-key ciphertext means the object was tampered with."""
    if error_type == "InvalidCiphertextException":
        return IntegrityError(f"the object's data key does not decrypt: {message}")
    error = from_kms_error(error_type, message)
    if error_type == "ThrottlingException":
        return KmsThrottled(error.code, error.message, error.status)
    if error.status == 500:
        log.error("unexpected KMS error %s: %s", error_type, message)
    elif error.code == "ServiceUnavailable":
        log.error("the key service failed (%s: %s); answering 503", error_type, message)
    return error


class EmbeddedKeyProvider:
    """The embedded key service (``keyservice.embedded``), its refusals mapped to S3 errors."""

    def __init__(self, keys: EmbeddedKeyService, default_key_id: str, region: str = "us-east-1") -> None:
        self._keys = keys
        self.default_key_id = default_key_id
        self.via_service = f"s3.{region}.amazonaws.com"  # kms:ViaService of the calls made for clients

    @property
    def account_id(self) -> str:
        """The key service's account: a client credential's default principal is a user of it."""
        return self._keys.account_id

    @property
    def keys(self) -> EmbeddedKeyService:
        """The key service itself: its KMS front for the gateway's listener, its change notifications."""
        return self._keys

    def _caller(self, requester: Requester) -> Caller | None:
        if requester.principal is None:
            return None
        return Caller(requester.principal, requester.access_key, self.via_service)

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *,
                                requester: Requester) -> DataKey:
        with _as_s3_errors():
            return _data_key(await self._keys.generate_data_key(key_id or self.default_key_id, context,
                                                                self._caller(requester)))

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *,
                               requester: Requester) -> DataKey:
        with _as_s3_errors():
            return _data_key(await self._keys.decrypt(ciphertext, context, self._caller(requester)))

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the CMK ``key_id`` (id, ARN or alias) names: how tools compare a seal's CMK."""
        with _as_s3_errors():
            return await self._keys.key_arn(key_id)

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        with _as_s3_errors():
            await self._keys.tag_key(key_id, tags)

    async def ensure_default_key(self) -> str:
        """Create ``alias/s3-gateway-default`` on first start; returns its key ARN."""
        with _as_s3_errors():
            return await self._keys.ensure_alias_key(DEFAULT_KEY_ALIAS, "S3 gateway default key")

    async def close(self) -> None:
        """Stop the periodic work, then flush and close the key store and audit log."""
        await self._keys.close()


async def embedded_provider(config: GatewayConfig) -> EmbeddedKeyProvider:
    """The in-process key service, its store under DATA_DIR/keyservice unless ``[keyservice] data_dir``
    or KEYSERVICE_DATA_DIR says otherwise, the default key created on first start (unless the config
    names one), its periodic work (scheduled deletions, rotations) running."""
    keys = await EmbeddedKeyService.open(config.config_path, os.environ, config.data_dir / "keyservice",
                                         source="gateway")
    provider = EmbeddedKeyProvider(keys, config.default_kms_key_id or DEFAULT_KEY_ALIAS, config.region)
    try:
        if not config.default_kms_key_id:
            await provider.ensure_default_key()
    except BaseException:
        await keys.close()
        raise
    keys.start_maintenance()
    return provider


@contextlib.contextmanager
def _as_s3_errors() -> Iterator[None]:
    """The embedded key service's refusals as the S3 errors S3 answers for them."""
    try:
        yield
    except KeyServiceError as exc:
        raise s3_error_for_kms(exc.error_type, exc.message) from None


def _data_key(key: KmsDataKey) -> DataKey:
    return DataKey(key.plaintext, key.ciphertext_blob, key.key_arn)


class RemoteKeyProvider:
    """Any AWS-KMS-API endpoint through aiobotocore (a real KMS, or a standalone ``keyservice serve``).

    A call that cannot get an answer within ``timeout`` seconds, retries included (at most
    ``max_attempts`` tries, each connect bounded too), is S3's 503 ServiceUnavailable: a client
    learns within a stated bound that the key service is down, instead of after botocore's default
    minute of retries. An outage is logged once when it starts and once when it ends.
    """

    def __init__(self, endpoint: str, region: str, access_key: str, secret_key: str, default_key_id: str, *,
                 timeout: float = 5.0, max_attempts: int = 3) -> None:
        self._client_args = dict(
            endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=AioConfig(connect_timeout=min(timeout, CONNECT_TIMEOUT), read_timeout=timeout,
                             retries={"mode": "standard", "total_max_attempts": max_attempts}))
        self.endpoint = endpoint
        self.account_id: str | None = None  # unknown: the remote KMS authorizes the gateway's own credentials
        self.timeout = timeout
        self.default_key_id = default_key_id
        self._stack: Any = None
        self._client: Any = None
        self._down = False

    async def start(self) -> None:
        self._stack = AsyncExitStack()
        self._client = await self._stack.enter_async_context(get_session().create_client("kms", **self._client_args))

    async def check_at_start(self) -> None:
        """Refuse to start (``ConfigError``, one line naming what to fix) unless the key service answers
        within ``timeout``, accepts the [kms] credential and has a usable default key -- rather than
        start and answer every SSE-KMS request with an error. The default alias, when missing, is
        created (CreateKey, CreateAlias) if the key service allows this credential to."""
        try:
            meta = await self._start_call("DescribeKey", KeyId=self.default_key_id)
        except _Refused as refused:
            if refused.code != "NotFoundException":
                raise self._start_refusal(refused) from None
            if self.default_key_id != DEFAULT_KEY_ALIAS:
                raise ConfigError(f"the default KMS key {self.default_key_id} (default_kms_key_id) does not "
                                  f"exist at the key service at {self.endpoint}") from None
            meta = await self._create_default_key()
        if meta is None:
            return  # DescribeKey denied by the key policy: whether GenerateDataKey is allowed shows on use
        state = meta["KeyMetadata"]["KeyState"]
        if state != "Enabled":
            raise ConfigError(f"the default KMS key {self.default_key_id} is {state} at the key service at "
                              f"{self.endpoint}: enable it or set GATEWAY_DEFAULT_KMS_KEY_ID to another key")

    async def _create_default_key(self) -> dict[str, Any]:
        """Create the default alias and its key; a race with another gateway creating it is no error."""
        try:
            created = await self._start_call("CreateKey", Description="S3 gateway default key")
            key_id = created["KeyMetadata"]["KeyId"]
            await self._start_call("CreateAlias", AliasName=DEFAULT_KEY_ALIAS, TargetKeyId=key_id)
        except _Refused as refused:
            if refused.code == "AlreadyExistsException":
                return await self._start_call("DescribeKey", KeyId=DEFAULT_KEY_ALIAS)
            if refused.code == "AccessDeniedException":
                raise ConfigError(f"the default KMS key {DEFAULT_KEY_ALIAS} does not exist at the key service at "
                                  f"{self.endpoint} and the [kms] credential may not create it: create it there "
                                  f"(aws kms create-key, then create-alias --alias-name {DEFAULT_KEY_ALIAS}) "
                                  "or set GATEWAY_DEFAULT_KMS_KEY_ID to an existing key") from None
            raise self._start_refusal(refused) from None
        log.info("created the default KMS key %s as %s at %s", created["KeyMetadata"]["Arn"], DEFAULT_KEY_ALIAS,
                 self.endpoint)
        return created

    async def _start_call(self, operation: str, **params: Any) -> Any:
        """One KMS call at start: the key service's refusal as ``_Refused``, no answer as ``ConfigError``.
        ``None`` for a DescribeKey the key policy denies."""
        method = getattr(self._client, _snake_case(operation))
        try:
            async with asyncio.timeout(self.timeout):
                return await method(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "KMSInternalException")
            if code == "AccessDeniedException" and operation == "DescribeKey":
                log.warning("the key policy of %s denies the [kms] credential DescribeKey: not checked at start",
                            self.default_key_id)
                return None
            raise _Refused(code, err.get("Message", "")) from None
        except (BotoConnectionError, HTTPClientError, TimeoutError) as exc:
            # Not naming the exception: a refused connection retried past the timeout is a TimeoutError too.
            log.debug("start-up %s at %s failed: %s", operation, self.endpoint, type(exc).__name__)
            raise ConfigError(f"the key service at {self.endpoint} cannot be reached within {self.timeout:g} s; "
                              "check [kms] endpoint (GATEWAY_KMS_ENDPOINT)") from None

    def _start_refusal(self, refused: "_Refused") -> ConfigError:
        if refused.code in _CREDENTIAL_REFUSALS:
            return ConfigError(f"the key service at {self.endpoint} refused the [kms] access_key/secret_key "
                               f"({refused.code}): check GATEWAY_KMS_ACCESS_KEY and GATEWAY_KMS_SECRET_KEY")
        return ConfigError(f"the key service at {self.endpoint} refused the start-up check of the default KMS key "
                           f"{self.default_key_id}: {refused.code}: {refused.message}")

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()

    async def _call(self, method: Callable[..., Awaitable[dict]], **params: Any) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout):
                result = await method(**params)
        except ClientError as exc:
            self._reachable()
            err = exc.response.get("Error", {})
            raise s3_error_for_kms(err.get("Code", "KMSInternalException"), err.get("Message", "")) from None
        except (BotoConnectionError, HTTPClientError, TimeoutError) as exc:
            self._unreachable(exc)
            raise service_unavailable("The key service cannot be reached") from None
        self._reachable()
        return result

    def _unreachable(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            log.error("the key service at %s gave no answer within %.1f s (%s); answering 503 ServiceUnavailable "
                      "until it is back", self.endpoint, self.timeout, type(exc).__name__)

    def _reachable(self) -> None:
        if self._down:
            self._down = False
            log.warning("the key service at %s answers again", self.endpoint)

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str], *,
                                requester: Requester) -> DataKey:
        """GenerateDataKey with the gateway's own [kms] credentials: a remote KMS sees the gateway, not the
        client (``requester`` is only honoured by the embedded key service)."""
        out = await self._call(self._client.generate_data_key, KeyId=key_id or self.default_key_id,
                               KeySpec="AES_256", EncryptionContext=dict(context))
        return DataKey(out["Plaintext"], out["CiphertextBlob"], out["KeyId"])

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str], *,
                               requester: Requester) -> DataKey:
        out = await self._call(self._client.decrypt, CiphertextBlob=ciphertext, EncryptionContext=dict(context))
        return DataKey(out["Plaintext"], ciphertext, out["KeyId"])

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the CMK ``key_id`` (id, ARN or alias) names (DescribeKey)."""
        return (await self._call(self._client.describe_key, KeyId=key_id))["KeyMetadata"]["Arn"]

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        """TagResource on the key ``key_id`` names."""
        await self._call(self._client.tag_resource, KeyId=key_id,
                         Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()])


class _Refused(Exception):
    """A KMS error answer to a start-up call."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# The refusals that mean the key service does not accept the credential (or its signature).
_CREDENTIAL_REFUSALS = frozenset({"UnrecognizedClientException", "InvalidSignatureException",
                                  "IncompleteSignatureException", "MissingAuthenticationTokenException",
                                  "InvalidClientTokenId", "SignatureDoesNotMatch"})


def _snake_case(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")


async def start_key_provider(config: GatewayConfig) -> EmbeddedKeyProvider | RemoteKeyProvider:
    """The one place the key provider is chosen (and started): the embedded key service, or the KMS
    endpoint configured in [kms], checked before it is used (``RemoteKeyProvider.check_at_start``:
    ``ConfigError`` when it cannot serve). The caller closes it."""
    if not config.kms.endpoint:
        return await embedded_provider(config)
    kms = config.kms
    provider = RemoteKeyProvider(kms.endpoint, kms.region, kms.access_key, kms.secret_key,
                                 config.default_kms_key_id or DEFAULT_KEY_ALIAS,
                                 timeout=kms.timeout, max_attempts=kms.max_attempts)
    await provider.start()
    try:
        await provider.check_at_start()
    except BaseException:
        await provider.close()
        raise
    return provider
