"""Encrypting multipart uploads: create, store parts, complete with a checked, sealed manifest.

    Create    OK, seal = ObjectKeys.create(...); upstream upload opened with the metadata (layout:
              Multipart(tag)); the client's UploadId carries that metadata (gateway/uploads.py)
    Part n    stored = params_n || E_n(part) || padding   (gateway/crypto/multipart.py), its client ETag
              records params_n and the checksum verified on it
    Complete  the client's list checked against those records and the upstream's ListParts; the
              manifest conditionally created (gateway/objects/manifests.py); then the upstream Complete

The gateway keeps no state of its own between requests: several processes may serve one upload.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy
from typing import AsyncIterable, Mapping, Sequence

from gateway.crypto import metadata
from gateway.crypto.checksum import COMPOSITE, FULL_OBJECT, FULL_OBJECT_ALGORITHMS, ObjectChecksum, combined
from gateway.crypto.metadata import EncryptionInfo, Multipart
from gateway.crypto.multipart import PART_OVERHEAD, EncryptedPart, Manifest, ManifestPart, part_count_from_etag
from gateway.crypto.objectkey import ObjectKey
from gateway.crypto.stream import IntegrityError
from gateway.crypto.sse import CustomerKey, CustomerKeySeal, ObjectKeys, Requester, SseRequest, WrongCustomerKey
from gateway.limits import MIN_PART_SIZE
from gateway.objects.manifests import Manifests
from gateway.objects.writing import check_metadata_size
from gateway.s3client import CompleteResult, ObjectHead, S3Client, StoredPart, UpstreamError
from gateway.s3errors import (S3Error, bad_digest, entity_too_small, invalid_part, invalid_request, no_such_upload,
                              precondition_failed)
from gateway.uploads import ForgedToken, Upload, UploadTokens

MISSING_SSEC = ("The multipart upload initiate requested encryption. Subsequent part requests must include "
                "the appropriate encryption parameters.")
WRONG_SSEC = "The provided encryption parameters did not match the ones used originally."
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")

log = logging.getLogger("gateway.objects")


@dataclass(frozen=True)
class RequestedPart:
    """One entry of a Complete request: part number, the ETag the client names, its checksums."""

    number: int
    etag: str
    checksums: Mapping[str, str]


@dataclass(frozen=True)
class ExpectedChecksum:
    """The object checksum a Complete names (``x-amz-checksum-<alg>``, optionally ``x-amz-checksum-type``):
    a digest, with the part count of a composite value (``b64-N``)."""

    algorithm: str
    digest: bytes
    parts: int | None
    kind: str | None


@dataclass(frozen=True)
class Created:
    upload_id: str
    info: EncryptionInfo


@dataclass(frozen=True)
class Completed:
    result: CompleteResult
    manifest: Manifest


class MultipartWriter:
    """The encrypting side of multipart uploads."""

    def __init__(self, client: S3Client, keys: ObjectKeys, tokens: UploadTokens, manifests: Manifests) -> None:
        self.client = client
        self.keys = keys
        self.tokens = tokens
        self.manifests = manifests

    async def create(self, bucket: str, key: str, headers: Mapping[str, str], request: SseRequest, *,
                     requester: Requester, checksum_intent: tuple[str, str] | None = None) -> Created:
        """Open the upload upstream with the object's encryption metadata (one KMS call for SSE-KMS, made
        for ``requester``; none under a cached Bucket Key). ``checksum_intent``: (algorithm, type) of the
        object checksum the client asked for, carried in the UploadId."""
        object_key, seal = await self.keys.create(bucket, key, request, requester)
        info = EncryptionInfo(seal=seal, layout=Multipart(metadata.new_upload_tag()))
        fields = metadata.encode(info)
        stored_headers = {**headers, **fields}
        check_metadata_size(stored_headers)
        upstream_id = await self.client.create_multipart_upload(bucket, key, stored_headers)
        client_id = self.tokens.issue_upload_id(bucket, key, upstream_id, fields, checksum_intent)
        return Created(client_id, info)

    async def upload_key(self, bucket: str, key: str, upload: Upload, customer_key: CustomerKey | None,
                         requester: Requester) -> ObjectKey:
        """The upload's object key: SSE-C uploads need the customer key on every part (checked against the
        stored check value); KMS uploads unwrap the upload's data key for the requester, as S3 needs
        kms:Decrypt of whoever uploads a part. The data-key cache (gateway/datakeys.py) makes that one KMS
        call per upload, process and principal, within its limits: a CMK disabled meanwhile stops the
        upload's further parts within data_key_max_age."""
        seal = upload.info.seal
        if isinstance(seal, CustomerKeySeal):
            if customer_key is None:
                raise invalid_request(MISSING_SSEC)
            try:
                return await self.keys.open(bucket, key, seal, customer_key, requester)
            except WrongCustomerKey:
                raise invalid_request(WRONG_SSEC) from None
        if customer_key is not None:
            raise invalid_request(WRONG_SSEC)
        return await self.keys.open(bucket, key, seal, None, requester)

    async def put_part(self, bucket: str, key: str, upload: Upload, number: int, body: AsyncIterable[bytes],
                       length: int, customer_key: CustomerKey | None, verified: Mapping[str, str], *,
                       requester: Requester) -> str:
        """Encrypt and store one part; its client ETag. ``verified``: the checksum header verified or computed
        over the body (the one ``part_checksum_algorithm`` names), which the body stream fills in as it ends
        (gateway/handlers/request_body.py): read only once the part is stored, it goes into the ETag so
        Complete can check the client's checksums and make the object's."""
        object_key = await self.upload_key(bucket, key, upload, customer_key, requester)
        part = EncryptedPart(body, object_key, number, length)
        result = await self.client.upload_part(bucket, key, upload.upstream_id, number, part, part.stored_size)
        return self.tokens.issue_part_etag(upload, number, result.etag, part.params, verified)

    async def complete(self, bucket: str, key: str, upload: Upload, requested: Sequence[RequestedPart],
                       customer_key: CustomerKey | None, *, requester: Requester, if_match: str | None = None,
                       if_none_match: str | None = None, expected: ExpectedChecksum | None = None) -> Completed:
        """Check the client's part list, store the manifest (conditionally), complete upstream; ``if_match``
        (an upstream ETag) / ``if_none_match`` (``*``): S3's conditional Complete, evaluated by the upstream
        atomically. A 412 met by a retry of this very Complete (its first answer lost) is its success.
        ``expected``: the object checksum the client names, checked against the one the parts make (which
        the manifest keeps)."""
        object_key = await self.upload_key(bucket, key, upload, customer_key, requester)
        layout = upload.info.layout
        assert isinstance(layout, Multipart)
        try:
            listed = await self.client.list_parts(bucket, key, upload.upstream_id)
        except UpstreamError as exc:
            if not exc.not_found:
                raise
            # The upload is gone upstream: completed (a retried Complete whose answer was lost) or never there.
            # S3 and moto say NoSuchUpload, Ceph RGW NoSuchKey.
            completed = await self._retried(bucket, key, upload, requested, object_key, exc)
            _check_expected(expected, completed.manifest.checksum)
            return completed
        stored = {part.number: part for part in listed}
        manifest = self._checked_manifest(upload, requested, stored)
        _check_expected(expected, manifest.checksum)
        if if_none_match is not None:
            await self._refuse_another_object(bucket, key, layout)
        await self.manifests.create(bucket, layout.upload_tag, object_key, manifest)
        # The manifest stays on failure: a concurrent or retried Complete of this upload may have succeeded with it.
        upstream_etags = [stored[part.number].etag for part in requested]
        try:
            result = await self.client.complete_multipart_upload(
                bucket, key, upload.upstream_id, list(zip((part.number for part in requested), upstream_etags)),
                if_match=if_match, if_none_match=if_none_match)
        except UpstreamError as exc:
            if not (exc.not_found or (exc.precondition_failed and (if_match or if_none_match))):
                raise
            result = await self._completed_already(bucket, key, layout.upload_tag, manifest, exc)
        if not result.etag.strip().strip('"'):
            result = await self._filled_etag(bucket, key, layout.upload_tag, manifest, result, upstream_etags)
        return Completed(result, manifest)

    async def _refuse_another_object(self, bucket: str, key: str, layout: Multipart) -> None:
        """``If-None-Match: *`` checked here too, before the upstream's Complete: Ceph RGW 16 ignores the
        header on Complete, and would overwrite an object the client asked to keep. The header still goes
        upstream, atomic where honoured; here an object that is not this very upload (a retry finds its
        own) is S3's 412. Where the upstream ignores the header a write racing between this HEAD and the
        Complete is not caught: say so to whoever relies on it (README)."""
        try:
            head = await self.client.head_object(bucket, key)
        except UpstreamError as exc:
            if exc.not_found:
                return
            raise
        info = metadata.decode(head.headers)
        if info is None or info.layout != layout:
            raise precondition_failed("If-None-Match")

    async def _filled_etag(self, bucket: str, key: str, tag: str, manifest: Manifest, result: CompleteResult,
                           upstream_etags: Sequence[str]) -> CompleteResult:
        """A Complete answered without an ETag (Ceph RGW 16 sends ``<ETag></ETag>``): the completed object's,
        from a HEAD (of the version completed, if the answer named one) that shows this very upload, its
        metadata naming this upload's manifest, its size and part count the manifest's. An object overwritten
        meanwhile shows another: the ETag is then S3's multipart ETag of the parts, when they are MD5s, else
        the Complete is a 500 rather than a wrong ETag."""
        try:
            head = await self.client.head_object(bucket, key, version_id=result.version_id)
        except UpstreamError:
            head = None
        if head is not None and head.etag.strip('"') and _is_upload(head, tag, manifest):
            return CompleteResult(etag=head.etag, version_id=result.version_id, headers=result.headers)
        computed = multipart_etag(upstream_etags)
        if computed is None:
            log.error("Complete of %s/%s: the upstream gave no ETag and the object no longer shows it", bucket, key)
            raise S3Error("InternalError", "The upload was completed, but the upstream store did not give its "
                          "ETag; HEAD the object for it.", 500)
        return CompleteResult(etag=computed, version_id=result.version_id, headers=result.headers)

    async def _retried(self, bucket: str, key: str, upload: Upload, requested: Sequence[RequestedPart],
                       object_key: ObjectKey, missing: UpstreamError) -> Completed:
        """A Complete of an upload the upstream no longer has: the answer S3 gives a retried Complete (200,
        the object) when the object is this upload completed with exactly these parts: its metadata names the
        upload's manifest, the manifest (sealed under this object key) lists the parts the client names with
        the stream parameters their ETags carry, and the object's ETag is the multipart ETag of their upstream
        ETags (when those are MD5s). Otherwise NoSuchUpload (NoSuchBucket stays)."""
        layout = upload.info.layout
        assert isinstance(layout, Multipart)
        gone = missing.s3_error() if missing.code == "NoSuchBucket" else no_such_upload()
        try:
            head = await self.client.head_object(bucket, key)
        except UpstreamError:
            raise gone from None
        info = metadata.decode(head.headers)
        if info is None or info.layout != layout:
            raise gone
        try:
            manifest = await self.manifests.load(bucket, layout.upload_tag, object_key, head)
        except (IntegrityError, UpstreamError, S3Error):
            raise gone from None
        records = []
        for wanted in requested:
            try:
                records.append(self.tokens.parse_part_etag(upload, wanted.number, wanted.etag))
            except ForgedToken:
                raise invalid_part() from None
        if ([part.number for part in requested] != [part.number for part in manifest.parts]
                or any(record.params != part.params for record, part in zip(records, manifest.parts))):
            raise gone
        computed = multipart_etag([record.upstream_etag for record in records])
        if computed is not None and computed.strip('"') != head.etag.strip('"'):
            raise gone
        for wanted, record in zip(requested, records):
            _check_checksums(wanted, record.params is None, record.checksum)
        version = {"x-amz-version-id": head.version_id} if head.version_id else {}
        return Completed(CompleteResult(etag=head.etag, version_id=head.version_id,
                                        headers=CIMultiDictProxy(CIMultiDict(version))), manifest)

    async def _completed_already(self, bucket: str, key: str, tag: str, manifest: Manifest,
                                 missing: UpstreamError) -> CompleteResult:
        """NoSuchUpload from the upstream's Complete, after its ListParts found the upload: this very
        Complete succeeded and its answer was lost (the client retried it), or another Complete of the
        upload with the same parts (the manifest says so) got there first. Either way the object is
        there, made of these parts, which the object itself shows: its metadata names this upload's
        manifest and its size and part count are the manifest's. Otherwise the upload is gone."""
        try:
            head = await self.client.head_object(bucket, key)
        except UpstreamError:
            raise missing from None
        if not _is_upload(head, tag, manifest):
            raise missing
        version = {"x-amz-version-id": head.version_id} if head.version_id else {}
        return CompleteResult(etag=head.etag, version_id=head.version_id,
                              headers=CIMultiDictProxy(CIMultiDict(version)))

    def _checked_manifest(self, upload: Upload, requested: Sequence[RequestedPart],
                          stored: Mapping[int, StoredPart]) -> Manifest:
        """The manifest of the parts the client named, each matched against what was recorded and stored."""
        parts = []
        checksums = []
        for index, wanted in enumerate(requested):
            try:
                record = self.tokens.parse_part_etag(upload, wanted.number, wanted.etag)
            except ForgedToken:
                raise invalid_part() from None
            found = stored.get(wanted.number)
            if found is None or found.etag != record.upstream_etag or found.size < PART_OVERHEAD:
                raise invalid_part()
            _check_checksums(wanted, record.params is None, record.checksum)
            size = found.size - PART_OVERHEAD
            if index < len(requested) - 1 and size < MIN_PART_SIZE:
                raise entity_too_small()
            parts.append(ManifestPart(wanted.number, size, record.params))
            checksums.append(record.checksum)
        return Manifest(tuple(parts), _object_checksum(upload, requested, checksums, [part.size for part in parts]))


