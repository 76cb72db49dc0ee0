"""The gateway's HTTP server: one pipeline for every request.

authenticate (SigV4/SigV2) -> classify the S3 operation -> the operation's handler (encrypting
objects, rewriting listings, or a re-signed pass-through) -> the answer, with a request id on every
response and every failure rendered as a proper S3 error. Operations that would move object data
the gateway cannot encrypt yet are refused with 501, never passed through. Keys under the gateway's
reserved prefix (multipart manifests) are out of the clients' reach.

``create_app(config)`` is the whole gateway as an aiohttp application: request ids and error rendering
are middleware, and what it needs running (development upstream, upstream pool, key provider) starts
and stops with it as cleanup contexts. ``serve(config)`` only runs that application under the guarded
runner (common/connections.py) with the listen/TLS/signal helpers both servers share (common/serving.py).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from common.connections import ConnectionGuard, GuardedAppRunner, send_and_close
from common.files import private_dir
from common.serverlog import server_logger
from common.serving import freeze_startup_objects, serve_until_signal, server_ssl_context
from common.sigv4 import AuthError, AuthResult, query_borne_headers, verify
from gateway.config import ConfigError, Credential, GatewayConfig
from gateway.bodybuffer import BodyBuffer
from gateway.datakeys import Requester
from gateway.devupstream import DevUpstream
from gateway.handlers import (bucket_encryption, buckets, copy, cors, get_object, lifecycle, listing, multipart,
                              object_attributes, post_object, put_object, upload_listing)
from gateway.handlers.context import Gateway, RequestContext, UpstreamUser
from gateway.cors import BucketCors
from gateway.handlers.relaying import forward, upstream_error_answer
from gateway.handlers.request_body import BODY_STALLED
from gateway.kms import EmbeddedKeyProvider, RemoteKeyProvider, start_key_provider
from gateway.kmsendpoint import KmsEndpoint, endpoint_for, is_kms_request
from gateway.objects.store import ObjectStore
from gateway.observability import OBSERVABILITY_KEY, GatewayObservability, auth_rejected, note_error, note_route
from gateway.probes import probe_upstream
from gateway.reserved import refuse_reserved_key
from gateway.s3client import UpstreamError
from gateway.s3errors import S3Error, error_xml, internal_error, not_implemented, precondition_failed, slow_down
from gateway.s3request import classify, split_path
from gateway.secret import load_gateway_secret
from gateway.upstream import Upstream, UpstreamTarget

log = logging.getLogger("gateway")

Handler = Callable[[Gateway, RequestContext], Awaitable[web.StreamResponse]]
DEV_CREDENTIAL = Credential("test", "test")
REFUSED = {
    # Form uploads (a multipart/form-data POST to the bucket) go to handlers/post_object.py before this.
    "PostObject": "A POST object upload is a multipart/form-data form posted to the bucket",
    "SelectObjectContent": "SelectObjectContent cannot run on encrypted objects",
    # A torrent of an encrypted object would describe (and let peers fetch) its ciphertext.
    "GetObject:torrent": "BitTorrent files of objects are not served through the gateway",
    "HeadObject:torrent": "BitTorrent files of objects are not served through the gateway",
    "Unknown": "This request is not an S3 operation the gateway supports",
}
HANDLERS: dict[str, Handler] = {
    "PutObject": put_object.put_object,
    "GetObject": get_object.get_object,
    "HeadObject": get_object.get_object,
    "ListObjects": listing.list_objects,
    "ListObjectsV2": listing.list_objects,
    "ListObjectVersions": listing.list_objects,
    "CreateMultipartUpload": multipart.create_multipart_upload,
    "UploadPart": multipart.upload_part,
    "CompleteMultipartUpload": multipart.complete_multipart_upload,
    "AbortMultipartUpload": multipart.abort_multipart_upload,
    "ListParts": multipart.list_parts,
    "CopyObject": copy.copy_object,
    "UploadPartCopy": copy.upload_part_copy,
    "DeleteObjects": buckets.delete_objects,
    "CreateBucket": buckets.create_bucket,
    "GetBucket:location": buckets.get_bucket_location,
    "DeleteBucket": buckets.delete_bucket,
    "PutBucket:lifecycle": lifecycle.put_bucket_lifecycle,
    "GetObjectAttributes": object_attributes.get_object_attributes,
    "ListMultipartUploads": upload_listing.list_multipart_uploads,
    "PutBucket:cors": cors.change_bucket_cors,
    "DeleteBucket:cors": cors.change_bucket_cors,
    "PutBucket:encryption": bucket_encryption.put_bucket_encryption,
    "GetBucket:encryption": bucket_encryption.get_bucket_encryption,
    "DeleteBucket:encryption": bucket_encryption.delete_bucket_encryption,
}
# What an unsigned request may do: read objects and list buckets the upstream serves anonymously (its own
# public-access rules decide: the gateway sends these unsigned). Anything else is 403, as before.
ANONYMOUS_OPERATIONS = frozenset({"GetObject", "HeadObject", "ListObjects", "ListObjectsV2"})
ANONYMOUS = AuthResult(access_key="", scheme="anonymous", payload_hash=None, signed_headers=())
_PRESIGN_PARAMETERS = frozenset({"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "AWSAccessKeyId",
                                 "Signature"})
KeyProvider = EmbeddedKeyProvider | RemoteKeyProvider
CONFIG_KEY = web.AppKey("config", GatewayConfig)  # as in effect: development defaults filled in
UPSTREAM_KEY = web.AppKey("upstream", Upstream)
KEY_PROVIDER_KEY: web.AppKey[KeyProvider] = web.AppKey("key_provider")
GATEWAY_KEY = web.AppKey("gateway", Gateway)
KMS_ENDPOINT_KEY: web.AppKey[KmsEndpoint] = web.AppKey("kms_endpoint")
# Typed request keys where aiohttp has them (3.14), plain strings before.
REQUEST_ID: Any = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
BUCKET: Any = web.RequestKey("bucket", str) if hasattr(web, "RequestKey") else "bucket"


def new_request_id() -> str:
    """16 random upper-case hex digits, as S3's x-amz-request-id (os.urandom: a uuid4 costs ten times more)."""
    return os.urandom(8).hex().upper()


