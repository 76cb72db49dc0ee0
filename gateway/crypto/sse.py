"""The SSE modes behind one interface: make and open the per-object key (docs/FORMAT.md).

Every object gets a fresh random 32-byte object key OK that encrypts its stream. OK is sealed
(AES-256-GCM) under a key-encryption key bound to the bucket and key name: derived from a KMS data key
for SSE-KMS / SSE-S3, or from the customer's key for SSE-C. The customer key is never the data key
and is never stored; one KMS call per object.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Mapping, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.stream import IntegrityError, StreamParams

FORMAT_VERSION = 1
OBJECT_KEY_SIZE = 32
SEAL_NONCE_SIZE = 12
SEALED_KEY_SIZE = SEAL_NONCE_SIZE + OBJECT_KEY_SIZE + 16
SSEC_SALT_SIZE = 32
SSEC_KEY_SIZE = 32
S3_ARN_CONTEXT_KEY = "aws:s3:arn"
KMS_MODES = frozenset({"aws:kms", "AES256"})
SSEC_MODE = "SSE-C"
_SEAL_AAD = b"s3gw/v1/object-key/"
_SSEC_CHECK_LABEL = b"s3gw/v1/ssec-check"


@dataclass(frozen=True)
class DataKey:
    """A KMS data key: plaintext, the KMS ciphertext blob, and the ARN of the CMK that made it."""

    plaintext: bytes
    ciphertext: bytes
    key_arn: str


class KeyProvider(Protocol):
    """What the gateway needs from a KMS (embedded or remote)."""

    async def generate_data_key(self, key_id: str | None, context: Mapping[str, str]) -> DataKey:
        """A fresh AES-256 data key; key_id None means the gateway's default key."""

    async def decrypt_data_key(self, ciphertext: bytes, context: Mapping[str, str]) -> DataKey:
        """Unwrap a data key; raises the provider's own error if the context does not match."""


class WrongCustomerKey(Exception):
    """The SSE-C key given does not match the stored check value (S3: 403 AccessDenied)."""


class MissingCustomerKey(WrongCustomerKey):
    """An SSE-C object was read without a customer key (S3: 400 InvalidRequest)."""


@dataclass(frozen=True)
class SseRequest:
    """What the client asked for on this request, parsed by the server from the SSE headers.

    mode is "aws:kms", "AES256" or "SSE-C"; AES256 (SSE-S3) is served like aws:kms (with the key
    the caller picked, None meaning the gateway's default) and keeps its name, so responses report
    what the client asked for. Its kms_context is ignored: S3 has none for SSE-S3.
    """

    mode: str
    kms_key_id: str | None = None
    kms_context: Mapping[str, str] = field(default_factory=dict)
    customer_key: bytes | None = None


@dataclass(frozen=True)
class EncryptionInfo:
    """Everything decryption needs; round-trips through gateway.crypto.metadata."""

    version: int
    mode: str
    params: StreamParams | None  # None for a multipart object: each part carries its own
    sealed_key: bytes
    plaintext_size: int | None
    kms_key_arn: str | None = None
    wrapped_data_key: bytes | None = None
    kms_context: Mapping[str, str] = field(default_factory=dict)
    ssec_salt: bytes | None = None
    ssec_check: bytes | None = None
    upload_tag: str | None = None  # multipart objects: names the manifest (gateway/crypto/multipart.py)


class SseMode(Protocol):
    """One way of making and opening object keys."""

    name: str

    async def create(
        self, bucket: str, key: str, request: SseRequest, plaintext_size: int | None
    ) -> tuple[bytes, EncryptionInfo]:
        """A fresh object key and the metadata that reopens it."""

    async def open(self, bucket: str, key: str, info: EncryptionInfo, request: SseRequest | None) -> bytes:
        """The object key of a stored object; refuses metadata that does not belong here."""


def s3_context(bucket: str, key: str, client_context: Mapping[str, str]) -> dict[str, str]:
    """The KMS encryption context: the client's pairs plus aws:s3:arn, which only S3 may set."""
    if S3_ARN_CONTEXT_KEY in client_context:
        raise ValueError(f"the encryption context may not set {S3_ARN_CONTEXT_KEY}")
    return {**client_context, S3_ARN_CONTEXT_KEY: f"arn:aws:s3:::{bucket}/{key}"}


def _kek(ikm: bytes, salt: bytes | None, label: str, bucket: str, key: str) -> AESGCM:
    """KEK = HKDF-SHA256(ikm, salt, info = "s3gw/v1/<label>/" || bucket || "/" || key)."""
    info = f"s3gw/v1/{label}/{bucket}/{key}".encode()
    return AESGCM(HKDF(hashes.SHA256(), 32, salt, info).derive(ikm))


def _seal_aad(mode: str) -> bytes:
    """Binds the sealed key to the format version and the mode it was made for."""
    return _SEAL_AAD + mode.encode()


def _seal(kek: AESGCM, object_key: bytes, mode: str) -> bytes:
    """nonce(12) || AES-256-GCM(KEK, nonce, OK, aad) (32 + 16 bytes)."""
    nonce = os.urandom(SEAL_NONCE_SIZE)
    return nonce + kek.encrypt(nonce, object_key, _seal_aad(mode))


