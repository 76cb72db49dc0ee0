"""The client-visible ETag of an encrypted object, derived from the upstream ETag.

The upstream's ETag of an encrypted single-part object is the MD5 of the *ciphertext*. Shown as is,
it looks like a plain 32-hex MD5 that does not match the data: rclone then fails downloads and
s3cmd retries uploads five times. Computing the plaintext MD5 would cost a hash pass on every PUT
and a place to store it. Instead the gateway shows ``"<upstream md5 hex>-1"``: the ``-N`` suffix is
what S3 uses for multipart objects, so clients know it is not an MD5 of the data and skip the check.
The rule is a pure function of the upstream ETag, so PUT, HEAD, GET and List agree without an extra
request, and If-Match/If-None-Match can be evaluated against it.
"""
from __future__ import annotations

ENCRYPTED_SUFFIX = "-1"


def client_etag(upstream_etag: str) -> str:
    """The quoted client ETag of an encrypted single-part object from its upstream ETag."""
    bare = upstream_etag.strip().strip('"')
    if "-" in bare:
        return f'"{bare}"'
    return f'"{bare}{ENCRYPTED_SUFFIX}"'


def etag_matches(condition: str, etag: str) -> bool:
    """True when an If-Match/If-None-Match value (a list, ``*``, weak or quoted tags) names ``etag``."""
    target = etag.strip().strip('"')
    for candidate in condition.split(","):
        value = candidate.strip()
        if value == "*":
            return True
        if value.startswith("W/"):
            value = value[2:]
        if value.strip('"') == target:
            return True
    return False
