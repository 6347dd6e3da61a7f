"""Pure parts of replay: the comparison report, time slices, device subsets, namespace guards."""

from __future__ import annotations

import json

import pytest

from gridwatch.pipeline.recordreplay.compare import compare
from gridwatch.pipeline.recordreplay.recording import (
    RecordedMessage,
    decode_message,
    encode_message,
    topic_matches,
)
from gridwatch.pipeline.recordreplay.replay import (
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


def test_frames_channel_round_trip_and_replay_marker(tmp_path):
    """Frames-topic records are kept byte for byte, per camera, in file order beside the MQTT messages;
    the replay marks a frame's header and nothing else (the JPEG bytes are the live ones)."""
    import numpy as np

    from gridwatch.pipeline.recordreplay.recording import RecordedFrame, RecordingReader, RecordingWriter
    from gridwatch.pipeline.recordreplay.replay import mark_replayed, recording_frames
    from gridwatch.pipeline.schemas.frame_wire import Frame
    from gridwatch.pipeline.schemas.frames import CameraStatusRecord, FrameRecord, decode, encode_frame

    img = np.zeros((48, 64, 3), np.uint8)
    img[5:20, 5:30] = 200
    f1 = encode_frame(Frame("cam-a", 1, 1.7e9, img, True, 0.3, "motion"), sent=1.7e9 + 0.05)
    st = CameraStatusRecord("cam-a", False, 1.7e9 + 1, "read_failed").encode()
    path = tmp_path / "f.mcap"
    w = RecordingWriter(path)
    w.add("v1/devices/X/telemetry", b'{"ts": 1}', 1_000)
    w.add_frame("cam-a", f1, 2_000)
    w.add_frame("cam-b", b"junk the live agent dead-lettered", 2_500)
    w.add("v1/devices/X/telemetry", b'{"ts": 2}', 3_000)
    w.add_frame("cam-a", st, 4_000)
    w.close()
    items = list(RecordingReader(path).messages(frames=True))
    assert [type(i).__name__ for i in items] == ["RecordedMessage", "RecordedFrame", "RecordedFrame",
                                                 "RecordedMessage", "RecordedFrame"]
    frames = [i for i in items if isinstance(i, RecordedFrame)]
    assert [(f.camera, f.value, f.recv_ns) for f in frames] == [("cam-a", f1, 2_000), ("cam-b", frames[1].value, 2_500),
                                                              ("cam-a", st, 4_000)]
    reader = RecordingReader(path)
    assert len(list(reader.messages())) == 2 and reader.report.frames == 3  # MQTT-only readers are unchanged
    assert recording_frames(path) == 3
    assert len([i for i in RecordingReader(path).messages(2_400, 4_000, frames=True)]) == 2  # time slice
    marked = mark_replayed(f1)
    rec = decode(marked)
    assert isinstance(rec, FrameRecord) and rec.header["replayed"] is True and rec.header["sent"] == 1.7e9 + 0.05
    assert marked.endswith(f1[8 + int.from_bytes(f1[4:8], "big"):])  # the very same JPEG
    assert mark_replayed(st) == st and mark_replayed(b"junk") == b"junk"
