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
from dataclasses import replace
from typing import Mapping

from gateway.crypto.sse import (
    KMS_MODES,
    SEALED_KEY_SIZE,
    SSEC_MODE,
    SSEC_SALT_SIZE,
    EncryptionInfo,
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
UPLOAD_TAG_SIZE = 16
SSEC_CHECK_SIZE = 32
SUPPORTED_VERSIONS = frozenset({"1"})
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def is_reserved(header_name: str) -> bool:
    """True for a header in the gateway's namespace (case-insensitive)."""
    return header_name.lower().startswith(RESERVED_PREFIX)


def encode(info: EncryptionInfo) -> dict[str, str]:
    """Header name -> ASCII value for every field of ``info`` that is set."""
    headers = {
        VERSION: str(info.version),
        MODE: info.mode,
        SEALED_KEY: b64u(info.sealed_key),
    }
    if info.params is not None:
        headers[PARAMS] = b64u(info.params.encode())
    if info.upload_tag is not None:
        headers[UPLOAD_TAG] = info.upload_tag
    if info.plaintext_size is not None:
        headers[PLAINTEXT_SIZE] = str(info.plaintext_size)
    if info.kms_key_arn is not None:
        headers[KMS_KEY_ARN] = info.kms_key_arn
    if info.wrapped_data_key is not None:
        headers[WRAPPED_DATA_KEY] = b64u(info.wrapped_data_key)
    if info.kms_context:
        headers[KMS_CONTEXT] = b64u(json.dumps(dict(info.kms_context), sort_keys=True, separators=(",", ":")).encode())
    if info.ssec_salt is not None:
        headers[SSEC_SALT] = b64u(info.ssec_salt)
    if info.ssec_check is not None:
        headers[SSEC_CHECK] = b64u(info.ssec_check)
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
    mode = _required(ours, MODE)
    tag = ours.get(UPLOAD_TAG)
    if tag is not None:
        _sized(ours, UPLOAD_TAG, UPLOAD_TAG_SIZE)
        if PARAMS in ours or PLAINTEXT_SIZE in ours:
            raise IntegrityError("multipart metadata may not carry single-stream parameters")
    info = EncryptionInfo(
        version=int(version),
        mode=mode,
        params=None if tag is not None else StreamParams.decode(unb64u(_required(ours, PARAMS))),
        sealed_key=_sized(ours, SEALED_KEY, SEALED_KEY_SIZE),
        plaintext_size=_size(ours.get(PLAINTEXT_SIZE)),
        upload_tag=tag,
    )
    if mode in KMS_MODES:
        return _with_kms(info, ours)
    if mode == SSEC_MODE:
        return _with_ssec(info, ours)
    raise IntegrityError(f"unknown encryption mode {mode!r}")


def _with_kms(info: EncryptionInfo, ours: Mapping[str, str]) -> EncryptionInfo:
    wrapped = unb64u(_required(ours, WRAPPED_DATA_KEY))
    if not wrapped:
        raise IntegrityError("empty wrapped data key")
    return replace(
        info,
        kms_key_arn=_required(ours, KMS_KEY_ARN),
        wrapped_data_key=wrapped,
        kms_context=_context(ours.get(KMS_CONTEXT)),
    )


def _with_ssec(info: EncryptionInfo, ours: Mapping[str, str]) -> EncryptionInfo:
    return replace(
        info,
        ssec_salt=_sized(ours, SSEC_SALT, SSEC_SALT_SIZE),
        ssec_check=_sized(ours, SSEC_CHECK, SSEC_CHECK_SIZE),
    )


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


def _size(value: str | None) -> int | None:
    if value is None:
        return None
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
