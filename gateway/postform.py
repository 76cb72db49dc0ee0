"""The body of a POST object (browser form upload): multipart/form-data, read as a stream with aiohttp's
multipart reader.

The fields before the ``file`` part are read into memory (S3 caps them at 20 KB); the file is never
buffered: it is handed on as a stream. Fields after the file are not read, as S3 ignores them.

The gateway must know the file's size before it sends the first byte upstream (the encrypted object's
length and its metadata go first). A form body carries no size for its file part, so the size is what
the Content-Length leaves once the form before the file and the closing delimiter are taken off:

    Content-Length = <fields and the file part's headers> + <file> + CRLF "--" boundary "--" CRLF

which is how browsers, curl, requests, aiohttp and the SDKs end a form. The stream then checks it: the
file part must end exactly there, before its last bytes are handed on, so a form that ends otherwise
(fields after the file, a body cut short) is refused as S3's MalformedPOSTRequest and nothing is stored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import BodyPartReader, MultipartReader
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import Request

from common.digits import parse_decimal
from gateway.limits import MAX_UPLOAD_SIZE
from gateway.s3errors import S3Error, invalid_argument, missing_content_length

MAX_FIELDS_SIZE = 20 * 1024
"""S3's limit on the form before the file part (MaxPostPreDataLengthExceededError above it)."""
_CHUNK = 256 * 1024
_MAX_BODY = MAX_UPLOAD_SIZE + 1024**2  # the largest file plus room for the form around it


def malformed_post() -> S3Error:
    return S3Error("MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data.",
                   400)


def fields_too_large() -> S3Error:
    return S3Error("MaxPostPreDataLengthExceededError",
                   "Your POST request fields preceding the upload file were too large.", 400,
                   MaxPostPreDataLength=str(MAX_FIELDS_SIZE))


def is_form(content_type: str) -> bool:
    """Whether a Content-Type names a multipart/form-data body."""
    mimetype = parse_mimetype(content_type)
    return (mimetype.type, mimetype.subtype) == ("multipart", "form-data")


class BodyStream:
    """The request body (chunks, read with the slow-client limits) with the interface aiohttp's multipart
    reader reads from (read, readline, at_eof, unread_data), counting the bytes handed out: where in the
    body the reader is, which sizes the file."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = bytearray()
        self._ended = False
        self.consumed = 0

    async def _fill(self) -> bool:
        """One more chunk into the buffer; False at the end of the body."""
        if self._ended:
            return False
        chunk = await anext(self._chunks, b"")
        if not chunk:
            self._ended = True
            return False
        self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.consumed += len(data)
        return data

    async def read(self, n: int = -1) -> bytes:
        if not self._buffer:
            await self._fill()
        return self._take(len(self._buffer) if n < 0 else n)

    async def readline(self, *, max_line_length: int | None = None) -> bytes:
        limit = max_line_length or MAX_FIELDS_SIZE
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > limit:
                raise ValueError("line too long")
            if not await self._fill():
                return self._take(len(self._buffer))
        if end + 1 > limit:
            raise ValueError("line too long")
        return self._take(end + 1)

    def at_eof(self) -> bool:
        return self._ended and not self._buffer

    def unread_data(self, data: bytes) -> None:
        self._buffer[:0] = data
        self.consumed -= len(data)

    async def rest(self, limit: int) -> bytes:
        """What is left of the body, up to ``limit`` bytes (more is cut at ``limit + 1``)."""
        while len(self._buffer) <= limit and await self._fill():
            pass
        return self._take(limit + 1)


@dataclass
class PostForm:
    """A form read up to its file: the fields before it (lower-case names, last value of a repeated
    name), the file part's filename and size, and the file's bytes still to stream (:meth:`file_chunks`)."""

    fields: dict[str, str]
    filename: str
    length: int
    _part: BodyPartReader
    _stream: BodyStream
    _closing: bytes

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes. The last piece is held back until the form is known to end right after the
        file (and so the file to have exactly ``length`` bytes): a form that does not is MalformedPOSTRequest
        before the upstream has all the bytes it was promised, so it stores nothing."""
        held, received = b"", 0
        try:
            while not self._part.at_eof():
                chunk = await self._part.read_chunk(_CHUNK)
                if not chunk:
                    continue
                received += len(chunk)
                if received > self.length:
                    raise malformed_post()
                if held:
                    yield held
                held = bytes(chunk)
            if received != self.length or await self._stream.rest(len(self._closing)) != self._closing:
                raise malformed_post()
        except (ValueError, AssertionError, HttpProcessingError):
            raise malformed_post() from None
        if held:
            yield held


async def read_form(request: Request, chunks: AsyncIterator[bytes]) -> PostForm:
    """The form of a POST object request up to its file part. ``chunks``: the request body."""
    declared = request.headers.get("Content-Length")
    content_length = parse_decimal(declared.strip(), _MAX_BODY + 1) if declared is not None else None
    if content_length is None:
        raise missing_content_length()
    stream = BodyStream(chunks)
    try:
        boundary = parse_mimetype(request.headers.get("Content-Type", "")).parameters.get("boundary", "")
        reader = MultipartReader(request.headers, stream)  # type: ignore[arg-type]  # reads through BodyStream
        fields, part = await _read_fields(reader, stream)
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError):
        raise malformed_post() from None
    closing = b"--" + boundary.encode() + b"--\r\n"
    length = content_length - stream.consumed - len(b"\r\n" + closing)
    if length < 0:
        raise malformed_post()
    return PostForm(fields, part.filename or "", length, part, stream, closing)


async def _read_fields(reader: MultipartReader, stream: BodyStream) -> tuple[dict[str, str], BodyPartReader]:
    """The fields up to the ``file`` part, and that part (its headers read, its body not)."""
    fields: dict[str, str] = {}
    while True:
        part = await reader.next()
        if part is None:
            raise invalid_argument("POST requires exactly one file upload per request.", "file", "0")
        if not isinstance(part, BodyPartReader) or not part.name:
            raise malformed_post()
        if stream.consumed > MAX_FIELDS_SIZE:
            raise fields_too_large()
        if part.name.lower() == "file":
            return fields, part
        fields[part.name.lower()] = await _field_value(part)


async def _field_value(part: BodyPartReader) -> str:
    value = bytearray()
    while chunk := await part.read_chunk(8192):
        value += chunk
        if len(value) > MAX_FIELDS_SIZE:
            raise fields_too_large()
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise malformed_post() from None
