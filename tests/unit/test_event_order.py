"""Event-time merge of grid events (agents/event_order.py, agents/watermarks.py) and its use by the
incident processor: same inputs in any interleaving of their upstreams -> same incidents (pure logic)."""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

from gridwatch.agents.event_order import MergeBuffer
from gridwatch.agents.fusion import IncidentProcessor, Outcome, distance_m
from gridwatch.agents.routing import load_incident_config
from gridwatch.agents.watermarks import SlackEstimate, WatermarkSender
from gridwatch.pipeline.schemas.events import (
    UpstreamMark,
    Watermarks,
    is_control,
    order_header,
    order_of,
)
from gridwatch.pipeline.schemas.incidents import IncidentChange, incident_id
from tests.unit.test_incident_fusion import CITY, MANHOLES, T0, DictStore, event, report

UPSTREAMS = ("readings:0", "readings:1", "readings:2")


def upstream_streams(seed: int) -> dict[str, list[tuple[str, Any]]]:
    """Per upstream, what it sends in emission order: ("ev", (order ts, label)) and ("wm", ts) records,
    order ts monotone, several events at one order ts, a watermark after the events it covers."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, Any]]] = {}
    for u in UPSTREAMS:
        ts, recs = 0, []
        for i in range(40):
            ts += rng.choice((0, 0, 1, 5, 20))
            recs.append(("ev", (ts, f"{u}#{i}")))
            if rng.random() < 0.3:
                recs.append(("wm", ts))
        recs.append(("idle", ts))
        out[u] = recs
    return out


def interleave(streams: dict[str, list[tuple[str, Any]]], seed: int) -> list[tuple[str, str, Any]]:
    """A random interleaving that keeps each upstream's own order (what Kafka guarantees)."""
    rng = random.Random(seed)
    pos = {u: 0 for u in streams}
    out = []
    while any(pos[u] < len(streams[u]) for u in streams):
        u = rng.choice([u for u in streams if pos[u] < len(streams[u])])
        kind, x = streams[u][pos[u]]
        pos[u] += 1
        out.append((u, kind, x))
    return out


def merge(records: list[tuple[str, str, Any]]) -> tuple[list[str], int]:
    buf = MergeBuffer(0, lambda raw: raw.decode())
    for u in UPSTREAMS:  # a running system: every upstream was heard of before these records
        buf.mark(u, 0)
    released: list[str] = []
    writes: dict = {}
    for u, kind, x in records:
        if kind == "ev":
            if not buf.push(u, x[0], x[1].encode(), x[1], writes):
                released.append(x[1])  # late: applied at once
        else:
            buf.mark(u, x, idle=kind == "idle")
        released += [p.item for p in buf.release(writes)]
    assert not writes, "everything released in the batch: nothing left to write or delete"
    return released, buf.late


def test_any_interleaving_of_the_same_upstream_sequences_releases_the_same_order():
    for seed in range(20):
        streams = upstream_streams(seed)
        expected = sorted((ts, u, i) for u, recs in streams.items()
                          for i, (kind, (ts, _l)) in enumerate((k, x) for k, x in recs if k == "ev"))
        want = [f"{u}#{i}" for _ts, u, i in expected]
        for shuffle in range(25):
            got, late = merge(interleave(streams, seed * 100 + shuffle))
            assert late == 0
            assert got == want, (seed, shuffle)


