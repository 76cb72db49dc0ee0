"""The SSE modes: make and open the per-object key OK (docs/FORMAT.md §1), one small type each.

    SSE-KMS / SSE-S3:  DK, W = KMS.GenerateDataKey(CMK, ctx)    KEK = HKDF(DK, none, "s3gw/v1/kms/" B "/" K)
    SSE-KMS, Bucket Key (format version 2):
                       BK, W = KMS.GenerateDataKey(CMK, ctx_B)  (shared by a bucket's writes, gateway/datakeys.py)
                       salt random                               KEK = HKDF(BK, salt, "s3gw/v2/kms-bucket-key/" B "/" K)
    SSE-C:             CK from the client, salt random           KEK = HKDF(CK, salt, "s3gw/v1/ssec/" B "/" K)
                       kcv = HMAC(gateway secret, "s3gw/v1/ssec-check" || salt || CK)   (tells a wrong CK)
    all:               sealed = n || GCM(KEK, n, OK, "s3gw/v1/object-key/" MODE)   (v2: "s3gw/v2/object-key/" MODE)

Each mode's seal is its own record type (`KmsSeal`, `CustomerKeySeal`) with exactly the fields it
has; `ObjectKeys` picks the mode from the request or the seal, so no caller dispatches on strings.
The customer key is never the data key and is never stored. Every KMS call names the ``Requester``
it is made for, so key policies and grants decide per client.
"""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from common.aead import Aead, AuthenticationFailed
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import IntegrityError
from gateway.datakeys import NO_CACHE, CacheLimits, DataKey, DataKeys, KeyProvider, Requester

__all__ = ["DataKey", "KeyProvider", "Requester"]  # re-exported: the seals' callers need no other module
FORMAT_VERSION = 1
BUCKET_KEY_FORMAT_VERSION = 2  # objects sealed under a Bucket Key; every other object is still written as 1
BUCKET_KEY_SALT_SIZE = 16
SEALED_KEY_SIZE = 12 + 32 + 16
SSEC_SALT_SIZE = 32
SSEC_CHECK_SIZE = 32
CUSTOMER_KEY_SIZE = 32
S3_ARN_CONTEXT_KEY = "aws:s3:arn"
_SEAL_AAD = b"s3gw/v1/object-key/"
_BUCKET_KEY_SEAL_AAD = b"s3gw/v2/object-key/"
_SSEC_CHECK_LABEL = b"s3gw/v1/ssec-check"


class SseMode(enum.Enum):
    """How an object is encrypted; the value is what S3 headers and the metadata call it."""

    KMS = "aws:kms"
    S3 = "AES256"  # SSE-S3: served like SSE-KMS with the caller's (or the default) key, no client context
    CUSTOMER = "SSE-C"


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
    # Set for an object sealed under a Bucket Key: W then wraps the bucket's key, bound to the bucket's
    # ARN, and this random salt makes the object's KEK its own (format version 2).
    bucket_key_salt: bytes | None = None

    def __post_init__(self) -> None:
        if self.mode is SseMode.CUSTOMER:
            raise ValueError("a KMS seal cannot be of mode SSE-C")
        if self.bucket_key_salt is not None and len(self.bucket_key_salt) != BUCKET_KEY_SALT_SIZE:
            raise ValueError(f"a Bucket Key salt is {BUCKET_KEY_SALT_SIZE} bytes")
        object.__setattr__(self, "kms_context", MappingProxyType(dict(self.kms_context)))

    @property
    def bucket_key(self) -> bool:
        return self.bucket_key_salt is not None

    def context(self, bucket: str, key: str) -> dict[str, str]:
        """The KMS encryption context W is bound to, rebuilt from where the object is read: the object's
        ARN, or the bucket's under a Bucket Key (so a copy elsewhere fails at KMS Decrypt)."""
        if self.bucket_key:
            return bucket_context(bucket, self.kms_context)
        return s3_context(bucket, key, self.kms_context)

    def kek(self, data_key: bytes, bucket: str, key: str) -> Aead:
        return _kms_kek(data_key, self.bucket_key_salt, bucket, key)

    @property
    def aad(self) -> bytes:
        return _seal_aad(self.mode, bucket_key=self.bucket_key)


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


