"""Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since).

The gateway evaluates them itself instead of forwarding them: the client's ETags are the
client-visible ones (gateway/etag.py), which the upstream has never seen.
"""
from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Mapping

from gateway.etag import etag_matches
from gateway.handlers.context import Gateway, RequestContext
from gateway.objects.reading import ObjectRef
from gateway.s3client import UpstreamError
from gateway.s3errors import no_such_key, precondition_failed

CONDITIONAL_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def evaluate_conditions(headers: Mapping[str, str], etag: str, last_modified: str | None) -> int | None:
    """S3's conditional-request outcome against the client-visible ETag: 412, 304, or None to serve.

    If-Match wins over If-Unmodified-Since and If-None-Match over If-Modified-Since (RFC 7232);
    unparseable dates are ignored, as S3 does.
    """
    modified = _http_date(last_modified)
    if "if-match" in headers:
        if not etag_matches(headers["if-match"], etag):
            return 412
    elif (since := _http_date(headers.get("if-unmodified-since"))) and modified and modified > since:
        return 412
    if "if-none-match" in headers:
        if etag_matches(headers["if-none-match"], etag):
            return 304
    elif (since := _http_date(headers.get("if-modified-since"))) and modified and modified <= since:
        return 304
    return None


async def upstream_if_match(gw: Gateway, ctx: RequestContext) -> str | None:
    """S3's conditional write (PutObject, CompleteMultipartUpload) ``If-Match`` names the ETag the client saw (gateway/etag.py), which the upstream
    never handed out: the object's metadata is read to check it here, and the write is then made conditional
    on the upstream ETag of that very version, so the upstream refuses it (412) if the object changed in
    between: no read-then-write race. A missing object is 404 NoSuchKey, another ETag 412, as S3 answers.
    ``If-None-Match: *`` needs no translation and goes to the upstream as it is."""
    condition = ctx.request.headers.get("if-match")
    if condition is None:
        return None
    try:
        async with ctx.objects(gw).reader.stat(ObjectRef(ctx.s3.bucket, ctx.s3.key)) as stored:
            if not etag_matches(condition, stored.etag):
                raise precondition_failed("If-Match")
            return stored.head.etag
    except UpstreamError as exc:
        if exc.not_found:
            raise no_such_key(ctx.s3.key) from None
        raise
