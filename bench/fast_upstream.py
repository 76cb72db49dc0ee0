"""A minimal S3-compatible-enough store for benchmarks: fast enough never to be the bottleneck.

moto's PUT runs at ~150 MB/s, far below what the gateway can do, so throughput through the gateway
would only measure moto. This server does the least an S3 upstream must: it accepts any SigV4
Authorization without verifying it (it is a benchmark sink), stores small bodies in memory and big
ones in a spool file (on tmpfs when available), and serves back the exact bytes it was given —
the gateway authenticates every ciphertext segment, so a synthetic body would fail on GET.

Operations: CreateBucket, HeadBucket, ListObjectsV2 (prefix, max-keys), PutObject, GetObject (with
Range and If-Match), HeadObject, DeleteObject, GetObjectTagging (always empty: what a copy reads),
CopyObject of an object onto itself with REPLACEd metadata (what `gateway rewrap` makes),
and multipart uploads: CreateMultipartUpload,
UploadPart, CompleteMultipartUpload, AbortMultipartUpload, ListParts (max-parts, part-number-marker).
Path-style addressing only.

Parts are always spooled (an 8 MiB part would otherwise be kept in memory and MD5-hashed inline).
Complete does not copy them: the object is the list of its parts, read in turn (ranges included),
with the ETag S3 gives multipart objects, MD5(part digests)-k, and the user metadata given to Create.

    .venv/bin/python -m bench.fast_upstream --listen 127.0.0.1:0 [--spool-dir /dev/shm]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote
from xml.sax.saxutils import escape

from aiohttp import web
from awscrt.checksums import crc64nvme

from bench.serving import serve_until_signalled
from common.eventloop import run

CHUNK = 1 << 20
MEMORY_LIMIT = 8 << 20  # bodies up to this size stay in memory; bigger ones go to a spool file
KEPT_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control", "expires")


@dataclass
class StoredObject:
    size: int
    etag: str
    last_modified: str
    headers: dict[str, str]
    data: bytes | None = None  # small objects
    path: Path | None = None   # big objects
    pieces: tuple["StoredObject", ...] = ()  # a completed multipart object: its parts, in order

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        for piece in self.pieces:
            piece.discard()


@dataclass
class Upload:
    """A multipart upload in progress: the object's name and headers, and the parts received so far."""

    bucket: str
    key: str
    headers: dict[str, str]
    parts: dict[int, StoredObject] = field(default_factory=dict)

    def discard(self) -> None:
        for part in self.parts.values():
            part.discard()
        self.parts.clear()


@dataclass
class Store:
    spool_dir: Path
    md5_etags: bool = False
    buckets: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)

    def put(self, bucket: str, key: str, obj: StoredObject) -> None:
        old = self.buckets[bucket].get(key)
        self.buckets[bucket][key] = obj
        if old is not None:
            old.discard()


