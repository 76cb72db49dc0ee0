"""The reserved upstream metadata (``x-amz-meta-x-gw-*``) that carries EncryptionInfo.

S3 user metadata is limited to 2 KB (names + values, including the client's own metadata), so names
are one or two letters and binary values are unpadded base64url. The server strips every reserved
header from client requests and from responses, so clients can neither forge nor see them.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass
from typing import Mapping

from gateway.crypto.sse import (
    BUCKET_KEY_FORMAT_VERSION,
    BUCKET_KEY_SALT_SIZE,
    FORMAT_VERSION,
    SEALED_KEY_SIZE,
    SSEC_CHECK_SIZE,
    SSEC_SALT_SIZE,
    CustomerKeySeal,
    KmsSeal,
    Seal,
    SseMode,
)
from gateway.crypto.stream import IntegrityError, StreamParams

RESERVED_PREFIX = "x-amz-meta-x-gw-"
VERSION = RESERVED_PREFIX + "v"
MODE = RESERVED_PREFIX + "m"
PARAMS = RESERVED_PREFIX + "p"
SEALED_KEY = RESERVED_PREFIX + "k"
PLAINTEXT_SIZE = RESERVED_PREFIX + "s"
KMS_KEY_ARN = RESERVED_PREFIX + "a"
WRAPPED_DATA_KEY = RESERVED_PREFIX + "d"
KMS_CONTEXT = RESERVED_PREFIX + "c"
SSEC_SALT = RESERVED_PREFIX + "cs"
SSEC_CHECK = RESERVED_PREFIX + "cc"
UPLOAD_TAG = RESERVED_PREFIX + "u"
BUCKET_KEY_SALT = RESERVED_PREFIX + "b"
SEALED_CHECKSUM = RESERVED_PREFIX + "h"
UPLOAD_TAG_SIZE = 16
SUPPORTED_VERSIONS = frozenset({"1", "2"})
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def is_reserved(header_name: str) -> bool:
    """True for a header in the gateway's namespace (case-insensitive)."""
    return header_name.lower().startswith(RESERVED_PREFIX)


@dataclass(frozen=True)
class SingleStream:
    """An object stored as one segment stream (PutObject, CopyObject)."""

    params: StreamParams
    plaintext_size: int
    sealed_checksum: bytes | None = None  # the plaintext checksum, sealed under OK (gateway/crypto/checksum.py)


@dataclass(frozen=True)
class Multipart:
    """An object stored as one stream per part; the sealed manifest named by ``upload_tag`` lists them."""

    upload_tag: str


@dataclass(frozen=True)
class EncryptionInfo:
    """Everything decryption needs, as the reserved metadata holds it."""

    seal: Seal
    layout: SingleStream | Multipart
    version: int = 0  # 0: the version the seal is written in (2 under a Bucket Key, else 1)

    def __post_init__(self) -> None:
        if not self.version:
            object.__setattr__(self, "version", _version_of(self.seal))
        if str(self.version) not in SUPPORTED_VERSIONS:
            raise ValueError(f"format version {self.version} cannot be written or read")
        if self.version != _version_of(self.seal):
            raise ValueError(f"format version {self.version} does not fit the seal "
                             "(version 2 is exactly the objects under a Bucket Key)")

    @property
    def bucket_key(self) -> bool:
        """The object's key is derived from a Bucket Key (S3 echoes x-amz-server-side-encryption-bucket-key-enabled)."""
        return isinstance(self.seal, KmsSeal) and self.seal.bucket_key

    @property
    def mode(self) -> SseMode:
        return self.seal.mode

    @property
    def kms_key_arn(self) -> str | None:
        return self.seal.kms_key_arn if isinstance(self.seal, KmsSeal) else None


def _version_of(seal: Seal) -> int:
    return BUCKET_KEY_FORMAT_VERSION if isinstance(seal, KmsSeal) and seal.bucket_key else FORMAT_VERSION


def encode(info: EncryptionInfo) -> dict[str, str]:
    """Header name -> ASCII value for every field of ``info``."""
    headers = {VERSION: str(info.version), MODE: info.mode.value, SEALED_KEY: b64u(info.seal.sealed_key)}
    layout, seal = info.layout, info.seal
    if isinstance(layout, SingleStream):
        headers[PARAMS] = b64u(layout.params.encode())
        headers[PLAINTEXT_SIZE] = str(layout.plaintext_size)
        if layout.sealed_checksum is not None:
            headers[SEALED_CHECKSUM] = b64u(layout.sealed_checksum)
    else:
        headers[UPLOAD_TAG] = layout.upload_tag
    if isinstance(seal, KmsSeal):
        headers[KMS_KEY_ARN] = seal.kms_key_arn
        headers[WRAPPED_DATA_KEY] = b64u(seal.wrapped_data_key)
        if seal.kms_context:
            headers[KMS_CONTEXT] = b64u(json.dumps(dict(seal.kms_context), sort_keys=True,
                                                   separators=(",", ":")).encode())
        if seal.bucket_key_salt is not None:
            headers[BUCKET_KEY_SALT] = b64u(seal.bucket_key_salt)
    else:
        headers[SSEC_SALT] = b64u(seal.salt)
        headers[SSEC_CHECK] = b64u(seal.check)
    return headers


