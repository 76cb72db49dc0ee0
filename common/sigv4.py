"""Verification of AWS request signatures: SigV4 (Authorization header and presigned query),
SigV2 presigned query, and the chunk-signature chain of signed aws-chunked uploads.

Pure functions over method, raw path, raw query and headers, with no aiohttp and no S3 error
types, so the S3 gateway (service "s3") and the key service's HTTP server (service "kms") share
one implementation. Errors carry AWS/S3 error codes; each server maps them to its own protocol.
"""

from __future__ import annotations

import base64
import calendar
import functools
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from common.digits import parse_decimal

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES = 604800
_MAX_V2_EXPIRES = 253402300799  # 9999-12-31T23:59:59Z, the last second time.gmtime() renders
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"

_SPECIAL_PAYLOADS = frozenset(
    {UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER}
)
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_UNRESERVED = "-_.~"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
# x-amz-* headers S3 accepts unsigned (see check_amz_headers_signed).
UNSIGNED_AMZ_HEADERS_ALLOWED = frozenset({"x-amz-content-sha256"})

# Sub-resources that SigV2 puts in the CanonicalizedResource: botocore's HmacV1Auth list, plus
# MinIO's additions (`encryption`, `legal-hold`, `retention`) and every other sub-resource the
# gateway routes on (gateway/s3request.py). SigV2 signs no other query parameter, so one that
# selects the operation but is left out could be appended to a presigned URL (`?retention` turning
# a PutObject into a PutObjectRetention). A URL from a signer that leaves one of the extras out
# fails verification, which is the safe way round.
V2_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "attributes", "cors", "defaultObjectAcl", "delete",
        "encryption", "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "location",
        "logging", "metrics", "notification", "object-lock", "ownershipControls", "partNumber",
        "policy", "policyStatus", "publicAccessBlock", "replication", "requestPayment",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "restore",
        "retention", "select", "select-type", "storageClass", "tagging", "torrent", "uploadId",
        "uploads", "versionId", "versioning", "versions", "website",
    }
)


class AuthError(Exception):
    """A request failed authentication; `code` is the AWS error code, `status` the HTTP status,
    `extra` the diagnostic fields S3 puts in its error body."""

    def __init__(self, code: str, message: str, status: int, **extra: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra: dict[str, str] = extra


@dataclass
class AuthResult:
    """Who signed the request and what the signature covers (the caller enforces the payload)."""

    access_key: str
    scheme: str  # "v4-header" | "v4-query" | "v2-query"
    payload_hash: str | None
    signed_headers: tuple[str, ...]
    chunk_verifier: ChunkSignatureVerifier | None = None


@dataclass
class _Credential:
    access_key: str
    date: str
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


@dataclass
class _V4Request:
    """The parsed SigV4 parameters, from either the Authorization header or the query."""

    credential: _Credential
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    scheme: str
    expires: int | None = None
    query_pairs: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------- primitives


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """AWS's URI encoding: everything but A-Za-z0-9-_.~ is %XX (upper hex), space is %20. A
    surrogate-escaped byte (see `_wire_bytes`) is encoded as that byte."""
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""), errors="surrogateescape")


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """Derive the SigV4 signing key (HMAC chain over date, region, service, aws4_request).

    Cached (bounded; one entry per credential, day and scope): the four HMACs were a large share
    of each request's verification cost, and the key only changes daily."""
    key = _wire_bytes("AWS4" + secret)
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, _wire_bytes(part), hashlib.sha256).digest()
    return key


