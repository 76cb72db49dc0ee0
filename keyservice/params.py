"""Parameter validation shared by the operations, giving AWS's ValidationException on bad input."""

import base64
import binascii
from typing import Any, Callable, TypeVar

from .errors import KMSError, validation

T = TypeVar("T")


def required_str(params: dict[str, Any], name: str, max_len: int = 2048) -> str:
    value = params.get(name)
    if value is None:
        raise validation(f"1 validation error detected: Value null at '{_camel(name)}' failed to satisfy "
                         "constraint: Member must not be null")
    return checked_str(value, name, 1, max_len)


def optional_str(params: dict[str, Any], name: str, min_len: int = 1, max_len: int = 2048) -> str | None:
    value = params.get(name)
    return None if value is None else checked_str(value, name, min_len, max_len)


def checked_str(value: Any, name: str, min_len: int, max_len: int) -> str:
    if not isinstance(value, str):
        raise validation(f"Value at '{_camel(name)}' must be a string.")
    if not min_len <= len(value) <= max_len:
        raise validation(f"1 validation error detected: Value at '{_camel(name)}' failed to satisfy constraint: "
                         f"Member must have length between {min_len} and {max_len}")
    return value


def shown(value: Any) -> str:
    """A parameter value for an error message: scalars as they are, anything else by its type only
    (printing a deeply nested list or map would recurse past Python's limit, and echo megabytes)."""
    if isinstance(value, (str, int, float)):
        return str(value)
    return f"<{type(value).__name__}>"


def enum(params: dict[str, Any], name: str, allowed: Any, default: str | None = None) -> str | None:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        raise validation(f"1 validation error detected: Value '{shown(value)}' at '{_camel(name)}' failed to "
                         f"satisfy constraint: Member must satisfy enum value set: [{', '.join(sorted(allowed))}]")
    return value


def blob(params: dict[str, Any], name: str, min_len: int, max_len: int, required: bool = True) -> bytes | None:
    """A binary parameter, raw bytes (the HTTP layer has already decoded the base64)."""
    value = params.get(name)
    if value is None:
        if required:
            required_str(params, name)
        return None
    if not isinstance(value, (bytes, bytearray)):
        raise validation(f"Value at '{_camel(name)}' must be binary.")
    if not min_len <= len(value) <= max_len:
        raise validation(f"1 validation error detected: Value at '{_camel(name)}' failed to satisfy constraint: "
                         f"Member must have length between {min_len} and {max_len}")
    return bytes(value)


def integer(params: dict[str, Any], name: str, low: int, high: int, default: int | None = None) -> int | None:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise validation(f"1 validation error detected: Value '{shown(value)}' at '{_camel(name)}' failed to "
                         f"satisfy constraint: Member must have value between {low} and {high}")
    return value


def boolean(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise validation(f"Value at '{_camel(name)}' must be a boolean.")
    return value


def timestamp(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise validation(f"Value at '{_camel(name)}' must be a timestamp (epoch seconds).")
    return float(value)


def context(params: dict[str, Any], name: str = "EncryptionContext") -> dict[str, str] | None:
    """An encryption context: a string-to-string map."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                              for k, v in value.items()):
        raise validation(f"Value at '{_camel(name)}' must be a map of non-empty strings to strings.")
    return value


def paginate(items: list[T], marker_of: Callable[[T], str], params: dict[str, Any],
             default_limit: int = 100, max_limit: int = 1000) -> tuple[list[T], dict[str, Any]]:
    """Slice a sorted list by Limit/Marker; the marker is the last returned item's key, base64url."""
    limit = integer(params, "Limit", 1, max_limit, default_limit)
    assert limit is not None
    start = 0
    marker = params.get("Marker")
    if marker is not None:
        last = _decode_marker(marker)
        keys = [marker_of(item) for item in items]
        start = next((i for i, k in enumerate(keys) if k > last), len(items))
    page = items[start:start + limit]
    truncated = start + limit < len(items)
    extra: dict[str, Any] = {"Truncated": truncated}
    if truncated:
        extra["NextMarker"] = base64.urlsafe_b64encode(marker_of(page[-1]).encode()).decode()
    return page, extra


def _decode_marker(marker: Any) -> str:
    try:
        if not isinstance(marker, str) or not marker:
            raise ValueError
        return base64.b64decode(marker.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise KMSError("InvalidMarkerException", "The marker is not valid.") from exc


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]