def bucket_context(bucket: str, client_context: Mapping[str, str]) -> dict[str, str]:
    """A Bucket Key's encryption context: the client's pairs plus the bucket's ARN, as S3 uses it."""
    if S3_ARN_CONTEXT_KEY in client_context:
        raise ValueError(f"the encryption context may not set {S3_ARN_CONTEXT_KEY}")
    return {**client_context, S3_ARN_CONTEXT_KEY: f"arn:aws:s3:::{bucket}"}


def _kek(ikm: bytes, salt: bytes | None, label: str, bucket: str, key: str, *, version: int = 1) -> Aead:
    """KEK = HKDF-SHA256(ikm, salt, info = "s3gw/v<version>/<label>/" || bucket || "/" || key)."""
    return Aead.derived(ikm, salt=salt, info=f"s3gw/v{version}/{label}/{bucket}/{key}".encode())


def _kms_kek(data_key: bytes, bucket_key_salt: bytes | None, bucket: str, key: str) -> Aead:
    """The KEK of a KMS seal: from the object's own data key, or from a Bucket Key and the object's salt."""
    if bucket_key_salt is not None:
        return _kek(data_key, bucket_key_salt, "kms-bucket-key", bucket, key, version=2)
    return _kek(data_key, None, "kms", bucket, key)


def _seal_aad(mode: SseMode, *, bucket_key: bool = False) -> bytes:
    """Binds the sealed key to the format version and the mode it was made for (and, in version 2, to
    its Bucket Key: a seal cannot be passed off as the other kind)."""
    if bucket_key:
        return _BUCKET_KEY_SEAL_AAD + mode.value.encode() + b"/bucket-key"
    return _SEAL_AAD + mode.value.encode()


def _unseal(kek: Aead, sealed: bytes, aad: bytes) -> ObjectKey:
    if len(sealed) != SEALED_KEY_SIZE:
        raise IntegrityError("sealed object key has the wrong length")
    try:
        return ObjectKey.unseal(kek, sealed, aad)
    except AuthenticationFailed:
        raise IntegrityError("sealed object key failed authentication") from None


def same_cmk(returned_arn: str, stored_arn: str) -> bool:
    """Whether the KeyId KMS Decrypt returned is the CMK an object's metadata names (docs/FORMAT.md).

    Equal ARNs; or, for a multi-region key (id ``mrk-``...), the same partition, account and key id in any
    region: its replica in this gateway's region has the primary's key id and material, and another region
    in its ARN, so an object written through a gateway of another region (its bucket replicated here)
    reads here. A single-region key's ARN still has to match exactly."""
    if returned_arn == stored_arn:
        return True
    returned, stored = returned_arn.split(":"), stored_arn.split(":")
    if len(returned) != 6 or len(stored) != 6 or not stored[5].startswith("key/mrk-"):
        return False
    return (returned[:3], returned[4:]) == (stored[:3], stored[4:])