def test_an_idle_upstream_does_not_hold_the_others_back_and_comes_back_with_its_next_mark():
    buf = MergeBuffer(0, bytes.decode)
    w: dict = {}
    buf.mark("readings:0", 100)
    buf.mark("readings:1", 50)
    buf.push("readings:0", 120, b"a", "a", w)
    assert [p.item for p in buf.release(w)] == []  # readings:1 (at 50) may still send something earlier
    buf.mark("readings:0", 200)
    assert [p.item for p in buf.release(w)] == []
    buf.mark("readings:1", 50, idle=True)
    assert [p.item for p in buf.release(w)] == ["a"] and buf.clock() == 200
    buf.push("readings:0", 200, b"b", "b", w)
    assert [p.item for p in buf.release(w)] == ["b"]  # its own upstream never holds an event back
    buf.mark("readings:1", 150)  # back, behind: holds the merge again
    buf.push("readings:0", 210, b"c", "c", w)
    assert buf.merged() == 150 and [p.item for p in buf.release(w)] == []
    buf.mark("readings:1", 210)  # at c's order ts, and "readings:1" sorts after "readings:0": ties come after c
    assert [p.item for p in buf.release(w)] == ["c"]
    buf.push("readings:1", 215, b"d", "d", w)
    buf.mark("readings:0", 214)  # may still send something at 214 < 215
    assert [p.item for p in buf.release(w)] == []
    buf.mark("readings:0", 215)  # a tie at 215 from "readings:0" would sort before d: still held
    assert [p.item for p in buf.release(w)] == []
    buf.mark("readings:0", 300, idle=True)
    assert [p.item for p in buf.release(w)] == ["d"]
    # every upstream idle: everything buffered goes, the clock is the highest mark
    buf.push("readings:1", 260, b"e", "e", w)
    buf.mark("readings:1", 260, idle=True)
    assert [p.item for p in buf.release(w)] == ["e"] and buf.clock() == 300


def test_a_late_input_is_not_buffered_and_is_counted():
    buf = MergeBuffer(0, bytes.decode)
    w: dict = {}
    buf.mark("readings:0", 0)
    buf.push("readings:0", 100, b"a", "a", w)
    buf.mark("readings:0", 101)
    assert [p.item for p in buf.release(w)] == ["a"]
    assert buf.push("readings:7", 90, b"x", "x", w) is False  # first heard of, behind what was released
    assert buf.late == 1 and len(buf) == 0
    assert buf.push("readings:7", 100, b"y", "y", w) is True  # at the frontier: still in order


def test_buffer_and_marks_survive_a_restart_through_the_table():
    store = DictStore()
    buf = MergeBuffer(3, bytes.decode)
    out = Outcome()
    buf.mark("readings:0", 10)
    buf.mark("readings:1", 5)
    for i, (u, t) in enumerate([("readings:0", 12), ("readings:1", 7), ("readings:0", 12), ("readings:1", 30)]):
        buf.push(u, t, f"e{i}".encode(), f"e{i}", out.writes)
    # e3 (at 30) waits for readings:0 (at 12); the others are no longer preceded by anything to come
    assert [p.item for p in buf.release(out.writes)] == ["e1", "e0", "e2"]
    buf.flush(out.writes)
    store.apply(out)
    # e0..e2 came and went in one batch: never written; e3 waits in the table
    assert sorted(k for k in store.data if k.startswith("q:3:")) == ["q:3:000000000003"]
    again = MergeBuffer(3, bytes.decode)
    again.restore(store.items())
    assert {n: (u.wm, u.idle) for n, u in again.upstreams.items()} == {"readings:0": (12, False),
                                                                        "readings:1": (30, False)}
    assert again.seq == 4 and len(again) == 1 and again.frontier == 12
    for b in (buf, again):
        b.mark("readings:0", 40)
    w1: dict = {}
    w2: dict = {}
    assert [p.item for p in buf.release(w1)] == [p.item for p in again.release(w2)] == ["e3"]
    assert w2 == {"q:3:000000000003": (3, None)}  # released: deleted from the table


def test_control_records_and_order_headers():
    rec = Watermarks({"readings:1": UpstreamMark(5), "readings:0": UpstreamMark(7, idle=True)})
    raw = rec.encode()
    assert is_control(raw) and not is_control(event(MANHOLES[0], "manhole_open", "new", T0).encode())
    assert not is_control(None) and not is_control(b"")
    assert Watermarks.decode(raw) == rec
    assert order_of(order_header("readings:3", 1234)) == ("readings:3", 1234)
    assert order_of(dict(order_header("readings:3", 1234))) == ("readings:3", 1234)
    assert order_of([("other", b"x")]) is None and order_of(None) is None
    assert order_of([("gw-order", b"readings:3@nope")]) is None


