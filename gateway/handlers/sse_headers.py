"""The SSE response headers S3 returns for an object's mode, and which SSE mode opens it."""
from __future__ import annotations

from gateway.crypto.sse import EncryptionInfo, SseC, SseKms
from gateway.handlers.context import Gateway, RequestContext
from gateway.policy import SSE, SSE_KMS_KEY, SSEC_ALGORITHM, SSEC_KEY_MD5


def mode_headers(ctx: RequestContext, info: EncryptionInfo | None) -> dict[str, str]:
    """aws:kms with the key ARN, AES256, or for SSE-C the algorithm and the client's key MD5."""
    if info is None:
        return {}
    if info.mode == "SSE-C":
        md5 = ctx.request.headers.get(SSEC_KEY_MD5)
        return {SSEC_ALGORITHM: "AES256", SSEC_KEY_MD5: md5} if md5 else {}
    if info.mode == "aws:kms":
        return {SSE: "aws:kms", SSE_KMS_KEY: info.kms_key_arn or ""}
    return {SSE: "AES256"}


def sse_mode(gw: Gateway, mode: str) -> SseC | SseKms:
    """SseC for customer keys, SseKms for aws:kms and AES256 (SSE-S3 is served by the default CMK)."""
    return gw.sse_c if mode == "SSE-C" else gw.sse_kms
