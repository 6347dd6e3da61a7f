"""JSON encoding shared by every schema module (compact, UTF-8, no NaN)."""

from __future__ import annotations

import json
from typing import Any


class SchemaError(ValueError):
    """A record does not match its schema; the message says which field and why."""


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SchemaError(f"not valid JSON: {e}") from None


def require(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise SchemaError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise SchemaError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)