def test_sender_announces_assigned_moved_and_idle_marks_and_wakes_every_partition_first():
    s = WatermarkSender("readings", idle_s=1.0)
    s.assigned(2, now=0.0)
    s.assigned(5, now=0.0)
    # owned partitions are announced at once, at 0 until they have input: the merge waits for them
    assert s.due(0.0) == Watermarks({"readings:2": UpstreamMark(0), "readings:5": UpstreamMark(0)})
    assert s.begin(2, now=0.1) is False  # already announced: its events may go first
    s.confirmed(2, 100, now=0.1)
    assert s.due(0.2) == Watermarks({"readings:2": UpstreamMark(100)})
    assert s.due(0.3) is None  # nothing moved
    s.begin(2, now=0.5)
    assert s.due(5.0) == Watermarks({"readings:5": UpstreamMark(0, idle=True)})  # a batch in progress never idles
    s.confirmed(2, 150, now=5.0)
    assert s.due(6.1) == Watermarks({"readings:2": UpstreamMark(150, idle=True)})
    assert s.due(9.0) is None  # announced once
    # input after the pause: every partition of the worker wakes, announced before the batch's events
    assert s.begin(2, now=9.5) is True
    assert s.due(9.5) == Watermarks({"readings:2": UpstreamMark(150), "readings:5": UpstreamMark(0)})
    s.confirmed(2, 160, now=9.5)
    assert s.due(10.6) == Watermarks({"readings:2": UpstreamMark(160, idle=True),
                                      "readings:5": UpstreamMark(0, idle=True)})
    assert s.begin(7, now=11.0) is True  # a partition never announced: announce before its events
    s.confirmed(7, 500, now=11.0)
    assert s.due(11.0) == Watermarks({"readings:2": UpstreamMark(160), "readings:5": UpstreamMark(0),
                                      "readings:7": UpstreamMark(500)})  # (the worker was paused)
    s.begin(7, now=11.5)
    s.confirmed(7, 600, now=11.5)
    assert s.due(12.2) == Watermarks({"readings:2": UpstreamMark(160, idle=True),
                                      "readings:5": UpstreamMark(0, idle=True), "readings:7": UpstreamMark(600)})
    # readings:7 is busy: the empty / quiet partitions stay idle (they must not hold a busy worker back)
    assert s.begin(7, now=12.3) is False
    s.confirmed(7, 700, now=12.3)
    assert s.due(12.4) == Watermarks({"readings:7": UpstreamMark(700)})
    assert s.due(13.4) == Watermarks({"readings:7": UpstreamMark(700, idle=True)})
    # ... until the whole worker paused: then the next input wakes them all again
    assert s.begin(7, now=13.5) is True
    assert s.due(13.5) == Watermarks({"readings:2": UpstreamMark(160), "readings:5": UpstreamMark(0),
                                      "readings:7": UpstreamMark(700)})


def test_live_marks_follow_the_wall_clock_between_inputs_and_never_in_a_replay():
    live = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2)
    replay = WatermarkSender("readings", idle_s=1.0)
    for s in (live, replay):
        s.assigned(1, now=0.0)
        s.due(0.0)
        s.begin(1, now=10.0)
        s.confirmed(1, 5_000, now=10.0)
        assert s.due(10.0) == Watermarks({"readings:1": UpstreamMark(5_000)})
    # 0.5 s without input: live announces its high mark + 0.3 s; the replay's mark moves with data only
    assert live.due(10.5) == Watermarks({"readings:1": UpstreamMark(5_300)})
    assert replay.due(10.5) is None
    live.begin(1, now=10.6)  # a batch in progress: no wall-clock advance until it is confirmed
    assert live.due(10.7) is None
    live.confirmed(1, 5_100, now=10.7)  # a high mark below what was announced is not announced again
    assert live.due(10.8) is None
    assert live.due(11.0) is None  # 5,100 + 0.1 s: below the 5,300 already announced
    assert live.due(11.3) == Watermarks({"readings:1": UpstreamMark(5_500)})  # 5,100 + 0.6 s - 0.2 s
    assert live.due(11.8) == Watermarks({"readings:1": UpstreamMark(5_100, idle=True)})


