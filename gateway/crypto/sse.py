"""The SSE modes: make and open the per-object key OK (docs/FORMAT.md §1), one small type each.

    SSE-KMS / SSE-S3:  DK, W = KMS.GenerateDataKey(CMK, ctx)    KEK = HKDF(DK, none, "s3gw/v1/kms/" B "/" K)
    SSE-C:             CK from the client, salt random           KEK = HKDF(CK, salt, "s3gw/v1/ssec/" B "/" K)
                       kcv = HMAC(gateway secret, "s3gw/v1/ssec-check" || salt || CK)   (tells a wrong CK)
    both:              sealed = n || GCM(KEK, n, OK, "s3gw/v1/object-key/" MODE)

Each mode's seal is its own record type (`KmsSeal`, `CustomerKeySeal`) with exactly the fields it
has; `ObjectKeys` picks the mode from the request or the seal, so no caller dispatches on strings.
The customer key is never the data key and is never stored; one KMS call per object.
"""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Protocol

from common.aead import Aead, AuthenticationFailed
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import IntegrityError

FORMAT_VERSION = 1
SEALED_KEY_SIZE = 12 + 32 + 16
SSEC_SALT_SIZE = 32
SSEC_CHECK_SIZE = 32
CUSTOMER_KEY_SIZE = 32
S3_ARN_CONTEXT_KEY = "aws:s3:arn"
_SEAL_AAD = b"s3gw/v1/object-key/"
_SSEC_CHECK_LABEL = b"s3gw/v1/ssec-check"


class SseMode(enum.Enum):
    """How an object is encrypted; the value is what S3 headers and the metadata call it."""

    KMS = "aws:kms"
    S3 = "AES256"  # SSE-S3: served like SSE-KMS with the caller's (or the default) key, no client context
    CUSTOMER = "SSE-C"


@dataclass(frozen=True)
class DataKey:
    """A KMS data key: plaintext, the KMS ciphertext blob, and the ARN of the CMK that made it."""

    plaintext: bytes = field(repr=False)
    ciphertext: bytes
    key_arn: str


class KeyProvider(Protocol):
    """What the gateway needs from a KMS (embedded or remote)."""

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str]) -> DataKey:
        """A fresh AES-256 data key; key_id None means the gateway's default key."""

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str]) -> DataKey:
        """Unwrap a data key; raises the provider's own error if the context does not match."""

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the CMK an id, ARN or alias names (DescribeKey): tools compare seals by ARN."""

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        """Set tags on a CMK (TagResource): `gateway keys usage --record` notes there what the key protects."""


class CustomerKey:
    """An SSE-C key as the client sent it (validated by the protocol layer): never stored, never shown."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != CUSTOMER_KEY_SIZE:
            raise ValueError(f"an SSE-C key is {CUSTOMER_KEY_SIZE} bytes, not {len(raw)}")
        self._key = bytes(raw)

    @property
    def md5_b64(self) -> str:
        """x-amz-server-side-encryption-customer-key-md5, echoed in answers."""
        return base64.b64encode(hashlib.md5(self._key).digest()).decode()

    def kek(self, salt: bytes, bucket: str, key: str) -> Aead:
        return _kek(self._key, salt, "ssec", bucket, key)

    def check_value(self, secret: bytes, salt: bytes) -> bytes:
        """kcv = HMAC-SHA256(gateway_secret, "s3gw/v1/ssec-check" || salt || CK)."""
        return hmac.new(secret, _SSEC_CHECK_LABEL + salt + self._key, hashlib.sha256).digest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CustomerKey) and hmac.compare_digest(other._key, self._key)

    def __hash__(self) -> int:
        return hash(self.md5_b64)

    def __repr__(self) -> str:
        return "CustomerKey(<secret>)"


@dataclass(frozen=True)
class KmsRequest:
    """SSE-KMS or SSE-S3 as a request asks for it: the CMK (None: the bucket's or gateway's default)
    and the client's encryption context (always empty for SSE-S3, which has none in S3)."""

    mode: SseMode = SseMode.KMS
    key_id: str | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    # S3 Bucket Keys: derive the object's key from a bucket-level data key (docs/FORMAT.md, version 2);
    # applies to aws:kms only, as in S3 (SSE-S3 ignores it).
    bucket_key: bool = False

    def __post_init__(self) -> None:
        if self.mode is SseMode.CUSTOMER:
            raise ValueError("a KMS request cannot ask for SSE-C")
        if S3_ARN_CONTEXT_KEY in self.context:
            raise ValueError(f"the encryption context may not set {S3_ARN_CONTEXT_KEY}")
        object.__setattr__(self, "context", MappingProxyType(dict(self.context)))  # checked, then fixed


