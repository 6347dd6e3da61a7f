"""JSON encoding shared by every schema module (compact, UTF-8, no NaN).

Why orjson for decoding: stdlib ``json.loads`` was a third of the InfluxDB sink's point building
(``bench replay --sink-only`` under py-spy), and every agent decodes each record it reads. orjson is
also stricter, and every difference is a rejection (SchemaError), never a silent change of a value that
stdlib json accepts: NaN, Infinity and out-of-range numbers like ``1e400``, lone surrogate escapes,
invalid UTF-8, a byte-order mark, nesting past 1024 levels (stdlib json raised RecursionError there,
which escaped the SchemaError handlers). One exception: an integer beyond 64 bits decodes as a float
(stdlib json: an int), which every field read with ``require(..., int)`` then rejects.

Why orjson for encoding too: stdlib ``json.dumps`` of a 250-reading batch took 0.49 ms against orjson's
0.06 ms, and the bridge encodes every reading it forwards. orjson differs in three ways, each handled here:
it writes NaN and infinities as ``null`` instead of refusing them, so output that contains ``null`` is
checked for a non-finite float (and refused as stdlib json refuses it); it refuses integers beyond 64 bits
and non-string keys, which fall back to stdlib json (so ``{1: x}`` still writes ``"1"``); and it spells
floats between 1e-5 and 1e-4 without an exponent (``0.000015`` for ``1.5e-05``), the same float on decode.
The bytes are still a function of the value alone, which is what replays and changelogs need.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson


class SchemaError(ValueError):
    """A record does not match its schema; the message says which field and why."""


# Dataclasses and datetimes are not JSON to stdlib json; orjson would write them, so pass them through
# to the fallback, which refuses them as before.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; ValueError for NaN or an infinity, TypeError for what is not JSON."""
    try:
        raw = orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _stdlib_dumps(obj)  # a >64-bit integer or a non-string key (or not JSON: it raises)
    if b"null" in raw and orjson.loads(raw) != obj:
        # A NaN or an infinity written as null (stdlib json raises ValueError for it, as it always did),
        # or a tuple read back as a list (stdlib json writes it the same way). Comparing in C is far
        # cheaper than walking a whole incident in Python.
        return _stdlib_dumps(obj)
    return raw


def dumps_record(record: Any, as_dict: Callable[[], Any]) -> bytes:
    """``dumps(as_dict())`` for a slots dataclass of JSON values, written by orjson straight from the
    dataclass (the same bytes, no intermediate dicts; about half the time for an incident, which every
    change writes whole). Unlike :func:`dumps` it does not look for NaN or infinities, which orjson writes
    as ``null``: callers check the floats where they enter the record (:func:`require_finite`), once,
    instead of on every write. A value orjson refuses (an integer beyond 64 bits) takes :func:`dumps`."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError:
        return dumps(as_dict())


def require_finite(value: Any, where: str) -> None:
    """SchemaError when a float anywhere in ``value`` (dicts, lists, tuples) is NaN or an infinity."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{where}: {value!r} is not a finite number")
    elif isinstance(value, dict):
        for v in value.values():
            require_finite(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            require_finite(v, where)


def _stdlib_dumps(obj: Any) -> bytes:
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
