"""Plaintext terms of stored objects that need no request: spans, and the sizes listings show.

A listing names each object's stored size and ETag; an encrypted object's plaintext size follows
from them alone (docs/FORMAT.md: a single stream's size arithmetic, a fixed overhead per part), so a
listing page is rewritten without a request per entry.
"""
from __future__ import annotations

from gateway.crypto.multipart import PART_OVERHEAD, object_plaintext_size, part_count_from_etag
from gateway.crypto.stream import plaintext_size

Span = tuple[int, int]  # first..last byte, inclusive; last = first - 1 for an empty part


def listed_plaintext_size(stored_size: int, upstream_etag: str) -> int:
    """The plaintext size of an encrypted object: multipart (``-k`` ETag) or single-stream;
    ValueError for a stored size no such object can have."""
    count = part_count_from_etag(upstream_etag)
    return plaintext_size(stored_size) if count is None else object_plaintext_size(stored_size, count)


def part_plaintext_size(stored_size: int) -> int:
    """The plaintext size of a stored part of an encrypting upload (never below 0)."""
    return max(0, stored_size - PART_OVERHEAD)