def decode(headers: Mapping[str, str]) -> EncryptionInfo | None:
    """EncryptionInfo from upstream headers; None for an object with none of our metadata.

    Partial, malformed or unknown-version metadata raises IntegrityError: such an object must not
    be served as plaintext, nor decrypted with guessed parameters.
    """
    ours = {name.lower(): value.strip() for name, value in headers.items() if is_reserved(name)}
    if not ours:
        return None
    version = _required(ours, VERSION)
    if version not in SUPPORTED_VERSIONS:
        raise IntegrityError(f"unknown encryption format version {version!r}")
    try:
        mode = SseMode(_required(ours, MODE))
    except ValueError:
        raise IntegrityError(f"unknown encryption mode {ours[MODE]!r}") from None
    sealed = _sized(ours, SEALED_KEY, SEALED_KEY_SIZE)
    seal = _ssec_seal(sealed, ours) if mode is SseMode.CUSTOMER else _kms_seal(mode, sealed, ours)
    if int(version) != _version_of(seal):
        raise IntegrityError(f"format version {version} does not fit the metadata: version 2 objects, and only "
                             "they, carry a Bucket Key salt")
    return EncryptionInfo(seal=seal, layout=_layout(ours), version=int(version))


def _layout(ours: Mapping[str, str]) -> SingleStream | Multipart:
    tag = ours.get(UPLOAD_TAG)
    if tag is not None:
        _sized(ours, UPLOAD_TAG, UPLOAD_TAG_SIZE)
        if PARAMS in ours or PLAINTEXT_SIZE in ours or SEALED_CHECKSUM in ours:
            raise IntegrityError("multipart metadata may not carry single-stream parameters")
        return Multipart(tag)
    checksum = unb64u(_required(ours, SEALED_CHECKSUM)) if SEALED_CHECKSUM in ours else None
    return SingleStream(StreamParams.decode(unb64u(_required(ours, PARAMS))), _size(_required(ours, PLAINTEXT_SIZE)),
                        checksum)


def _kms_seal(mode: SseMode, sealed: bytes, ours: Mapping[str, str]) -> KmsSeal:
    wrapped = unb64u(_required(ours, WRAPPED_DATA_KEY))
    if not wrapped:
        raise IntegrityError("empty wrapped data key")
    salt = _sized(ours, BUCKET_KEY_SALT, BUCKET_KEY_SALT_SIZE) if BUCKET_KEY_SALT in ours else None
    if salt is not None and mode is not SseMode.KMS:
        raise IntegrityError("only aws:kms objects are sealed under a Bucket Key")
    return KmsSeal(mode, sealed, _required(ours, KMS_KEY_ARN), wrapped, _context(ours.get(KMS_CONTEXT)), salt)


def _ssec_seal(sealed: bytes, ours: Mapping[str, str]) -> CustomerKeySeal:
    if BUCKET_KEY_SALT in ours:
        raise IntegrityError("only aws:kms objects are sealed under a Bucket Key")
    return CustomerKeySeal(sealed, _sized(ours, SSEC_SALT, SSEC_SALT_SIZE), _sized(ours, SSEC_CHECK, SSEC_CHECK_SIZE))


def _required(ours: Mapping[str, str], name: str) -> str:
    value = ours.get(name)
    if not value:
        raise IntegrityError(f"encryption metadata lacks {name}")
    return value


def _sized(ours: Mapping[str, str], name: str, size: int) -> bytes:
    raw = unb64u(_required(ours, name))
    if len(raw) != size:
        raise IntegrityError(f"{name} must decode to {size} bytes, got {len(raw)}")
    return raw


def _size(value: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise IntegrityError(f"malformed plaintext size {value!r}")
    return int(value)


def _context(value: str | None) -> dict[str, str]:
    if value is None:
        return {}
    try:
        context = json.loads(unb64u(value))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise IntegrityError("malformed encryption context") from None
    if not isinstance(context, dict) or not all(isinstance(v, str) for v in context.values()):
        raise IntegrityError("encryption context must map strings to strings")
    return context


def new_upload_tag() -> str:
    """A random name for a multipart object's manifest (b64u of 16 random bytes)."""
    return b64u(os.urandom(UPLOAD_TAG_SIZE))


def b64u(raw: bytes) -> str:
    """Unpadded base64url, the encoding of every binary value the gateway stores or hands out."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64u(value: str) -> bytes:
    if not _B64URL.fullmatch(value) or len(value) % 4 == 1:
        raise IntegrityError("malformed base64url value in encryption metadata")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise IntegrityError("malformed base64url value in encryption metadata") from None
