"""A typed S3 client over the gateway's one upstream pool: each operation returns its parsed result or
raises one error type, `UpstreamError`, whose `s3_error()` is the one mapping to what a client is told.

Every request goes through `Upstream.request` (the pooled session and its SigV4 signer), so
this module adds no second pool and no second canonicalisation; it adds what each caller used to
write again after every raw call: the status check, a bounded read of the answer, the XML parsing, and
retries.

Retries are bounded (``max_attempts`` tries in all), exponentially backed off with jitter, and only
where sending the request again cannot do harm: the request is idempotent and its body can be sent
again (no body, or ``bytes``; a streamed body is consumed by the first try), and nothing of the answer
has been handed to the caller yet. Only transient failures are retried: an upstream 500/503 (or a
200 carrying an InternalError/SlowDown, as S3's CompleteMultipartUpload may send), a connection
that was refused, reset or closed before the answer was read whole. Never a 4xx, and never the
gateway's own pool-exhaustion SlowDown (an `S3Error` from `Upstream.request`): retrying it would
only lengthen the queue it reports.

A success answer that cannot be understood (junk XML, a size that is no decimal, no ETag) is the
upstream's fault, not an S3 answer: it raises `IntegrityError`, as the other parsers of upstream
input do.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, unquote_plus
from xml.sax.saxutils import escape

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from common.digits import parse_decimal, parse_upstream_decimal
from gateway.crypto.stream import IntegrityError
from gateway.s3errors import S3Error, from_upstream, internal_error, parse_s3_error
from gateway.s3xml import S3_NS, child, children, local, text
from gateway.upstream import UNSIGNED_PAYLOAD, Upstream, read_up_to

log = logging.getLogger("gateway.s3client")

T = TypeVar("T")

CHUNK = 256 * 1024  # the pieces `ObjectBody.chunks` yields
ERROR_BODY_LIMIT = 64 * 1024  # S3's error documents are a few hundred bytes; more is no S3 error
XML_LIMIT = 16 * 1024 * 1024  # a listing page: 1000 keys of up to 1 KiB, URL-encoded, and their fields
RETRY_AFTER_CAP = 1.0  # seconds: an upstream's Retry-After is honoured, up to this
TRANSIENT_STATUSES = frozenset({500, 503})
TRANSIENT_CODES = frozenset({"InternalError", "SlowDown", "ServiceUnavailable"})
# Failures of the connection before the answer was read whole: the request may be sent again.
TRANSIENT_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)
_EMPTY_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def bucket_path(bucket: str) -> str:
    """The upstream path-style path of a bucket."""
    return f"/{quote(bucket, safe='')}"


def _write_conditions(if_match: str | None, if_none_match: str | None) -> dict[str, str]:
    """A conditional write's headers. ``If-Match`` carries the ETag unquoted: Ceph RGW 16 compares a write's
    If-Match with the bare ETag (a quoted one never matches); moto and S3 accept it bare too."""
    out = {}
    if if_match is not None:
        out["if-match"] = if_match.strip().strip('"')
    if if_none_match is not None:
        out["if-none-match"] = if_none_match
    return out


def object_path(bucket: str, key: str) -> str:
    """The upstream path-style path of an object: every character of the key but ``/`` and ``~``
    percent-encoded, so spaces, ``+``, ``%``, ``?``, ``#`` and any unicode reach the upstream as the key."""
    return f"{bucket_path(bucket)}/{quote(key, safe='/~')}"


# ---------------------------------------------------------------- errors


class UpstreamError(Exception):
    """An upstream answer that is not the success asked for.

    ``code`` and ``message`` are the S3 error document's when the body is one (None and a description
    otherwise); ``body`` is cut at 64 KiB (b"" for a HEAD, which has none)."""

    def __init__(self, status: int, body: bytes = b"", headers: Mapping[str, str] = _EMPTY_HEADERS, *,
                 message: str | None = None) -> None:
        root = parse_s3_error(body)
        self.status = status
        self.body = body[:ERROR_BODY_LIMIT]
        self.headers = headers
        self.code: str | None = None if root is None else root.findtext("Code")
        self.message: str = message or (root.findtext("Message") if root is not None else None) or \
            f"the upstream answered {status}"
        super().__init__(f"{status} {self.code or '-'}: {self.message}")

    def s3_error(self) -> S3Error:
        """What the client is told: an S3 error document keeps its code and message, anything else is
        the S3 error of its status class (gateway.s3errors.from_upstream); Retry-After is kept."""
        return from_upstream(self.status, self.body, self.headers)

    @property
    def not_found(self) -> bool:
        """NoSuchKey, NoSuchBucket, NoSuchUpload, a HEAD's bare 404."""
        return self.status == 404

    @property
    def precondition_failed(self) -> bool:
        """An If-Match / If-None-Match the upstream found false (412)."""
        return self.status == 412

    @property
    def transient(self) -> bool:
        """A failure that sending the same request again may not meet: 500/503, or a 200 carrying one."""
        return self.status in TRANSIENT_STATUSES or (self.status < 400 and self.code in TRANSIENT_CODES)


