"""PutBucketEncryption, GetBucketEncryption, DeleteBucketEncryption: answered by the gateway itself.

Forwarded, the configuration would do harm: the gateway would go on encrypting under its own defaults
while the upstream encrypted the gateway's ciphertext a second time, and GetBucketEncryption would say
nothing of what the gateway does. So for an encrypting bucket the gateway keeps the configuration
(gateway/bucketencryption.py) and writes without SSE headers get it; a TOML pass-through bucket is the
upstream's business and the calls are forwarded unchanged.

S3's answers, as S3 gives them: a missing bucket is 404 NoSuchBucket before the body is looked at; the
document must follow S3's schema with exactly one Rule (400 MalformedXML otherwise, also for an
SSEAlgorithm S3 does not know); KMSMasterKeyID only with aws:kms (400 InvalidArgument); the key must exist
(DescribeKey, its KMS error as S3 reports it: 400 KMS.NotFoundException...). Put answers 200 with no body,
Delete 204 (also when there was nothing to delete), Get the configuration or, when none was put, the
effective default: aws:kms under the bucket's CMK, as modern S3 answers its SSE-S3 default rather than 404.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from aiohttp import web

from gateway.bucketencryption import (BLOCK_NONE, BLOCK_SSEC, KMS, SSE_S3, EncryptionConfig, is_passthrough,
                                      toml_defaults)
from gateway.config import DEFAULT_KEY_ALIAS
from gateway.crypto.sse import bucket_context
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import forward
from gateway.handlers.request_body import read_body
from gateway.s3errors import S3Error, malformed_xml
from gateway.s3xml import S3_NS, local, parse_request, xml_text
from gateway.sseheaders import check_kms_key_id

MAX_CONFIGURATION_BODY = 64 * 1024  # one rule: a few hundred bytes
# Valid in S3 (its ServerSideEncryption enum) but not something the gateway can do.
_UNSUPPORTED_ALGORITHMS = ("aws:kms:dsse", "aws:fsx", "aws:backup")
_XML_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# Each container element's children: name -> (whether it is a text element, whether it may repeat).
_SCHEMA: dict[str, dict[str, tuple[bool, bool]]] = {
    "ServerSideEncryptionConfiguration": {"Rule": (False, True)},
    "Rule": {"ApplyServerSideEncryptionByDefault": (False, False), "BucketKeyEnabled": (True, False),
             "BlockedEncryptionTypes": (False, False)},
    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": (True, False), "KMSMasterKeyID": (True, False)},
    "BlockedEncryptionTypes": {"EncryptionType": (True, True)},
}


def _children(element: ET.Element) -> dict[str, list[ET.Element]]:
    """``element``'s children by name, checked against `_SCHEMA`: an unknown or repeated singleton child,
    text between elements or children inside a text element is MalformedXML."""
    schema = _SCHEMA[local(element.tag)]
    if (element.text or "").strip():
        raise malformed_xml()
    found: dict[str, list[ET.Element]] = {}
    for item in element:
        if not isinstance(item.tag, str):  # comments and processing instructions
            continue
        name = local(item.tag)
        if name not in schema or (name in found and not schema[name][1]) or (item.tail or "").strip():
            raise malformed_xml()
        if schema[name][0] and len(item):
            raise malformed_xml()
        found.setdefault(name, []).append(item)
    return found


def parse_configuration(body: bytes) -> EncryptionConfig:
    """The one rule of a ServerSideEncryptionConfiguration document, checked as S3 checks it (see the
    module docstring); the key's existence is checked apart (`check_bucket_key`)."""
    rules = _children(parse_request(body, "ServerSideEncryptionConfiguration")).get("Rule", [])
    if len(rules) != 1:
        raise malformed_xml()
    rule = _children(rules[0])
    if "ApplyServerSideEncryptionByDefault" not in rule:
        raise malformed_xml()
    default = _children(rule["ApplyServerSideEncryptionByDefault"][0])
    if "SSEAlgorithm" not in default:
        raise malformed_xml()
    algorithm = (default["SSEAlgorithm"][0].text or "").strip()
    if algorithm in _UNSUPPORTED_ALGORITHMS:
        raise S3Error("InvalidArgument", f"The encrypting gateway does not support SSEAlgorithm {algorithm}; "
                      "use AES256 or aws:kms.", 400, ArgumentName="SSEAlgorithm", ArgumentValue=algorithm)
    if algorithm not in (SSE_S3, KMS):
        raise malformed_xml()
    key_id = (default["KMSMasterKeyID"][0].text or "").strip() if "KMSMasterKeyID" in default else None
    if key_id is not None and algorithm != KMS:
        raise S3Error("InvalidArgument", "a KMSMasterKeyID is not applicable if the default sse algorithm is "
                      "not aws:kms or aws:kms:dsse", 400, ArgumentName="ApplyServerSideEncryptionByDefault")
    bucket_key = False
    if "BucketKeyEnabled" in rule:
        flag = (rule["BucketKeyEnabled"][0].text or "").strip().lower()
        if flag not in _XML_BOOLEANS:
            raise malformed_xml()
        bucket_key = _XML_BOOLEANS[flag]
    return EncryptionConfig(algorithm, key_id, bucket_key, _blocked(rule))