def error_response(err: S3Error, request: web.Request, request_id: str) -> web.Response:
    """S3's error answer; HEAD answers carry no body, as S3's do."""
    note_error(err.code)
    body = b"" if request.method == "HEAD" else error_xml(err, request_id=request_id, resource=request.path)
    return web.Response(status=err.status, body=body, headers=err.headers, content_type="application/xml")


def _is_secure(request: web.Request, config: GatewayConfig) -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return request.secure or (config.trust_forwarded_proto and forwarded)


def _authenticate(request: web.Request, config: GatewayConfig, signed: CIMultiDictProxy[str], path_style: str):
    """The request's signature, over the Host the client signed (``signed``) and the path as sent."""
    secrets_by_key = {c.access_key: c.secret_key for c in config.credentials}
    url = request.rel_url
    return verify(request.method, url.raw_path, url.raw_query_string, signed, secrets_by_key.get,
                  service="s3", now=time.time(), region=config.region, v2_path=path_style)


def _signed_headers(request: web.Request, config: GatewayConfig) -> CIMultiDictProxy[str]:
    """The headers as the client signed them: with ``trust_forwarded_host``, the Host is the one a proxy in
    front received (X-Forwarded-Host)."""
    forwarded = request.headers.get("X-Forwarded-Host")
    if not (config.trust_forwarded_host and forwarded):
        return request.headers
    headers = CIMultiDict(request.headers)
    headers["Host"] = forwarded.split(",")[0].strip()
    return CIMultiDictProxy(headers)


