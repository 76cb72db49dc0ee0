"""The key service over HTTP: the AWS JSON 1.1 protocol of AWS KMS, authenticated with SigV4.

``POST /`` with ``X-Amz-Target: TrentService.<Operation>`` and a JSON body; errors are
``{"__type": ..., "message": ...}`` with their status, and every response carries
``x-amzn-RequestId``. Request shapes come from botocore's own KMS model, so the blob fields
(base64 on the wire, raw bytes for the service) and the parameter types are checked against
the same definition the AWS SDKs use -- no hand-kept table to drift. Any failure not foreseen
becomes ``KMSInternalException`` (500) with the traceback in the server log, never a bare 500.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime
import functools
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import botocore.session
from aiohttp import web
from botocore.model import Shape
from botocore.validate import ParamValidator

from common import sigv4
from common.accesslog import KEYSERVICE_FIELDS, OFF, AccessLog
from common.admin import ADMIN_KEY, Admin
from common.metrics import HttpMetrics, new_registry
from common.observe import Observer, current
from common.connections import (BodyTimeout, ConnectionGuard, GuardedAppRunner, request_body_chunks,
                                 send_and_close)
from common.serverlog import server_logger
from common.serving import freeze_startup_objects, serve_until_signal, server_ssl_context
from keyservice.api import KmsApi
from keyservice.config import Credential, KeyServiceConfig, build_api, log_secrets
from keyservice.errors import KMSError
from keyservice.service import CallContext

log = logging.getLogger("keyservice.server")

TARGET_PREFIX = "TrentService."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 1 << 20  # far above any KMS request (policies are <= 32 KiB, plaintext <= 4 KiB)

_KMS_MODEL = botocore.session.get_session().get_service_model("kms")
_VALIDATOR = ParamValidator()


class ProtocolError(KMSError):
    """A request rejected before it reaches the API layer (not audited: no call was made)."""


# ---------------------------------------------------------------------------- wire codec


@functools.lru_cache(maxsize=128)
def input_shape(operation: str) -> Shape | None:
    """The botocore input shape of an operation, None for one the model does not know (cached,
    bounded so unknown names sent by clients cannot grow it: the model lookup was per-request
    cost)."""
    if operation not in _KMS_MODEL.operation_names:
        return None
    return _KMS_MODEL.operation_model(operation).input_shape


def decode_blobs(value: Any, shape: Shape, path: str = "") -> Any:
    """Turn the base64 strings of blob members into bytes, recursively along the shape."""
    kind = shape.type_name
    if kind == "blob":
        if not isinstance(value, str):
            raise ProtocolError("SerializationException", f"{path or 'value'} must be a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("SerializationException", f"{path} is not valid base64") from None
    if kind == "structure" and isinstance(value, dict):
        members = shape.members
        return {k: decode_blobs(v, members[k], f"{path}.{k}".lstrip(".")) if k in members else v
                for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [decode_blobs(v, shape.member, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: decode_blobs(v, shape.value, f"{path}.{k}") for k, v in value.items()}
    return value


def parse_params(operation: str, body: bytes) -> dict[str, Any]:
    """The JSON body as service parameters: blobs decoded, types and required members checked."""
    try:
        params = json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("SerializationException", "The request body is not valid JSON") from None
    except RecursionError:  # json.loads recurses once per nesting level: [[[[... is no KMS request
        raise ProtocolError("SerializationException", "The request body nests too deeply") from None
    if not isinstance(params, dict):
        raise ProtocolError("SerializationException", "The request body must be a JSON object")
    shape = input_shape(operation)
    if shape is None:
        return params
    params = decode_blobs(params, shape)
    try:
        report = _VALIDATOR.validate(params, shape)
        problems = report.generate_report() if report.has_errors() else None
    except (RuntimeError, ValueError, OverflowError, TypeError):
        # botocore's timestamp check raises on absurd values instead of reporting them, and its
        # report prints wrong-typed values, which recurses too deep for a deeply nested one
        # (RecursionError is a RuntimeError)
        raise ProtocolError("ValidationException", "A parameter has an invalid value") from None
    if problems:
        raise ProtocolError("ValidationException", problems)
    return params


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    raise TypeError(f"cannot serialise {type(value).__name__}")


_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"))


def json_response(payload: dict[str, Any], status: int, request_id: str) -> web.Response:
    body = _ENCODER.encode(payload)
    return web.Response(body=body.encode(), status=status, content_type=JSON_CONTENT_TYPE,
                        headers={"x-amzn-RequestId": request_id})


def error_response(error: KMSError, request_id: str) -> web.Response:
    if (record := current()) is not None:
        record.error = error.type  # for the access log and metrics
    return json_response({"__type": error.type, "message": error.message}, error.status, request_id)


# ---------------------------------------------------------------------------- authentication

# sigv4's codes (shared with S3) mapped to the error types AWS KMS answers with.
_AUTH_ERRORS = {
    "InvalidAccessKeyId": ("UnrecognizedClientException",
                           "The security token included in the request is invalid."),
    "SignatureDoesNotMatch": ("InvalidSignatureException",
                              "The request signature we calculated does not match the signature "
                              "you provided. Check your AWS Secret Access Key and signing method."),
    "RequestTimeTooSkewed": ("InvalidSignatureException", "Signature expired"),
}


def authenticate(request: web.Request, body: bytes, credentials: Mapping[str, Credential], region: str,
                 request_id: str) -> CallContext:
    """Verify the SigV4 Authorization header, which signs the body's hash (KMS has no presigned
    requests); the caller's principal comes from the matching configured credential, and its
    account from that principal's ARN (another account's principal is a cross-account caller)."""
    if "authorization" not in request.headers:
        raise _rejected(ProtocolError("MissingAuthenticationTokenException", "Missing Authentication Token"))
    raw_path, _, raw_query = request.raw_path.partition("?")
    try:
        result = sigv4.verify(request.method, raw_path, raw_query, request.headers,
                              lambda access_key: _secret_of(credentials, access_key),
                              service="kms", now=time.time(), region=region,
                              payload_hash=hashlib.sha256(body).hexdigest())
    except sigv4.AuthError as e:
        type_, message = _AUTH_ERRORS.get(e.code, ("IncompleteSignatureException", e.message))
        if e.code == "RequestTimeTooSkewed":
            message = f"{message}: {e.message}"
        raise _rejected(ProtocolError(type_, message)) from None
    cred = credentials[result.access_key]
    if (record := current()) is not None:
        record.access_key = cred.access_key
    return CallContext(principal_arn=cred.principal, account_id=cred.account_id,
                       request_id=request_id, access_key=cred.access_key, source=request.remote)


def _rejected(error: ProtocolError) -> ProtocolError:
    """An authentication refusal, its reason noted for the metrics (``kms_auth_rejections_total``)."""
    if (record := current()) is not None:
        record.auth_rejection = error.type
    return error


def _secret_of(credentials: Mapping[str, Credential], access_key: str) -> str | None:
    cred = credentials.get(access_key)
    return cred.secret_key if cred else None


# ---------------------------------------------------------------------------- handler


def operation_of(request: web.Request) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if request.method != "POST" or request.path != "/" or not target.startswith(TARGET_PREFIX):
        raise ProtocolError("UnknownOperationException", "Unknown operation")
    return target[len(TARGET_PREFIX):]


class BodyStalled(ProtocolError):
    """The client stopped sending its request body; answered, then the connection is closed."""


async def read_body(request: web.Request) -> bytes:
    """The whole body, at most MAX_BODY bytes, each read waiting at most the server's body timeout."""
    body = bytearray()
    try:
        async for chunk in request_body_chunks(request, 64 * 1024):
            body += chunk
            if len(body) > MAX_BODY:
                raise ProtocolError("ValidationException", f"Request body exceeds {MAX_BODY} bytes", 413)
    except BodyTimeout:
        raise BodyStalled("RequestTimeoutException", "The request body was not received within the "
                          "timeout period; idle connections are closed.", 408) from None
    return bytes(body)


