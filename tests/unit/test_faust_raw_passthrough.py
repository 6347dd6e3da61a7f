"""gridwatch.compat.install_faust_raw_passthrough: a topic read as raw bytes with no key or value type hands
the record's bytes to the Event as they are (what Faust's codec registry gave back); every other schema
decodes through Faust as before."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import faust
from faust.serializers.schemas import Schema

from gridwatch.compat import install_faust_raw_passthrough


def message(key: bytes | None, value: bytes | None) -> Any:
    return SimpleNamespace(topic="t", partition=0, offset=7, key=key, value=value, headers=[("h", b"1")])


def decode(topic: Any, msg: Any) -> Any:
    return asyncio.run(topic.decode(msg, propagate=True))


def test_a_raw_topics_bytes_reach_the_event_unchanged_none_included():
    install_faust_raw_passthrough()
    app = faust.App("gw-test-raw-passthrough")
    raw = app.topic("t", key_serializer="raw", value_serializer="raw")
    for key, value in ((b"330108004003006", b'{"type":"manhole_open"}'), (None, b"\xff\x00"), (b"k", None)):
        ev = decode(raw, message(key, value))
        assert (ev.key, ev.value, ev.headers) == (key, value, {"h": b"1"})  # the Event makes headers a dict
        assert ev.message.offset == 7


def test_a_typed_or_json_topic_still_decodes_through_faust():
    install_faust_raw_passthrough()
    app = faust.App("gw-test-raw-passthrough-json")
    as_json = app.topic("t2", key_serializer="raw", value_serializer="json")
    ev = decode(as_json, message(b"k", json.dumps({"a": 1}).encode()))
    assert ev.value == {"a": 1} and ev.key == b"k"
    as_str = app.topic("t3", key_type=str, value_type=str, key_serializer="raw", value_serializer="raw")
    ev = decode(as_str, message(b"k", b"text"))
    assert (ev.key, ev.value) == ("k", "text")  # typed: Faust's own conversion, not the bytes


class Upper(Schema):
    """A user's schema with its own value decoding (raw both ways, no types)."""

    def loads_value(self, app: Any, message: Any, **kwargs: Any) -> Any:
        return message.value.upper()


def test_a_schema_with_its_own_decoding_is_not_passed_through():
    install_faust_raw_passthrough()
    app = faust.App("gw-test-raw-passthrough-own")
    own = app.topic("t4", schema=Upper(key_serializer="raw", value_serializer="raw"))
    assert decode(own, message(b"k", b"text")).value == b"TEXT"
