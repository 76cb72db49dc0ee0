"""State of a multipart upload in progress, carried by the client in the ids the gateway issues.

An upload's encryption metadata is stored upstream with the upload but cannot be read back until it
is completed, and the gateway keeps no state of its own (several gateway processes may serve one
upload, and any may restart). So the client-visible UploadId carries the same reserved metadata the
upload was created with, and each part's client-visible ETag carries what the gateway learnt while
storing the part: its stream parameters and the plaintext checksum it verified. Both are
authenticated with an HMAC under the gateway secret and bound to bucket, key, upload and part, so
the gateway reads back only what it issued. A wrapped data key in the UploadId is what the object's
metadata holds anyway; nothing in either opens without the key service or the customer key.

    UploadId = "gw1." b64u(JSON of the reserved metadata) "." b64u(MAC_16) "." upstream upload id
    ETag     = '"' upstream part ETag "-" b64u(params_23 || MAC_8 || [checksum algorithm_1 || digest]) '"'
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, Hashable, Iterator, Mapping, TypeVar

from gateway.checksums import ALGORITHMS, CHECKSUM_HEADER_PREFIX
from gateway.crypto import metadata
from gateway.crypto.metadata import EncryptionInfo, Multipart
from gateway.crypto.stream import IntegrityError, StreamParams

UPLOAD_ID_PREFIX = "gw1."
# The checksum the client asked of the object at Create ("crc32:COMPOSITE"): carried in the UploadId only
# (it is no encryption metadata), so every later request of the upload knows which checksum each part needs.
CHECKSUM_INTENT = metadata.RESERVED_PREFIX + "ck"
_UPLOAD_LABEL = b"s3gw/v1/upload-id"
_PART_LABEL = b"s3gw/v1/part-etag"
_UPLOAD_MAC_SIZE = 16
_PART_MAC_SIZE = 8


class ForgedToken(ValueError):
    """An UploadId or part ETag the gateway did not issue for this upload (or that was altered)."""


def _unb64(value: str) -> bytes:
    try:
        return metadata.unb64u(value)
    except IntegrityError:
        raise ForgedToken("malformed base64") from None


def _bare_etag(etag: str) -> str:
    """An ETag without quotes or surrounding space; issuing and parsing must agree on it, or the
    MAC binds one spelling and the check sees another."""
    return etag.strip().strip('"').strip()


@dataclass(frozen=True)
class Upload:
    """An encrypting upload: the upstream's id and the reserved metadata it was created with."""

    client_id: str
    upstream_id: str
    fields: Mapping[str, str]

    @property
    def checksum_intent(self) -> tuple[str, str] | None:
        """(algorithm, FULL_OBJECT | COMPOSITE) the upload was created with, or None."""
        value = self.fields.get(CHECKSUM_INTENT)
        if not value:
            return None
        algorithm, _, kind = value.partition(":")
        return algorithm, kind

    @cached_property
    def info(self) -> EncryptionInfo:
        info = metadata.decode(self.fields)
        if info is None or not isinstance(info.layout, Multipart):
            raise IntegrityError("the upload id carries no multipart encryption metadata")
        return info


@dataclass(frozen=True)
class PartRecord:
    """What the gateway recorded about one stored part, read back from the ETag it issued."""

    upstream_etag: str
    params: StreamParams | None
    checksum: tuple[str, str] | None  # (algorithm, base64 digest) verified at UploadPart


