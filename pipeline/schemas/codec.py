"""JSON encoding shared by every schema module (compact, UTF-8, no NaN).

Why orjson for decoding: stdlib ``json.loads`` was a third of the InfluxDB sink's point building
(``bench replay --sink-only`` under py-spy), and every agent decodes each record it reads. orjson is
also stricter, and every difference is a rejection (SchemaError), never a silent change of a value that
stdlib json accepts: NaN, Infinity and out-of-range numbers like ``1e400``, lone surrogate escapes,
invalid UTF-8, a byte-order mark, nesting past 1024 levels (stdlib json raised RecursionError there,
which escaped the SchemaError handlers). One exception: an integer beyond 64 bits decodes as a float
(stdlib json: an int), which every field read with ``require(..., int)`` then rejects.

Encoding stays stdlib json: orjson writes NaN as ``null`` instead of refusing it, spells floats below
1e-4 differently (``0.00001`` for ``1e-05``) and refuses non-string keys, and the bytes of every record
are what replays, changelogs and comparisons see.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


class SchemaError(ValueError):
    """A record does not match its schema; the message says which field and why."""


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """The value of a JSON document; SchemaError when it is not strict JSON (see the module doc)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
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
