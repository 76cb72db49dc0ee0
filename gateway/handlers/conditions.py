"""Conditional requests (If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since).

The gateway evaluates them itself instead of forwarding them: the client's ETags are the
client-visible ones (gateway/etag.py), which the upstream has never seen.
"""
from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Mapping

from gateway.etag import etag_matches

CONDITIONAL_HEADERS = ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def evaluate_conditions(headers: Mapping[str, str], etag: str, last_modified: str | None) -> int | None:
    """S3's conditional-request outcome against the client-visible ETag: 412, 304, or None to serve.

    If-Match wins over If-Unmodified-Since and If-None-Match over If-Modified-Since (RFC 7232);
    unparseable dates are ignored, as S3 does.
    """
    modified = _http_date(last_modified)
    if "if-match" in headers:
        if not etag_matches(headers["if-match"], etag):
            return 412
    elif (since := _http_date(headers.get("if-unmodified-since"))) and modified and modified > since:
        return 412
    if "if-none-match" in headers:
        if etag_matches(headers["if-none-match"], etag):
            return 304
    elif (since := _http_date(headers.get("if-modified-since"))) and modified and modified <= since:
        return 304
    return None