def _path_style(request: web.Request, config: GatewayConfig, headers: CIMultiDictProxy[str]) -> str:
    """The request's path in path style: ``/BUCKET/KEY`` for a virtual-hosted request to BUCKET.<domain>
    (``[gateway] domain``), else the path as sent. A host that is the domain itself, or not under it,
    addresses path style."""
    raw_path = request.rel_url.raw_path
    domain = config.domain
    host = headers.get("Host", "").lower().rsplit(":", 1)[0]  # an IPv6 literal never ends in the domain
    if not domain or not host.endswith("." + domain):
        return raw_path
    bucket = host[:-len(domain) - 1]
    return f"/{bucket}" if raw_path == "/" else f"/{bucket}{raw_path}"


def _as_path_style(request: web.Request, path: str) -> web.Request:
    if path == request.rel_url.raw_path:
        return request
    return request.clone(rel_url=request.rel_url.with_path(path, encoded=True))


def _apply_query_headers(request: web.Request, auth: AuthResult) -> web.Request:
    """The request as S3 reads a presigned one: header values the URL carries in its (signed) query
    become headers, and leave the query, so they act here (metadata, SSE, copy source) and are
    never forwarded upstream as query parameters. A header sent under the same name wins: under
    SigV2 it is the value that was signed, under SigV4 both were."""
    hoisted = query_borne_headers(auth.scheme, request.rel_url.query.items())
    if not hoisted:
        return request
    sent = {name.lower() for name in request.headers}
    headers = CIMultiDict(request.headers)
    for name, value in hoisted:
        if name not in sent:
            headers.add(name, value)
    names = {name for name, _ in hoisted}
    query = [(k, v) for k, v in request.rel_url.query.items() if k.lower() not in names]
    return request.clone(headers=headers, rel_url=request.rel_url.with_query(query))


async def _handle(gw: Gateway, request: web.Request, request_id: str) -> web.StreamResponse:
    signed = _signed_headers(request, gw.config)
    path_style = _path_style(request, gw.config, signed)
    if request.method == "OPTIONS" and "authorization" not in request.headers:
        bucket, _ = split_path(path_style)  # a CORS preflight: unsigned, as browsers send it
        return await cors.preflight(gw, request, bucket)
    if post_object.is_form_upload(request, path_style):
        return await _post_form(gw, request, path_style, request_id)
    if _is_anonymous(request):
        return await _route(gw, _as_path_style(request, path_style), ANONYMOUS, request_id, anonymous=True)
    try:
        auth = _authenticate(request, gw.config, signed, path_style)
    except AuthError as exc:
        raise auth_rejected(exc) from None
    handled = _apply_query_headers(_as_path_style(request, path_style), auth)
    try:
        return await _route(gw, handled, auth, request_id)
    finally:
        # A clone has a copy of the request's state: what the handler marked on it (the body stalled)
        # must reach the middleware, which answers on the original.
        if handled is not request:
            request.update(handled)


async def _post_form(gw: Gateway, request: web.Request, path_style: str, request_id: str) -> web.StreamResponse:
    """A browser form upload: no Authorization header, its form carries the signature (its own handler)."""
    request[BUCKET] = split_path(path_style)[0]  # for the CORS headers of the answer (`_cors_headers`)
    handled = _as_path_style(request, path_style)
    try:
        return await post_object.post_object(gw, handled, request_id, secure=_is_secure(request, gw.config))
    finally:
        if handled is not request:
            request.update(handled)  # the body stalled: see `_handle`


def _is_anonymous(request: web.Request) -> bool:
    """No signature of any kind: neither an Authorization header nor a presigned URL's parameters."""
    return "authorization" not in request.headers and not _PRESIGN_PARAMETERS & set(request.rel_url.query)


