"""S3 error responses: the exception every gateway layer raises and its XML body.

Handlers raise `S3Error` (or one of the constructors below) and the server renders it once, so
every failure is a proper S3 error with the right code and status, never a bare 500.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from xml.sax.saxutils import escape

from common.connections import RateLimitedLog
from common.sigv4 import AuthError


class S3Error(Exception):
    """An S3 protocol error: `code` and `message` go in the XML body, `fields` become extra
    elements (e.g. BucketName, Key, ArgumentName), `headers` are added to the response."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        *,
        headers: Mapping[str, str] | None = None,
        **fields: str,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.headers: dict[str, str] = dict(headers or {})
        self.fields: dict[str, str] = fields


def error_xml(err: S3Error, *, request_id: str, resource: str | None = None) -> bytes:
    """Render `<Error>` as S3 does: Code, Message, the extra fields, Resource, RequestId."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<Error>']
    parts.append(f"<Code>{escape(err.code)}</Code><Message>{escape(err.message)}</Message>")
    for name, value in err.fields.items():
        parts.append(f"<{name}>{escape(str(value))}</{name}>")
    if resource is not None:
        parts.append(f"<Resource>{escape(resource)}</Resource>")
    parts.append(f"<RequestId>{escape(request_id)}</RequestId></Error>")
    return "".join(parts).encode()


def from_auth_error(err: AuthError) -> S3Error:
    """Convert a signature failure from `common.sigv4` into the S3 error it stands for."""
    return S3Error(err.code, err.message, err.status, **err.extra)


# ---------------------------------------------------------------- common errors


def no_such_key(key: str | None = None) -> S3Error:
    fields = {"Key": key} if key is not None else {}
    return S3Error("NoSuchKey", "The specified key does not exist.", 404, **fields)


def no_such_bucket(bucket: str | None = None) -> S3Error:
    fields = {"BucketName": bucket} if bucket is not None else {}
    return S3Error("NoSuchBucket", "The specified bucket does not exist", 404, **fields)


def no_such_upload(
    upload_id: str | None = None,
    message: str = "The specified upload does not exist. The upload ID may be invalid, or the upload may "
    "have been aborted or completed.",
) -> S3Error:
    fields = {"UploadId": upload_id} if upload_id is not None else {}
    return S3Error("NoSuchUpload", message, 404, **fields)


def access_denied(message: str = "Access Denied") -> S3Error:
    return S3Error("AccessDenied", message, 403)


def invalid_argument(message: str, name: str | None = None, value: str | None = None) -> S3Error:
    fields = {}
    if name is not None:
        fields["ArgumentName"] = name
    if value is not None:
        fields["ArgumentValue"] = value
    return S3Error("InvalidArgument", message, 400, **fields)


def invalid_request(message: str) -> S3Error:
    return S3Error("InvalidRequest", message, 400)


def invalid_range(object_size: int | None = None) -> S3Error:
    fields = {"ActualObjectSize": str(object_size)} if object_size is not None else {}
    return S3Error("InvalidRange", "The requested range is not satisfiable", 416, **fields)


def not_implemented(
    what: str = "A header you provided implies functionality that is not implemented",
) -> S3Error:
    return S3Error("NotImplemented", what, 501)


def internal_error() -> S3Error:
    return S3Error("InternalError", "We encountered an internal error. Please try again.", 500)


def slow_down() -> S3Error:
    return S3Error("SlowDown", "Please reduce your request rate.", 503)


def request_timeout() -> S3Error:
    """S3's answer to a request body that stopped arriving."""
    return S3Error("RequestTimeout", "Your socket connection to the server was not read from or written to "
                   "within the timeout period. Idle connections will be closed.", 400)


def precondition_failed(condition: str | None = None) -> S3Error:
    fields = {"Condition": condition} if condition is not None else {}
    return S3Error(
        "PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412, **fields
    )


def method_not_allowed(method: str, resource_type: str = "OBJECT") -> S3Error:
    return S3Error(
        "MethodNotAllowed",
        "The specified method is not allowed against this resource.",
        405,
        Method=method,
        ResourceType=resource_type,
    )