@dataclass(frozen=True)
class CustomerKeyRequest:
    """SSE-C with the client's key."""

    key: CustomerKey

    mode = SseMode.CUSTOMER

    def __post_init__(self) -> None:
        if not isinstance(self.key, CustomerKey):
            raise TypeError("an SSE-C request needs a CustomerKey")


SseRequest = KmsRequest | CustomerKeyRequest


@dataclass(frozen=True)
class KmsSeal:
    """OK sealed under a KEK derived from a per-object KMS data key."""

    mode: SseMode
    sealed_key: bytes
    kms_key_arn: str
    wrapped_data_key: bytes
    kms_context: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode is SseMode.CUSTOMER:
            raise ValueError("a KMS seal cannot be of mode SSE-C")
        object.__setattr__(self, "kms_context", MappingProxyType(dict(self.kms_context)))


@dataclass(frozen=True)
class CustomerKeySeal:
    """OK sealed under a KEK derived from the customer's key and a random salt, with its check value."""

    sealed_key: bytes
    salt: bytes
    check: bytes

    mode = SseMode.CUSTOMER


Seal = KmsSeal | CustomerKeySeal


class WrongCustomerKey(Exception):
    """The SSE-C key given does not match the stored check value (S3: 403 AccessDenied)."""


class MissingCustomerKey(WrongCustomerKey):
    """An SSE-C object was read without a customer key (S3: 400 InvalidRequest)."""


def s3_context(bucket: str, key: str, client_context: Mapping[str, str]) -> dict[str, str]:
    """The KMS encryption context: the client's pairs plus aws:s3:arn, which only S3 may set."""
    if S3_ARN_CONTEXT_KEY in client_context:
        raise ValueError(f"the encryption context may not set {S3_ARN_CONTEXT_KEY}")
    return {**client_context, S3_ARN_CONTEXT_KEY: f"arn:aws:s3:::{bucket}/{key}"}


def _kek(ikm: bytes, salt: bytes | None, label: str, bucket: str, key: str) -> Aead:
    """KEK = HKDF-SHA256(ikm, salt, info = "s3gw/v1/<label>/" || bucket || "/" || key)."""
    return Aead.derived(ikm, salt=salt, info=f"s3gw/v1/{label}/{bucket}/{key}".encode())


def _seal_aad(mode: SseMode) -> bytes:
    """Binds the sealed key to the format version and the mode it was made for."""
    return _SEAL_AAD + mode.value.encode()


def _unseal(kek: Aead, sealed: bytes, mode: SseMode) -> ObjectKey:
    if len(sealed) != SEALED_KEY_SIZE:
        raise IntegrityError("sealed object key has the wrong length")
    try:
        return ObjectKey.unseal(kek, sealed, _seal_aad(mode))
    except AuthenticationFailed:
        raise IntegrityError("sealed object key failed authentication") from None


