"""The payload parser: every bad input is a named rejection, never an exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gridwatch.pipeline.schemas.readings import ReadingBatch
from gridwatch.pipeline.sources.telemetry_parser import FIELDS, parse_message

NOW = 1_763_647_200_000


class Dev:
    def __init__(self, id: str, gateway: str | None = None) -> None:
        self.id, self.gateway = id, gateway


REG = {"M1": Dev("M1"), "L1": Dev("L1", "GW1"), "L2": Dev("L2", "GW1")}


def parse(topic: str, payload: bytes | dict | list):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return parse_message(topic, raw, REG, NOW)


def test_device_and_gateway_payloads_become_readings():
    r = parse("v1/devices/M1/telemetry", {"ts": NOW - 5, "values": {"tilt_deg": 3.5, "cover_open": False}})
    assert [(x.device_id, x.ts, x.values) for x in r.readings] == [("M1", NOW - 5, {"tilt_deg": 3.5, "cover_open": False})]
    r = parse("v1/gateway/GW1/telemetry", {"L1": [{"ts": NOW, "values": {"lamp_on": 1}}], "L2": {"ts": NOW, "values": {"current_a": 0.9}}})
    assert {x.device_id for x in r.readings} == {"L1", "L2"} and not r.rejections
    assert r.readings[0].values["lamp_on"] is True  # 0/1 for a boolean field is normalised


def test_each_kind_of_bad_input_has_its_reason():
    cases = {
        ("v1/devices/M1/telemetry", b"{oops"): "malformed_json",
        ("v1/devices/XX/telemetry", json.dumps({"ts": NOW, "values": {"a": 1}}).encode()): "unknown_device",
        ("v1/devices/M1/telemetry", json.dumps({"ts": NOW, "values": {"tilt_deg": 181}}).encode()): "bad_value",
        ("v1/devices/M1/telemetry", json.dumps({"ts": NOW, "values": {"tilt_deg": "high"}}).encode()): "bad_value",
        ("v1/devices/M1/telemetry", json.dumps({"ts": NOW, "values": {"cover_open": 2}}).encode()): "bad_value",
        ("v1/devices/M1/telemetry", b'{"ts": 1763647200000, "values": {"tilt_deg": NaN}}'): "bad_value",
        ("v1/devices/M1/telemetry", json.dumps({"ts": NOW // 1000, "values": {"a": 1}}).encode()): "bad_ts",
        ("v1/devices/M1/telemetry", json.dumps({"ts": NOW + 3_600_000, "values": {"a": 1}}).encode()): "bad_ts",
        ("v1/devices/M1/telemetry", json.dumps({"ts": True, "values": {"a": 1}}).encode()): "bad_ts",
        ("v1/devices/M1/telemetry", json.dumps([]).encode()): "bad_structure",
        ("v1/gateway/GW1/telemetry", json.dumps({"M1": [{"ts": NOW, "values": {"a": 1}}]}).encode()): "unknown_device",
        ("v1/gateway/GW1/telemetry", json.dumps([1, 2]).encode()): "bad_structure",
        ("v1/devices/M1/attributes", json.dumps({"ts": NOW, "values": {"a": 1}}).encode()): "bad_topic",
        ("v1/devices/M1/telemetry", b"[" * 100_000): "malformed_json",
        ("v1/devices/M1/telemetry", b" " * 300_000): "oversized",
        ("v1/devices/M1/telemetry", b"\x00junk" * 50_000): "malformed_json",  # not decoded now; the same reason
        ("v1/devices/M1/telemetry", b""): "malformed_json",
        ("v1/devices/M1/telemetry", b"7"): "bad_structure",  # JSON, just not readings
    }
    for (topic, payload), reason in cases.items():
        r = parse_message(topic, payload, REG, NOW)
        assert not r.readings, (topic, payload[:60])
        assert [x.reason for x in r.rejections] == [reason], (payload[:60], r.rejections)
        assert r.rejections[0].detail


def test_seconds_instead_of_milliseconds_gets_a_hint():
    r = parse("v1/devices/M1/telemetry", {"ts": NOW // 1000, "values": {"tilt_deg": 1}})
    assert "milliseconds" in r.rejections[0].detail


def test_a_field_name_that_is_not_unicode_text_is_rejected():
    """A lone surrogate escape in a field name once passed, and encoding the batch stopped the bridge."""
    r = parse_message("v1/devices/M1/telemetry", b'{"ts": 1763647200000, "values": {"\\ud800": 1, "a": 2}}', REG, NOW)
    assert not r.readings and [x.reason for x in r.rejections] == ["bad_value"]
    assert "\\ud800" in r.rejections[0].detail and r.rejections[0].detail.encode()
    ok = parse("v1/devices/M1/telemetry", {"ts": NOW, "values": {"水位": 1.5}})  # any real text is fine
    assert ok.readings[0].values == {"水位": 1.5}


def test_integers_beyond_64_bits_are_rejected_not_raised():
    """A 400-digit value once raised OverflowError out of the parser (math.isfinite of a huge int)."""
    huge = b"1" + b"0" * 400
    for payload, reason in ((b'{"ts": 1763647200000, "values": {"level": ' + huge + b"}}", "bad_value"),
                            (b'{"ts": ' + huge + b', "values": {"level": 1}}', "bad_ts"),
                            (b'{"ts": 1763647200000, "values": {"tilt_deg": 18446744073709551616}}', "bad_value")):
        r = parse_message("v1/devices/M1/telemetry", payload, REG, NOW)
        assert not r.readings and [x.reason for x in r.rejections] == [reason]
        assert len(r.rejections[0].detail) < 200  # the value is cut short in the reason
    edge = parse("v1/devices/M1/telemetry", {"ts": NOW, "values": {"a": 2**64 - 1, "b": -(2**63), "c": 2**64}})
    assert edge.readings[0].values == {"a": 2**64 - 1, "b": -(2**63), "c": float(2**64)} and not edge.rejections
    assert type(edge.readings[0].values["c"]) is float  # beyond 64 bits: read as a float, as the workers do


def test_good_and_bad_readings_in_one_gateway_message_are_split():
    r = parse("v1/gateway/GW1/telemetry", {"L1": [{"ts": NOW, "values": {"current_a": 0.5}},
                                                   {"ts": NOW, "values": {"current_a": -3}}],
                                            "Nope": [{"ts": NOW, "values": {"current_a": 1}}]})
    assert len(r.readings) == 1 and sorted(x.reason for x in r.rejections) == ["bad_value", "unknown_device"]


# Text as a device can send it: JSON's \\ud800 escapes decode to lone surrogates, which st.text() leaves out.
any_text = st.text(st.characters(categories=["L", "N", "Cs"]), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from([*FIELDS, "ts", "values", "x"]) | any_text


@settings(max_examples=400, deadline=None)
@given(
    topic=st.sampled_from(["v1/devices/M1/telemetry", "v1/gateway/GW1/telemetry", "v1/devices/L1/telemetry", "a/b"]),
    doc=st.one_of(json_values, st.dictionaries(field_names, json_values, max_size=4),
                  st.dictionaries(st.sampled_from(["M1", "L1", "L2", "Z"]), json_values, max_size=3)),
)
def test_fuzz_parser_never_raises_and_accounts_for_everything(topic, doc):
    raw = json.dumps(doc, allow_nan=True).encode()
    r = parse_message(topic, raw, REG, NOW)
    for reading in r.readings:
        assert reading.device_id in REG and reading.ts <= NOW + 600_000 and reading.values
    assert r.readings or r.rejections
    ReadingBatch(0, r.readings).encode()  # what passes can be written to Kafka (the bridge's next step)
    for rej in r.rejections:
        rej.detail.encode()  # and so can every reason (a dead letter carries it)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300))
def test_fuzz_parser_with_arbitrary_bytes(raw):
    r = parse_message("v1/devices/M1/telemetry", raw, REG, NOW)
    assert r.readings or r.rejections


def test_json_after_a_utf8_bom_and_whitespace_is_read():
    body = json.dumps({"ts": NOW, "values": {"tilt_deg": 2.0}}).encode()
    for payload in (b"\xef\xbb\xbf" + body, b" \r\n\t" + body):
        r = parse_message("v1/devices/M1/telemetry", payload, REG, NOW)
        assert [x.values for x in r.readings] == [{"tilt_deg": 2.0}] and not r.rejections
