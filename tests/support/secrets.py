"""Every secret the test suite hands to a server, in one registry, and the scan of server output for them.

No server may ever log a secret key, a customer (SSE-C) key, a data key or a SigV4 signing key, at any log
level (the suite runs its servers at DEBUG so the scan means something). Tests take their credentials and
customer keys from here; secrets made at run time (moto's IAM key) are registered as they are made. At the
end of the session tests/conftest.py scans the output of every server tests/support/process.py started.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re

# Client credential of the suite's gateways (tests/gateway/conftest.py).
GATEWAY_ACCESS_KEY = "AKIDGATEWAY"
GATEWAY_SECRET_KEY = "gateway-secret-key"
# Credentials of the standalone key service (tests/keyservice/conftest.py): (access key, secret key).
KEYSERVICE_ROOT = ("AKIAKSROOT0000000001", "root-secret-key-for-tests")
KEYSERVICE_ALICE = ("AKIAKSALICE000000001", "alice-secret-key-for-tests")
KEYSERVICE_ADMIN = ("AKIAKSADMIN000000001", "admin-secret-key-for-tests")
KEYSERVICE_OTHER = ("AKIAKSOTHER000000001", "other-account-secret-key-for-tests")  # another account's principal
KEYSERVICE_ROOT_KEY = bytes(range(32))
# SSE-C customer keys the tests send (raw 32 bytes; the aws CLI's is given as 32 ASCII characters).
CUSTOMER_KEY = bytes(range(32))
OTHER_CUSTOMER_KEY = bytes(range(1, 33))
MULTIPART_CUSTOMER_KEY = b"K" * 32
OTHER_MULTIPART_CUSTOMER_KEY = b"L" * 32
CLI_CUSTOMER_KEY = "0123456789abcdef0123456789ABCDEF"

_SECRETS: dict[str, bytes] = {}
_SIGNING_SECRETS: set[str] = set()
# Strings that only appear where signing input or a KMS response body is being logged.
LEAK_MARKERS = (re.compile(r'"Plaintext"\s*:'), re.compile(r"StringToSign"), re.compile(r"CanonicalRequest"))


def register(name: str, value: str | bytes, *, signs: bool = False) -> None:
    """Add a secret; ``signs``: it is a SigV4 secret key, so its derived signing keys are secrets too."""
    _SECRETS[name] = value.encode() if isinstance(value, str) else value
    if signs:
        assert isinstance(value, str)
        _SIGNING_SECRETS.add(value)


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """SigV4's derived key: HMAC chain over date, region, service and "aws4_request"."""
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def forms(value: bytes) -> list[str]:
    """The ways a secret can show up in a log: as text, base64, base64url, hex, or a bytes repr."""
    out = {base64.b64encode(value).decode(), base64.urlsafe_b64encode(value).decode().rstrip("="),
           value.hex(), repr(value)[2:-1]}
    try:
        out.add(value.decode("ascii"))
    except UnicodeDecodeError:
        pass
    return sorted(s for s in out if len(s) >= 8)


def all_secrets() -> dict[str, bytes]:
    """The registered secrets plus today's and yesterday's signing keys of every SigV4 secret."""
    out = dict(_SECRETS)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    for secret in _SIGNING_SECRETS:
        for day in (today, today - datetime.timedelta(days=1)):
            for service in ("s3", "kms"):
                out[f"signing key of {secret[:4]}... for {day} {service}"] = signing_key(
                    secret, day.strftime("%Y%m%d"), "us-east-1", service)
    return out


def leaks(text: str, extra: dict[str, bytes] | None = None) -> list[str]:
    """What of the registered (and ``extra``) secrets, in any form, or of the leak markers ``text`` holds."""
    found = [f"{name} ({form!r})" for name, value in {**all_secrets(), **(extra or {})}.items()
             for form in forms(value) if form in text]
    return found + [f"marker {marker.pattern!r}" for marker in LEAK_MARKERS if marker.search(text)]


register("gateway client secret key", GATEWAY_SECRET_KEY, signs=True)
for _name, (_, _secret) in (("root", KEYSERVICE_ROOT), ("alice", KEYSERVICE_ALICE), ("admin", KEYSERVICE_ADMIN),
                            ("other account", KEYSERVICE_OTHER)):
    register(f"key service {_name} secret key", _secret, signs=True)
register("key service root key", KEYSERVICE_ROOT_KEY)
for _name, _key in (("customer key", CUSTOMER_KEY), ("other customer key", OTHER_CUSTOMER_KEY),
                    ("multipart customer key", MULTIPART_CUSTOMER_KEY),
                    ("other multipart customer key", OTHER_MULTIPART_CUSTOMER_KEY),
                    ("CLI customer key", CLI_CUSTOMER_KEY)):
    register(_name, _key)