class KmsFrontend:
    """The whole per-request pipeline of the KMS JSON API, for any aiohttp server to answer with.

    ``keyservice serve`` routes every request here; the gateway hands it the requests that are KMS
    calls on its own listener (``EmbeddedKeyService.kms_frontend``), so both answer exactly alike:
    body limit and timeout, SigV4 for service ``kms`` in ``region``, botocore-model validation,
    ``KmsApi.call`` (quotas, audit), the AWS error shapes and ``x-amzn-RequestId``."""

    def __init__(self, api: KmsApi, credentials: Iterable[Credential], region: str) -> None:
        self._api = api
        self._credentials = {c.access_key: c for c in credentials}
        self._region = region

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one request; never raises for a client's mistake or an internal failure."""
        request_id = str(uuid.uuid4())
        try:
            body = await read_body(request)
            ctx = authenticate(request, body, self._credentials, self._region, request_id)
            operation = operation_of(request)
            if (record := current()) is not None:  # a name the model knows: clients cannot grow the labels
                record.operation = operation if operation in _KMS_MODEL.operation_names else "Unknown"
            params = parse_params(operation, body)
            result = await self._api.call(operation, params, ctx)
            return json_response(result, 200, request_id)
        except BodyStalled as e:
            return await send_and_close(request, error_response(e, request_id))
        except KMSError as e:
            return error_response(e, request_id)
        except ConnectionError:
            raise  # the client went away mid-request: aiohttp logs it on one line (common.serverlog)
        except Exception:
            log.exception("internal error in request %s", request_id)
            return error_response(KMSError("KMSInternalException", "An internal error occurred", 500),
                                  request_id)


