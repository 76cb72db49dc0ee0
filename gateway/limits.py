"""S3's size and count limits, in one place, so every path refuses what S3 would refuse, and up front.

A request over a limit must be refused before the gateway spends a KMS call or an upstream request
on it (S3 answers from the headers alone).
"""
from __future__ import annotations

MAX_UPLOAD_SIZE = 5 * 1024**3
"""The largest single PutObject body, UploadPart body, copied part and CopyObject source (5 GiB)."""

MAX_PARTS = 10000
"""Part numbers run 1..MAX_PARTS; a multipart object has at most this many parts."""
MIN_PART_SIZE = 5 * 1024**2
"""Every part but the last of a multipart object is at least this large (S3 checks it at Complete)."""
