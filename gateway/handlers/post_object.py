"""PostObject: a browser form upload (``POST /bucket``, multipart/form-data), authenticated by its signed
policy rather than an Authorization header, its file stored exactly as a PutObject stores a body.

    form fields (gateway/postform.py) -> signature, expiry, conditions (gateway/postpolicy.py)
      -> the fields as the request's headers, the file as its body -> PutObject's write (put_object.store_object)
      -> S3's answer: success_action_redirect (303), else success_action_status 200 / 201 (PostResponse) / 204

The requester is the form's credential: KMS keys are used on its behalf, as for its signed requests.
"""
from __future__ import annotations

import base64
import time
from typing import Mapping
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from common.sigv4 import AuthResult, uri_encode
from gateway.checksums import BodyChecks
from gateway.handlers.context import Gateway, RequestContext
from gateway.handlers.put_object import store_object
from gateway.handlers.request_body import request_chunks
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.objects.writing import CONTENT_HEADERS
from gateway.postform import PostForm, is_form, read_form
from gateway.postpolicy import authenticate_form, check_length, check_policy, field_missing
from gateway.reserved import refuse_reserved_key
from gateway.s3errors import entity_too_large, malformed_xml
from gateway.s3request import S3Request, classify, split_path
from gateway.s3xml import child, children, parse_request, render

# The form fields that are object headers (`object_headers`).
_OBJECT_FIELDS = frozenset({*CONTENT_HEADERS, "content-md5", "x-amz-storage-class"})
_OBJECT_FIELD_PREFIXES = ("x-amz-meta-", "x-amz-server-side-encryption", "x-amz-checksum-", "x-amz-object-lock-")
_STATUSES = {"200": 200, "201": 201, "204": 204}


def is_form_upload(request: web.Request, path_style: str) -> bool:
    """A POST to a bucket (no sub-resource) with a multipart/form-data body: a browser form upload, which
    carries no Authorization header and authenticates through its fields. ``path_style``: the request's
    path as ``/bucket...`` (a virtual-hosted request's too)."""
    if request.method != "POST" or not is_form(request.headers.get("Content-Type", "")):
        return False
    s3 = classify(request.method, path_style, request.rel_url.query, request.headers)
    return s3.operation == "PostObject" and not s3.key


async def post_object(gw: Gateway, request: web.Request, request_id: str, *, secure: bool) -> web.StreamResponse:
    """``request``: path style (``/bucket``). Every failure is the S3 error S3 answers; nothing is stored."""
    bucket, _ = split_path(request.rel_url.raw_path)
    form = await read_form(request, request_chunks(request))
    now = time.time()
    secrets = {c.access_key: c.secret_key for c in gw.config.credentials}
    auth = authenticate_form(form.fields, secrets.get, region=gw.config.region, now=now)
    key = _object_key(form)
    check_policy(auth.policy, {**form.fields, "bucket": bucket, "key": key}, now=now)
    check_length(auth.policy, form.length)
    if form.length > MAX_UPLOAD_SIZE:
        raise entity_too_large(MAX_UPLOAD_SIZE, form.length)
    refuse_reserved_key(key)
    headers = object_headers(form.fields)
    ctx = RequestContext(request=request.clone(headers=headers), s3=S3Request("PostObject", bucket, key),
                         auth=AuthResult(access_key=auth.access_key, scheme=auth.scheme, payload_hash=None,
                                         signed_headers=()),
                         request_id=request_id, secure=secure)
    checks = BodyChecks.from_headers(headers, None)
    written = await store_object(gw, ctx, form.file_chunks(), form.length, checks)
    location = _object_url(gw, request, bucket, key, secure=secure)
    return _answer(form.fields, bucket, key, written, location)


def _object_key(form: PostForm) -> str:
    """The ``key`` field, ``${filename}`` replaced by the file part's filename as S3 does."""
    key = form.fields.get("key")
    if not key:
        raise field_missing("key")
    return key.replace("${filename}", form.filename)


def object_headers(fields: Mapping[str, str]) -> CIMultiDict[str]:
    """The form fields that describe the object, as the headers a PutObject carries them in: content headers,
    Content-MD5, ``acl``, storage class, metadata, SSE and SSE-C, checksums, object lock. No other field
    becomes a header: a form cannot smuggle in one that would change the upstream write (a copy source, a
    condition, the signature's own fields)."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in fields.items():
        if name in _OBJECT_FIELDS or name.startswith(_OBJECT_FIELD_PREFIXES):
            headers[name] = mail_safe(value)
        elif name == "acl":
            headers["x-amz-acl"] = value
        elif name == "tagging":
            headers["x-amz-tagging"] = tagging_header(value)
    return headers


def tagging_header(document: str) -> str:
    """The ``tagging`` field (a ``<Tagging><TagSet><Tag><Key/><Value/></Tag>...`` document, as S3 takes it) as
    PutObject's ``x-amz-tagging`` header, which the upstream checks and applies with the write; a document that
    is not one is MalformedXML, and nothing is stored."""
    root = parse_request(document.encode("utf-8", "surrogateescape"), "Tagging")
    tag_set = child(root, "TagSet")
    if tag_set is None:
        raise malformed_xml()
    tags = []
    for tag in children(tag_set, "Tag"):
        key, value = child(tag, "Key"), child(tag, "Value")
        if key is None or value is None or len(key) or len(value):  # missing, or holding elements: not text
            raise malformed_xml()
        tags.append((key.text or "", value.text or ""))
    return urlencode(tags, quote_via=quote)


def mail_safe(value: str) -> str:
    """A field value as a header value: text that is not US-ASCII (a form field may hold any) as an RFC 2047
    encoded word, which is how S3 stores and returns such a metadata value; US-ASCII as it is."""
    if value.isascii():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode('utf-8', 'surrogateescape')).decode()}?="


def _object_url(gw: Gateway, request: web.Request, bucket: str, key: str, *, secure: bool) -> str:
    """The stored object's URL on the Host the client used: virtual-hosted for a host under the
    configured domain (``BUCKET.<domain>``), else path style."""
    host = request.host
    domain = gw.config.domain
    virtual = bool(domain) and host.lower().rsplit(":", 1)[0].endswith("." + domain)
    path = "" if virtual else f"/{uri_encode(bucket)}"
    return f"{'https' if secure else 'http'}://{host}{path}/{uri_encode(key, keep_slash=True)}"


def _answer(fields: Mapping[str, str], bucket: str, key: str, written: dict[str, str], location: str) -> web.Response:
    """S3's answer to a stored form upload: a redirect when the form asks for one, else its status."""
    headers = {**written, "Location": location}
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    target = _redirect_target(redirect, bucket, key, written["ETag"]) if redirect else None
    if target is not None:
        return web.Response(status=303, headers={**headers, "Location": target})
    status = _STATUSES.get(fields.get("success_action_status", ""), 204)
    if status != 201:
        return web.Response(status=status, headers=headers)
    body = render("PostResponse", {"Location": location, "Bucket": bucket, "Key": key, "ETag": written["ETag"]})
    return web.Response(status=201, headers=headers, body=body, content_type="application/xml")


def _redirect_target(url: str, bucket: str, key: str, etag: str) -> str | None:
    """The redirect URL with ``bucket``, ``key`` and ``etag`` added to its query; None for a URL that is not
    absolute http(s), which S3 ignores (answering the status instead)."""
    try:
        target = URL(url)
    except ValueError:
        return None
    if target.scheme not in ("http", "https") or not target.host:
        return None
    return str(target.extend_query(bucket=bucket, key=key, etag=etag))
