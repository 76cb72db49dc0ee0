"""The parts of an object a request names: a Range header, x-amz-copy-source-range, a partNumber.

Parsed exactly as S3 parses them (what it ignores, what is 400 and what is 416), in plaintext terms:
the object layer maps the resulting spans onto ciphertext.
"""
from __future__ import annotations

import re

from common.digits import parse_decimal
from gateway.limits import MAX_PARTS
from gateway.objects.plaintext import Span
from gateway.s3errors import invalid_argument, invalid_range

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_FAR = 2**64  # beyond any object: a longer bound means the same as this one


class RangeNotSatisfiable(Exception):
    """A Range header no byte of the object satisfies (S3: 416 InvalidRange)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for an object of {size} bytes")
        self.size = size


def parse_range_header(value: str, size: int) -> Span | None:
    """Parse a Range header the way S3 does; returns (start, end) inclusive and clamped.

    None means S3 would ignore the header and answer 200 with the whole object: a malformed value,
    first > last, or several ranges (S3 does not serve multipart/byteranges).
    """
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        suffix = _bound(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size - 1
    start = _bound(first)
    end = _bound(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, min(end, size - 1)


def requested_range(value: str | None, size: int) -> Span | None:
    """The span a GET's Range header asks of an object of ``size`` bytes (None: the whole object);
    416 InvalidRange with ``Content-Range: bytes */size`` when nothing of it is satisfiable."""
    if value is None:
        return None
    try:
        return parse_range_header(value, size)
    except RangeNotSatisfiable:
        error = invalid_range(size)
        error.headers["Content-Range"] = f"bytes */{size}"
        raise error from None


def _bound(digits: str) -> int:
    """A Range bound (ASCII digits, as the regex matched), however long: `int()` alone refuses
    more than 4300 digits."""
    return parse_decimal(digits, _FAR) or 0


def parse_copy_range(value: str | None, size: int) -> Span | None:
    """x-amz-copy-source-range ``bytes=first-last`` (ASCII digits, any length), which must lie inside a
    source of ``size`` bytes; S3's 400 InvalidArgument otherwise."""
    if value is None:
        return None
    first_text, dash, last_text = value.strip().removeprefix("bytes=").partition("-")
    first, last = parse_decimal(first_text, size), parse_decimal(last_text, size)  # >= size: out of range
    if not (value.strip().startswith("bytes=") and dash and first is not None and last is not None):
        raise invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last where "
                               "first and last are the zero-based offsets of the first and last bytes to copy",
                               "x-amz-copy-source-range", value)
    if not first <= last < size:
        raise invalid_argument(f"Range specified is not valid for source object of size: {size}",
                               "x-amz-copy-source-range", value)
    return first, last


def parse_part_number(value: str) -> int:
    """A part number 1..10000 from its query value; anything else is S3's 400 InvalidArgument."""
    number = parse_decimal(value, MAX_PARTS + 1)
    if number is None or not 1 <= number <= MAX_PARTS:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive", "partNumber", value)
    return number