def _wire_bytes(text: str) -> bytes:
    """The bytes a client sent, and signed. aiohttp decodes header values as UTF-8 with
    surrogateescape, so a non-UTF-8 byte arrives as a lone surrogate that plain `.encode()`
    rejects (a 500 instead of a verdict); this restores the byte. A surrogate no wire byte
    decodes to cannot have been signed by anyone."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise AuthError("SignatureDoesNotMatch", SIGNATURE_MISMATCH, 403) from None


def _same_signature(expected: str, provided: str) -> bool:
    """Constant-time comparison of a computed signature with one a client sent, which may hold any
    character (`hmac.compare_digest` raises TypeError on non-ASCII strings)."""
    return hmac.compare_digest(expected.encode(), provided.encode("utf-8", "surrogatepass"))


def _hmac_hex(key: bytes, message: str) -> str:
    return hmac.new(key, _wire_bytes(message), hashlib.sha256).hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Split the wire query into decoded (key, value) pairs; `uploads` gives ("uploads", "")."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Re-encode every decoded pair with AWS's encoding and sort by key, then value."""
    encoded = sorted((uri_encode(k), uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 dot-segment removal plus collapsing of empty segments, as botocore does."""
    output: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if output:
                output.pop()
        else:
            output.append(segment)
    suffix = "/" if path.endswith("/") and output else ""
    return "/" + "/".join(output) + suffix


def canonical_uris(raw_path: str, service: str) -> list[str]:
    """The canonical URI(s) to try. S3 signs the path as sent; a client that sends a character
    unencoded may still have signed the AWS-encoded form, so that is the second candidate.
    Other services normalise the path and encode it again (double-encoding)."""
    path = raw_path or "/"
    if service != "s3":
        return [quote(_remove_dot_segments(path), safe="/~")]
    reencoded = uri_encode(unquote(path), keep_slash=True)
    return [path] if reencoded == path else [path, reencoded]


def _header_values(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    value = headers.get(name)
    return [] if value is None else [value]


def canonical_headers(headers: Mapping[str, str], names: Iterable[str]) -> str:
    """`name:value\\n` per signed header: values trimmed, inner space runs collapsed, repeats
    joined by commas."""
    lines = []
    for name in names:
        values = _header_values(headers, name)
        lines.append(f"{name}:" + ",".join(" ".join(v.split()) for v in values) + "\n")
    return "".join(lines)


@functools.lru_cache(maxsize=64)
def _parse_amz_date(amz_date: str) -> float:
    """`YYYYMMDDTHHMMSSZ` as epoch seconds, accepting exactly what `time.strptime` with
    AMZ_DATE_FORMAT accepts (seconds up to 61) without its cost; cached, as concurrent requests
    share their second. Raises ValueError for anything else."""
    if not _AMZ_DATE.fullmatch(amz_date):
        raise ValueError(amz_date)
    year, month, day = int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8])
    hour, minute, second = int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15])
    if (year < 1 or not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]
            or hour > 23 or minute > 59 or second > 61):
        raise ValueError(amz_date)
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _iso_now(now: float) -> str:
    return time.strftime(AMZ_DATE_FORMAT, time.gmtime(now))


# ---------------------------------------------------------------------------- chunk chain


class ChunkSignatureVerifier:
    """Checks the signature chain of STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] bodies: each
    chunk signs its own hash and the previous signature, so chunks cannot be dropped, reordered
    or altered; the chain starts at the request (seed) signature."""

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self._key = key
        self._prefix_fields = f"{amz_date}\n{scope}\n"
        self.previous_signature = seed_signature

    def chunk_string_to_sign(self, chunk_sha256_hex: str) -> str:
        return (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{self._prefix_fields}{self.previous_signature}\n"
            f"{EMPTY_SHA256}\n{chunk_sha256_hex}"
        )

    def trailer_string_to_sign(self, trailer_bytes: bytes) -> str:
        return (
            f"AWS4-HMAC-SHA256-TRAILER\n{self._prefix_fields}{self.previous_signature}\n"
            f"{_sha256_hex(trailer_bytes)}"
        )

    def sign_chunk(self, chunk_sha256_hex: str) -> str:
        """The signature the next chunk must carry (also used by tests to build bodies)."""
        return _hmac_hex(self._key, self.chunk_string_to_sign(chunk_sha256_hex))

    def sign_trailer(self, trailer_bytes: bytes) -> str:
        return _hmac_hex(self._key, self.trailer_string_to_sign(trailer_bytes))

    def verify_chunk(self, chunk_sha256_hex: str, signature: str) -> None:
        self._accept(self.sign_chunk(chunk_sha256_hex), signature)

    def verify_trailer(self, trailer_bytes: bytes, signature: str) -> None:
        """`trailer_bytes` is the canonical trailer: each `name:value` line ending in "\\n"."""
        self._accept(self.sign_trailer(trailer_bytes), signature)

    def _accept(self, expected: str, provided: str) -> None:
        if not _same_signature(expected, provided.strip().lower()):
            raise AuthError(
                "SignatureDoesNotMatch",
                SIGNATURE_MISMATCH,
                403,
            )
        self.previous_signature = expected


# ---------------------------------------------------------------------------- query-borne headers

# Query parameters of SigV4 query auth that are not request headers.
_V4_QUERY_AUTH = frozenset({
    "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-expires", "x-amz-signedheaders",
    "x-amz-signature", "x-amz-security-token", "x-amz-content-sha256",
})


def query_borne_headers(scheme: str, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers a presigned URL carries in its query, as (lower-case name, value).

    Presigners put header values in the query (botocore's SigV2 signer moves every x-amz-*,
    Content-Type and Content-MD5 header there; JS v3 hoists x-amz-* into SigV4 URLs), and S3
    applies them as headers. Both schemes sign them there (SigV4 signs the whole query, SigV2's
    string to sign takes them from the query when no header of the name is sent), so the caller
    may apply them as headers; without that, e.g. a SigV2 URL's user metadata would be dropped and
    its SSE-C key forwarded upstream in the query. Header-authenticated requests carry none."""
    if scheme == "v4-query":
        return [(k.lower(), v) for k, v in pairs
                if k.lower().startswith("x-amz-") and k.lower() not in _V4_QUERY_AUTH]
    if scheme == "v2-query":
        return [(k.lower(), v) for k, v in pairs
                if k.lower().startswith("x-amz-") or k.lower() in ("content-type", "content-md5")]
    return []


# ---------------------------------------------------------------------------- entry point


def verify(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    *,
    service: str,
    now: float,
    max_skew: float = 900,
    payload_hash: str | None = None,
    region: str | None = None,
    v2_path: str | None = None,
) -> AuthResult:
    """Authenticate a request by whichever scheme it uses; raise AuthError when it fails.

    `payload_hash` is the caller's sha256 of a body it already holds (the KMS JSON body);
    for S3 the signed X-Amz-Content-SHA256 header stands in for it. `region`, when given, must
    match the credential scope. `v2_path`: the path-style path a SigV2 signature covers when the
    request came virtual-hosted (SigV2 signs "/bucket/key", SigV4 the path as sent)."""
    pairs = _parse_query(raw_query)
    keys = {k for k, _ in pairs}
    authorization = headers.get("authorization")
    if authorization is not None:
        if not authorization.startswith(ALGORITHM + " "):
            raise AuthError(
                "InvalidArgument",
                "The authorization mechanism you have provided is not supported. "
                "Please use AWS4-HMAC-SHA256.",
                400,
            )
        request = _parse_authorization(authorization, headers)
    elif "X-Amz-Algorithm" in keys or "X-Amz-Credential" in keys:
        request = _parse_query_auth(pairs)
    elif "AWSAccessKeyId" in keys or "Signature" in keys:
        return _verify_v2_query(method, v2_path or raw_path, raw_query, pairs, headers, lookup_secret,
                                now=now)
    else:
        raise AuthError("AccessDenied", "Access Denied", 403)
    return _verify_v4(method, raw_path, pairs, headers, request, lookup_secret, service=service,
                      now=now, max_skew=max_skew, payload_hash=payload_hash, region=region)


# ---------------------------------------------------------------------------- SigV4 parsing


def _malformed(detail: str) -> AuthError:
    return AuthError(
        "AuthorizationHeaderMalformed", f"The authorization header is malformed; {detail}", 400
    )


def _parse_credential(value: str, error: Callable[[str], AuthError]) -> _Credential:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise error("the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
    return _Credential(*parts[:4])


def _parse_authorization(value: str, headers: Mapping[str, str]) -> _V4Request:
    """Parse `AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`, with or without
    spaces after the commas (s3cmd sends none)."""
    fields: dict[str, str] = {}
    for item in value[len(ALGORITHM):].split(","):
        name, sep, val = item.strip().partition("=")
        if not sep:
            raise _malformed(f"incorrect component \"{item.strip()}\".")
        fields[name] = val.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing:
        raise _malformed(f"missing {', '.join(missing)}.")
    amz_date = headers.get("x-amz-date")
    if amz_date is None:
        raise AuthError(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403
        )
    return _V4Request(
        credential=_parse_credential(fields["Credential"], _malformed),
        signed_headers=tuple(fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
        amz_date=amz_date.strip(),
        scheme="v4-header",
    )


def _query_error(message: str) -> AuthError:
    return AuthError("AuthorizationQueryParametersError", message, 400)


def _parse_query_auth(pairs: list[tuple[str, str]]) -> _V4Request:
    params = dict(pairs)
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date",
                "X-Amz-SignedHeaders", "X-Amz-Expires")
    if any(name not in params for name in required):
        raise _query_error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _query_error("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    expires = parse_decimal(params["X-Amz-Expires"], MAX_PRESIGN_EXPIRES + 1)
    if expires is None:
        raise _query_error("X-Amz-Expires should be a number")
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise _query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
            if expires > MAX_PRESIGN_EXPIRES
            else "X-Amz-Expires must be non-negative"
        )
    return _V4Request(
        credential=_parse_credential(
            params["X-Amz-Credential"],
            lambda detail: _query_error(f"Error parsing the X-Amz-Credential parameter; {detail}"),
        ),
        signed_headers=tuple(params["X-Amz-SignedHeaders"].split(";")),
        signature=params["X-Amz-Signature"],
        amz_date=params["X-Amz-Date"],
        scheme="v4-query",
        expires=expires,
        query_pairs=[(k, v) for k, v in pairs if k != "X-Amz-Signature"],
    )


# ---------------------------------------------------------------------------- SigV4 checks


def _check_scope(request: _V4Request, service: str, region: str | None) -> None:
    cred = request.credential
    error = _malformed if request.scheme == "v4-header" else _query_error
    if cred.date != request.amz_date[:8]:
        raise error("Invalid credential date. Date is not the same as X-Amz-Date.")
    if cred.service != service:
        raise error(f"incorrect service \"{cred.service}\". This endpoint belongs to \"{service}\".")
    if region is not None and cred.region != region:
        raise error(f"the region '{cred.region}' is wrong; expecting '{region}'")


def _check_time(request: _V4Request, now: float, max_skew: float) -> None:
    try:
        signed_at = _parse_amz_date(request.amz_date)
    except ValueError:
        if request.scheme == "v4-query":
            raise _query_error(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
            ) from None
        raise AuthError(
            "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403
        ) from None
    if request.scheme == "v4-query":
        _check_presign_window(request, signed_at, now, max_skew)
    elif abs(now - signed_at) > max_skew:
        raise AuthError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            403,
            RequestTime=request.amz_date,
            ServerTime=_iso_now(now),
            MaxAllowedSkewMilliseconds=str(int(max_skew * 1000)),
        )


def _check_presign_window(request: _V4Request, signed_at: float, now: float, max_skew: float) -> None:
    assert request.expires is not None
    if signed_at - now > max_skew:
        raise AuthError("AccessDenied", "Request is not valid yet", 403)
    if now > signed_at + request.expires:
        raise AuthError(
            "AccessDenied",
            "Request has expired",
            403,
            **{"X-Amz-Expires": str(request.expires), "Expires": _iso_now(signed_at + request.expires),
               "ServerTime": _iso_now(now)},
        )


def _check_signed_headers(request: _V4Request, headers: Mapping[str, str], service: str) -> None:
    """`host` must be signed, and in S3 every x-amz-* header sent must be signed, whatever the
    scheme (as S3 requires): otherwise whoever holds a presigned URL or a captured request could
    add e.g. `x-amz-copy-source` (turning a PutObject into a CopyObject), metadata or SSE headers."""
    signed = request.signed_headers
    error = _malformed if request.scheme == "v4-header" else _query_error
    if list(signed) != sorted(set(signed)) or any(n != n.lower() or not n for n in signed):
        raise error("SignedHeaders must be lower-case, sorted and unique.")
    if "host" not in signed:
        raise error("the host header must be signed.")
    if service == "s3":
        check_amz_headers_signed(headers, signed)


def check_amz_headers_signed(headers: Mapping[str, str], signed: Iterable[str]) -> None:
    """403 AccessDenied with S3's HeadersNotSigned list when an x-amz-* header is not signed.

    Only `x-amz-content-sha256` is exempt, as S3 exempts it: its value is the payload hash of
    the canonical request, so changing it already breaks the signature."""
    unsigned = sorted(
        {n.lower() for n in headers.keys() if n.lower().startswith("x-amz-")}
        - set(signed) - UNSIGNED_AMZ_HEADERS_ALLOWED
    )
    if unsigned:
        raise AuthError(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            403,
            HeadersNotSigned=", ".join(unsigned),
        )


def _payload_hash(request: _V4Request, headers: Mapping[str, str], service: str,
                  given: str | None) -> str:
    """The payload hash in the canonical request: the caller's, else the signed header
    (mandatory for S3 header auth), else UNSIGNED-PAYLOAD for presigned URLs."""
    header = headers.get("x-amz-content-sha256")
    if given is not None:
        return given
    if header is None:
        if request.scheme == "v4-query":
            return UNSIGNED_PAYLOAD
        if service == "s3":
            raise AuthError(
                "InvalidRequest",
                "Missing required header for this request: x-amz-content-sha256",
                400,
            )
        raise AuthError("IncompleteSignature", "Request must contain a payload hash", 400)
    header = header.strip()
    if header not in _SPECIAL_PAYLOADS and not _HEX_SHA256.fullmatch(header):
        raise AuthError(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
            "or a valid sha256 value.",
            400,
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=header,
        )
    return header


def _verify_v4(
    method: str,
    raw_path: str,
    pairs: list[tuple[str, str]],
    headers: Mapping[str, str],
    request: _V4Request,
    lookup_secret: Callable[[str], str | None],
    *,
    service: str,
    now: float,
    max_skew: float,
    payload_hash: str | None,
    region: str | None,
) -> AuthResult:
    _check_scope(request, service, region)
    _check_signed_headers(request, headers, service)
    _check_time(request, now, max_skew)
    payload = _payload_hash(request, headers, service, payload_hash)
    secret = lookup_secret(request.credential.access_key)
    if secret is None:
        raise AuthError(
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            403,
            AWSAccessKeyId=request.credential.access_key,
        )
    cred = request.credential
    key = signing_key(secret, cred.date, cred.region, cred.service)
    query_pairs = request.query_pairs if request.scheme == "v4-query" else pairs
    tail = "\n" + canonical_query(query_pairs) + "\n" + canonical_headers(
        headers, request.signed_headers
    ) + "\n" + ";".join(request.signed_headers) + "\n" + payload
    provided = request.signature.strip().lower()
    attempts = []
    for uri in canonical_uris(raw_path, service):
        canonical_request = method.upper() + "\n" + uri + tail
        string_to_sign = (
            f"{ALGORITHM}\n{request.amz_date}\n{cred.scope}\n"
            f"{_sha256_hex(_wire_bytes(canonical_request))}"
        )
        if _same_signature(_hmac_hex(key, string_to_sign), provided):
            return AuthResult(
                access_key=cred.access_key,
                scheme=request.scheme,
                payload_hash=payload,
                signed_headers=request.signed_headers,
                chunk_verifier=_chunk_verifier(payload, key, request),
            )
        attempts.append((canonical_request, string_to_sign))
    canonical_request, string_to_sign = attempts[0]
    raise AuthError(
        "SignatureDoesNotMatch",
        SIGNATURE_MISMATCH,
        403,
        AWSAccessKeyId=cred.access_key,
        StringToSign=string_to_sign,
        SignatureProvided=request.signature,
        CanonicalRequest=canonical_request,
    )


def _chunk_verifier(payload: str, key: bytes, request: _V4Request) -> ChunkSignatureVerifier | None:
    if payload not in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
        return None
    return ChunkSignatureVerifier(
        key, request.amz_date, request.credential.scope, request.signature.strip().lower()
    )


# ---------------------------------------------------------------------------- SigV2 query


def v2_string_to_sign(method: str, raw_path: str, raw_query: str, pairs: list[tuple[str, str]],
                      headers: Mapping[str, str], expires: str) -> str:
    """StringToSign of SigV2 query auth, byte-exact with botocore's HmacV1QueryAuth. botocore
    moves Content-MD5, Content-Type and x-amz-* into the query, so they count from there too."""
    query = {k.lower(): v for k, v in pairs}

    def standard(name: str) -> str:
        value = headers.get(name)
        return (value if value is not None else query.get(name, "")).strip()

    amz: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.lower().startswith("x-amz-"):
            amz.setdefault(name.lower(), []).append(value.strip())
    for name in {n.lower() for n in headers.keys() if n.lower().startswith("x-amz-")}:
        amz[name] = [v.strip() for v in _header_values(headers, name)]
    amz_lines = "".join(f"{name}:{','.join(amz[name])}\n" for name in sorted(amz))
    return (
        f"{method.upper()}\n{standard('content-md5')}\n{standard('content-type')}\n{expires}\n"
        f"{amz_lines}{_v2_resource(raw_path, raw_query)}"
    )


def _v2_resource(raw_path: str, raw_query: str) -> str:
    """Raw path plus the sub-resources present, sorted by name, values decoded; `uploads` and
    `uploads=` stay as sent, as botocore signs them."""
    subresources = []
    for part in raw_query.split("&"):
        key, sep, value = part.partition("=")
        if unquote(key) in V2_SUBRESOURCES:
            subresources.append((unquote(key), sep + unquote(value)))
    if not subresources:
        return raw_path
    subresources.sort(key=lambda kv: kv[0])
    return raw_path + "?" + "&".join(k + v for k, v in subresources)


def _verify_v2_query(
    method: str,
    raw_path: str,
    raw_query: str,
    pairs: list[tuple[str, str]],
    headers: Mapping[str, str],
    lookup_secret: Callable[[str], str | None],
    *,
    now: float,
) -> AuthResult:
    params = dict(pairs)
    if any(name not in params for name in ("AWSAccessKeyId", "Signature", "Expires")):
        raise AuthError(
            "AccessDenied",
            "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters",
            403,
        )
    expires = params["Expires"]
    expires_at = parse_decimal(expires, _MAX_V2_EXPIRES)
    if expires_at is None:
        raise AuthError("AccessDenied", "Invalid date (should be seconds since epoch): " + expires, 403)
    if now > expires_at:
        raise AuthError("AccessDenied", "Request has expired", 403, Expires=_iso_now(expires_at),
                        ServerTime=_iso_now(now))
    access_key = params["AWSAccessKeyId"]
    secret = lookup_secret(access_key)
    if secret is None:
        raise AuthError("InvalidAccessKeyId",
                        "The AWS Access Key Id you provided does not exist in our records.",
                        403, AWSAccessKeyId=access_key)
    signed_pairs = [(k, v) for k, v in pairs if k not in ("AWSAccessKeyId", "Signature", "Expires")]
    string_to_sign = v2_string_to_sign(method, raw_path, raw_query, signed_pairs, headers,
                                       expires)
    expected = base64.b64encode(
        hmac.new(_wire_bytes(secret), _wire_bytes(string_to_sign), hashlib.sha1).digest()
    ).decode()
    if not _same_signature(expected, params["Signature"]):
        raise AuthError(
            "SignatureDoesNotMatch",
            SIGNATURE_MISMATCH,
            403,
            AWSAccessKeyId=access_key,
            StringToSign=string_to_sign,
            SignatureProvided=params["Signature"],
        )
    return AuthResult(access_key=access_key, scheme="v2-query", payload_hash=None,
                      signed_headers=(), chunk_verifier=None)