def _unseal(kek: AESGCM, sealed: bytes, mode: str) -> bytes:
    if len(sealed) != SEALED_KEY_SIZE:
        raise IntegrityError("sealed object key has the wrong length")
    try:
        return kek.decrypt(sealed[:SEAL_NONCE_SIZE], sealed[SEAL_NONCE_SIZE:], _seal_aad(mode))
    except InvalidTag:
        raise IntegrityError("sealed object key failed authentication") from None


class SseKms:
    """SSE-KMS and SSE-S3: OK sealed under a key derived from a per-object KMS data key."""

    name = "aws:kms"

    def __init__(self, provider: KeyProvider) -> None:
        self._provider = provider

    async def create(
        self, bucket: str, key: str, request: SseRequest, plaintext_size: int | None
    ) -> tuple[bytes, EncryptionInfo]:
        _require_mode(request.mode in KMS_MODES, request.mode)
        # SSE-S3 has no client context in S3; its key is whatever the caller chose (None: the default).
        client_context = {} if request.mode == "AES256" else dict(request.kms_context)
        data_key = await self._provider.generate_data_key(request.kms_key_id, s3_context(bucket, key, client_context))
        object_key = os.urandom(OBJECT_KEY_SIZE)
        kek = _kek(data_key.plaintext, None, "kms", bucket, key)
        info = EncryptionInfo(
            version=FORMAT_VERSION,
            mode=request.mode,
            params=StreamParams.new(),
            sealed_key=_seal(kek, object_key, request.mode),
            plaintext_size=plaintext_size,
            kms_key_arn=data_key.key_arn,
            wrapped_data_key=data_key.ciphertext,
            kms_context=client_context,
        )
        return object_key, info

    async def open(self, bucket: str, key: str, info: EncryptionInfo, request: SseRequest | None) -> bytes:
        """One KMS Decrypt; the context is rebuilt from the path, so a copied object fails here."""
        _check_version(info)
        if info.mode not in KMS_MODES or info.wrapped_data_key is None:
            raise IntegrityError(f"metadata of mode {info.mode!r} cannot be opened with SSE-KMS")
        try:
            context = s3_context(bucket, key, info.kms_context)
        except ValueError as exc:
            raise IntegrityError(str(exc)) from None
        data_key = await self._provider.decrypt_data_key(info.wrapped_data_key, context)
        if data_key.key_arn != info.kms_key_arn:
            raise IntegrityError("the data key belongs to another KMS key than the metadata names")
        return _unseal(_kek(data_key.plaintext, None, "kms", bucket, key), info.sealed_key, info.mode)


class SseC:
    """SSE-C: OK sealed under a key derived from the customer's key and a random salt.

    A keyed check value (HMAC under a gateway secret, so it is no offline oracle for the customer
    key) lets a wrong key be refused before anything is unsealed or decrypted.
    """

    name = SSEC_MODE

    def __init__(self, gateway_secret: bytes) -> None:
        if len(gateway_secret) < 16:
            raise ValueError("the gateway secret must be at least 16 bytes")
        self._secret = gateway_secret

    async def create(
        self, bucket: str, key: str, request: SseRequest, plaintext_size: int | None
    ) -> tuple[bytes, EncryptionInfo]:
        _require_mode(request.mode == SSEC_MODE, request.mode)
        customer_key = request.customer_key
        if customer_key is None or len(customer_key) != SSEC_KEY_SIZE:
            raise ValueError("SSE-C needs a 32-byte customer key")
        salt = os.urandom(SSEC_SALT_SIZE)
        object_key = os.urandom(OBJECT_KEY_SIZE)
        info = EncryptionInfo(
            version=FORMAT_VERSION,
            mode=SSEC_MODE,
            params=StreamParams.new(),
            sealed_key=_seal(_kek(customer_key, salt, "ssec", bucket, key), object_key, SSEC_MODE),
            plaintext_size=plaintext_size,
            ssec_salt=salt,
            ssec_check=self._check_value(salt, customer_key),
        )
        return object_key, info

    async def open(self, bucket: str, key: str, info: EncryptionInfo, request: SseRequest | None) -> bytes:
        _check_version(info)
        if info.mode != SSEC_MODE or info.ssec_salt is None or info.ssec_check is None:
            raise IntegrityError(f"metadata of mode {info.mode!r} cannot be opened with SSE-C")
        if request is None or request.customer_key is None:
            raise MissingCustomerKey("the object is encrypted with a customer key; none was given")
        if not hmac.compare_digest(self._check_value(info.ssec_salt, request.customer_key), info.ssec_check):
            raise WrongCustomerKey("the customer key does not match the object's key")
        kek = _kek(request.customer_key, info.ssec_salt, "ssec", bucket, key)
        return _unseal(kek, info.sealed_key, SSEC_MODE)

    def _check_value(self, salt: bytes, customer_key: bytes) -> bytes:
        """kcv = HMAC-SHA256(gateway_secret, "s3gw/v1/ssec-check" || salt || CK)."""
        return hmac.new(self._secret, _SSEC_CHECK_LABEL + salt + customer_key, hashlib.sha256).digest()


def _require_mode(accepted: bool, mode: str) -> None:
    if not accepted:
        raise ValueError(f"this SSE mode cannot serve {mode!r}")


def _check_version(info: EncryptionInfo) -> None:
    if info.version != FORMAT_VERSION:
        raise IntegrityError(f"unknown encryption format version {info.version}")