def test_events_of_a_sparse_partition_are_passed_by_the_other_live_marks_at_the_time_given():
    live = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2)
    for p in (1, 2, 3):
        live.assigned(p, now=0.0)
    live.due(0.0)
    for p, mark, now in ((1, 5_000, 10.0), (2, 5_200, 10.2)):
        live.begin(p, now=now)
        live.confirmed(p, mark, now=now)
    assert live.passes_at(1, 5_000) is None  # readings:3 has no input yet: it goes idle instead
    live.begin(3, now=10.4)
    live.confirmed(3, 5_400, now=10.4)
    at = live.passes_at(3, 5_400)
    assert at is not None and 10.6 < at < 10.61  # readings:1 and :2 both reach 5,401 at 10.6 s + slack
    live.due(at - 0.01)
    before = live.due(at - 0.005)
    assert before is None or all(m.wm <= 5_400 for n, m in before.marks.items() if n != "readings:3")
    after = live.due(at)
    assert after is not None and {n: m.wm > 5_400 for n, m in after.marks.items() if n != "readings:3"} == {
        "readings:1": True, "readings:2": True}
    replay = WatermarkSender("readings", idle_s=1.0)
    replay.confirmed(1, 5_000, now=10.0)
    assert replay.passes_at(2, 5_400) is None  # marks move with the data only: nothing to time


def _feed(s: WatermarkSender, delays_ms: list[float], partition: int = 1) -> None:
    """A reading every 100 ms of event time on one partition, each arriving (one batch) ``delay`` after it."""
    u = s.ups.get(s.name(partition))
    ts0 = u.mark + 100 if u is not None and u.mark > 0 else 10_000
    for i, d in enumerate(delays_ms):
        ts = ts0 + 100 * i
        now = (ts + d) / 1000
        s.begin(partition, now=now)
        s.confirmed(partition, ts, now=now + 0.002, oldest_ms=ts)


def test_the_slack_follows_how_late_inputs_come_between_its_floor_and_its_ceiling():
    fixed = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2)
    live = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2, min_slack_s=0.02)
    for s in (fixed, live):
        s.assigned(1, now=0.0)
        _feed(s, [25.0])
    assert live.slack_s() == 0.2  # no input measured yet (the first one has no mark to fall short of): the ceiling
    for s in (fixed, live):
        _feed(s, [30.0])
    assert live.slack_s() == 0.02  # the first one 5 ms late: 5 + 4 x 2.5 ms, below the floor
    for s in (fixed, live):
        _feed(s, [25.0 + (i % 3) for i in range(40)])  # 25-27 ms: a quiet machine
    assert fixed.slack_s() == 0.2  # no floor: a fixed slack, as before
    assert live.slack_s() == 0.02  # the floor: no input came more than 2 ms later than the one before
    _feed(live, [30.0 + 16 * (i % 2) for i in range(40)])  # every other input 16 ms later than the one before
    assert 0.025 < live.slack_s() < 0.06
    _feed(live, [25.0, 95.0, 30.0, 90.0, 20.0, 95.0] * 3)  # a loaded machine: every other input 60-75 ms late
    assert 0.14 < live.slack_s() < 0.2  # covers them, with room
    devices = SlackEstimate()  # devices whose clocks disagree by seconds: the ceiling
    for shortfall in [0.0, 2.5] * 10:
        devices.add(shortfall)
    assert devices.slack(0.02, 0.2) == 0.2
    _feed(live, [25.0] * 60)  # quiet again: back down
    assert live.slack_s() == 0.02
    # the mark of a partition between inputs follows the wall clock less the slack in force
    live.assigned(2, now=0.0)
    live.begin(2, now=200.0)
    live.confirmed(2, 9_000, now=200.0)
    live.due(200.0)
    assert live.due(200.5) == Watermarks({"readings:2": UpstreamMark(9_480)})  # 9,000 + 0.5 s - 0.02 s
    # an input after idleness counts too (a sparse city's partitions are idle between most inputs); one
    # 1.5 s below the mark extrapolated from the last input sends the slack to the ceiling
    live.due(202.0)  # readings:2 goes idle
    live.begin(2, now=203.0)
    live.confirmed(2, 10_500, now=203.0, oldest_ms=10_500)
    assert live.slack_s() == 0.2


def test_input_after_the_producer_said_it_ended_does_not_poison_the_slack():
    live = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2, min_slack_s=0.02)
    live.assigned(1, now=0.0)
    _feed(live, [25.0 + 20 * (i % 2) for i in range(20)])
    before = live.slack_s()
    assert 0.02 < before < 0.2
    live.ended(1)  # the recording's end marker: idle at once
    _feed(live, [25.0])  # new input afterwards: no mark extrapolated from an infinitely old input
    assert live.slack_s() == before and math.isfinite(live.estimate.mean) and math.isfinite(live.estimate.dev)
    _feed(live, [25.0] * 40)
    assert live.slack_s() == 0.02