class UploadTokens:
    """Issues and checks UploadIds and part ETags under the gateway secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, label: bytes, size: int, *fields: str | bytes) -> bytes:
        mac = hmac.new(self._secret, label, hashlib.sha256)
        for field in fields:
            raw = field.encode("utf-8", "surrogatepass") if isinstance(field, str) else field
            mac.update(len(raw).to_bytes(4, "big") + raw)
        return mac.digest()[:size]

    def issue_upload_id(self, bucket: str, key: str, upstream_id: str, fields: Mapping[str, str],
                        checksum_intent: tuple[str, str] | None = None) -> str:
        if checksum_intent is not None:
            fields = {**fields, CHECKSUM_INTENT: ":".join(checksum_intent)}
        short = {name[len(metadata.RESERVED_PREFIX):]: value for name, value in fields.items()}
        payload = metadata.b64u(json.dumps(short, sort_keys=True, separators=(",", ":")).encode())
        mac = self._mac(_UPLOAD_LABEL, _UPLOAD_MAC_SIZE, bucket, key, upstream_id, payload)
        return f"{UPLOAD_ID_PREFIX}{payload}.{metadata.b64u(mac)}.{upstream_id}"

    def parse_upload_id(self, bucket: str, key: str, client_id: str) -> Upload | None:
        """The upload behind a gateway-issued id; None for an upstream id (a pass-through upload)."""
        if not client_id.startswith(UPLOAD_ID_PREFIX):
            return None
        try:
            payload, mac, upstream_id = client_id[len(UPLOAD_ID_PREFIX):].split(".", 2)
        except ValueError:
            raise ForgedToken("malformed upload id") from None
        expected = self._mac(_UPLOAD_LABEL, _UPLOAD_MAC_SIZE, bucket, key, upstream_id, payload)
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise ForgedToken("upload id not issued for this bucket and key")
        short = json.loads(_unb64(payload))
        return Upload(client_id, upstream_id, {metadata.RESERVED_PREFIX + n: v for n, v in short.items()})

    def issue_part_etag(self, upload: Upload, part_number: int, upstream_etag: str, params: StreamParams,
                        echoed: Mapping[str, str]) -> str:
        """The quoted client ETag of a stored part; ``echoed`` are the checksum headers verified on it."""
        bare = _bare_etag(upstream_etag)
        checksum = b""
        for name, value in echoed.items():
            algorithm = name.lower().removeprefix(CHECKSUM_HEADER_PREFIX)
            if algorithm in ALGORITHMS:
                checksum = bytes([ALGORITHMS.index(algorithm)]) + base64.b64decode(value)
                break
        mac = self._mac(_PART_LABEL, _PART_MAC_SIZE, upload.client_id, str(part_number), bare,
                        params.encode(), checksum)
        return f'"{bare}-{metadata.b64u(params.encode() + mac + checksum)}"'

    def parse_part_etag(self, upload: Upload, part_number: int, etag: str) -> PartRecord:
        """A part ETag from a Complete request: one the gateway issued, or a bare upstream ETag
        (as ListParts shows), which names the part but pins nothing.

        The token follows the last dash that makes the rest a token of ours: upstream ETags may
        hold dashes (and so may base64url), so every split is tried and the MAC decides. An ETag
        with a token-shaped tail that verifies at no split is forged."""
        bare = _bare_etag(etag)
        shaped = False
        for upstream, raw in self._token_splits(bare):
            shaped = True
            record = self._verified_part(upload, part_number, upstream, raw)
            if record is not None:
                return record
        if shaped:
            raise ForgedToken(f"part {part_number}'s ETag was not issued for this upload and part")
        return PartRecord(bare, None, None)

    @staticmethod
    def _token_splits(bare: str) -> Iterator[tuple[str, bytes]]:
        """(upstream ETag, decoded token) at each dash whose tail decodes to a token-sized value."""
        for index in (i for i, char in enumerate(bare) if char == "-"):
            try:
                raw = metadata.unb64u(bare[index + 1:])
            except IntegrityError:
                continue
            if len(raw) >= StreamParams.ENCODED_SIZE + _PART_MAC_SIZE:
                yield bare[:index], raw

    def _verified_part(self, upload: Upload, part_number: int, upstream: str, raw: bytes) -> PartRecord | None:
        size = StreamParams.ENCODED_SIZE
        params, mac, checksum = raw[:size], raw[size:size + _PART_MAC_SIZE], raw[size + _PART_MAC_SIZE:]
        expected = self._mac(_PART_LABEL, _PART_MAC_SIZE, upload.client_id, str(part_number), upstream, params,
                             checksum)
        if not hmac.compare_digest(expected, mac):
            return None
        recorded = (ALGORITHMS[checksum[0]], base64.b64encode(checksum[1:]).decode()) if checksum else None
        return PartRecord(upstream, StreamParams.decode(params), recorded)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small bounded map for values that never change once known (object keys of uploads in
    progress, sealed manifests by their random tag)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)