class SseKms:
    """SSE-KMS and SSE-S3: OK sealed under a key derived from a per-object KMS data key."""

    def __init__(self, provider: KeyProvider) -> None:
        self._provider = provider

    async def create(self, bucket: str, key: str, request: KmsRequest) -> tuple[ObjectKey, KmsSeal]:
        client_context = {} if request.mode is SseMode.S3 else dict(request.context)
        data_key = await self._provider.generate_data_key(request.key_id, s3_context(bucket, key, client_context))
        object_key = ObjectKey.generate()
        sealed = object_key.seal(_kek(data_key.plaintext, None, "kms", bucket, key), _seal_aad(request.mode))
        return object_key, KmsSeal(request.mode, sealed, data_key.key_arn, data_key.ciphertext, client_context)

    async def open(self, bucket: str, key: str, seal: KmsSeal) -> ObjectKey:
        """One KMS Decrypt; the context is rebuilt from the path, so a copied object fails here."""
        try:
            context = s3_context(bucket, key, seal.kms_context)
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None
        data_key = await self._provider.decrypt_data_key(seal.wrapped_data_key, context)
        if data_key.key_arn != seal.kms_key_arn:
            raise IntegrityError("the data key belongs to another KMS key than the metadata names")
        return _unseal(_kek(data_key.plaintext, None, "kms", bucket, key), seal.sealed_key, seal.mode)

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the CMK ``key_id`` names, as seals record it."""
        return await self._provider.key_arn(key_id)

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        await self._provider.tag_key(key_id, tags)

    async def reseal(self, bucket: str, key: str, object_key: ObjectKey, seal: KmsSeal, to_key_id: str) -> KmsSeal:
        """The same OK sealed under a fresh data key of ``to_key_id`` (one GenerateDataKey).

        The body and a multipart manifest are encrypted under OK, not under the data key, so only
        the seal changes: a rewrap moves no object bytes. Mode and client context are kept, so the
        new data key is bound to the same encryption context the old one was.
        """
        context = s3_context(bucket, key, seal.kms_context)
        data_key = await self._provider.generate_data_key(to_key_id, context)
        sealed = object_key.seal(_kek(data_key.plaintext, None, "kms", bucket, key), _seal_aad(seal.mode))
        return KmsSeal(seal.mode, sealed, data_key.key_arn, data_key.ciphertext, seal.kms_context)


class SseC:
    """SSE-C: OK sealed under a key derived from the customer's key and a random salt.

    A keyed check value (HMAC under a gateway secret, so it is no offline oracle for the customer
    key) lets a wrong key be refused before anything is unsealed or decrypted.
    """

    def __init__(self, gateway_secret: bytes) -> None:
        if len(gateway_secret) < 16:
            raise ValueError("the gateway secret must be at least 16 bytes")
        self._secret = gateway_secret

    def create(self, bucket: str, key: str, customer_key: CustomerKey) -> tuple[ObjectKey, CustomerKeySeal]:
        salt = os.urandom(SSEC_SALT_SIZE)
        object_key = ObjectKey.generate()
        sealed = object_key.seal(customer_key.kek(salt, bucket, key), _seal_aad(SseMode.CUSTOMER))
        return object_key, CustomerKeySeal(sealed, salt, customer_key.check_value(self._secret, salt))

    def open(self, bucket: str, key: str, seal: CustomerKeySeal, customer_key: CustomerKey | None) -> ObjectKey:
        if customer_key is None:
            raise MissingCustomerKey("the object is encrypted with a customer key; none was given")
        if not hmac.compare_digest(customer_key.check_value(self._secret, seal.salt), seal.check):
            raise WrongCustomerKey("the customer key does not match the object's key")
        return _unseal(customer_key.kek(seal.salt, bucket, key), seal.sealed_key, SseMode.CUSTOMER)

    def reseal(self, bucket: str, key: str, object_key: ObjectKey, new_key: CustomerKey) -> CustomerKeySeal:
        """The same OK sealed under another customer key (fresh salt and check value): an SSE-C
        object re-keyed without its body, which is encrypted under OK, moving."""
        salt = os.urandom(SSEC_SALT_SIZE)
        sealed = object_key.seal(new_key.kek(salt, bucket, key), _seal_aad(SseMode.CUSTOMER))
        return CustomerKeySeal(sealed, salt, new_key.check_value(self._secret, salt))


class ObjectKeys:
    """Every SSE mode behind one pair of calls: a fresh key for a request, the key behind a seal."""

    def __init__(self, provider: KeyProvider, gateway_secret: bytes) -> None:
        self.kms = SseKms(provider)
        self.customer = SseC(gateway_secret)

    async def create(self, bucket: str, key: str, request: SseRequest) -> tuple[ObjectKey, Seal]:
        if isinstance(request, CustomerKeyRequest):
            return self.customer.create(bucket, key, request.key)
        return await self.kms.create(bucket, key, request)

    async def open(self, bucket: str, key: str, seal: Seal, customer_key: CustomerKey | None) -> ObjectKey:
        """OK of a stored object; SSE-C needs the client's key (Missing/WrongCustomerKey otherwise)."""
        if isinstance(seal, CustomerKeySeal):
            return self.customer.open(bucket, key, seal, customer_key)
        return await self.kms.open(bucket, key, seal)