async def _route(gw: Gateway, request: web.Request, auth: AuthResult, request_id: str, *,
                 anonymous: bool = False) -> web.StreamResponse:
    s3 = classify(request.method, request.rel_url.raw_path, request.rel_url.query, request.headers)
    if s3.operation == "PostObject" and not s3.key:  # a POST to a bucket that is no form upload: S3's answer
        raise precondition_failed("Bucket POST must be of the enclosure-type multipart/form-data")
    if anonymous and s3.operation not in ANONYMOUS_OPERATIONS:
        raise auth_rejected(AuthError("AccessDenied", "Access Denied", 403))
    if s3.operation in REFUSED:
        raise not_implemented(REFUSED[s3.operation])
    refuse_reserved_key(s3.key)
    request[BUCKET] = s3.bucket  # for the CORS headers of the answer (`_cors_headers`)
    note_route(s3, auth)  # for the access log and metrics
    ctx = RequestContext(request=request, s3=s3, auth=auth, request_id=request_id,
                         secure=_is_secure(request, gw.config), anonymous=anonymous)
    return await HANDLERS.get(s3.operation, forward)(gw, ctx)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Every request's handler: an AWS KMS JSON call goes to the KMS endpoint (gateway/kmsendpoint.py),
    which authenticates and answers it itself; anything else is S3, through the pipeline (failures are
    the `s3_errors` middleware's to render)."""
    if is_kms_request(request):
        return await request.app[KMS_ENDPOINT_KEY].handle(request)
    return await _handle(request.app[GATEWAY_KEY], request, request[REQUEST_ID])


@web.middleware
async def s3_errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Give the request its id, then render every failure as the S3 error a client expects; nothing
    escapes as a bare 500. The id comes first, before anything can fail: error bodies and log lines
    name it, and `_stamp_request_id` puts it on the response.

    A client that went away, a cancelled handler and aiohttp's own HTTP answers (its router's) are
    not failures to render and propagate as they are."""
    request_id = request[REQUEST_ID] = new_request_id()
    try:
        return await handler(request)
    except S3Error as exc:
        return await _answer_error(exc, request, request_id)
    except UpstreamError as exc:  # the upstream's own answer, relayed as S3 error (gateway/s3client.py)
        relayed = upstream_error_answer(request, request_id, exc)
        return relayed if relayed is not None else await _answer_error(exc.s3_error(), request, request_id)
    except aiohttp.ClientError as exc:
        if request.transport is None or request.transport.is_closing():
            # The client went away mid-upload, which cut the upstream request: not the upstream's failure.
            raise ConnectionResetError(f"request {request_id}: the client went away") from None
        log.error("request %s: the upstream failed: %s: %s", request_id, type(exc).__name__, exc)
        return error_response(upstream_failure(exc), request, request_id)
    except (ConnectionError, asyncio.CancelledError, web.HTTPException):
        raise
    except Exception:
        log.exception("request %s failed", request_id)
        return error_response(internal_error(), request, request_id)


def upstream_failure(exc: aiohttp.ClientError) -> S3Error:
    """A request the upstream could not complete (unreachable, reset, silent past the read timeout):
    S3's retryable 503, the same a client gets when S3 itself is overloaded, never a 500."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return S3Error("ServiceUnavailable", "The upstream store cannot be reached", 503)
    if isinstance(exc, asyncio.TimeoutError):
        return S3Error("ServiceUnavailable", "The upstream store did not answer in time", 503)
    return S3Error("ServiceUnavailable", "The upstream store did not complete the request", 503)


