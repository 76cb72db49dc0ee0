"""The SSE headers: which encryption a request asks for (with the bucket's configured policy), the
SSE-C keys it carries, and the SSE headers an answer reports.

S3's own rules apply: an explicit ``x-amz-server-side-encryption`` or SSE-C request is honoured
even in a pass-through bucket (a client asking for encryption never gets plaintext stored), SSE-C
keys must be well formed and sent over TLS, and SSE-C cannot be combined with SSE-KMS.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Mapping

from gateway.bucketencryption import BucketDefaults, toml_defaults
from gateway.config import GatewayConfig
from gateway.crypto.metadata import EncryptionInfo
from gateway.crypto.sse import (S3_ARN_CONTEXT_KEY, CustomerKey, CustomerKeyRequest, KmsRequest, SseMode,
                                SseRequest)
from gateway.s3errors import S3Error, access_denied

SSE = "x-amz-server-side-encryption"
SSE_KMS_KEY = "x-amz-server-side-encryption-aws-kms-key-id"
SSE_CONTEXT = "x-amz-server-side-encryption-context"
SSEC_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
SSEC_KEY = "x-amz-server-side-encryption-customer-key"
SSEC_KEY_MD5 = "x-amz-server-side-encryption-customer-key-md5"
SSE_BUCKET_KEY = "x-amz-server-side-encryption-bucket-key-enabled"
DESTINATION_SSE_HEADERS = (SSE, SSE_KMS_KEY, SSE_CONTEXT, SSEC_ALGORITHM, SSEC_KEY, SSEC_KEY_MD5, SSE_BUCKET_KEY)
COPY_SOURCE_SSEC_PREFIX = "x-amz-copy-source-server-side-encryption-customer-"
# Every SSE header the gateway consumes; none is ever sent upstream (customer keys above all).
SSE_HEADERS = (*DESTINATION_SSE_HEADERS,
               *(COPY_SOURCE_SSEC_PREFIX + suffix for suffix in ("algorithm", "key", "key-md5")))


# The KeyId forms KMS accepts (key id, multi-region key id, alias name, key or alias ARN), at most 2048 chars.
_KEY_ID = r"(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|mrk-[0-9a-fA-F]{32})"
_ALIAS = r"alias/[a-zA-Z0-9/_-]{1,250}"
_KMS_KEY_ID = re.compile(rf"{_KEY_ID}|{_ALIAS}|arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{{12}}:(?:key/{_KEY_ID}|{_ALIAS})")


def _invalid(message: str, name: str, value: str = "") -> S3Error:
    return S3Error("InvalidArgument", message, 400, ArgumentName=name, ArgumentValue=value)


def customer_key(headers: Mapping[str, str], *, secure: bool, allow_http: bool) -> CustomerKey | None:
    """The SSE-C key the request carries (validated as S3 does), or None when it carries none."""
    present = [h for h in (SSEC_ALGORITHM, SSEC_KEY, SSEC_KEY_MD5) if h in headers]
    if not present:
        return None
    if not (secure or allow_http):
        raise S3Error("InvalidRequest", "Requests specifying Server Side Encryption with Customer "
                      "provided keys must be made over a secure connection.", 400)
    if len(present) < 3:
        raise _invalid("Requests specifying Server Side Encryption with Customer provided keys must "
                       "provide an appropriate secret key and its MD5.", present[0])
    algorithm = headers[SSEC_ALGORITHM]
    if algorithm != "AES256":
        raise S3Error("InvalidEncryptionAlgorithmError", "The Encryption request you specified is not valid. "
                      "Supported value: AES256.", 400, ArgumentName=SSEC_ALGORITHM, ArgumentValue=algorithm)
    try:
        key = base64.b64decode(headers[SSEC_KEY], validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise _invalid("The secret key was invalid for the specified algorithm.", SSEC_KEY)
    if base64.b64encode(hashlib.md5(key).digest()).decode() != headers[SSEC_KEY_MD5].strip():
        raise _invalid("The calculated MD5 hash of the key did not match the hash that was provided.",
                       SSEC_KEY_MD5)
    return CustomerKey(key)


def copy_source_customer_key(headers: Mapping[str, str], *, secure: bool, allow_http: bool) -> CustomerKey | None:
    """The copy source's SSE-C key (x-amz-copy-source-server-side-encryption-customer-*), validated as
    the destination's is."""
    renamed = {target: headers[COPY_SOURCE_SSEC_PREFIX + suffix]
               for target, suffix in ((SSEC_ALGORITHM, "algorithm"), (SSEC_KEY, "key"), (SSEC_KEY_MD5, "key-md5"))
               if COPY_SOURCE_SSEC_PREFIX + suffix in headers}
    return customer_key(renamed, secure=secure, allow_http=allow_http)