class _MemoryBody:
    """A small body: kept in memory, MD5-hashed inline (cheap at this size)."""

    path: Path | None = None

    def __init__(self) -> None:
        self.digest: "hashlib._Hash | Crc64Digest" = hashlib.md5()
        self.size = 0
        self._parts: list[bytes] = []

    async def add(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        self._parts.append(chunk)

    async def finish(self) -> None:
        pass

    def data(self) -> bytes | None:
        return b"".join(self._parts)

    def discard(self) -> None:
        self._parts.clear()


class Crc64Digest:
    """A content tag for big bodies: CRC64/NVME and the size, shaped like an MD5 (32 hex digits).

    MD5 runs at only 200-400 MB/s on the benchmark machine, which made this sink slower than the
    gateway; CRC64 runs at several GB/s. Real S3 does not promise MD5 ETags either (SSE-KMS and
    multipart objects have other ETags); the tag still changes whenever the content does.
    """

    def __init__(self) -> None:
        self._crc = 0
        self._size = 0

    def update(self, chunk: bytes) -> None:
        self._crc = crc64nvme(chunk, self._crc)
        self._size += len(chunk)

    def hexdigest(self) -> str:
        return f"{self._crc:016x}{self._size:016x}"


class _SpooledBody(_MemoryBody):
    """A big body: hashed and written to a spool file on a worker thread, one chunk in flight,
    so the hash and the copy overlap with receiving the next chunk."""

    def __init__(self, spool_dir: Path, md5_etags: bool) -> None:
        super().__init__()
        if not md5_etags:
            self.digest = Crc64Digest()
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix="obj-")
        self._file: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        self.path = Path(name)
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: asyncio.Future | None = None

    def _absorb(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self._file.write(chunk)

    async def add(self, chunk: bytes) -> None:
        if self._pending is not None:
            await self._pending
        self.size += len(chunk)
        self._pending = asyncio.get_running_loop().run_in_executor(self._pool, self._absorb, chunk)

    async def finish(self) -> None:
        if self._pending is not None:
            await self._pending
        self._close()

    def data(self) -> bytes | None:
        return None

    def _close(self) -> None:
        self._pool.shutdown(wait=True)
        self._file.close()

    def discard(self) -> None:
        self._close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _error(code: str, message: str, status: int) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{escape(message)}</Message><RequestId>{uuid.uuid4().hex}</RequestId></Error>")
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _xml(root: str, inner: str) -> web.Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</{root}>')
    return web.Response(body=body.encode(), content_type="application/xml")


def _iso_time(http_date: str) -> str:
    """ListParts dates are ISO 8601; objects keep theirs as HTTP dates (what GET and HEAD send)."""
    return parsedate_to_datetime(http_date).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _kept_headers(request: web.Request) -> dict[str, str]:
    """The headers S3 stores with an object and returns on GET: user metadata and content headers."""
    return {name.lower(): value for name, value in request.headers.items()
            if name.lower().startswith("x-amz-meta-") or name.lower() in KEPT_HEADERS}


def _split(request: web.Request) -> tuple[str, str]:
    path = request.match_info["path"]
    bucket, _, key = path.partition("/")
    return bucket, key


class FastUpstream:
    """The request handlers over one in-process ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        bucket, key = _split(request)
        if not bucket:  # ListBuckets: what the gateway's start-up check of its upstream asks (gateway/probes.py)
            if request.method != "GET":
                return _error("MethodNotAllowed", "The method is not allowed", 405)
            names = "".join(f"<Bucket><Name>{escape(name)}</Name></Bucket>" for name in sorted(self.store.buckets))
            return _xml("ListAllMyBucketsResult", f"<Buckets>{names}</Buckets>")
        if not key:
            return await self._bucket_op(request, bucket)
        objects = self.store.buckets.get(bucket)
        if objects is None:
            return _error("NoSuchBucket", "The specified bucket does not exist", 404)
        if "uploads" in request.query or "uploadId" in request.query:
            return await self._multipart(request, bucket, key)
        if request.method == "PUT" and "x-amz-copy-source" in request.headers:
            return self._copy_in_place(request, bucket, key)
        if request.method == "PUT":
            return await self._put(request, bucket, key)
        obj = objects.get(key)
        if "tagging" in request.query and obj is not None and request.method == "GET":
            return _xml("Tagging", "<TagSet></TagSet>")  # tags are not kept: every object has none
        if obj is None and request.method == "DELETE":
            return web.Response(status=204)  # S3 deletes an absent key successfully
        if obj is None:
            return _error("NoSuchKey", "The specified key does not exist.", 404)
        if request.method == "DELETE":
            del objects[key]
            obj.discard()
            return web.Response(status=204)
        if request.method in ("GET", "HEAD"):
            return await self._get(request, obj)
        return _error("MethodNotAllowed", "The method is not allowed", 405)

    async def _bucket_op(self, request: web.Request, bucket: str) -> web.StreamResponse:
        if request.method == "PUT":
            self.store.buckets.setdefault(bucket, {})
            return web.Response(status=200, headers={"Location": f"/{bucket}"})
        if bucket not in self.store.buckets:
            return _error("NoSuchBucket", "The specified bucket does not exist", 404)
        if request.method == "HEAD":
            return web.Response(status=200)
        if request.method == "GET":
            return self._list(request, bucket)
        return _error("MethodNotAllowed", "The method is not allowed", 405)

    def _list(self, request: web.Request, bucket: str) -> web.Response:
        """ListObjectsV2 without delimiters or continuation: enough for tools that look around."""
        prefix = request.query.get("prefix", "")
        max_keys_text = request.query.get("max-keys", "1000")
        if not max_keys_text.isdigit():
            return _error("InvalidArgument", "max-keys must be a non-negative integer", 400)
        max_keys = int(max_keys_text)
        keys = sorted(k for k in self.store.buckets[bucket] if k.startswith(prefix))
        shown = keys[:max_keys]
        contents = "".join(
            f"<Contents><Key>{escape(k)}</Key><Size>{self.store.buckets[bucket][k].size}</Size>"
            f"<ETag>{escape(self.store.buckets[bucket][k].etag)}</ETag>"
            f"<StorageClass>STANDARD</StorageClass></Contents>" for k in shown)
        return _xml("ListBucketResult",
                    f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(shown)}</KeyCount>"
                    f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(len(keys) > max_keys).lower()}</IsTruncated>"
                    f"{contents}")

    async def _receive(self, request: web.Request, spool: bool) -> StoredObject:
        """Stream the body into memory or a spool file, hashing as it goes (the ETag)."""
        declared = request.content_length
        spill = spool or declared is None or declared > MEMORY_LIMIT
        body = _SpooledBody(self.store.spool_dir, self.store.md5_etags) if spill else _MemoryBody()
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                await body.add(chunk)
            await body.finish()
        except BaseException:
            body.discard()
            raise
        return StoredObject(size=body.size, etag=f'"{body.digest.hexdigest()}"', last_modified=formatdate(usegmt=True),
                            headers=_kept_headers(request), data=body.data(), path=body.path)

    async def _put(self, request: web.Request, bucket: str, key: str) -> web.Response:
        obj = await self._receive(request, spool=False)
        self.store.put(bucket, key, obj)
        return web.Response(status=200, headers={"ETag": obj.etag})

    def _copy_in_place(self, request: web.Request, bucket: str, key: str) -> web.Response:
        """CopyObject of an object onto itself with new metadata (x-amz-metadata-directive: REPLACE), the
        one copy `gateway rewrap` makes; x-amz-copy-source-if-match is honoured. The body is not touched."""
        source = unquote(request.headers["x-amz-copy-source"].split("?", 1)[0]).lstrip("/")
        if source != f"{bucket}/{key}" or request.headers.get("x-amz-metadata-directive") != "REPLACE":
            return _error("NotImplemented", "only a metadata-replacing copy of an object onto itself", 501)
        obj = self.store.buckets[bucket].get(key)
        if obj is None:
            return _error("NoSuchKey", "The specified key does not exist.", 404)
        pinned = request.headers.get("x-amz-copy-source-if-match")
        if pinned is not None and pinned.strip().strip('"') != obj.etag.strip('"'):
            return _error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412)
        obj.headers, obj.last_modified = _kept_headers(request), formatdate(usegmt=True)
        return _xml("CopyObjectResult", f"<ETag>{escape(obj.etag)}</ETag>")

    async def _multipart(self, request: web.Request, bucket: str, key: str) -> web.Response:
        if request.method == "POST" and "uploads" in request.query:
            return self._create_upload(request, bucket, key)
        upload_id = request.query.get("uploadId", "")
        upload = self.store.uploads.get(upload_id)
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            return _error("NoSuchUpload", "The specified upload does not exist.", 404)
        if request.method == "PUT":
            return await self._upload_part(request, upload)
        if request.method == "POST":
            return await self._complete(request, upload_id, upload)
        if request.method == "DELETE":
            del self.store.uploads[upload_id]
            upload.discard()
            return web.Response(status=204)
        if request.method == "GET":
            return _list_parts(request, upload_id, upload)
        return _error("MethodNotAllowed", "The method is not allowed", 405)

    def _create_upload(self, request: web.Request, bucket: str, key: str) -> web.Response:
        """Remember the object's metadata now: S3 gives the completed object what Create was sent."""
        upload_id = uuid.uuid4().hex
        self.store.uploads[upload_id] = Upload(bucket, key, _kept_headers(request))
        return _xml("InitiateMultipartUploadResult", f"<Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
                                                     f"<UploadId>{upload_id}</UploadId>")

    async def _upload_part(self, request: web.Request, upload: Upload) -> web.Response:
        number = request.query.get("partNumber", "")
        if not number.isdigit() or not 1 <= int(number) <= 10000:
            return _error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive", 400)
        part = await self._receive(request, spool=True)
        old = upload.parts.get(int(number))
        upload.parts[int(number)] = part
        if old is not None:
            old.discard()
        return web.Response(status=200, headers={"ETag": part.etag})

    async def _complete(self, request: web.Request, upload_id: str, upload: Upload) -> web.Response:
        """Check the client's part list (numbers ascending, ETags of the stored parts) and make the
        object out of those parts, without copying them; parts left out are dropped."""
        try:
            requested = [{_local(item.tag): (item.text or "").strip() for item in part}
                         for part in ET.fromstring(await request.read()) if _local(part.tag) == "Part"]
            numbers = [int(part["PartNumber"]) for part in requested]
        except (ET.ParseError, KeyError, ValueError):
            return _error("MalformedXML", "The XML you provided was not well-formed", 400)
        if not numbers or numbers != sorted(set(numbers)):
            return _error("InvalidPartOrder", "The list of parts was not in ascending order.", 400)
        for number, part in zip(numbers, requested):
            stored = upload.parts.get(number)
            if stored is None or part.get("ETag", "").strip('"') != stored.etag.strip('"'):
                return _error("InvalidPart", "One or more of the specified parts could not be found.", 400)
        pieces = tuple(upload.parts.pop(number) for number in numbers)
        digests = b"".join(bytes.fromhex(piece.etag.strip('"')) for piece in pieces)
        etag = f'"{hashlib.md5(digests).hexdigest()}-{len(pieces)}"'
        obj = StoredObject(size=sum(piece.size for piece in pieces), etag=etag,
                           last_modified=formatdate(usegmt=True), headers=upload.headers, pieces=pieces)
        del self.store.uploads[upload_id]
        upload.discard()
        self.store.put(upload.bucket, upload.key, obj)
        return _xml("CompleteMultipartUploadResult",
                    f"<Location>{escape(request.url.with_query(None).human_repr())}</Location>"
                    f"<Bucket>{escape(upload.bucket)}</Bucket><Key>{escape(upload.key)}</Key>"
                    f"<ETag>{escape(etag)}</ETag>")

    async def _get(self, request: web.Request, obj: StoredObject) -> web.StreamResponse:
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in (obj.etag, "*"):
            return _error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412)
        span = _parse_range(request.headers.get("Range"), obj.size)
        if span == "invalid":
            return _error("InvalidRange", "The requested range is not satisfiable", 416)
        start, end = span if span else (0, obj.size - 1)
        response = web.StreamResponse(status=206 if span else 200, headers={
            **obj.headers, "ETag": obj.etag, "Last-Modified": obj.last_modified, "Accept-Ranges": "bytes"})
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{obj.size}"
        response.content_length = end - start + 1 if obj.size else 0
        await response.prepare(request)
        if request.method == "GET" and obj.size:
            await _send_span(response, obj, start, end)
        await response.write_eof()
        return response