async def _answer_error(err: S3Error, request: web.Request, request_id: str) -> web.StreamResponse:
    """The error's answer; after a stalled body the connection is closed too, as S3 does."""
    response = error_response(err, request, request_id)
    if request.get(BODY_STALLED):
        return await send_and_close(request, response)
    return response


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An actual cross-origin request (``Origin``) gets the CORS headers its bucket's rules give it, on
    every answer (errors too, as S3). A failure to read the rules costs the headers, never the answer."""
    origin, bucket = request.headers.get("Origin"), request.get(BUCKET)
    if not origin or not bucket or request.method == "OPTIONS":
        return
    try:
        response.headers.update(await request.app[GATEWAY_KEY].cors.actual(bucket, origin, request.method))
    except Exception as exc:  # noqa: BLE001 - the answer goes out as it is
        log.warning("bucket %s: CORS rules could not be read (%s); answering without CORS headers", bucket, exc)


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """The request id on every response, as S3 sends it: a signal, not the middleware, because
    streamed answers (GET bodies, the answer before a close) are prepared inside the handlers."""
    request_id = request.get(REQUEST_ID) or new_request_id()
    response.headers["x-amz-request-id"] = request_id
    response.headers["x-amz-id-2"] = request_id


def create_app(config: GatewayConfig) -> web.Application:
    """The gateway as an aiohttp application, complete in itself: its start-up starts what it needs (a
    development upstream when no upstream URL is set, the upstream pool, the key provider) and its
    cleanup stops them in reverse order, also when start-up fails half-way (aiohttp's cleanup
    contexts), so tests can run it in-process as `serve()` runs it."""
    config = _with_dev_credentials(config)
    observability = GatewayObservability(config)  # access log, metrics, admin endpoints (gateway/observability.py)
    app = web.Application(client_max_size=2**62, middlewares=[*observability.middlewares, s3_errors])
    app[CONFIG_KEY] = config
    app.cleanup_ctx.extend([_data_dir_ctx, _dev_upstream_ctx, _upstream_ctx, _upstream_check_ctx,
                            _key_provider_ctx])
    app.router.add_route("*", "/{tail:.*}", dispatch)
    app.on_response_prepare.append(_stamp_request_id)
    app.on_response_prepare.append(_cors_headers)
    app.on_startup.append(_gateway_state)  # after every cleanup context: it uses what they started
    app.on_startup.append(_kms_endpoint_state)
    observability.install(app, UPSTREAM_KEY, KEY_PROVIDER_KEY, lambda app: app[GATEWAY_KEY].objects.keys.kms.data_keys)
    app.on_startup.append(freeze_startup_objects)
    return app


async def _data_dir_ctx(app: web.Application) -> AsyncIterator[None]:
    """The data directory, private (0700), made before anything (key store, secret) is written under it."""
    private_dir(app[CONFIG_KEY].data_dir)
    yield


async def _dev_upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """With no upstream URL configured, a development upstream (moto), which the config then points at."""
    config = app[CONFIG_KEY]
    if config.upstream.url:
        yield
        return
    dev = DevUpstream()
    app[CONFIG_KEY] = replace(config, upstream=dev.start(config.upstream))
    yield
    dev.stop()


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pooled, re-signing connection to the upstream store."""
    up = app[CONFIG_KEY].upstream
    upstream = Upstream(UpstreamTarget(up.url, up.region, up.access_key, up.secret_key),
                        pool_size=up.pool_size, pool_wait=up.pool_wait, read_timeout=up.read_timeout,
                        meter=app[OBSERVABILITY_KEY].upstream_meter())
    await upstream.start()
    app[UPSTREAM_KEY] = upstream
    yield
    await upstream.close()


async def _upstream_check_ctx(app: web.Application) -> AsyncIterator[None]:
    """Before anything else is opened: the upstream answers a signed request with the configured credential
    (gateway/probes.py), or the start stops with one line naming what failed (unless startup_checks is off)."""
    config = app[CONFIG_KEY]
    if not config.startup_checks:
        log.warning("startup_checks is off: the upstream %s and its credential were not checked", config.upstream.url)
    elif (failure := await probe_upstream(app[UPSTREAM_KEY])) is not None:
        raise ConfigError(failure)
    yield


async def _key_provider_ctx(app: web.Application) -> AsyncIterator[None]:
    """The key provider; closing it flushes and closes the embedded key store and audit log."""
    provider = await start_key_provider(app[CONFIG_KEY])
    app[KEY_PROVIDER_KEY] = provider
    yield
    await provider.close()