def test_a_sparse_partitions_events_are_passed_sooner_on_a_quiet_machine():
    def passes(s: WatermarkSender) -> float:
        _feed(s, [26.0], partition=2)
        _feed(s, [26.0], partition=3)
        u = s.ups[s.name(3)]
        at = s.passes_at(3, u.mark)
        assert at is not None
        return at - u.last_input

    fixed = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2)
    quiet = WatermarkSender("readings", idle_s=1.0, advance_slack_s=0.2, min_slack_s=0.02)
    for s in (fixed, quiet):
        for p in (1, 2, 3):
            s.assigned(p, now=0.0)
        _feed(s, [25.0 + (i % 3) for i in range(40)])
    assert 0.2 < passes(fixed) < 0.21 and 0.02 < passes(quiet) < 0.03


# -- the incident processor over the merge ------------------------------------------------------------
def two_covers_one_grid() -> tuple[Any, Any]:
    by_grid: dict[str, list[Any]] = {}
    for d in MANHOLES:
        by_grid.setdefault(d.grid_code, []).append(d)
    return next(v for v in by_grid.values() if len(v) >= 2)[:2]


def feed(records: list[tuple[str, Any]], proc: IncidentProcessor, store: DictStore) -> list[IncidentChange]:
    changes: list[IncidentChange] = []
    for kind, x in records:
        out = Outcome()
        if kind == "ev":
            up, t, ev = x
            proc.on_ordered_event(0, up, t, ev.encode(), out)
        else:
            proc.on_watermarks(0, Watermarks(x), out)
        proc.advance(0, out)
        store.apply(out)
        changes += [IncidentChange.decode(v) for _, v in out.changes]
    return changes


def make() -> tuple[IncidentProcessor, DictStore]:
    store = DictStore()
    return IncidentProcessor(load_incident_config(), CITY.gridmap, store), store


def test_events_of_one_grid_from_two_upstreams_fuse_the_same_whichever_arrives_first():
    a, b = two_covers_one_grid()
    ea = event(a, "manhole_open", "new", T0 + 1000)
    eb = event(b, "manhole_tilted", "new", T0 + 2000, level="yellow")
    start = [("wm", {"readings:1": UpstreamMark(T0), "readings:2": UpstreamMark(T0)})]
    # b's upstream is ahead: its event has the higher order ts but arrives first in one run
    up_a = [("ev", ("readings:1", T0 + 5000, ea)), ("wm", {"readings:1": UpstreamMark(T0 + 9000)})]
    up_b = [("ev", ("readings:2", T0 + 6000, eb)), ("wm", {"readings:2": UpstreamMark(T0 + 9000)})]
    end = [("wm", {"readings:1": UpstreamMark(T0 + 9000, True), "readings:2": UpstreamMark(T0 + 9000, True)})]
    runs = []
    for order in (up_a + up_b, up_b + up_a, [up_b[0], up_a[0], up_a[1], up_b[1]]):
        proc, store = make()
        runs.append([c.encode() for c in feed(start + order + end, proc, store)])
        [inc] = proc.incidents()
        assert [s.id for s in inc.sources] == [ea.id, eb.id]  # the earlier-ordered event made it
    assert runs[0] == runs[1] == runs[2]


def test_a_partition_escalates_on_watermarks_alone_and_deadlines_run_before_later_events():
    cfg = load_incident_config()
    proc, store = make()
    dev = MANHOLES[0]
    ev = event(dev, "manhole_tilted", "new", T0, level="yellow")
    up = "readings:4"
    changes = feed([("wm", {up: UpstreamMark(T0)}), ("ev", (up, T0, ev)), ("wm", {up: UpstreamMark(T0 + 1)})],
                   proc, store)
    inc = changes[-1].incident
    deadline = inc.sla_deadline_ts
    assert deadline == T0 + int(cfg.lifecycle.sla_s["yellow"] * 1000)
    # no more events in this partition; the upstream's watermark passes the deadline (+ lateness)
    changes = feed([("wm", {up: UpstreamMark(deadline + 10_000)})], proc, store)
    esc = [c for c in changes if c.change == "escalated"]
    assert len(esc) == 1 and esc[0].transition.ts == deadline
    # an event ordered after the next deadline: the escalation comes first in its history
    nxt = esc[0].incident.sla_deadline_ts
    later = event(dev, "manhole_tilted", "update", T0, ts=nxt + 20_000, level="yellow")
    changes = feed([("ev", (up, nxt + 20_000, later)), ("wm", {up: UpstreamMark(nxt + 20_000, True)})], proc, store)
    assert [c.change for c in changes][:2] == ["escalated", "source_updated"]


