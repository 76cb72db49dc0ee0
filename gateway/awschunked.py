"""Streaming decoder for `Content-Encoding: aws-chunked` request bodies.

The decoder runs on the HTTP-de-chunked byte stream: aws-chunk framing does not line up with
HTTP chunks or socket reads (botocore writes 128 KiB HTTP chunks around 1 MiB aws-chunks; JS v3
sends each frame piece on its own), so it buffers across reads. Memory stays bounded: unsigned
chunk data streams through as it arrives; a signed chunk (at most `max_chunk_size`) is held until
its signature is verified, so no unauthenticated byte is released.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterable, AsyncIterator, Collection

from gateway.s3errors import S3Error, from_auth_error, incomplete_body, invalid_request, malformed_trailer
from common.sigv4 import AuthError, ChunkSignatureVerifier

MAX_LINE = 4096
MAX_TRAILER_BYTES = 16 * 1024
TRAILER_SIGNATURE = "x-amz-trailer-signature"
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


class _Reader:
    """Byte reads over an async iterable of arbitrarily split pieces. The current piece is
    consumed through an offset (no re-copying of the rest), and only an unfinished frame
    header is carried over into the next piece."""

    def __init__(self, source: AsyncIterable[bytes]) -> None:
        self._source = aiter(source)
        self._buf = b""
        self._pos = 0
        self._eof = False

    def _available(self) -> int:
        return len(self._buf) - self._pos

    async def _fill(self) -> bool:
        """Append the next non-empty piece to what is left unread; False at end of stream."""
        while not self._eof:
            try:
                piece = bytes(await anext(self._source))
            except StopAsyncIteration:
                self._eof = True
                break
            if piece:
                self._buf = self._buf[self._pos:] + piece if self._available() else piece
                self._pos = 0
                return True
        return False

    def _take(self, size: int) -> bytes:
        data = self._buf[self._pos:self._pos + size]
        self._pos += len(data)
        return data

    async def read_some(self, limit: int) -> bytes:
        """Between 1 and `limit` bytes; IncompleteBody at end of stream."""
        if not self._available() and not await self._fill():
            raise incomplete_body("The request body terminated unexpectedly")
        return self._take(limit)

    async def read_exact(self, size: int) -> bytes:
        while self._available() < size:
            if not await self._fill():
                raise incomplete_body("The request body terminated unexpectedly")
        return self._take(size)

    async def read_line(self) -> bytes:
        """One CRLF-terminated line without its CRLF, at most MAX_LINE bytes."""
        searched = 0
        while (end := self._buf.find(b"\r\n", self._pos + searched)) < 0:
            if self._available() > MAX_LINE:
                raise invalid_request("An aws-chunked header or trailer line is too long.")
            searched = max(self._available() - 1, 0)
            if not await self._fill():
                raise incomplete_body("The request body terminated unexpectedly")
        line = self._buf[self._pos:end]
        self._pos = end + 2
        return line

    async def at_eof(self) -> bool:
        return not self._available() and not await self._fill()


def _parse_chunk_header(line: bytes) -> tuple[int, str | None]:
    """`hex-size[;chunk-signature=SIG][;other-ext]` -> (size, signature or None)."""
    size_part, *extensions = line.split(b";")
    size_part = size_part.strip()
    if not _CHUNK_SIZE.fullmatch(size_part):
        raise invalid_request("The aws-chunked chunk size is not valid hexadecimal.")
    signature = None
    for extension in extensions:
        name, _, value = extension.partition(b"=")
        if name.strip() == b"chunk-signature":
            signature = value.strip().decode("ascii", "replace")
    return int(size_part, 16), signature


def _parse_trailer_line(line: bytes) -> tuple[str, str]:
    name, sep, value = line.partition(b":")
    if not sep or not name.strip():
        raise malformed_trailer()
    try:
        return name.strip().lower().decode("ascii"), value.strip().decode("ascii")
    except UnicodeDecodeError:
        raise malformed_trailer() from None


class AwsChunkedDecoder:
    """Decodes an aws-chunked body into its payload; `trailers` (lower-case names) is filled
    once the stream is exhausted. Raises S3Error for malformed framing (InvalidRequest), early
    end or wrong length (IncompleteBody), bad signatures (SignatureDoesNotMatch) and missing or
    malformed trailers (MalformedTrailerError)."""

    def __init__(
        self,
        source: AsyncIterable[bytes],
        *,
        decoded_length: int | None,
        chunk_verifier: ChunkSignatureVerifier | None = None,
        trailer_names: Collection[str] = (),
        max_chunk_size: int = 16 * 1024 * 1024,
    ) -> None:
        self._reader = _Reader(source)
        self._decoded_length = decoded_length
        self._verifier = chunk_verifier
        self._trailer_names = frozenset(n.lower() for n in trailer_names)
        self._max_chunk_size = max_chunk_size
        self._decoded = 0
        self.trailers: dict[str, str] = {}

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._decode()

    async def _decode(self) -> AsyncIterator[bytes]:
        while True:
            size, signature = _parse_chunk_header(await self._reader.read_line())
            self._check_chunk(size, signature)
            if size == 0:
                self._verify_chunk(hashlib.sha256(b"").hexdigest(), signature)
                break
            async for data in self._chunk_data(size, signature):
                yield data
        await self._read_trailers()
        if not await self._reader.at_eof():
            raise invalid_request("Unexpected data after the final aws-chunked chunk.")
        if self._decoded_length is not None and self._decoded != self._decoded_length:
            raise self._length_error()

    def _check_chunk(self, size: int, signature: str | None) -> None:
        if size > self._max_chunk_size:
            raise invalid_request(f"An aws-chunked chunk exceeds {self._max_chunk_size} bytes.")
        if self._verifier is not None and signature is None:
            raise from_auth_error(AuthError("SignatureDoesNotMatch", "A chunk signature is missing.", 403))
        self._decoded += size
        if self._decoded_length is not None and self._decoded > self._decoded_length:
            raise self._length_error()

    def _length_error(self) -> S3Error:
        return incomplete_body(
            "The decoded body length does not match X-Amz-Decoded-Content-Length: "
            f"expected {self._decoded_length}, got at least {self._decoded}"
        )

    async def _chunk_data(self, size: int, signature: str | None) -> AsyncIterator[bytes]:
        """Stream an unsigned chunk through; hold a signed one until its signature checks."""
        held: list[bytes] = []
        digest = hashlib.sha256() if self._verifier is not None else None
        remaining = size
        while remaining:
            data = await self._reader.read_some(remaining)
            remaining -= len(data)
            if digest is None:
                yield data
            else:
                digest.update(data)
                held.append(data)
        if await self._reader.read_exact(2) != b"\r\n":
            raise invalid_request("An aws-chunked chunk is not followed by CRLF.")
        if digest is not None:
            self._verify_chunk(digest.hexdigest(), signature)
            for data in held:
                yield data

    def _verify_chunk(self, sha256_hex: str, signature: str | None) -> None:
        if self._verifier is None:
            return
        try:
            self._verifier.verify_chunk(sha256_hex, signature or "")
        except AuthError as err:
            raise from_auth_error(err) from None

    async def _read_trailers(self) -> None:
        """Trailer lines `name:value` up to a blank line; the signature line, when present,
        signs the canonical form of the others: `name:value\\n` each, sorted by name (as the
        AWS SDKs sign them). A stream that ends right after
        the final chunk is accepted when no trailer was announced."""
        signature = None
        total = 0
        while True:
            if not self._trailer_names and not self.trailers and await self._reader.at_eof():
                break
            line = await self._reader.read_line()
            if not line:
                break
            total += len(line)
            if total > MAX_TRAILER_BYTES:
                raise malformed_trailer()
            name, value = _parse_trailer_line(line)
            if name == TRAILER_SIGNATURE:
                signature = value
            else:
                self.trailers[name] = value
        self._check_trailers(signature)

    def _check_trailers(self, signature: str | None) -> None:
        if not self._trailer_names <= self.trailers.keys():
            raise malformed_trailer()
        if self._verifier is None or (not self.trailers and signature is None):
            return
        canonical = "".join(f"{name}:{self.trailers[name]}\n" for name in sorted(self.trailers)).encode()
        try:
            self._verifier.verify_trailer(canonical, signature or "")
        except AuthError as err:
            raise from_auth_error(err) from None
