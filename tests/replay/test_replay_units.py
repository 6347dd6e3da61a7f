"""Pure parts of replay: the comparison report, time slices, device subsets, namespace guards."""

from __future__ import annotations

import json

import pytest

from gridwatch.pipeline.compare import compare
from gridwatch.pipeline.recording import RecordedMessage, decode_message, encode_message, topic_matches
from gridwatch.pipeline.replay import (
    ReplayError,
    check_namespace,
    filter_devices,
    fresh_namespace,
    parse_time,
)


def ev(eid: str, phase: str, level: str, ts: int, *, type_: str = "manhole_open", subject: str = "D1",
       start: int = 1000, end_ts: int | None = None) -> dict:
    return {"id": eid, "type": type_, "subject": subject, "phase": phase, "level": level, "ts": ts,
            "start_ts": start, "end_ts": end_ts, "grid_code": "g", "device_kind": "manhole"}


def test_compare_reports_added_removed_changed_and_folds_redeliveries():
    a = [ev("e1", "new", "red", 1000), ev("e1", "new", "red", 1000),  # re-delivered: same record twice
         ev("e1", "end", "red", 5000, end_ts=5000),
         ev("e2", "new", "yellow", 2000, subject="D2", start=2000),
         ev("e3", "new", "yellow", 3000, subject="D3", start=3000),
         ev("e4", "new", "blue", 4000, type_="battery_low", subject="D4", start=4000)]
    b = [ev("e1", "new", "red", 1000), ev("e1", "end", "red", 5000, end_ts=5000),
         ev("e2", "new", "yellow", 2000, subject="D2", start=2000),
         ev("e2", "update", "red", 2500, subject="D2", start=2000),  # escalated in B only
         ev("e3b", "new", "yellow", 3600, subject="D3", start=3600),  # same condition, later start
         ev("e5", "new", "red", 6000, type_="circuit_dark", subject="C1", start=6000)]
    res = compare(a, b, "A", "B")
    assert res.same == ["e1"]
    assert [x["id"] for x in res.removed] == ["e4"] and [x["id"] for x in res.added] == ["e5"]
    changed = {c["b"]["id"]: c["what"] for c in res.changed}
    assert set(changed) == {"e2", "e3b"}
    assert any(w.startswith("phases new:yellow -> new:yellow/update:red") for w in changed["e2"])
    assert any(w.startswith("start ") for w in changed["e3b"])
    text = res.render()
    assert "1 same, 1 added, 1 removed, 2 changed" in text and "+ circuit_dark" in text
    assert json.loads(json.dumps(res.as_dict()))["identical"] is False
    assert compare(a, list(reversed(a))).identical


def test_time_slices():
    first = 1_700_000_000_000_000_000
    assert parse_time("+30", first) == first + 30 * 10**9
    assert parse_time("1700000100", first) == 1_700_000_100 * 10**9
    assert parse_time("1700000100500", first) == 1_700_000_100_500 * 10**6
    assert parse_time(None, first) is None
    assert parse_time("2026-11-20T22:00:00+08:00", first) == 1_795_183_200 * 10**9
    with pytest.raises(ReplayError):
        parse_time("yesterday", first)


def test_device_subset_cuts_gateway_payloads_down():
    gw = RecordedMessage("v1/gateway/GW1/telemetry", json.dumps({"A": [{"ts": 1}], "B": [{"ts": 2}]}).encode(), 5)
    kept = filter_devices(gw, {"B"})
    assert kept is not None and json.loads(kept.payload) == {"B": [{"ts": 2}]} and kept.recv_ns == 5
    assert filter_devices(gw, {"A", "B"}) is gw
    assert filter_devices(gw, {"C"}) is None
    dev = RecordedMessage("v1/devices/A/telemetry", b"{}", 1)
    assert filter_devices(dev, {"A"}) is dev and filter_devices(dev, {"B"}) is None


def test_namespace_guards():
    check_namespace("replay-x", "gw")
    with pytest.raises(ReplayError, match="live namespace"):
        check_namespace("gw", "gw")
    with pytest.raises(ReplayError):
        check_namespace("bad name/", "gw")
    ns = fresh_namespace("/tmp/City Hour #1.mcap")
    check_namespace(ns, "gw")
    assert ns.startswith("replay-City-Hour-1-")


def test_message_envelope_keeps_payload_bytes_exactly():
    for payload in (b'{"ts": 1, "values": {"x": 1.0}}', "灯杆 ok".encode(), b"\xff\xfe\x00 not utf-8", b""):
        topic, got, qos = decode_message(encode_message("v1/devices/X/telemetry", payload, 1))
        assert (topic, got, qos) == ("v1/devices/X/telemetry", payload, 1)
    assert topic_matches("v1/gateway/+/telemetry", "v1/gateway/G/telemetry")
    assert topic_matches("v1/#", "v1/a/b/c") and not topic_matches("v1/devices/+/telemetry", "v1/devices/a/b")