def _blocked(rule: dict[str, list[ET.Element]]) -> tuple[str, ...]:
    """BlockedEncryptionTypes: SSE-C, or NONE alone; anything else (an unknown type, NONE with SSE-C, an
    empty list) is MalformedXML."""
    if "BlockedEncryptionTypes" not in rule:
        return ()
    types = tuple((item.text or "").strip()
                  for item in _children(rule["BlockedEncryptionTypes"][0]).get("EncryptionType", []))
    if not types or any(value not in (BLOCK_SSEC, BLOCK_NONE) for value in types) \
            or (BLOCK_NONE in types and BLOCK_SSEC in types):
        raise malformed_xml()
    return tuple(dict.fromkeys(types))


def render_configuration(config: EncryptionConfig) -> bytes:
    """GetBucketEncryption's answer for ``config``."""
    key = f"<KMSMasterKeyID>{xml_text(config.kms_key_id)}</KMSMasterKeyID>" if config.kms_key_id is not None else ""
    blocked = ("<BlockedEncryptionTypes>" + "".join(f"<EncryptionType>{value}</EncryptionType>"
                                                    for value in config.blocked) + "</BlockedEncryptionTypes>"
               if config.blocked else "")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<ServerSideEncryptionConfiguration xmlns="{S3_NS}"><Rule>'
            f"<ApplyServerSideEncryptionByDefault><SSEAlgorithm>{config.algorithm}</SSEAlgorithm>{key}"
            f"</ApplyServerSideEncryptionByDefault><BucketKeyEnabled>{str(config.bucket_key).lower()}"
            f"</BucketKeyEnabled>{blocked}</Rule></ServerSideEncryptionConfiguration>").encode()


async def check_bucket_key(gw: Gateway, ctx: RequestContext, key_id: str) -> str:
    """The ARN of the CMK ``key_id`` names, once it proved usable: the key service made a data key under it
    for the requester, with the bucket's ARN as context (what a write will ask for). A key id no key can
    have, or one the key service does not know, is S3's 400 KMS.NotFoundException; a disabled key, one of
    another usage or one the requester may not use is refused as S3 reports those KMS errors (400
    KMS.DisabledException, 400 KMS.InvalidKeyUsageException, 403 AccessDenied)."""
    check_kms_key_id(key_id)
    return await _usable_key_arn(gw, ctx, key_id)


async def check_may_change(gw: Gateway, ctx: RequestContext) -> None:
    """Who may change or remove a bucket's default encryption: a principal that may use the key new objects
    get there now (the same data-key test as ``check_bucket_key``). The gateway has no S3 authorization of
    its own, so without this any credential could move another application's header-less writes to a key
    it can read; a refusal is 403 AccessDenied and nothing changes. A stored configuration that does not
    authenticate names no key anyone may trust: then the TOML default's key decides (a repair is possible)."""
    try:
        current = await ctx.objects(gw).bucket_encryption.defaults(ctx.s3.bucket)
    except S3Error as exc:
        if exc.code != "InternalError":
            raise
        current = toml_defaults(gw.config, ctx.s3.bucket)
    await _usable_key_arn(gw, ctx, current.kms_key_id)


async def _usable_key_arn(gw: Gateway, ctx: RequestContext, key_id: str | None) -> str:
    """A data key made under ``key_id`` (None: the default CMK) for the requester, with the bucket's ARN as
    context; its CMK's ARN."""
    context = bucket_context(ctx.s3.bucket, {})
    return (await ctx.objects(gw).keys.kms.data_keys.fresh(key_id, context, ctx.requester(gw))).key_arn


async def effective_key_arn(gw: Gateway, key_id: str) -> str:
    """The ARN of the default CMK a bucket without a stored configuration uses (DescribeKey by the gateway
    itself); the key id as configured when the key service does not say (a key policy that leaves the
    account root out)."""
    try:
        return await gw.objects.keys.kms.key_arn(key_id)
    except S3Error as exc:
        if exc.status != 403:
            raise
        return key_id


async def put_bucket_encryption(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Check the document and the key, store the configuration; 200 with no body, as S3."""
    bucket = ctx.s3.bucket
    if is_passthrough(gw.config, bucket):
        return await forward(gw, ctx)
    body = await read_body(ctx, MAX_CONFIGURATION_BODY)  # Content-MD5 or x-amz-checksum-* verified
    await ctx.objects(gw).bucket_encryption.read_stored(bucket)  # 404 NoSuchBucket first, as S3 answers
    config = parse_configuration(body)
    await check_may_change(gw, ctx)
    if config.kms_key_id is not None:
        await check_bucket_key(gw, ctx, config.kms_key_id)
    await ctx.objects(gw).bucket_encryption.put(bucket, config)
    return web.Response(status=200)


async def get_bucket_encryption(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """The stored configuration, else the effective default (aws:kms under the bucket's CMK's ARN)."""
    bucket = ctx.s3.bucket
    if is_passthrough(gw.config, bucket):
        return await forward(gw, ctx)
    config = await ctx.objects(gw).bucket_encryption.stored(bucket)
    if config is None:
        key_id = toml_defaults(gw.config, bucket).kms_key_id or DEFAULT_KEY_ALIAS
        config = EncryptionConfig(KMS, await effective_key_arn(gw, key_id))
    return web.Response(status=200, body=render_configuration(config), content_type="application/xml")


async def delete_bucket_encryption(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    """Remove the configuration: writes get the TOML defaults again. 204, as S3."""
    bucket = ctx.s3.bucket
    if is_passthrough(gw.config, bucket):
        return await forward(gw, ctx)
    await check_may_change(gw, ctx)
    await ctx.objects(gw).bucket_encryption.delete(bucket)
    return web.Response(status=204)