def _is_upload(head: ObjectHead, tag: str, manifest: Manifest) -> bool:
    """The stored object is the one completed from the upload with this manifest: its metadata names the
    upload's manifest, its size and part count are the manifest's."""
    info = metadata.decode(head.headers)
    return (info is not None and info.layout == Multipart(tag) and head.size == manifest.stored_size
            and part_count_from_etag(head.etag) == len(manifest.parts))


def multipart_etag(part_etags: Sequence[str]) -> str | None:
    """S3's ETag of a multipart object from its parts' upstream ETags (the MD5 of their MD5s, "-" and the
    part count), as S3, Ceph RGW, MinIO and moto compute it; None when a part's ETag is no MD5 (an upstream
    that encrypts, for one)."""
    digests = []
    for etag in part_etags:
        bare = etag.strip().strip('"')
        if not _MD5_HEX.fullmatch(bare):
            return None
        digests.append(bytes.fromhex(bare))
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def part_checksum_algorithm(upload: Upload, sent: str | None) -> str:
    """The checksum a part of ``upload`` is stored with: the upload's algorithm (a part that sent another is
    S3's InvalidRequest), else the one the part sent, else CRC64NVME, S3's default for an object uploaded
    without one (computed over the plaintext, nearly free: ~20 GB/s)."""
    intent = upload.checksum_intent
    if intent is None:
        return sent or "crc64nvme"
    if sent is not None and sent != intent[0]:
        raise invalid_request(f"Checksum Type mismatch occurred, expected checksum Type: {intent[0]}, "
                              f"actual checksum Type: {sent}")
    return intent[0]