async def _gateway_state(app: web.Application) -> None:
    """The handlers' view (`Gateway`), built once from what the cleanup contexts started."""
    config, upstream, provider = app[CONFIG_KEY], app[UPSTREAM_KEY], app[KEY_PROVIDER_KEY]
    secret = load_gateway_secret(config.secret_path)
    objects = ObjectStore.over(config, upstream, provider, secret)
    if isinstance(provider, EmbeddedKeyProvider):
        # A key, alias, policy or grant changed (through the gateway's KMS endpoint, or the key service's own
        # maintenance): no cached data key outlives it (gateway/datakeys.py).
        provider.keys.on_change(lambda operation, key_arn: objects.keys.kms.data_keys.clear())
    app[GATEWAY_KEY] = Gateway(config=config, upstream=upstream, objects=objects, bucket_states=objects.bucket_states,
                               bucket_encryption=objects.bucket_encryption,
                               cors=BucketCors(upstream, config.bucket_config_ttl),
                               requesters=requesters(config.credentials, provider.account_id),
                               anonymous_upstream=upstream.unsigned(),
                               body_buffer=BodyBuffer(config.trailer_checksum_buffer),
                               upstream_users=upstream_users(config.credentials, upstream, objects))


def upstream_users(credentials: tuple[Credential, ...], upstream: Upstream,
                   objects: ObjectStore) -> dict[str, UpstreamUser]:
    """By access key, the upstream user of each credential mapped to one (``upstream_access_key``): the pool
    signed as it and the object layer over that; credentials mapped to the same upstream user share them."""
    by_user: dict[tuple[str, str], UpstreamUser] = {}
    out = {}
    for credential in credentials:
        pair = credential.upstream_user
        if pair is None:
            continue
        if pair not in by_user:
            view = upstream.signed_as(*pair)
            by_user[pair] = UpstreamUser(view, objects.signed_as(view))
        out[credential.access_key] = by_user[pair]
    return out


def requesters(credentials: tuple[Credential, ...], account_id: str | None) -> dict[str, Requester]:
    """Each credential's principal by access key. With the embedded key service (``account_id`` known) a
    credential without a configured principal is a user of its account; a remote KMS sees the gateway's
    own [kms] credentials whoever the client is, so there a credential acts as the gateway unless it
    names a principal (which then only scopes the gateway's caches)."""
    if account_id is None and any(c.principal for c in credentials):
        log.warning("client credentials name principals, but the key service is a remote KMS ([kms] endpoint): "
                    "it authorizes the gateway's own [kms] credentials, so key policies cannot tell clients apart")
    return {c.access_key: Requester(c.principal_in(account_id) if account_id else (c.principal or None),
                                    c.access_key)
            for c in credentials}


async def _kms_endpoint_state(app: web.Application) -> None:
    """The KMS API on this listener, accepting the client credentials in effect (the development one too)."""
    app[KMS_ENDPOINT_KEY] = endpoint_for(app[KEY_PROVIDER_KEY], app[CONFIG_KEY])


def _with_dev_credentials(config: GatewayConfig) -> GatewayConfig:
    """With no client credential configured, a development one (dev only, said loudly)."""
    if config.credentials:
        return config
    log.warning("no client credentials configured: accepting access key %r, secret key %r (dev only)",
                DEV_CREDENTIAL.access_key, DEV_CREDENTIAL.secret_key)
    return replace(config, credentials=(DEV_CREDENTIAL,))


def refusal_answer() -> bytes:
    """The whole HTTP answer to a connection over the cap: S3's SlowDown, which SDKs retry with backoff."""
    body = error_xml(slow_down(), request_id=new_request_id())
    head = (f"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def serve(config: GatewayConfig) -> None:
    """Run until SIGTERM/SIGINT; print the listening line once connections are accepted. Everything
    started is stopped again in reverse order, also when start-up fails half-way (the failure then
    propagates: `gateway.cli` reports a configuration error in one line)."""
    tls = server_ssl_context(config.tls_cert_file, config.tls_key_file)
    guard = ConnectionGuard(config.limits, refusal_answer(), "gateway")
    runner = GuardedAppRunner(create_app(config), guard, handle_signals=False, access_log=None,
                              logger=server_logger())
    await serve_until_signal(runner, *config.listen_host_port, tls, log, admin_listen=config.admin_host_port)
