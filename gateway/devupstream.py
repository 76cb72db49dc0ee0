"""A local development upstream: moto's S3 server in a thread, for a one-command try-out.

moto is a development dependency only, so it is imported lazily and its absence explained.
"""
from __future__ import annotations

import logging
import socket
from dataclasses import replace

from gateway.config import ConfigError, UpstreamConfig

log = logging.getLogger("gateway.devupstream")
DEV_CREDENTIALS = ("test", "test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_form_typed_bodies_raw() -> None:
    """Make moto keep the bodies of PUTs sent with a form Content-Type.

    moto's werkzeug request parses ``application/x-www-form-urlencoded`` and ``multipart/form-data``
    bodies as forms, so a PutObject or UploadPart carrying such a Content-Type (legacy applications and
    urllib send it by default) is stored *empty* while its Content-Type is kept: the gateway's ciphertext
    would be lost. S3 never parses a PUT body, so neither does the development upstream (POST object
    uploads, which are forms, are untouched). Idempotent.
    """
    from moto.core.request import Request

    if getattr(Request, "_s3gw_raw_put_bodies", False):
        return
    parsed = Request.want_form_data_parsed

    def want_form_data_parsed(self: Request) -> bool:
        return self.method != "PUT" and parsed.__get__(self)  # type: ignore[attr-defined]

    Request.want_form_data_parsed = property(want_form_data_parsed)  # type: ignore[assignment]
    Request._s3gw_raw_put_bodies = True  # type: ignore[attr-defined]


def give_completed_uploads_an_acl() -> None:
    """Give objects completed from a multipart upload created without an ACL header S3's default ACL
    (private), as S3 does. moto leaves them with none, and GetObjectAcl on them (s3cmd ``info`` and
    ``cp``) fails with a 500 until the client gives up. Idempotent."""
    from moto.s3.models import FakeMultipart, get_canned_acl

    if getattr(FakeMultipart, "_s3gw_default_acl", False):
        return
    init = FakeMultipart.__init__

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        init(self, *args, **kwargs)
        if self.acl is None:
            self.acl = get_canned_acl("private")

    FakeMultipart.__init__ = __init__  # type: ignore[method-assign]
    FakeMultipart._s3gw_default_acl = True  # type: ignore[attr-defined]


def honour_copy_source_if_match() -> None:
    """Make moto refuse a CopyObject or UploadPartCopy whose x-amz-copy-source-if-match names another
    ETag than the source's, and a CompleteMultipartUpload whose If-Match names another ETag than the
    object's (412 PreconditionFailed), as S3 does; moto checks neither. `gateway rewrap` pins its
    in-place copies with them, so a write it races is never overwritten. Idempotent.
    """
    from urllib.parse import unquote, urlparse

    from moto.s3.exceptions import PreconditionFailed
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_s3gw_copy_source_if_match", False):
        return

    def pinned(method):  # type: ignore[no-untyped-def]
        def checked(self: S3Response):  # type: ignore[no-untyped-def]
            wanted = self.headers.get("x-amz-copy-source-if-match")
            if wanted is not None:
                source = urlparse(self.headers.get("x-amz-copy-source", ""))
                bucket, _, key = unquote(source.path).lstrip("/").partition("/")
                found = self.backend.get_object(bucket, key)
                if found is not None and found.etag.strip('"') != wanted.strip().strip('"'):
                    raise PreconditionFailed(failed_condition="x-amz-copy-source-If-Match")
            return method(self)
        return checked

    def complete_pinned(method):  # type: ignore[no-untyped-def]
        """CompleteMultipartUpload with If-Match: only over the object with that ETag (S3's conditional write)."""
        def checked(self: S3Response, request, body, bucket_name, query, key_name):  # type: ignore[no-untyped-def]
            wanted = self.headers.get("If-Match")
            if wanted is not None and query.get("uploadId"):
                found = self.backend.get_object(bucket_name, key_name)
                finished_here = found is not None and found.multipart and found.multipart.id == query["uploadId"][0]
                if not finished_here and (found is None or found.etag.strip('"') != wanted.strip().strip('"')):
                    raise PreconditionFailed(failed_condition="If-Match")
            return method(self, request, body, bucket_name, query, key_name)
        return checked

    S3Response.copy_object = pinned(S3Response.copy_object)  # type: ignore[method-assign]
    S3Response.upload_part_copy = pinned(S3Response.upload_part_copy)  # type: ignore[method-assign]
    S3Response._key_response_post = complete_pinned(S3Response._key_response_post)  # type: ignore[method-assign]
    S3Response._s3gw_copy_source_if_match = True  # type: ignore[attr-defined]


def behave_as_s3() -> None:
    """Where moto differs from S3 in ways that lose data or break clients, make it behave as S3 does."""
    store_form_typed_bodies_raw()
    give_completed_uploads_an_acl()
    honour_copy_source_if_match()


def serve_moto(argv: list[str]) -> None:
    """``moto_server`` with PUT bodies kept raw (for a moto process of its own, e.g. the test suite's)."""
    from moto.server import main

    behave_as_s3()
    main(argv)


class DevUpstream:
    """moto's ThreadedMotoServer on a free loopback port."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            raise ConfigError("no upstream.url is set and moto is not installed for the development "
                              "upstream: pip install '.[dev]'") from None
        behave_as_s3()
        self.port = _free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self, configured: UpstreamConfig) -> UpstreamConfig:
        """``configured`` (its region and pool settings) pointed at the development upstream."""
        self._server.start()
        url = f"http://127.0.0.1:{self.port}"
        log.warning("no upstream.url configured: started a development upstream (moto) at %s, credential %s / %s; "
                    "it keeps objects in memory: they are gone when the gateway stops", url, *DEV_CREDENTIALS)
        return replace(configured, url=url, access_key=DEV_CREDENTIALS[0], secret_key=DEV_CREDENTIALS[1])

    def stop(self) -> None:
        self._server.stop()
