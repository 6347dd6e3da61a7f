"""The record codec: what decodes, what is refused (SchemaError, so the dead-letter paths take it)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from gridwatch.pipeline.schemas.codec import SchemaError, dumps, loads


@pytest.mark.parametrize("raw", [
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}', b'{"a": 1e400}',  # not representable without NaN/inf
    b'{"a": "\xff"}', b'"\\ud800"',  # invalid UTF-8, a lone surrogate
    b"\xef\xbb\xbf{}",  # a byte-order mark: records are written without one
    b"[" * 5000 + b"]" * 5000,  # deep nesting: stdlib json raised RecursionError here
    b"{oops", b"", b'{"a": 1} x',
])
def test_malformed_or_non_strict_json_is_a_schema_error(raw):
    with pytest.raises(SchemaError, match="not valid JSON"):
        loads(raw)


def test_valid_records_decode_as_stdlib_json_does():
    docs = [b'{"a":1,"a":2}', '{"z":"\u533a","n":-0.0,"i":18446744073709551615,"f":1e-05}'.encode(),
            b' {"nested":[{"x":[true,false,null]}]} ', '{"s":"\u2028"}']
    for raw in docs:
        assert loads(raw) == json.loads(raw)


def test_encoding_is_compact_utf8_and_refuses_nan():
    assert dumps({"z": "\u533a", "f": 1e-05, 1: [True, None]}) == '{"z":"\u533a","f":1e-05,"1":[true,null]}'.encode()
    with pytest.raises(ValueError):
        dumps({"f": float("nan")})


@pytest.mark.parametrize("doc", [
    {"v": 1, "readings": [{"d": "M1", "ts": 1763647200000, "v": {"tilt_deg": 1.5, "open": False}}]},
    {"z": "\u533a", "none": None, "nested": [{"x": [True, None, -0.0, 0.1, 1e16, 1e-07]}]},
    {"i": 10**30, "u64": 2**64 - 1}, {1: "int key"}, {"t": (1, 2.5, None)}, [], "s", 7,
])
def test_encoding_decodes_to_the_same_value_as_stdlib_json(doc):
    assert json.loads(dumps(doc)) == json.loads(json.dumps(doc))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_float_is_refused_wherever_it_is(bad):
    for doc in ({"f": bad}, {"a": None, "deep": [{"x": [1, bad]}]}, [None, (bad,)], bad):
        with pytest.raises(ValueError):
            dumps(doc)


def test_what_stdlib_json_does_not_write_is_still_refused():
    @dataclass
    class Point:
        x: int

    for doc in (Point(1), {"p": Point(1)}, {"s": {1, 2}}, object()):
        with pytest.raises(TypeError):
            dumps(doc)