def entity_too_large(max_size: int, proposed: int | None = None) -> S3Error:
    fields = {"MaxSizeAllowed": str(max_size)}
    if proposed is not None:
        fields["ProposedSize"] = str(proposed)
    return S3Error(
        "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size", 400, **fields
    )


def entity_too_small() -> S3Error:
    return S3Error(
        "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.", 400
    )


def missing_content_length() -> S3Error:
    return S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)


def incomplete_body(
    message: str = "You did not provide the number of bytes specified by the Content-Length HTTP header",
) -> S3Error:
    return S3Error("IncompleteBody", message, 400)


def invalid_digest(message: str = "The Content-MD5 you specified is not valid.") -> S3Error:
    return S3Error("InvalidDigest", message, 400)


def bad_digest(message: str = "The Content-MD5 you specified did not match what we received.") -> S3Error:
    return S3Error("BadDigest", message, 400)


def malformed_trailer() -> S3Error:
    return S3Error(
        "MalformedTrailerError",
        "The request contained trailing data that was not well-formed or did not conform to our "
        "published schema.",
        400,
    )


def malformed_xml() -> S3Error:
    return S3Error(
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
        400,
    )


def invalid_part(
    message: str = "One or more of the specified parts could not be found.  The part may not have been "
    "uploaded, or the specified entity tag may not match the part's entity tag.",
) -> S3Error:
    return S3Error("InvalidPart", message, 400)


def invalid_uri() -> S3Error:
    return S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)


def invalid_part_number() -> S3Error:
    """GET ?partNumber=N beyond the object's parts."""
    return S3Error("InvalidPartNumber", "The requested partnumber is not satisfiable", 416)


def invalid_part_order() -> S3Error:
    return S3Error(
        "InvalidPartOrder",
        "The list of parts was not in ascending order. The parts list must be specified in order "
        "by part number.",
        400,
    )


def invalid_bucket_name(bucket: str) -> S3Error:
    return S3Error("InvalidBucketName", "The specified bucket is not valid.", 400, BucketName=bucket)


def kms_not_found(message: str) -> S3Error:
    return S3Error("KMS.NotFoundException", message, 400)


def kms_disabled(message: str) -> S3Error:
    return S3Error("KMS.DisabledException", message, 400)


def kms_invalid_state(message: str) -> S3Error:
    return S3Error("KMS.KMSInvalidStateException", message, 400)


# KMS error `__type`s that S3 surfaces as "KMS.<type>" 400 errors; others become 500s.
_KMS_PASSTHROUGH = frozenset(
    {
        "NotFoundException", "DisabledException", "KMSInvalidStateException",
        "InvalidKeyUsageException", "KeyUnavailableException", "InvalidCiphertextException",
        "IncorrectKeyException",
    }
)


# KMS failures the caller may retry (AWS: "The request can be retried"): the key service is
# unavailable for now, e.g. it cannot write its audit log; and the bare HTTP statuses SDKs report as
# the error type when the answer is not KMS JSON (a proxy's HTML 502/503/504 page).
_KMS_UNAVAILABLE = frozenset({"KMSInternalException", "DependencyTimeoutException", "502", "503", "504"})


def service_unavailable(message: str = "The key service is unavailable. Please retry.") -> S3Error:
    return S3Error("ServiceUnavailable", message, 503)


def from_kms_error(type_: str, message: str) -> S3Error:
    """Map a KMS failure met while handling an S3 request to what S3 returns for it: throttling
    to SlowDown 503, a retryable key service failure to ServiceUnavailable 503, access denial to
    403, the key-state family to 400 `KMS.<type>`."""
    if type_ == "ThrottlingException":
        return slow_down()
    if type_ in _KMS_UNAVAILABLE:
        return service_unavailable()
    if type_ == "AccessDeniedException":
        return S3Error("AccessDenied", message, 403)
    if type_ in _KMS_PASSTHROUGH:
        return S3Error(f"KMS.{type_}", message, 400)
    return S3Error("InternalError", f"The key service failed: {type_}", 500)