def _list_parts(request: web.Request, upload_id: str, upload: Upload) -> web.Response:
    """ListParts, paged by max-parts (at most 1000) and part-number-marker."""
    max_text, marker_text = request.query.get("max-parts", "1000"), request.query.get("part-number-marker", "0")
    if not (max_text.isdigit() and marker_text.isdigit()):
        return _error("InvalidArgument", "max-parts and part-number-marker must be non-negative integers", 400)
    max_parts, marker = min(int(max_text), 1000), int(marker_text)
    numbers = sorted(n for n in upload.parts if n > marker)
    shown = numbers[:max_parts]
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><LastModified>{_iso_time(upload.parts[n].last_modified)}</LastModified>"
        f"<ETag>{escape(upload.parts[n].etag)}</ETag><Size>{upload.parts[n].size}</Size></Part>" for n in shown)
    return _xml("ListPartsResult",
                f"<Bucket>{escape(upload.bucket)}</Bucket><Key>{escape(upload.key)}</Key>"
                f"<UploadId>{upload_id}</UploadId><PartNumberMarker>{marker}</PartNumberMarker>"
                f"<NextPartNumberMarker>{shown[-1] if shown else marker}</NextPartNumberMarker>"
                f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{str(len(numbers) > max_parts).lower()}</IsTruncated>"
                f"<StorageClass>STANDARD</StorageClass>{parts}")