def _object_checksum(upload: Upload, requested: Sequence[RequestedPart], recorded: Sequence[tuple[str, str] | None],
                     sizes: Sequence[int]) -> ObjectChecksum | None:
    """The object's checksum, made from its parts' as S3 makes it: of the type the upload was created with,
    or, without one, FULL_OBJECT for CRCs and COMPOSITE for SHAs when every part has the same algorithm.
    An upload created with a checksum whose parts cannot all show theirs (named by bare upstream ETags) is
    InvalidPart: S3 would not complete it without them."""
    intent = upload.checksum_intent
    algorithms = {entry[0] if entry else None for entry in recorded}
    if intent is not None:
        if algorithms != {intent[0]}:
            missing = next(part.number for part, entry in zip(requested, recorded) if not entry or entry[0] != intent[0])
            raise invalid_part(f"Part {missing} is named by its upstream ETag, so its {intent[0].upper()} checksum, "
                               "which the upload was created with, is unknown; use the ETag UploadPart returned.")
        algorithm, kind = intent
    elif len(algorithms) == 1 and None not in algorithms:
        algorithm = algorithms.pop()
        kind = FULL_OBJECT if algorithm in FULL_OBJECT_ALGORITHMS else COMPOSITE
    else:
        return None
    digests = [base64.b64decode(entry[1]) for entry in recorded if entry]
    return combined(algorithm, kind, list(zip(digests, sizes)))