# What an upstream error status means when its body is not an S3 error document (a load balancer's or
# proxy's HTML page): S3's code for it, and the status S3 would answer with. Upstream 502 and 504
# (a gateway in front of the store failing) are S3's 503 ServiceUnavailable: retryable, as they were.
_STATUS_ERRORS: dict[int, tuple[str, str, int]] = {
    400: ("InvalidRequest", "The upstream store rejected the request.", 400),
    403: ("AccessDenied", "Access Denied", 403),
    404: ("NotFound", "Not Found", 404),
    405: ("MethodNotAllowed", "The specified method is not allowed against this resource.", 405),
    412: ("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412),
    416: ("InvalidRange", "The requested range is not satisfiable", 416),
    500: ("InternalError", "We encountered an internal error. Please try again.", 500),
    501: ("NotImplemented", "The upstream store does not implement this request.", 501),
    502: ("ServiceUnavailable", "The upstream store is unavailable. Please try again.", 503),
    503: ("ServiceUnavailable", "The upstream store is unavailable. Please try again.", 503),
    504: ("ServiceUnavailable", "The upstream store did not answer in time. Please try again.", 503),
}
# Elements of an upstream <Error> that describe the upstream's own request, not the error.
_UPSTREAM_ERROR_ONLY = frozenset({"Code", "Message", "RequestId", "HostId", "Resource"})
# Upstream response headers an S3 error keeps: when to retry.
_KEPT_ERROR_HEADERS = ("Retry-After",)


# S3's messages for the codes an upstream may answer without one (Ceph RGW 16 sends an empty <Message> with
# every error): a client then still reads what went wrong (the aws CLI's `s3` commands fail on a missing one).
_DEFAULT_MESSAGES = {
    "AccessDenied": "Access Denied",
    "BucketAlreadyExists": "The requested bucket name is not available. The bucket namespace is shared by all "
                           "users of the system. Please select a different name and try again.",
    "BucketAlreadyOwnedByYou": "Your previous request to create the named bucket succeeded and you already own it.",
    "BucketNotEmpty": "The bucket you tried to delete is not empty",
    "EntityTooLarge": "Your proposed upload exceeds the maximum allowed size",
    "EntityTooSmall": "Your proposed upload is smaller than the minimum allowed object size.",
    "InternalError": "We encountered an internal error. Please try again.",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "InvalidArgument": "Invalid Argument",
    "InvalidBucketName": "The specified bucket is not valid.",
    "InvalidDigest": "The Content-MD5 you specified is not valid.",
    "BadDigest": "The Content-MD5 you specified did not match what we received.",
    "InvalidPart": "One or more of the specified parts could not be found.  The part may not have been uploaded, "
                   "or the specified entity tag may not match the part's entity tag.",
    "InvalidPartOrder": "The list of parts was not in ascending order. The parts list must be specified in order "
                        "by part number.",
    "InvalidRange": "The requested range is not satisfiable",
    "InvalidRequest": "The upstream store rejected the request.",
    "MalformedXML": "The XML you provided was not well-formed or did not validate against our published schema",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
    "NoSuchBucket": "The specified bucket does not exist",
    "NoSuchBucketPolicy": "The bucket policy does not exist",
    "NoSuchCORSConfiguration": "The CORS configuration does not exist",
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchLifecycleConfiguration": "The lifecycle configuration does not exist",
    "NoSuchTagSet": "The TagSet does not exist",
    "NoSuchTagSetError": "The TagSet does not exist",
    "NoSuchUpload": "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
                    "aborted or completed.",
    "NoSuchVersion": "The specified version does not exist.",
    "NoSuchWebsiteConfiguration": "The specified bucket does not have a website configuration",
    "NotImplemented": "A header you provided implies functionality that is not implemented",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold",
    "RequestTimeTooSkewed": "The difference between the request time and the current time is too large.",
    "ServiceUnavailable": "Please reduce your request rate.",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature you provided. "
                             "Check your key and signing method.",
    "SlowDown": "Please reduce your request rate.",
}


def default_message(code: str, status: int) -> str:
    """S3's message for ``code``, or one naming the upstream's code and status."""
    return _DEFAULT_MESSAGES.get(code) or f"The upstream store answered {status} {code}."


def with_message(body: bytes, status: int) -> bytes:
    """An S3 error document whose ``<Message>`` is empty or missing, with S3's message for its code put in (the
    body unchanged otherwise, also when it is no S3 error document)."""
    root = parse_s3_error(body)
    if root is None:
        return body
    element = next((child for child in root if child.tag.rsplit("}", 1)[-1] == "Message"), None)
    if element is not None and (element.text or "").strip():
        return body
    code = (root.findtext("Code") or "").strip()
    if element is None:
        namespace = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        element = ET.Element(namespace + "Message")
        codes = [i for i, child in enumerate(root) if child.tag.rsplit("}", 1)[-1] == "Code"]
        root.insert(codes[0] + 1 if codes else 0, element)
    element.text = default_message(code, status)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def parse_s3_error(body: bytes) -> ET.Element | None:
    """The body's ``<Error>`` element with a ``<Code>``, or None when it is anything else (HTML, text,
    truncated XML): only a real S3 error document may be relayed to an S3 client as it is."""
    try:
        root = ET.fromstring(body)
    except (ET.ParseError, ValueError):
        return None
    is_error = root.tag.rsplit("}", 1)[-1] == "Error" and (root.findtext("Code") or "").strip()
    return root if is_error else None


def _for_status(status: int) -> tuple[str, str, int]:
    """S3's error for an upstream status without an S3 body, keeping the status class."""
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    if 400 <= status < 500:
        return "InvalidRequest", "The upstream store rejected the request.", status
    return _STATUS_ERRORS[500]


def from_upstream(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> S3Error:
    """The upstream's error answer as an S3Error: an S3 error document keeps its code, message, extra
    fields and status; anything else becomes the S3 error its status stands for. Retry-After is kept,
    so a 503 SlowDown still tells the client when to retry."""
    kept = {name: headers[name] for name in _KEPT_ERROR_HEADERS if headers is not None and name in headers}
    root = parse_s3_error(body)
    if root is None:
        code, message, out_status = _for_status(status)
        return S3Error(code, message, out_status, headers=kept)
    if (refused := gateway_credential_refused(root)) is not None:
        return refused
    fields = {child.tag: child.text or "" for child in root  # S3's fields are capitalised, S3Error's own not
              if child.tag[:1].isupper() and child.tag not in _UPSTREAM_ERROR_ONLY and len(child) == 0}
    code = (root.findtext("Code") or "").strip() or "InternalError"
    out_status = status if status >= 400 else 500
    message = (root.findtext("Message") or "").strip() or default_message(code, out_status)
    return S3Error(code, message, out_status, headers=kept, **fields)


# The upstream's refusals of the signature on the gateway's own re-signed request: its [upstream] credential,
# or the region it signs for, is wrong. Never the client's mistake (the gateway verified the client's signature).
UPSTREAM_CREDENTIAL_REFUSALS = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                                          "ExpiredToken", "InvalidClientTokenId", "TokenRefreshRequired"})
UPSTREAM_REGION_REFUSALS = frozenset({"AuthorizationHeaderMalformed", "AuthorizationQueryParametersError"})
_refusals_log = RateLimitedLog(logging.getLogger("gateway.upstream"))


def refuses_gateway_credential(root: ET.Element) -> bool:
    """Whether an upstream error document refuses the gateway's own credential (or signing region)."""
    return (root.findtext("Code") or "").strip() in UPSTREAM_CREDENTIAL_REFUSALS | UPSTREAM_REGION_REFUSALS


def gateway_credential_refused(root: ET.Element) -> S3Error | None:
    """For an upstream error document refusing the gateway's own credential: the client's 503
    ServiceUnavailable naming the gateway's upstream credential (logged, rate-limited), instead of a relayed
    SignatureDoesNotMatch that tells the client its own key is wrong; None for any other error."""
    if not refuses_gateway_credential(root):
        return None
    code = (root.findtext("Code") or "").strip()
    _refusals_log.note("the upstream refused the gateway's own credential (%s: %s); answering 503 "
                       "ServiceUnavailable: check [upstream] access_key, secret_key and region", code,
                       (root.findtext("Message") or "").strip())
    return S3Error("ServiceUnavailable", f"The upstream store refused the gateway's own credential ({code}); "
                   "the gateway's operator must correct its upstream credential.", 503)
