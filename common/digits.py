"""Decimal numbers in client and upstream input (part numbers, Range bounds, presign expiry times,
content lengths, copy ranges, listed sizes and part counts).

`str.isdigit()` and the regex class `\\d` accept other scripts' digits and superscripts ("²", "٣"),
which S3 does not, and `int()` refuses strings of more than 4300 digits with a ValueError. Both
turned malformed input into 500s; this is the one parser they all use instead.
"""
from __future__ import annotations


def parse_decimal(value: str, cap: int) -> int | None:
    """``value`` as a non-negative ASCII decimal, at most ``cap`` (a longer number is only ever too
    big, so it is ``cap``); None when it is not one."""
    if not (value.isascii() and value.isdigit()):
        return None
    digits = value.lstrip("0") or "0"
    return cap if len(digits) > len(str(cap)) else min(int(digits), cap)


UPSTREAM_MAX = 2**63 - 1  # S3's sizes and counts are signed 64-bit values


def parse_upstream_decimal(value: str) -> int | None:
    """A size or count the upstream sent (surrounding blanks allowed): None when it is not an ASCII
    decimal of at most 2**63 - 1, so the caller decides what junk from the upstream means."""
    number = parse_decimal(value.strip(), UPSTREAM_MAX + 1)
    return None if number is None or number > UPSTREAM_MAX else number