def test_an_unordered_event_does_not_move_the_clock_of_a_merged_partition():
    """A camera event a year ahead (its own clock) is applied, but does not escalate the sensors' incidents;
    in a partition with no merged upstream (a camera-only city) it still drives supervision."""
    proc, store = make()
    dev = MANHOLES[0]
    up = "readings:4"
    feed([("wm", {up: UpstreamMark(T0)}), ("ev", (up, T0, event(dev, "manhole_tilted", "new", T0, level="yellow"))),
          ("wm", {up: UpstreamMark(T0 + 1)})], proc, store)
    far = next(d for d in MANHOLES if distance_m(dev.lat, dev.lon, d.lat, d.lon) > 2000)
    ahead = T0 + 365 * 86_400_000
    out = Outcome()
    proc.on_event(0, event(far, "manhole_open", "new", ahead), out)
    proc.advance(0, out)
    changes = [IncidentChange.decode(v) for _, v in out.changes]
    assert [c.change for c in changes] == ["created"]  # applied, and nothing escalated
    assert proc.watermark(0) < T0 + 1000
    alone, _ = make()
    out = Outcome()
    alone.on_event(1, event(dev, "manhole_tilted", "new", T0, level="yellow"), out)
    alone.on_event(1, event(far, "manhole_open", "new", ahead), out)
    alone.advance(1, out)
    assert "escalated" in [IncidentChange.decode(v).change for _, v in out.changes]


def test_a_report_ahead_of_unread_events_waits_for_them_before_it_moves_the_clock():
    """A worker catching up reads the reports topic ahead of the events: a report a day ahead waits, persisted,
    while the partition's grid events are still unread (``events_behind``), so the sensor incident (its "end" maybe
    among the unread) does not escalate, however long that takes. Once the events are all read and the merge
    still waits for a silent upstream, the report is applied after ``fusion.report_hold_s`` of wall time, and its
    time moves the clock."""
    proc, store = make()
    dev = MANHOLES[0]
    up = "readings:4"
    [created] = feed([("wm", {up: UpstreamMark(T0)}),
                      ("ev", (up, T0, event(dev, "manhole_tilted", "new", T0, level="yellow"))),
                      ("wm", {up: UpstreamMark(T0 + 1)})], proc, store)
    far = next(d for d in MANHOLES if distance_m(dev.lat, dev.lon, d.lat, d.lon) > 2000)
    ahead = created.incident.sla_deadline_ts + 60_000  # past the deadline and the lateness
    out = Outcome()
    proc.on_report(0, report(far.lat, far.lon, ahead), out)
    proc.advance(0, out, events_behind=True, now=time.monotonic() + 86_400)
    assert not out.changes and any(k.startswith("rq:0:") for k in out.writes)  # held, and persisted
    assert proc.watermark(0) < T0 + 1000 and proc.reports_waiting() == [0]
    store.apply(out)
    hold = proc.cfg.fusion.report_hold_s
    out = Outcome()
    proc.advance(0, out)  # the events caught up, but the hold has not passed
    assert not out.changes and proc.watermark(0) < T0 + 1000
    out = Outcome()
    proc.advance(0, out, now=time.monotonic() + hold)
    assert [IncidentChange.decode(v).change for _, v in out.changes][:2] == ["created", "escalated"]
    assert proc.watermark(0) == ahead - proc.lateness_ms and not proc.reports_waiting()
    store.apply(out)
    assert not any(k.startswith("rq:") for k in store.data)


