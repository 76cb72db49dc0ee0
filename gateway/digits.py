"""Decimal numbers in client input (part numbers, Range bounds, presign expiry times).

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