async def _send_span(response: web.StreamResponse, obj: StoredObject, start: int, end: int) -> None:
    """Bytes start..end (inclusive) of the object; a multipart object's come from the parts they fall in."""
    if obj.pieces:
        offset = 0
        for piece in obj.pieces:
            first, last = max(start, offset), min(end, offset + piece.size - 1)
            if first <= last:
                await _send_span(response, piece, first - offset, last - offset)
            offset += piece.size
        return
    if obj.data is not None:
        await response.write(obj.data[start:end + 1])
        return
    assert obj.path is not None
    with open(obj.path, "rb", buffering=0) as f:
        f.seek(start)
        remaining = end - start + 1
        while remaining:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise RuntimeError("spool file shorter than recorded")
            remaining -= len(chunk)
            await response.write(chunk)


def _parse_range(value: str | None, size: int) -> tuple[int, int] | str | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` -> inclusive (start, end); "invalid" if unsatisfiable."""
    if value is None or not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    if start >= size or start > end:
        return "invalid"
    return start, end


def default_spool_dir() -> Path:
    """tmpfs when it exists, so big objects cost memory bandwidth, not disk I/O."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


async def serve(host: str, port: int, spool_parent: Path, md5_etags: bool) -> None:
    spool = Path(tempfile.mkdtemp(prefix="fast-upstream-", dir=spool_parent))
    store = Store(spool, md5_etags)
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{path:.*}", FastUpstream(store).dispatch)
    try:
        await serve_until_signalled(app, host, port)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--spool-dir", type=Path, default=None, help="where big bodies are kept (default /dev/shm)")
    parser.add_argument("--md5-etags", action="store_true",
                        help="MD5 ETags for big bodies too (slower than the gateway on a small machine)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    run(serve(host, int(port), args.spool_dir or default_spool_dir(), args.md5_etags))


if __name__ == "__main__":
    main()