def test_a_report_read_before_an_earlier_grid_event_joins_the_incident_that_event_opens():
    """A worker catching up may read a report before the sensor event that came a minute earlier. The report
    waits in the merge until the event is applied, so the event opens the incident and the report joins it,
    exactly as when the event is read first; a restart while the report waits keeps it (the table holds it)."""
    dev = MANHOLES[0]
    up = "readings:4"
    ev = event(dev, "manhole_open", "new", T0 + 10_000)
    rep = report(dev.lat, dev.lon, T0 + 70_000, device=dev.id)
    start = ("wm", {up: UpstreamMark(T0)})
    ev_rec, wm_rec = ("ev", (up, T0 + 10_000, ev)), ("wm", {up: UpstreamMark(T0 + 120_000)})
    runs = []
    for report_first in (True, False):
        proc, store = make()
        changes = feed([start] if report_first else [start, ev_rec], proc, store)
        out = Outcome()
        proc.on_report(0, rep, out)
        proc.advance(0, out)
        store.apply(out)
        changes += [IncidentChange.decode(v) for _, v in out.changes]
        if report_first:
            assert not changes and proc.reports_waiting() == [0]
            proc = IncidentProcessor(proc.cfg, CITY.gridmap, store)  # a restart: the table holds the report
        changes += feed([ev_rec, wm_rec] if report_first else [wm_rec], proc, store)
        [inc] = proc.incidents()
        assert inc.id == incident_id("event", ev.id) and [s.id for s in inc.sources] == [ev.id, rep.service_request_id]
        assert not proc.reports_waiting() and not any(k.startswith("rq:") for k in store.data)
        runs.append([c.encode() for c in changes])
    assert runs[0] == runs[1]


def test_a_redelivered_report_that_is_still_waiting_counts_as_a_duplicate():
    proc, store = make()
    dev = MANHOLES[0]
    feed([("wm", {"readings:4": UpstreamMark(T0)})], proc, store)
    rep = report(dev.lat, dev.lon, T0 + 70_000)
    out = Outcome()
    proc.on_report(0, rep, out)
    proc.on_report(0, rep, out)
    assert out.duplicates == 1 and not out.changes
    changes = feed([("wm", {"readings:4": UpstreamMark(T0 + 80_000)})], proc, store)
    assert [c.change for c in changes] == ["created"]


def test_a_report_ahead_of_buffered_events_moves_the_clock_only_as_far_as_the_first_of_them():
    """A grid event read but held in the merge buffer (another upstream's watermark is behind it) is as unread to
    supervision as one still in Kafka: a report past the incident's deadline waits for it. The event ends the
    incident's only source, so once it is released the incident resolves; the report, applied when the silent
    upstream's hold passed, finds nothing to escalate, the same as when it is read after the release."""
    dev = MANHOLES[0]
    far = next(d for d in MANHOLES if distance_m(dev.lat, dev.lon, d.lat, d.lon) > 2000)
    up, other = "readings:4", "readings:7"
    start = [("wm", {up: UpstreamMark(T0), other: UpstreamMark(T0)}),
             ("ev", (up, T0, event(dev, "manhole_tilted", "new", T0, level="yellow"))),
             ("wm", {other: UpstreamMark(T0 + 1)})]
    runs = []
    for report_first in (True, False):
        proc, store = make()
        [created] = feed(start, proc, store)
        end_ts = T0 + 60_000
        ahead = created.incident.sla_deadline_ts + 60_000  # past the deadline and the lateness
        # the end waits for the other upstream, whose watermark is still at T0 + 1
        assert not feed([("ev", (up, end_ts, event(dev, "manhole_tilted", "end", T0, ts=end_ts)))], proc, store)
        release = [("wm", {other: UpstreamMark(end_ts + 1)})]
        changes = [] if report_first else feed(release, proc, store)
        out = Outcome()
        proc.on_report(0, report(far.lat, far.lon, ahead), out)
        proc.advance(0, out)
        store.apply(out)
        changes += [IncidentChange.decode(v) for _, v in out.changes]
        if report_first:
            assert not out.changes and proc.watermark(0) <= end_ts - proc.lateness_ms
            changes += feed(release, proc, store)
        out = Outcome()  # the other upstream stays silent: the report is applied when its hold passed
        proc.advance(0, out, now=time.monotonic() + proc.cfg.fusion.report_hold_s)
        changes += [IncidentChange.decode(v) for _, v in out.changes]
        assert "escalated" not in [c.change for c in changes] and "created" in [c.change for c in changes]
        assert proc.watermark(0) == ahead - proc.lateness_ms and not proc.reports_waiting()
        runs.append(sorted((i.id, i.status, i.level, i.tier) for i in proc.incidents()))
    assert runs[0] == runs[1]
    assert ("resolved", "yellow") in [(st, lv) for _, st, lv, _ in runs[0]]