def create_app(api: KmsApi, config: KeyServiceConfig) -> web.Application:
    """The aiohttp application; every path and method goes to the one handler. With an admin listener its
    metrics are collected (its readiness is that it serves: the key store is in the process), and every
    request gets an access-log line unless ``access_log`` is off (common/observe.py)."""
    registry = new_registry() if config.admin_listen else None
    observer = Observer(None, HttpMetrics("kms", registry) if registry is not None else None, None,
                        "x-amzn-RequestId")  # the handler notes operation, caller and error type as it goes
    observed = registry is not None or config.access_log != OFF
    app = web.Application(client_max_size=MAX_BODY, middlewares=[observer.middleware] if observed else [])
    app.router.add_route("*", "/{tail:.*}", KmsFrontend(api, config.credentials, config.region).handle)
    app.on_startup.append(freeze_startup_objects)
    if registry is not None:
        app[ADMIN_KEY] = Admin(registry)
    if config.access_log != OFF:
        observer.access_log = AccessLog(config.access_log, config.access_log_format, KEYSERVICE_FIELDS,
                                        "keyservice", log_secrets(config))
        app.on_cleanup.append(_closing(observer.access_log))
    if observed:
        app.on_response_prepare.append(observer.mark_first_byte)
    return app


def _closing(access_log: AccessLog):
    """An ``on_cleanup`` hook closing the access log (its file) with the application."""
    async def close(app: web.Application) -> None:
        access_log.close()
    return close


# ---------------------------------------------------------------------------- serving


def refusal_answer() -> bytes:
    """The whole HTTP answer to a connection over the cap: KMS's ThrottlingException, which SDKs retry."""
    body = _ENCODER.encode({"__type": "ThrottlingException",
                            "message": "Too many connections; retry later"}).encode()
    head = (f"HTTP/1.1 400 Bad Request\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n"
            f"Content-Length: {len(body)}\r\nx-amzn-RequestId: {uuid.uuid4()}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


async def serve(config: KeyServiceConfig) -> None:
    """Serve until SIGTERM or SIGINT, then close the listener, the service and the audit log."""
    host, port = config.host_port()
    tls = server_ssl_context(config.tls_cert_file, config.tls_key_file)
    api = build_api(config)
    guard = ConnectionGuard(config.limits, refusal_answer(), "keyservice")
    runner = GuardedAppRunner(create_app(api, config), guard, access_log=None, handle_signals=False,
                              logger=server_logger())
    purger = asyncio.create_task(api.maintain_forever(config.purge_interval))  # key upkeep meanwhile
    try:
        await serve_until_signal(runner, host, port, tls, log, admin_listen=config.admin_host_port())
    finally:
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
        await api.close()