class SseKms:
    """SSE-KMS and SSE-S3: OK sealed under a key derived from a KMS data key, the object's own or,
    with a Bucket Key, its bucket's (one GenerateDataKey for many writes)."""

    def __init__(self, provider: KeyProvider | DataKeys, cache: CacheLimits = NO_CACHE) -> None:
        self.data_keys = provider if isinstance(provider, DataKeys) else DataKeys(provider, cache)

    async def create(self, bucket: str, key: str, request: KmsRequest, requester: Requester, *,
                     size: int = 0) -> tuple[ObjectKey, KmsSeal]:
        """A fresh OK and its seal; ``size`` (the plaintext bytes, when known) counts against a Bucket
        Key's byte limit."""
        client_context = {} if request.mode is SseMode.S3 else dict(request.context)
        object_key = ObjectKey.generate()
        if request.bucket_key and request.mode is SseMode.KMS:
            data_key = await self.data_keys.bucket_key(request.key_id, bucket_context(bucket, client_context),
                                                       requester, size)
            salt: bytes | None = os.urandom(BUCKET_KEY_SALT_SIZE)
        else:
            data_key = await self.data_keys.fresh(request.key_id, s3_context(bucket, key, client_context), requester)
            salt = None
        return object_key, self._sealed(bucket, key, object_key, request.mode, data_key, client_context, salt)

    @staticmethod
    def _sealed(bucket: str, key: str, object_key: ObjectKey, mode: SseMode, data_key: DataKey,
                client_context: Mapping[str, str], salt: bytes | None) -> KmsSeal:
        sealed = object_key.seal(_kms_kek(data_key.plaintext, salt, bucket, key),
                                 _seal_aad(mode, bucket_key=salt is not None))
        return KmsSeal(mode, sealed, data_key.key_arn, data_key.ciphertext, client_context, salt)

    async def open(self, bucket: str, key: str, seal: KmsSeal, requester: Requester, *, size: int = 0) -> ObjectKey:
        """One KMS Decrypt (or a cached one); the context is rebuilt from the path, so a copied object
        fails here."""
        try:
            context = seal.context(bucket, key)
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None
        data_key = await self.data_keys.unwrap(seal.wrapped_data_key, context, requester, size)
        if not same_cmk(data_key.key_arn, seal.kms_key_arn):
            raise IntegrityError("the data key belongs to another KMS key than the metadata names")
        return _unseal(seal.kek(data_key.plaintext, bucket, key), seal.sealed_key, seal.aad)

    async def key_arn(self, key_id: str) -> str:
        """The ARN of the CMK ``key_id`` names, as seals record it."""
        return await self.data_keys.key_arn(key_id)

    async def tag_key(self, key_id: str, tags: dict[str, str]) -> None:
        await self.data_keys.tag_key(key_id, tags)

    async def reseal(self, bucket: str, key: str, object_key: ObjectKey, seal: KmsSeal, to_key_id: str,
                     requester: Requester) -> KmsSeal:
        """The same OK sealed under a fresh data key of ``to_key_id`` (one GenerateDataKey).

        The body and a multipart manifest are encrypted under OK, not under the data key, so only
        the seal changes: a rewrap moves no object bytes. Mode and client context are kept, so the
        new data key is bound to the same encryption context the old one was; an object under a
        Bucket Key gets a data key of its own (version 1), never the bucket's cached one.
        """
        data_key = await self.data_keys.fresh(to_key_id, s3_context(bucket, key, seal.kms_context), requester)
        return self._sealed(bucket, key, object_key, seal.mode, data_key, seal.kms_context, None)


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
        return _unseal(customer_key.kek(seal.salt, bucket, key), seal.sealed_key, _seal_aad(SseMode.CUSTOMER))

    def reseal(self, bucket: str, key: str, object_key: ObjectKey, new_key: CustomerKey) -> CustomerKeySeal:
        """The same OK sealed under another customer key (fresh salt and check value): an SSE-C
        object re-keyed without its body, which is encrypted under OK, moving."""
        salt = os.urandom(SSEC_SALT_SIZE)
        sealed = object_key.seal(new_key.kek(salt, bucket, key), _seal_aad(SseMode.CUSTOMER))
        return CustomerKeySeal(sealed, salt, new_key.check_value(self._secret, salt))


class ObjectKeys:
    """Every SSE mode behind one pair of calls: a fresh key for a request, the key behind a seal."""

    def __init__(self, provider: KeyProvider | DataKeys, gateway_secret: bytes, cache: CacheLimits = NO_CACHE) -> None:
        self.kms = SseKms(provider, cache)
        self.customer = SseC(gateway_secret)

    async def create(self, bucket: str, key: str, request: SseRequest, requester: Requester, *,
                     size: int = 0) -> tuple[ObjectKey, Seal]:
        if isinstance(request, CustomerKeyRequest):
            return self.customer.create(bucket, key, request.key)
        return await self.kms.create(bucket, key, request, requester, size=size)

    async def open(self, bucket: str, key: str, seal: Seal, customer_key: CustomerKey | None,
                   requester: Requester, *, size: int = 0) -> ObjectKey:
        """OK of a stored object; SSE-C needs the client's key (Missing/WrongCustomerKey otherwise)."""
        if isinstance(seal, CustomerKeySeal):
            return self.customer.open(bucket, key, seal, customer_key)
        return await self.kms.open(bucket, key, seal, requester, size=size)