def test_a_late_event_is_applied_counted_and_logged(caplog):
    proc, store = make()
    here = MANHOLES[0]
    far = next(d for d in MANHOLES if distance_m(here.lat, here.lon, d.lat, d.lon) > 2000)
    first = feed([("wm", {"readings:0": UpstreamMark(T0)}),
                  ("ev", ("readings:0", T0 + 10_000, event(here, "manhole_open", "new", T0 + 10_000))),
                  ("wm", {"readings:0": UpstreamMark(T0 + 20_000)})], proc, store)
    assert [c.change for c in first] == ["created"]
    out = Outcome()
    with caplog.at_level(logging.WARNING, logger="gridwatch.incidents"):
        proc.on_ordered_event(0, "readings:5", T0 + 1000, event(far, "manhole_open", "new", T0 + 1000).encode(), out)
    assert out.late == 1 and [IncidentChange.decode(v).change for _, v in out.changes] == ["created"]
    assert "late grid event manhole_open" in caplog.text


def test_a_restarted_processor_releases_what_was_buffered_before_the_crash():
    a, b = two_covers_one_grid()
    ea = event(a, "manhole_open", "new", T0 + 1000)
    eb = event(b, "manhole_open", "new", T0 + 2000)
    start = [("wm", {"readings:1": UpstreamMark(T0), "readings:2": UpstreamMark(T0)}),
             ("ev", ("readings:2", T0 + 6000, eb)), ("ev", ("readings:1", T0 + 5000, ea))]
    rest = [("wm", {"readings:1": UpstreamMark(T0 + 7000), "readings:2": UpstreamMark(T0 + 7000)})]
    proc, store = make()
    whole = feed(start + rest, proc, store)
    assert [c.change for c in whole] == ["created", "source_added"]
    proc, store = make()
    # ea goes once readings:2 is past it; eb waits for readings:1 (at T0 + 5000) in the table
    assert [c.change for c in feed(start, proc, store)] == ["created"]
    assert sum(k.startswith("q:0:") for k in store.data) == 1 and "up:0" in store.data
    restarted = IncidentProcessor(load_incident_config(), CITY.gridmap, store)
    assert [c.encode() for c in feed(rest, restarted, store)] == [c.encode() for c in whole[1:]]
    assert not any(k.startswith("q:0:") for k in store.data)


def test_a_starved_partition_with_input_waiting_in_kafka_is_never_announced_idle():
    """A partition the worker has not got round to (busy with the others, or the machine stalled) is not
    quiet: announcing it idle would let the merge release past input that is already in Kafka."""
    s = WatermarkSender("readings", idle_s=1.0)
    s.assigned(1, now=0.0)
    s.assigned(2, now=0.0)
    waiting = {"readings:1": True, "readings:2": False}
    s.due(0.0)
    for p in (1, 2):
        s.begin(p, now=0.1)
        s.confirmed(p, 100, now=0.1)
    s.due(0.2)
    assert s.due(2.0, waiting.__getitem__) == Watermarks({"readings:2": UpstreamMark(100, idle=True)})
    assert s.due(5.0, waiting.__getitem__) is None  # still starved, still not idle
    waiting["readings:1"] = False  # caught up and quiet now
    assert s.due(5.1, waiting.__getitem__) == Watermarks({"readings:1": UpstreamMark(100, idle=True)})


def test_an_ended_partition_is_announced_idle_at_once_and_wakes_with_new_input():
    s = WatermarkSender("readings", idle_s=86_400.0)
    s.assigned(0, now=0.0)
    s.begin(0, now=0.1)
    s.confirmed(0, 300, now=0.1)
    assert s.due(0.2) == Watermarks({"readings:0": UpstreamMark(300)})
    assert s.due(100.0) is None  # silence alone is not the end here
    s.ended(0)
    assert s.due(100.1) == Watermarks({"readings:0": UpstreamMark(300, idle=True)})
    assert s.begin(0, now=101.0) is True  # input after the end: active again, announced first
    assert s.due(101.0) == Watermarks({"readings:0": UpstreamMark(300)})