class ObjectChanged(UpstreamError):
    """A read pinned with If-Match found another version of the object (412, or a 200 to a ranged
    read): the object changed while it was being read."""

    def s3_error(self) -> S3Error:
        return S3Error("InternalError", "The object changed while it was being read; retry.", 500)


class BodyTooLarge(UpstreamError):
    """A success answer longer than the caller allows: the upstream's failure (500 to the client)."""

    def s3_error(self) -> S3Error:
        return internal_error()


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ObjectHead:
    """What a HEAD or GET says about the stored object."""

    etag: str  # exactly as the upstream sent it (quoted); "" if it sent none
    size: int  # the whole stored object's, also for a 206
    last_modified: str | None
    version_id: str | None  # None when absent or "null"
    headers: CIMultiDictProxy[str]  # every response header (x-amz-meta-*, content-type, ...)


@dataclass(frozen=True)
class PutResult:
    etag: str
    version_id: str | None
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True)
class CompleteResult:
    etag: str  # the multipart ETag as the upstream's CompleteMultipartUploadResult names it
    version_id: str | None
    headers: CIMultiDictProxy[str]


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str  # bare, no quotes
    size: int


@dataclass(frozen=True)
class ListEntry:
    key: str  # plain text (decoded from encoding-type=url)
    size: int
    etag: str
    last_modified: str


@dataclass(frozen=True)
class ListPage:
    entries: list[ListEntry]
    common_prefixes: list[str]
    next_token: str | None
    truncated: bool


@dataclass(frozen=True)
class VersionEntry(ListEntry):
    """One ``<Version>`` of a ListObjectVersions page."""

    version_id: str  # as listed: "null" for the version written while versioning was off (HEAD it by that)
    is_latest: bool


@dataclass(frozen=True)
class DeleteMarkerEntry:
    """One ``<DeleteMarker>`` of a ListObjectVersions page: no object, no bytes, nothing sealed."""

    key: str
    version_id: str
    is_latest: bool


@dataclass(frozen=True)
class VersionPage:
    """One page of ListObjectVersions: the next starts after (``next_key_marker``, ``next_version_id_marker``)."""

    versions: list[VersionEntry]
    delete_markers: list[DeleteMarkerEntry]
    next_key_marker: str | None
    next_version_id_marker: str | None
    truncated: bool


class ObjectBody:
    """A GET in progress; the `S3Client.get_object` context releases its connection on exit."""

    def __init__(self, response: aiohttp.ClientResponse, head: ObjectHead) -> None:
        self._response = response
        self.head = head
        self.status = response.status

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces of at most 256 KiB; a cut body raises aiohttp.ClientPayloadError."""
        async for chunk in self._response.content.iter_chunked(CHUNK):
            yield chunk

    async def read(self, limit: int) -> bytes:
        """The whole body; `BodyTooLarge` when it is longer than ``limit``."""
        return await _read_limited(self._response, limit)


# ---------------------------------------------------------------- requests and answers


@dataclass(frozen=True)
class _Request:
    """One upstream request, as often as it may be sent."""

    method: str
    path: str
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterable[bytes] | None = None
    length: int | None = None
    payload_hash: str = UNSIGNED_PAYLOAD

    @property
    def replayable(self) -> bool:
        """A streamed body is consumed by its first sending; no body or bytes can be sent again."""
        return self.body is None or isinstance(self.body, (bytes, bytearray))

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class _Answer:
    """A success answer read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def _with_body(method: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str],
               body: bytes | AsyncIterable[bytes], length: int, payload_hash: str | None) -> _Request:
    """A request with a body: bytes are signed with their SHA-256 (and may be sent again), a stream
    with ``payload_hash`` or UNSIGNED-PAYLOAD."""
    if isinstance(body, (bytes, bytearray)):
        if len(body) != length:
            raise ValueError(f"a body of {len(body)} bytes sent as {length}")
        payload_hash = hashlib.sha256(body).hexdigest()
    return _Request(method, path, query, headers, body, length, payload_hash or UNSIGNED_PAYLOAD)