def _check_expected(expected: ExpectedChecksum | None, actual: ObjectChecksum | None) -> None:
    """S3's checks of the object checksum a Complete names: the upload's algorithm and type, then the value."""
    if expected is None:
        return
    if actual is None:
        raise invalid_request(f"The {expected.algorithm.upper()} checksum of the object cannot be verified: its "
                              "parts were not all uploaded with one, or are named by their upstream ETags.")
    if expected.algorithm != actual.algorithm:
        raise invalid_request(f"The upload was created using the {actual.algorithm} checksum algorithm; the "
                              f"complete request specified {expected.algorithm}.")
    kind = expected.kind or (COMPOSITE if expected.parts is not None else actual.kind)
    if kind != actual.kind:
        raise invalid_request(f"The upload was created using the {actual.kind} checksum mode. The complete "
                              "request must use the same checksum mode.")
    if not hmac.compare_digest(expected.digest, actual.digest) or expected.parts not in (None, actual.parts or None):
        raise bad_digest(f"The {actual.algorithm} you specified did not match the calculated checksum.")


def _check_checksums(wanted: RequestedPart, unpinned: bool, recorded: tuple[str, str] | None) -> None:
    for algorithm, value in wanted.checksums.items():
        if unpinned:
            raise invalid_part(f"Part {wanted.number} is named by its upstream ETag, so its {algorithm.upper()} "
                               "checksum cannot be verified; use the ETag UploadPart returned.")
        if recorded != (algorithm, value):
            raise invalid_part(f"The {algorithm.upper()} checksum given for part {wanted.number} does not "
                               "match the checksum of the part as it was uploaded.")

