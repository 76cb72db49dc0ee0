"""What every handler receives: the gateway's shared state and the authenticated, classified request,
with the accessors of what several handlers read from a request (SSE-C keys, part numbers, UploadIds)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from common.sigv4 import AuthResult
from gateway.bodybuffer import BodyBuffer
from gateway.bucketencryption import BucketEncryption
from gateway.bucketstate import BucketStates
from gateway.cors import BucketCors
from gateway.config import GatewayConfig
from gateway.crypto.sse import CustomerKey, Requester
from gateway.datakeys import GATEWAY
from gateway.objects.reading import ObjectRef
from gateway.objects.store import ObjectStore
from gateway.ranges import parse_part_number
from gateway.s3errors import no_such_upload
from gateway.s3request import S3Request
from gateway.sseheaders import copy_source_customer_key, customer_key
from gateway.upstream import Upstream
from gateway.uploads import ForgedToken, Upload

_NOT_OURS = ("This upload was not started through the gateway, so the gateway cannot encrypt its parts. "
             "Start a new upload.")


@dataclass(frozen=True)
class UpstreamUser:
    """A client credential's own upstream user (``upstream_access_key`` in its ``[[gateway.credentials]]``
    entry): the pool signed with that credential and the object layer over it (`ObjectStore.signed_as`).

    Every upstream request made on the client's behalf goes through these (`RequestContext.upstream`,
    `RequestContext.objects`), the gateway's own records of the bucket and object included, so the upstream's
    users, policies and ownership decide and no cache answers one user with what another could read. What
    stays on the gateway's ``[upstream]`` credential: clients without a mapping; the CORS rules (`Gateway.cors`),
    which an unsigned preflight needs read without any client to act as and which S3 applies to anonymous
    browsers anyway (no secret); anonymous clients go unsigned; the command-line tools are the gateway's."""

    upstream: Upstream
    objects: ObjectStore


@dataclass
class Gateway:
    """Long-lived state built once at start: settings, the upstream pool, the object layer, what the gateway
    keeps about buckets (their state, their default encryption)."""

    config: GatewayConfig
    upstream: Upstream
    objects: ObjectStore
    bucket_states: BucketStates
    bucket_encryption: BucketEncryption
    cors: BucketCors
    requesters: Mapping[str, Requester]  # by access key: whom KMS keys are used for (gateway/datakeys.py)
    anonymous_upstream: Upstream  # the pool, unsigned (anonymous clients)
    body_buffer: BodyBuffer = field(default_factory=lambda: BodyBuffer(0))  # bodies held for their trailer
    # By client access key, for credentials mapped to an upstream user of their own (`UpstreamUser` says what
    # stays on the gateway's credential); the others use ``upstream`` and ``objects``, the gateway's.
    upstream_users: Mapping[str, UpstreamUser] = field(default_factory=dict)


@dataclass
class RequestContext:
    request: web.Request
    s3: S3Request
    auth: AuthResult
    request_id: str
    secure: bool
    anonymous: bool = False  # unsigned: only what the upstream serves anonymously, never as the gateway

    def upstream(self, gw: "Gateway") -> Upstream:
        """The upstream pool as this request may use it: unsigned for an anonymous client, signed as the
        client's own upstream user when its credential maps to one, else as the gateway."""
        if self.anonymous:
            return gw.anonymous_upstream
        user = gw.upstream_users.get(self.auth.access_key)
        return user.upstream if user is not None else gw.upstream

    def objects(self, gw: "Gateway") -> ObjectStore:
        """The object layer this request works through: over the client's own upstream user when its
        credential maps to one, else the gateway's (an anonymous client reads via ``anonymous_reader``)."""
        user = None if self.anonymous else gw.upstream_users.get(self.auth.access_key)
        return user.objects if user is not None else gw.objects

    def requester(self, gw: Gateway) -> Requester:
        """The principal the request's credential maps to: KMS keys are used on its behalf. An anonymous
        reader is served SSE-S3 objects only (as S3), whose keys are the gateway's own."""
        return GATEWAY if self.anonymous else gw.requesters[self.auth.access_key]

    @property
    def raw_path(self) -> str:
        return self.request.rel_url.raw_path

    @property
    def query(self) -> list[tuple[str, str]]:
        return list(self.request.rel_url.query.items())

    @property
    def is_head(self) -> bool:
        return self.request.method == "HEAD"

    def object_ref(self, *, without: tuple[str, ...] = ("partNumber",)) -> ObjectRef:
        """The object the request names, with its version and the query parameters the upstream applies
        to a read's answer (response-* overrides); the gateway serves partNumber itself."""
        query = self.request.rel_url.query
        extra = [(name, value) for name, value in query.items() if name not in (*without, "versionId")]
        return ObjectRef(self.s3.bucket, self.s3.key, query.get("versionId") or None, tuple(extra))

    def part_number(self) -> int:
        """The partNumber query parameter: 1..10000, else 400 InvalidArgument as S3 answers."""
        return parse_part_number(self.request.rel_url.query.get("partNumber", ""))

    def customer_key(self, gw: Gateway) -> CustomerKey | None:
        """The request's SSE-C key (validated as S3 does), or None."""
        return customer_key(self.request.headers, secure=self.secure, allow_http=gw.config.allow_ssec_over_http)

    def copy_source_customer_key(self, gw: Gateway) -> CustomerKey | None:
        return copy_source_customer_key(self.request.headers, secure=self.secure,
                                        allow_http=gw.config.allow_ssec_over_http)

    def upload(self, gw: Gateway, *, carries_data: bool) -> Upload | None:
        """The encrypting upload the UploadId names, or None for an upstream id that may pass through.

        Part data sent with an upstream id is refused outside pass-through buckets: it would be stored
        as plaintext inside an upload the gateway may have opened encrypted."""
        client_id = self.request.rel_url.query.get("uploadId", "")
        try:
            upload = gw.objects.tokens.parse_upload_id(self.s3.bucket, self.s3.key, client_id)
        except (ForgedToken, ValueError):
            raise no_such_upload(client_id) from None
        if upload is None and carries_data and gw.config.bucket_policy(self.s3.bucket).encryption != "passthrough":
            raise no_such_upload(client_id, _NOT_OURS)
        return upload

    def upstream_query(self, upload: Upload | None) -> list[tuple[str, str]]:
        """The request's query with the upstream's UploadId in place of the client's."""
        if upload is None:
            return self.query
        return [(name, upload.upstream_id if name == "uploadId" else value) for name, value in self.query]