async def _error_of(response: aiohttp.ClientResponse) -> UpstreamError:
    """The UpstreamError of an answer that is not the success asked for (its body read, at most 64 KiB)."""
    body = b"" if response.method == "HEAD" else await read_up_to(response, ERROR_BODY_LIMIT)
    return UpstreamError(response.status, body, response.headers)


async def _refusal(response: aiohttp.ClientResponse, byte_range: tuple[int, int] | None,
                   pinned: bool) -> UpstreamError | None:
    """Why a GET's answer is not the one asked for (a 206 for a range, a 200 otherwise), or None."""
    expected = 200 if byte_range is None else 206
    if response.status == 206 and byte_range is None and response.url.query.get("partNumber"):
        expected = 206  # a part of a multipart object
    if pinned and response.status == 412:
        return ObjectChanged(412, await read_up_to(response, ERROR_BODY_LIMIT), response.headers)
    if pinned and byte_range is not None and response.status == 200:
        return ObjectChanged(200, b"", response.headers, message="a ranged read pinned by If-Match was answered "
                             "whole")
    if response.status == expected:
        return None
    if response.status >= 300:
        return await _error_of(response)
    return UpstreamError(response.status, b"", response.headers,
                         message=f"the upstream answered {response.status} where {expected} was due")


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    body = await read_up_to(response, limit)
    if len(body) > limit:
        raise BodyTooLarge(response.status, b"", response.headers,
                           message=f"the upstream's answer is longer than {limit} bytes")
    return body


