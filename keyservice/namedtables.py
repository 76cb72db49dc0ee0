"""Settings made of named tables, each also settable from the environment: ``[[keyservice.peers]]``
(keyservice/peers.py) and ``[keyservice.pkcs11.NAME]`` (keyservice/pkcs11backend.py).

Both read a table's string fields the same way (every field required, nothing unknown) and both take
``PREFIX<NAME><SUFFIX>`` variables over the tables; the messages, and how NAME maps to a table, stay theirs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def string_fields(entry: Mapping[str, Any], names: Sequence[str], unknown: Callable[[list[str]], Exception],
                  missing: Callable[[str], Exception]) -> dict[str, str]:
    """The table's ``names``, each a non-empty string: ``unknown(sorted extra names)`` for a setting the
    table does not take, ``missing(name)`` for one absent, empty or no string."""
    extra = sorted(set(entry) - set(names))
    if extra:
        raise unknown(extra)
    values = {}
    for name in names:
        value = entry.get(name)
        if not isinstance(value, str) or not value:
            raise missing(name)
        values[name] = value
    return values


def env_fields(env: Mapping[str, str], prefix: str, suffixes: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The non-empty variables ``prefix + NAME + suffix`` (NAME not empty), grouped by NAME as written:
    ``{NAME: {field: value}}``, the field named by ``suffixes[suffix]``."""
    fields: dict[str, dict[str, str]] = {}
    for variable, value in env.items():
        if not variable.startswith(prefix) or not value:
            continue
        for suffix, field in suffixes.items():
            if variable.endswith(suffix) and len(variable) > len(prefix) + len(suffix):
                fields.setdefault(variable[len(prefix):-len(suffix)], {})[field] = value
                break
    return fields