def check_kms_key_id(key_id: str) -> None:
    """A key id no KMS key can have is S3's 400 KMS.NotFoundException ("Invalid keyId ..."), found here
    rather than passed to the key service (whose ValidationException would be a 500); junk is not echoed."""
    if not _KMS_KEY_ID.fullmatch(key_id):
        shown = f" {key_id}" if len(key_id) <= 256 and key_id.isprintable() and key_id.isascii() else ""
        raise S3Error("KMS.NotFoundException", f"Invalid keyId{shown}", 400)


def _kms_context(headers: Mapping[str, str]) -> dict[str, str]:
    raw = headers.get(SSE_CONTEXT)
    if not raw:
        return {}
    try:
        value = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _invalid("The encryption context must be base64-encoded JSON of string pairs.", SSE_CONTEXT, raw)
    if S3_ARN_CONTEXT_KEY in value:
        raise _invalid(f"The encryption context may not set {S3_ARN_CONTEXT_KEY}.", SSE_CONTEXT, raw)
    return value


def _bucket_key(headers: Mapping[str, str], default: bool) -> bool:
    """x-amz-server-side-encryption-bucket-key-enabled: "true" or "false" (any case), else S3's 400
    InvalidArgument; the bucket's BucketKeyEnabled when the request does not say."""
    value = headers.get(SSE_BUCKET_KEY)
    if value is None:
        return default
    if value.strip().lower() not in ("true", "false"):
        raise _invalid("The header x-amz-server-side-encryption-bucket-key-enabled must be true or false.",
                       SSE_BUCKET_KEY, value)
    return value.strip().lower() == "true"


def decide_put(cfg: GatewayConfig, bucket: str, headers: Mapping[str, str], *, secure: bool,
               defaults: BucketDefaults | None = None) -> SseRequest | None:
    """The encryption for a PutObject, or None to store the body unchanged (a pass-through bucket).

    The request's headers win; what they leave open comes from ``defaults``, the bucket's effective
    default encryption (gateway/bucketencryption.py: its S3 API configuration, else the TOML settings),
    or from the TOML settings alone when None. A bucket whose configuration blocks SSE-C refuses SSE-C
    writes with 403 AccessDenied, as S3 does."""
    if defaults is None:
        defaults = toml_defaults(cfg, bucket)
    key = customer_key(headers, secure=secure, allow_http=cfg.allow_ssec_over_http)
    requested = headers.get(SSE)
    if key is not None:
        if requested is not None or SSE_KMS_KEY in headers:
            raise _invalid("Server Side Encryption with Customer provided key is incompatible with the "
                           "encryption method specified", SSE, requested or "")
        refuse_blocked_ssec(defaults)
        return CustomerKeyRequest(key)
    if requested is None and SSE_KMS_KEY in headers:
        raise _invalid("Server Side Encryption with AWS KMS managed key requires HTTP header "
                       "x-amz-server-side-encryption : aws:kms", SSE_KMS_KEY, headers[SSE_KMS_KEY])
    bucket_key = _bucket_key(headers, defaults.bucket_key)
    if requested is None:
        if defaults.mode is None:
            return None
        requested = defaults.mode.value
    if requested not in (SseMode.KMS.value, SseMode.S3.value):
        raise _invalid("The encryption method specified is not supported", SSE, requested)
    mode = SseMode(requested)
    key_id = headers.get(SSE_KMS_KEY) if mode is SseMode.KMS else None
    if key_id:
        check_kms_key_id(key_id)
    context = _kms_context(headers)  # checked for SSE-S3 too, though S3 has no context for it
    return KmsRequest(mode, key_id or defaults.kms_key_id or None, context if mode is SseMode.KMS else {},
                      bucket_key=bucket_key and mode is SseMode.KMS)


def refuse_blocked_ssec(defaults: BucketDefaults) -> None:
    """S3's 403 for an SSE-C write (PutObject, CopyObject, CreateMultipartUpload, UploadPart, UploadPartCopy)
    into a bucket whose encryption configuration blocks SSE-C: an upload begun before the block gets no
    further parts either."""
    if defaults.block_ssec:
        raise access_denied("Requests specifying Server Side Encryption with Customer provided keys are "
                            "blocked for this bucket (BlockedEncryptionTypes SSE-C).")


def mode_headers(info: EncryptionInfo | None, customer_key: CustomerKey | None) -> dict[str, str]:
    """The SSE headers of an answer about an object stored as ``info``: aws:kms with the key ARN,
    AES256, or for SSE-C the algorithm and the MD5 of the client's key (when it sent one)."""
    if info is None:
        return {}
    if info.mode is SseMode.CUSTOMER:
        return {SSEC_ALGORITHM: "AES256", SSEC_KEY_MD5: customer_key.md5_b64} if customer_key else {}
    if info.mode is SseMode.KMS:
        bucket_key = {SSE_BUCKET_KEY: "true"} if info.bucket_key else {}
        return {SSE: SseMode.KMS.value, SSE_KMS_KEY: info.kms_key_arn or "", **bucket_key}
    return {SSE: SseMode.S3.value}
