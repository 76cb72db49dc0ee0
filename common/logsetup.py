"""Logging for both servers (``gateway serve``, ``keyservice serve``) that never writes a secret.

The level a user asks for (``GATEWAY_LOG_LEVEL``, ``KEYSERVICE_LOG_LEVEL``) applies to the project's own
loggers only. Raising the root logger to DEBUG, as ``logging.basicConfig(level=DEBUG)`` does, would also
switch on botocore's wire logging: it prints KMS response bodies (the plaintext data keys of
GenerateDataKey and Decrypt), canonical requests, StringToSign and signatures of the upstream and KMS
calls. So the third-party libraries that can print request or response contents are capped at WARNING
whatever the level, and a filter on the one handler redacts, as a last line of defence, the configured
secret keys and anything that looks like key material or signing input in a message that still gets
through (a future debug line, an exception text).
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

PROJECT_LOGGERS = ("gateway", "keyservice")
# Libraries that log request/response headers or bodies, signing material or credentials at DEBUG/INFO.
CAPPED_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3", "aiohttp", "werkzeug", "moto")
REDACTED = "[redacted]"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_MIN_SECRET_LENGTH = 8  # shorter configured "secrets" (the dev credential test/test) would redact common words
# A quoted value (a str or bytes repr, a JSON string) ends at the first quote of its kind that no backslash
# escapes (`b'..\'..'`, `"..\".."`); one cut off before its closing quote is redacted to the end.
_QUOTED = r"""b?"(?:[^"\\]|\\.)*(?:"|\\?\Z)|b?'(?:[^'\\]|\\.)*(?:'|\\?\Z)"""
# Each pattern with the lower-case words one of which a text must hold for it to match: the words are looked
# for first (a substring test), so the common line that holds none never runs the (costly) regular expressions.
_PATTERNS = [
    (("plaintext", "secret"),
     re.compile(r"""(["']?(?:Plaintext|SecretAccessKey|SecretKey|secret_key|aws_secret_access_key)["']?\s*[:=]\s*)"""
                rf"""({_QUOTED}|[^\s,}}]+)""", re.IGNORECASE | re.DOTALL)),
    (("customer-key",),
     re.compile(r"(x-amz-(?:copy-source-)?server-side-encryption-customer-key\s*[:=]\s*)([^\s,}'\"]+)", re.IGNORECASE)),
    (("signature",), re.compile(r"((?:Signature|X-Amz-Signature)\s*[:=]\s*)([0-9a-fA-F]{64})")),
    (("stringtosign", "canonicalrequest", "signing key"),
     re.compile(r"((?:StringToSign|CanonicalRequest|signing key)\s*[:=]?\s*)(.+)", re.IGNORECASE | re.DOTALL)),
]


def parse_level(value: str | None, default: str = "INFO") -> int:
    """A level name (case-insensitive); empty means the default. ValueError for an unknown name."""
    name = (value or default).strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {value!r} (use DEBUG, INFO, WARNING, ERROR or CRITICAL)")
    return level


def failure_line(exc: BaseException) -> str:
    """A start-up failure as the one line a server prints before it exits non-zero, never a traceback: the
    exception's own text (the project's name the setting or file to fix), a file error with its file."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) with secrets replaced by ``[redacted]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        lowered = text.lower()
        for words, pattern in _PATTERNS:
            if any(word in lowered for word in words):
                text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure_logging(level: int, secrets: Iterable[str] = ()) -> RedactingFilter:
    """One stderr handler on the root logger; ``level`` for the project's loggers, INFO at most for the
    rest, WARNING at most for the libraries that can print secrets. Returns the filter (to add secrets)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(max(level, logging.INFO))
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for name in CAPPED_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return redactor