def _xml(body: bytes, *root_names: str) -> ET.Element:
    """A success answer's XML document, whose root must be one of ``root_names`` (namespaced or not)."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError):
        raise IntegrityError(f"the upstream's {root_names[0]} answer is not XML") from None
    if local(root.tag) not in root_names:
        raise IntegrityError(f"the upstream answered <{local(root.tag)}>, not <{root_names[0]}>")
    return root


def _decimal(value: str | None, what: str) -> int:
    number = parse_upstream_decimal(value or "")
    if number is None:
        raise IntegrityError(f"the upstream gave no decimal {what} ({(value or '')[:40]!r})")
    return number


def _version_id(headers: Mapping[str, str]) -> str | None:
    value = headers.get("x-amz-version-id")
    return None if value in (None, "", "null") else value


def _etag(headers: Mapping[str, str]) -> str:
    """The ETag header as sent; "" when there is none (S3 always sends one; a read is never pinned to "")."""
    return headers.get("ETag", "")


def _head_of(response: aiohttp.ClientResponse) -> ObjectHead:
    """The stored object as a HEAD, a 200 or a 206 describes it (a 206's size is its Content-Range total)."""
    headers = response.headers
    if response.status == 206:
        size = _decimal(headers.get("Content-Range", "").rpartition("/")[2], "Content-Range total")
    else:
        size = _decimal(headers.get("Content-Length"), "Content-Length")
    return ObjectHead(etag=_etag(headers), size=size, last_modified=headers.get("Last-Modified"),
                      version_id=_version_id(headers), headers=headers)


def _check_range(head: ObjectHead, byte_range: tuple[int, int]) -> None:
    """A 206 must hold the bytes asked for (the end clipped to the object), or offsets would be wrong."""
    first, last = byte_range
    span, _, _ = head.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
    start, _, end = span.partition("-")
    if (parse_upstream_decimal(start), parse_upstream_decimal(end)) != (first, min(last, head.size - 1)):
        raise IntegrityError(f"asked for bytes {first}-{last}, the upstream sent {span[:60]!r}")


def _retry_after(err: BaseException) -> float:
    """An upstream's Retry-After in seconds (a decimal; an HTTP date is not honoured), at most the cap."""
    value = err.headers.get("Retry-After", "") if isinstance(err, UpstreamError) else ""
    seconds = parse_decimal(value.strip(), 3600)
    return 0.0 if seconds is None else min(float(seconds), RETRY_AFTER_CAP)


def _transient(err: BaseException) -> bool:
    if isinstance(err, UpstreamError):
        return err.transient
    return isinstance(err, TRANSIENT_CONNECTION_ERRORS)


def _tag_set(root: ET.Element) -> list[tuple[str, str]]:
    tags = child(root, "TagSet")
    return [] if tags is None else [(text(tag, "Key") or "", text(tag, "Value") or "")
                                    for tag in children(tags, "Tag")]


def _stored_part(element: ET.Element) -> StoredPart:
    return StoredPart(number=_decimal(text(element, "PartNumber"), "PartNumber"),
                      etag=(text(element, "ETag") or "").strip().strip('"'),
                      size=_decimal(text(element, "Size"), "part Size"))


def _list_entry(element: ET.Element, decode: Callable[[str], str]) -> ListEntry:
    return ListEntry(key=decode(text(element, "Key") or ""), size=_decimal(text(element, "Size"), "listed Size"),
                     etag=text(element, "ETag") or "", last_modified=text(element, "LastModified") or "")


def _version_entry(element: ET.Element, decode: Callable[[str], str]) -> VersionEntry:
    entry = _list_entry(element, decode)
    return VersionEntry(key=entry.key, size=entry.size, etag=entry.etag, last_modified=entry.last_modified,
                        version_id=text(element, "VersionId") or "null",
                        is_latest=(text(element, "IsLatest") or "").lower() == "true")


def _delete_marker(element: ET.Element, decode: Callable[[str], str]) -> DeleteMarkerEntry:
    return DeleteMarkerEntry(key=decode(text(element, "Key") or ""), version_id=text(element, "VersionId") or "null",
                             is_latest=(text(element, "IsLatest") or "").lower() == "true")


# Ceph RGW 16 sends KeyMarker, NextKeyMarker and Prefix of a versions listing as they are, encoding-type=url
# or not: a key with a control character comes as a character reference XML 1.0 forbids (``&#x01;``), and the
# whole answer would be unreadable. Such an element's text was evidently not URL-encoded: it is rewritten so.
_RAW_MARKER = re.compile(rb"<(KeyMarker|NextKeyMarker|Prefix)>([^<]*)</\1>")
_ILLEGAL_REFERENCE = re.compile(rb"&#(?:x0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F])|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));")
_REFERENCE = re.compile(r"&(#x[0-9a-fA-F]+|#[0-9]+|lt|gt|amp|quot|apos);")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _unreferenced(value: str) -> str:
    """XML text with its entity and character references replaced by what they stand for."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("#x"):
            return chr(int(name[2:], 16))
        return chr(int(name[1:])) if name.startswith("#") else _NAMED[name]
    return _REFERENCE.sub(one, value)


def _encoded_raw_markers(body: bytes) -> bytes:
    """``body`` with every marker element RGW sent unencoded around a forbidden character URL-encoded."""
    def one(match: re.Match[bytes]) -> bytes:
        if not _ILLEGAL_REFERENCE.search(match.group(2)):
            return match.group(0)
        value = quote(_unreferenced(match.group(2).decode("utf-8", "surrogateescape")), safe="",
                      errors="surrogateescape")
        return b"<%s>%s</%s>" % (match.group(1), value.encode(), match.group(1))
    return _RAW_MARKER.sub(one, body) if b"&#" in body else body


def _next_key_marker(raw: str, decode: Callable[[str], str], version_id: str | None,
                     listed: Sequence[VersionEntry | DeleteMarkerEntry]) -> str:
    """The key the next versions page starts after. S3 URL-encodes NextKeyMarker under encoding-type=url,
    Ceph RGW 16 sends it as is (only the listed keys encoded): of the two readings, the one naming the
    entry NextVersionIdMarker names (the page's last) is taken; the decoded one when neither does."""
    readings = list(dict.fromkeys((decode(raw), raw)))
    for named in ([e.key for e in listed if e.version_id == version_id], [e.key for e in listed]):
        for reading in readings:
            if reading in named:
                return reading
    return readings[0]


def _complete_body(parts: Sequence[tuple[int, str]]) -> bytes:
    """CompleteMultipartUpload's document; an ETag is sent quoted whether it was given bare or quoted."""
    listed = "".join(f'<Part><PartNumber>{number}</PartNumber><ETag>"{escape(etag.strip(chr(34)))}"</ETag></Part>'
                     for number, etag in parts)
    return f'<CompleteMultipartUpload xmlns="{S3_NS}">{listed}</CompleteMultipartUpload>'.encode()


# ---------------------------------------------------------------- the client


class S3Client:
    """The S3 operations the gateway makes upstream, over one `Upstream` (its pool and signer)."""

    def __init__(self, upstream: Upstream, *, max_attempts: int = 3, backoff: float = 0.05) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.upstream = upstream
        self._max_attempts = max_attempts
        self._backoff = backoff

    # ------------------------------------------------------------ objects

    async def head_object(self, bucket: str, key: str, *, version_id: str | None = None,
                          headers: Mapping[str, str] | None = None, query: Sequence[tuple[str, str]] = (),
                          if_match: str | None = None, part_number: int | None = None) -> ObjectHead:
        """``query``: further parameters the upstream applies to its answer (response-* overrides);
        ``if_match`` pins the HEAD to one version (another is `ObjectChanged`); ``part_number`` asks about
        one part of a multipart object (a 206, or a 200 for a single-part object)."""
        part = [] if part_number is None else [("partNumber", str(part_number))]
        pin = {} if if_match is None else {"if-match": if_match}
        request = _Request("HEAD", object_path(bucket, key), [*_version_query(version_id), *query, *part],
                           {**(headers or {}), **pin})

        async def attempt() -> ObjectHead:
            async with await self._send(request) as response:
                if if_match is not None and response.status == 412:
                    raise ObjectChanged(412, b"", response.headers)
                if response.status not in ((200, 206) if part_number is not None else (200,)):
                    raise await _error_of(response)
                return _head_of(response)
        return await self._retrying(request, attempt)

    def get_object(self, bucket: str, key: str, *, version_id: str | None = None,
                   byte_range: tuple[int, int] | None = None, if_match: str | None = None,
                   headers: Mapping[str, str] | None = None, query: Sequence[tuple[str, str]] = (),
                   part_number: int | None = None) -> AbstractAsyncContextManager[ObjectBody]:
        """The object's body (``byte_range`` inclusive: a 206 is required then, a 200 otherwise; a
        ``part_number`` read may be either), its connection released when the context exits.
        ``if_match`` pins the read to one version: another version met is `ObjectChanged`. ``query``:
        further parameters the upstream applies to its answer (response-* overrides). Retried only
        until the answer's status is known."""
        request = self._get_request(bucket, key, version_id, byte_range, if_match, headers,
                                    [*query, *(() if part_number is None else (("partNumber", str(part_number)),))])
        return self._opened(request, byte_range, if_match is not None)

    async def get_small(self, bucket: str, key: str, *, limit: int = 1 << 20,
                        if_match: str | None = None) -> tuple[ObjectHead, bytes]:
        """A small object read whole (a record, a manifest); `BodyTooLarge` beyond ``limit``. Retried
        as a whole, body included: nothing reaches the caller before the body is complete."""
        request = self._get_request(bucket, key, None, None, if_match, None, [])

        async def attempt() -> tuple[ObjectHead, bytes]:
            response, head = await self._open(request, None, if_match is not None)
            async with response:
                return head, await _read_limited(response, limit)
        return await self._retrying(request, attempt)

    async def put_object(self, bucket: str, key: str, body: bytes | AsyncIterable[bytes], length: int,
                         headers: Mapping[str, str], *, if_none_match: str | None = None,
                         if_match: str | None = None, payload_hash: str | None = None) -> PutResult:
        """Store an object. A ``bytes`` body is signed with its SHA-256 and retried; a streamed one is
        sent once, signed with ``payload_hash`` when the caller knows it (else UNSIGNED-PAYLOAD).

        A conditional PUT retried after a lost answer can meet its own first write (412): callers of
        conditional writes compare what is stored on a 412."""
        conditions = _write_conditions(if_match, if_none_match)
        request = _with_body("PUT", object_path(bucket, key), [], {**headers, **conditions}, body, length, payload_hash)
        return _put_result(await self._exchange(request))

    async def delete_object(self, bucket: str, key: str, *, version_id: str | None = None) -> None:
        await self._exchange(_Request("DELETE", object_path(bucket, key), _version_query(version_id)),
                             ok=(200, 204))

    async def get_object_tagging(self, bucket: str, key: str, *,
                                 version_id: str | None = None) -> list[tuple[str, str]]:
        request = _Request("GET", object_path(bucket, key), [("tagging", ""), *_version_query(version_id)])
        return _tag_set(_xml((await self._exchange(request)).body, "Tagging"))

    # ------------------------------------------------------------ multipart uploads

    async def create_multipart_upload(self, bucket: str, key: str, headers: Mapping[str, str]) -> str:
        """The upstream UploadId. Sent once: a second CreateMultipartUpload is a second upload."""
        request = _Request("POST", object_path(bucket, key), [("uploads", "")], dict(headers))
        answer = await self._exchange(request, retry=False)
        upload_id = text(_xml(answer.body, "InitiateMultipartUploadResult"), "UploadId")
        if not upload_id:
            raise IntegrityError("the upstream's InitiateMultipartUploadResult names no UploadId")
        return upload_id

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int,
                          body: bytes | AsyncIterable[bytes], length: int) -> PutResult:
        query = [("partNumber", str(part_number)), ("uploadId", upload_id)]
        request = _with_body("PUT", object_path(bucket, key), query, {}, body, length, None)
        return _put_result(await self._exchange(request))

    async def complete_multipart_upload(self, bucket: str, key: str, upload_id: str,
                                        parts: Sequence[tuple[int, str]], *,
                                        if_match: str | None = None, if_none_match: str | None = None) -> CompleteResult:
        """Complete with ``parts`` (number, upstream ETag bare or quoted). S3 may fail after its 200 has
        started: a 200 whose body is an ``<Error>`` raises UpstreamError with that code. ``if_match``:
        only over the object with that ETag; ``if_none_match`` ``*``: only where there is none (a 412
        otherwise)."""
        body = _complete_body(parts)
        request = _with_body("POST", object_path(bucket, key), [("uploadId", upload_id)],
                             _write_conditions(if_match, if_none_match), body, len(body), None)

        async def attempt() -> CompleteResult:
            answer = await self._once(request, (200,), XML_LIMIT)
            if parse_s3_error(answer.body) is not None:
                raise UpstreamError(answer.status, answer.body, answer.headers)
            root = _xml(answer.body, "CompleteMultipartUploadResult")
            return CompleteResult(etag=text(root, "ETag") or _etag(answer.headers),
                                  version_id=_version_id(answer.headers), headers=answer.headers)
        return await self._retrying(request, attempt)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._exchange(_Request("DELETE", object_path(bucket, key), [("uploadId", upload_id)]),
                             ok=(200, 204))

    async def list_parts(self, bucket: str, key: str, upload_id: str, *, page_size: int = 1000) -> list[StoredPart]:
        """Every stored part of the upload, all pages of ``page_size``, in ascending part numbers."""
        parts: list[StoredPart] = []
        marker = 0
        while True:
            query = [("uploadId", upload_id), ("max-parts", str(page_size)), ("part-number-marker", str(marker))]
            root = _xml((await self._exchange(_Request("GET", object_path(bucket, key), query))).body,
                        "ListPartsResult", "ListPartsResponse")  # S3's name, moto's
            parts.extend(_stored_part(element) for element in children(root, "Part"))
            if (text(root, "IsTruncated") or "").lower() != "true":
                return parts
            following = _decimal(text(root, "NextPartNumberMarker"), "NextPartNumberMarker")
            if following <= marker:  # a marker that does not advance would page forever
                raise IntegrityError(f"the upstream's ListParts does not advance past part {marker}")
            marker = following

    # ------------------------------------------------------------ buckets

    async def list_objects_v2(self, bucket: str, *, prefix: str = "", continuation_token: str | None = None,
                              start_after: str | None = None, max_keys: int = 1000,
                              delimiter: str | None = None) -> ListPage:
        """One page of ListObjectsV2. Keys travel URL-encoded (encoding-type=url), so keys with characters
        XML 1.0 cannot hold (control characters) survive; they are returned decoded."""
        optional = (("continuation-token", continuation_token), ("start-after", start_after),
                    ("delimiter", delimiter))
        query = [("list-type", "2"), ("encoding-type", "url"), ("prefix", prefix), ("max-keys", str(max_keys)),
                 *((name, value) for name, value in optional if value is not None)]
        root = _xml((await self._exchange(_Request("GET", bucket_path(bucket), query))).body, "ListBucketResult")
        decode = unquote_plus if (text(root, "EncodingType") or "").lower() == "url" else str
        prefixes = [decode(text(element, "Prefix") or "") for element in children(root, "CommonPrefixes")]
        return ListPage(entries=[_list_entry(element, decode) for element in children(root, "Contents")],
                        common_prefixes=prefixes, next_token=text(root, "NextContinuationToken") or None,
                        truncated=(text(root, "IsTruncated") or "").lower() == "true")

    async def list_object_versions(self, bucket: str, *, prefix: str = "", key_marker: str | None = None,
                                   version_id_marker: str | None = None, max_keys: int = 1000) -> VersionPage:
        """One page of ListObjectVersions (every version and delete marker, keys URL-encoded on the way as in
        `list_objects_v2` and returned decoded), after the marker pair. A truncated page whose next marker
        pair is missing or the one sent would page forever: `IntegrityError`."""
        optional = (("key-marker", key_marker), ("version-id-marker", version_id_marker))
        query = [("versions", ""), ("encoding-type", "url"), ("prefix", prefix), ("max-keys", str(max_keys)),
                 *((name, value) for name, value in optional if value is not None)]
        root = _xml(_encoded_raw_markers((await self._exchange(_Request("GET", bucket_path(bucket), query))).body),
                    "ListVersionsResult")  # S3's, moto's and Ceph RGW's name
        decode = unquote_plus if (text(root, "EncodingType") or "").lower() == "url" else str
        versions = [_version_entry(element, decode) for element in children(root, "Version")]
        markers = [_delete_marker(element, decode) for element in children(root, "DeleteMarker")]
        truncated = (text(root, "IsTruncated") or "").lower() == "true"
        next_version = text(root, "NextVersionIdMarker") or None
        raw_key = text(root, "NextKeyMarker")
        next_key = None if not raw_key else _next_key_marker(raw_key, decode, next_version, [*versions, *markers])
        if truncated and (next_key is None or (next_key, next_version) == (key_marker, version_id_marker)):
            raise IntegrityError(f"the upstream's ListObjectVersions does not advance past key {key_marker!r} "
                                 f"version {version_id_marker!r}")
        return VersionPage(versions=versions, delete_markers=markers, next_key_marker=next_key,
                           next_version_id_marker=next_version, truncated=truncated)

    # ------------------------------------------------------------ sending, checking, retrying

    def _get_request(self, bucket: str, key: str, version_id: str | None, byte_range: tuple[int, int] | None,
                     if_match: str | None, headers: Mapping[str, str] | None,
                     query: list[tuple[str, str]]) -> _Request:
        sent = dict(headers or {})
        if if_match == "":
            raise IntegrityError("a read cannot be pinned to an object the upstream gave no ETag")
        if byte_range is not None:
            sent["range"] = f"bytes={byte_range[0]}-{byte_range[1]}"
        if if_match is not None:
            sent["if-match"] = if_match
        return _Request("GET", object_path(bucket, key), [*_version_query(version_id), *query], sent)

    def _opened(self, request: _Request, byte_range: tuple[int, int] | None, pinned: bool) -> "_OpenedBody":
        return _OpenedBody(self, request, byte_range, pinned)

    async def _open(self, request: _Request, byte_range: tuple[int, int] | None,
                    pinned: bool) -> tuple[aiohttp.ClientResponse, ObjectHead]:
        """A GET whose answer is the one asked for (its body unread), or its error."""
        response = await self._send(request)
        try:
            refusal = await _refusal(response, byte_range, pinned)
            if refusal is not None:
                raise refusal
            head = _head_of(response)
            if byte_range is not None:
                _check_range(head, byte_range)
            return response, head
        except BaseException:
            response.release()
            raise

    async def _exchange(self, request: _Request, *, ok: tuple[int, ...] = (200,), retry: bool = True) -> _Answer:
        """Send ``request`` (retried when it may be) and read its success answer whole."""
        return await self._retrying(request, lambda: self._once(request, ok, XML_LIMIT), retry=retry)

    async def _once(self, request: _Request, ok: tuple[int, ...], limit: int) -> _Answer:
        async with await self._send(request) as response:
            if response.status not in ok:
                raise await _error_of(response)
            return _Answer(response.status, response.headers, await _read_limited(response, limit))

    async def _send(self, request: _Request) -> aiohttp.ClientResponse:
        return await self.upstream.request(request.method, request.path, request.query, request.headers,
                                           body=request.body, content_length=request.length,
                                           payload_hash=request.payload_hash)

    async def _retrying(self, request: _Request, attempt: Callable[[], Awaitable[T]], *, retry: bool = True) -> T:
        """``attempt()``, tried again after a transient failure while ``request`` may be sent again."""
        tries = self._max_attempts if retry and request.replayable else 1
        for number in range(1, tries + 1):
            try:
                return await attempt()
            except (UpstreamError, *TRANSIENT_CONNECTION_ERRORS) as exc:
                if not _transient(exc):
                    raise
                if number == tries:
                    if tries > 1:
                        log.warning("upstream %s: giving up after %d attempts: %s: %s", request, tries,
                                    type(exc).__name__, exc)
                    raise
                pause = self._pause(number, exc)
                log.debug("upstream %s: attempt %d of %d failed (%s: %s); retrying in %.2fs", request, number,
                          tries, type(exc).__name__, exc, pause)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")  # the last try returned or raised

    def _pause(self, number: int, err: BaseException) -> float:
        """Exponential backoff with jitter (half fixed, half random), or the upstream's Retry-After when
        that is longer (capped)."""
        ceiling = self._backoff * 2 ** (number - 1)
        return max(ceiling / 2 + random.uniform(0, ceiling / 2), _retry_after(err))

    # ------------------------------------------------------------ metadata in place, buckets (tools)

    async def replace_metadata(self, bucket: str, key: str, headers: Mapping[str, str], *,
                               if_match: str) -> PutResult:
        """Replace an object's whole metadata set (``headers``: x-amz-meta-* and content headers) with a
        CopyObject of the object onto itself; no body goes through the gateway. Pinned to ``if_match``:
        an object changed since it was read is `ObjectChanged`, never overwritten. Retried on transient
        failures: a second copy of the same source with the same metadata is the same object."""
        return await self._copy(bucket, key, "PUT", [], {
            **headers, "x-amz-metadata-directive": "REPLACE"}, if_match, "CopyObjectResult")

    async def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int, *,
                               source_range: tuple[int, int], if_match: str) -> str:
        """One part of an upload copied upstream from bytes ``source_range`` (inclusive) of the object at
        the same key, pinned to ``if_match`` (`ObjectChanged` otherwise); the part's upstream ETag."""
        query = [("partNumber", str(part_number)), ("uploadId", upload_id)]
        headers = {"x-amz-copy-source-range": f"bytes={source_range[0]}-{source_range[1]}"}
        return (await self._copy(bucket, key, "PUT", query, headers, if_match, "CopyPartResult")).etag

    async def bucket_versioning(self, bucket: str) -> str | None:
        """GetBucketVersioning: "Enabled", "Suspended", or None when versioning was never turned on."""
        root = _xml((await self._exchange(_Request("GET", bucket_path(bucket), [("versioning", "")]))).body,
                    "VersioningConfiguration", "GetBucketVersioningResponse")  # S3's name, moto's
        return text(root, "Status") or None

    async def bucket_cors(self, bucket: str) -> bytes | None:
        """GetBucketCors: the ``CORSConfiguration`` document, None when the bucket has none (404)."""
        try:
            return (await self._exchange(_Request("GET", bucket_path(bucket), [("cors", "")]))).body
        except UpstreamError as exc:
            if exc.status == 404 and exc.code != "NoSuchBucket":
                return None
            raise

    async def list_buckets(self) -> list[str]:
        """The names of every bucket the upstream credentials list."""
        root = _xml((await self._exchange(_Request("GET", "/"))).body, "ListAllMyBucketsResult")
        buckets = child(root, "Buckets")
        return [] if buckets is None else [text(element, "Name") or "" for element in children(buckets, "Bucket")]

    async def _copy(self, bucket: str, key: str, method: str, query: list[tuple[str, str]],
                    headers: Mapping[str, str], if_match: str, result: str) -> PutResult:
        """A server-side copy from the object at ``key`` itself; its result's ETag (S3 may fail a copy
        after its 200 has started: such an ``<Error>`` body raises UpstreamError with its code)."""
        if not if_match:
            raise IntegrityError("a copy of an object is pinned to the ETag it was read with")
        sent = {**headers, "x-amz-copy-source": object_path(bucket, key), "x-amz-copy-source-if-match": if_match}
        request = _Request(method, object_path(bucket, key), query, sent)

        async def attempt() -> PutResult:
            async with await self._send(request) as response:
                if response.status == 412:
                    raise ObjectChanged(412, await read_up_to(response, ERROR_BODY_LIMIT), response.headers)
                if response.status != 200:
                    raise await _error_of(response)
                body = await _read_limited(response, XML_LIMIT)
            if parse_s3_error(body) is not None:
                raise UpstreamError(200, body, response.headers)
            etag = text(_xml(body, result), "ETag") or _etag(response.headers)
            return PutResult(etag=etag, version_id=_version_id(response.headers), headers=response.headers)
        return await self._retrying(request, attempt)


class _OpenedBody:
    """`S3Client.get_object`'s context: the GET sent (retried until its status is known) on entry, its
    connection released on exit. A class, not a generator: it is on every read's path."""

    __slots__ = ("_client", "_request", "_range", "_pinned", "_response")

    def __init__(self, client: S3Client, request: _Request, byte_range: tuple[int, int] | None, pinned: bool) -> None:
        self._client, self._request, self._range, self._pinned = client, request, byte_range, pinned
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> ObjectBody:
        client, request = self._client, self._request
        response, head = await client._retrying(request, lambda: client._open(request, self._range, self._pinned))
        self._response = response
        return ObjectBody(response, head)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._response is not None:
            await self._response.__aexit__(*exc_info)  # type: ignore[arg-type]


def _version_query(version_id: str | None) -> list[tuple[str, str]]:
    return [] if version_id is None else [("versionId", version_id)]


def _put_result(answer: _Answer) -> PutResult:
    return PutResult(etag=_etag(answer.headers), version_id=_version_id(answer.headers), headers=answer.headers)
