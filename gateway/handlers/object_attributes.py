"""GetObjectAttributes (``GET /bucket/key?attributes``) in plaintext terms.

The upstream would describe the ciphertext: its size, its ETag, its part sizes (each grown by the part
overhead). For an encrypted object the gateway answers from the object's metadata instead: the plaintext
``ObjectSize``, the ETag clients see everywhere else, the storage class and, for a multipart object, the
plaintext part sizes from its manifest (which needs the object's key: SSE-C headers, or the requester's
kms:Decrypt) and its plaintext ``Checksum``, sealed under the object's key (gateway/crypto/checksum.py; none for
an object stored without one: the upstream's would be of the ciphertext). An object the gateway did not encrypt is the upstream's to
describe: its size, ETag and storage class come from its HEAD (Ceph RGW 16 has no GetObjectAttributes), its
parts and checksums from the upstream's own answer (the request is forwarded).
"""
from __future__ import annotations

from aiohttp import web

from common.digits import parse_decimal

from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.relaying import forward
from gateway.objects.reading import OpenedObject
from gateway.s3errors import S3Error
from gateway.s3xml import S3_NS, xml_text

ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
DEFAULT_MAX_PARTS = 1000
_LOOKUP = {name.lower(): name for name in ATTRIBUTES}


def requested_attributes(header: str | None) -> list[str]:
    """``x-amz-object-attributes``: a comma-separated list of S3's attribute names (any case); none, or an
    unknown one, is S3's 400 InvalidArgument."""
    names = [value.strip() for value in (header or "").split(",") if value.strip()]
    if not names or any(name.lower() not in _LOOKUP for name in names):
        raise S3Error("InvalidArgument", "Invalid attribute name specified.", 400,
                      ArgumentName="x-amz-object-attributes", ArgumentValue=header or "")
    return [_LOOKUP[name.lower()] for name in names]


def _count(ctx: RequestContext, header: str, default: int) -> int:
    raw = ctx.request.headers.get(header)
    if raw is None:
        return default
    value = parse_decimal(raw.strip(), 2**31)
    if value is None:
        raise S3Error("InvalidArgument", f"{header} must be a non-negative integer.", 400, ArgumentName=header,
                      ArgumentValue=raw)
    return value


async def get_object_attributes(gw: Gateway, ctx: RequestContext) -> web.StreamResponse:
    wanted = requested_attributes(ctx.request.headers.get("x-amz-object-attributes"))
    async with ctx.objects(gw).reader.stat(ctx.object_ref(without=("attributes",)), error_body=True) as stored:
        if not stored.encrypted and {"ObjectParts", "Checksum"} & set(wanted):
            return await forward(gw, ctx)  # the upstream's own parts and checksums are the plaintext's
        opened = (await stored.open(ctx.customer_key(gw), requester=ctx.requester(gw))
                  if {"ObjectParts", "Checksum"} & set(wanted) else None)
        fields = [f"<ETag>{xml_text(stored.etag.strip(chr(34)))}</ETag>" if "ETag" in wanted else "",
                  _checksum(opened) if opened is not None and "Checksum" in wanted else "",
                  _parts(ctx, opened) if opened is not None and "ObjectParts" in wanted else "",
                  f"<StorageClass>{xml_text(stored.head.headers.get('x-amz-storage-class', 'STANDARD'))}</StorageClass>"
                  if "StorageClass" in wanted else "",
                  f"<ObjectSize>{stored.size}</ObjectSize>" if "ObjectSize" in wanted else ""]
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<GetObjectAttributesResponse xmlns="{S3_NS}">'
            + "".join(fields) + "</GetObjectAttributesResponse>")
    headers = {name: value for name in ("Last-Modified", "x-amz-version-id")
               if (value := stored.head.headers.get(name))}
    return web.Response(status=200, body=body.encode(), headers=headers, content_type="application/xml")


def _checksum(opened: OpenedObject) -> str:
    """``Checksum``: the stored plaintext checksum and its type; nothing for an object stored without one."""
    checksum = opened.checksum
    if checksum is None:
        return ""
    return (f"<Checksum><{checksum.element}>{checksum.value}</{checksum.element}>"
            f"<ChecksumType>{checksum.kind}</ChecksumType></Checksum>")


def _parts(ctx: RequestContext, opened: OpenedObject) -> str:
    """``ObjectParts`` of a multipart object, a page of its plaintext part sizes; nothing for a single-part
    object (as S3 answers for an object not uploaded in parts)."""
    if opened.manifest is None:
        return ""
    marker = _count(ctx, "x-amz-part-number-marker", 0)
    limit = _count(ctx, "x-amz-max-parts", DEFAULT_MAX_PARTS)
    after = [part for part in opened.manifest.parts if part.number > marker]
    page, truncated = after[:limit], len(after) > limit
    listed = "".join(f"<Part><PartNumber>{part.number}</PartNumber><Size>{part.size}</Size></Part>" for part in page)
    next_marker = page[-1].number if page else marker
    return (f"<ObjectParts><PartsCount>{len(opened.manifest.parts)}</PartsCount>"
            f"<PartNumberMarker>{marker}</PartNumberMarker><NextPartNumberMarker>{next_marker}</NextPartNumberMarker>"
            f"<MaxParts>{limit}</MaxParts><IsTruncated>{str(truncated).lower()}</IsTruncated>{listed}</ObjectParts>")
