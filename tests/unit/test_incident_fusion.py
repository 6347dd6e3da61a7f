"""Fusion, supervision and recovery of incidents over the sample city (pure logic, no Kafka)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from gridwatch.agents.fusion import IncidentProcessor, Outcome, distance_m
from gridwatch.agents.routing import load_incident_config, parse_config
from gridwatch.devices.registry import load_city
from gridwatch.pipeline.schemas.codec import SchemaError, dumps
from gridwatch.pipeline.schemas.events import GridEvent, TierRef, event_id
from gridwatch.pipeline.schemas.incidents import Incident, IncidentChange, OperatorAction
from gridwatch.pipeline.schemas.reports import ResidentReport, report_id

CITY = load_city()
T0 = 1_763_647_200_000
H = 3_600_000
MANHOLES = [d for d in CITY.registry if d.kind == "manhole"]


class DictStore:
    """The table stand-in: applies an Outcome's writes like the Faust table (None deletes)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def items(self) -> Iterable[tuple[str, Any]]:
        return self.data.items()

    def apply(self, out: Outcome) -> None:
        for k, (_p, v) in out.writes.items():
            if v is None:
                self.data.pop(k, None)
            else:
                assert isinstance(v, bytes)  # a raw-valued table: what the changelog carries
                self.data[k] = v


def make(cfg: Any = None) -> tuple[IncidentProcessor, DictStore]:
    store = DictStore()
    return IncidentProcessor(cfg or load_incident_config(), CITY.gridmap, store), store


def event(dev: Any, etype: str, phase: str, start: int, ts: int | None = None, level: str = "red") -> GridEvent:
    tiers = [TierRef(a.tier, a.code, a.name) for a in CITY.gridmap.chain(dev.grid_code)]
    ts = start if ts is None else ts
    return GridEvent(event_id(etype, dev.id, start), etype, phase, level, dev.id, dev.kind, dev.grid_code, tiers,
                     dev.lat, dev.lon, start, ts, ts if phase == "end" else None, f"{etype} {phase}")


def report(lat: float, lon: float, ts: int, code: str = "manhole_cover", device: str = "", text: str = "open") -> ResidentReport:
    grid = CITY.gridmap.locate(lat, lon) or ""
    return ResidentReport(report_id(code, lat, lon, ts, text), code, text, lat, lon, ts, grid, device_id=device)


def run(proc: IncidentProcessor, store: DictStore, *inputs: Any, p: int = 0) -> list[IncidentChange]:
    out = Outcome()
    for x in inputs:
        if isinstance(x, GridEvent):
            proc.on_event(p, x, out)
        elif isinstance(x, ResidentReport):
            proc.on_report(p, x, out)
        else:
            proc.on_action(p, x, out)
    proc.advance(p, out)
    store.apply(out)
    run.last = out  # type: ignore[attr-defined]
    return [IncidentChange.decode(v) for _, v in out.changes]


def latest(changes: list[IncidentChange]) -> dict[str, Incident]:
    return {c.incident.id: c.incident for c in changes}


def far_pair(min_m: float, max_m: float) -> tuple[Any, Any]:
    a = MANHOLES[0]
    for b in MANHOLES[1:]:
        if min_m <= distance_m(a.lat, a.lon, b.lat, b.lon) <= max_m:
            return a, b
    raise AssertionError("sample city has no such pair")


def test_sensor_event_and_report_of_one_manhole_merge_into_one_incident():
    proc, store = make()
    dev = MANHOLES[0]
    ev = event(dev, "manhole_open", "new", T0)
    rep = report(dev.lat + 0.0001, dev.lon, T0 + 60_000)  # ~11 m away
    changes = run(proc, store, ev, rep)
    [inc] = latest(changes).values()
    assert [s.kind for s in inc.sources] == ["event", "report"]
    assert inc.category_group == "manhole" and inc.level == "red" and inc.status == "reported"
    assert inc.department == "municipal_facilities" and inc.tier == "community"
    assert inc.tier_code == dev.grid_code[:12]
    # level 30 + one extra source 5 + sensor-confirmed 15
    assert inc.priority == 50
    assert [h.action for h in inc.history] == ["created", "merged", "confirmed"]
    assert [c.change for c in changes] == ["created", "source_added", "source_added"]
    assert [c.incident.version for c in changes] == [1, 2, 3]


def test_report_first_then_sensor_confirms_raises_level_and_priority():
    proc, store = make()
    dev = MANHOLES[3]
    [c1] = run(proc, store, report(dev.lat, dev.lon, T0, device=dev.id))
    assert c1.incident.level == "yellow" and c1.incident.priority == 20
    changes = run(proc, store, event(dev, "manhole_tilted", "new", T0 + H, level="yellow"))
    inc = changes[-1].incident
    assert inc.id == c1.incident.id
    assert inc.level == "red"  # yellow report + yellow sensor, confirmation raises one step
    assert inc.priority == 30 + 5 + 15
    assert inc.sla_deadline_ts == T0 + H + 2 * H  # tightened to red's SLA from the confirmation


def test_report_two_km_away_makes_its_own_incident():
    proc, store = make()
    a, b = far_pair(1800, 2600)
    changes = run(proc, store, event(a, "manhole_open", "new", T0), report(b.lat, b.lon, T0 + 60_000))
    assert len(latest(changes)) == 2


def test_within_radius_in_a_neighbouring_grid_merges_but_other_category_does_not():
    proc, store = make()
    dev = MANHOLES[0]
    # ~200 m north: still within 250 m
    near = report(dev.lat + 0.0018, dev.lon, T0 + 1000)
    assert distance_m(dev.lat, dev.lon, near.lat, near.lon) < 250
    other = report(dev.lat, dev.lon, T0 + 2000, code="garbage", text="bins")
    changes = run(proc, store, event(dev, "manhole_open", "new", T0), near, other)
    incs = latest(changes)
    assert sorted(len(i.sources) for i in incs.values()) == [1, 2]
    assert {i.category_group for i in incs.values()} == {"manhole", "sanitation"}


def test_outside_the_time_window_is_a_new_incident():
    proc, store = make()
    dev = MANHOLES[0]
    changes = run(proc, store, report(dev.lat, dev.lon, T0), report(dev.lat, dev.lon, T0 + 25 * H, text="again"))
    assert len(latest(changes)) == 2


def test_report_outside_every_grid_is_rejected():
    proc, store = make()
    changes = run(proc, store, ResidentReport("r1", "manhole_cover", "x", 0.0, 0.0, T0, ""))
    assert changes == [] and [r.reason for r in run.last.rejected] == ["outside_grid"]  # type: ignore[attr-defined]


def test_redelivered_inputs_change_nothing_and_replay_is_identical():
    dev = MANHOLES[0]
    inputs = [event(dev, "manhole_open", "new", T0), report(dev.lat, dev.lon, T0 + 1000),
              event(dev, "manhole_open", "end", T0, T0 + H)]
    proc, store = make()
    first = run(proc, store, *inputs)
    again = run(proc, store, *inputs)
    assert again == [] and run.last.duplicates == 3  # type: ignore[attr-defined]
    proc2, store2 = make()
    replay = run(proc2, store2, *inputs)
    assert [c.encode() for c in replay] == [c.encode() for c in first]


def test_all_sensor_events_ended_auto_resolves_pending_confirmation_and_a_new_fault_reopens():
    proc, store = make()
    dev = MANHOLES[5]
    run(proc, store, event(dev, "manhole_open", "new", T0))
    changes = run(proc, store, event(dev, "manhole_open", "end", T0, T0 + 600_000))
    inc = changes[-1].incident
    assert changes[-1].change == "auto_resolved"
    assert inc.status == "resolved" and inc.pending_confirmation and inc.resolved_ts == T0 + 600_000
    # the cover opens again: same incident, back to work
    changes = run(proc, store, event(dev, "manhole_open", "new", T0 + 900_000))
    inc2 = changes[-1].incident
    assert changes[-1].change == "reopened" and inc2.id == inc.id and inc2.status == "reported"
    assert not inc2.pending_confirmation and len(inc2.sources) == 2


def test_a_report_from_before_the_resolution_read_late_is_merged_and_a_later_one_reopens():
    """The reports topic is read as fetched: a report made while the cover was open, read after the sensor's
    end resolved the incident, joins it without reopening it (as in event-time order); one made after the
    resolution says the problem is back."""
    proc, store = make()
    dev = MANHOLES[5]
    run(proc, store, event(dev, "manhole_open", "new", T0))
    run(proc, store, event(dev, "manhole_open", "end", T0, T0 + 600_000))
    changes = run(proc, store, report(dev.lat, dev.lon, T0 + 300_000))
    assert [c.change for c in changes] == ["source_added", "source_added"]  # merged, then confirmed by a resident
    merged = changes[-1]
    assert merged.incident.status == "resolved" and merged.incident.history[-2].action == "merged"
    assert merged.incident.pending_confirmation and len(merged.incident.sources) == 2
    [reopened] = run(proc, store, report(dev.lat, dev.lon, T0 + 700_000, text="open again"))
    assert reopened.change == "reopened" and reopened.incident.status == "reported"


def test_a_report_read_after_its_incident_closed_joins_it_as_in_event_time_order():
    """A worker catching up can read the reports topic days of event time behind the grid events: the
    incident a report was made about has been auto-resolved and closed by then. The report joins it (no
    new incident, which would at once breach its SLA and escalate), as it would have in event-time order."""
    cfg = load_incident_config()
    dev = MANHOLES[5]
    far = far_pair(1800, 2600)[1]
    later = T0 + int(cfg.lifecycle.evaluation_window_s * 1000) + 2 * H  # past the closing of the auto-resolved one
    opened, rep, ended = (event(dev, "manhole_open", "new", T0), report(dev.lat, dev.lon, T0 + 60_000),
                          event(dev, "manhole_open", "end", T0, T0 + H))
    jump = report(far.lat, far.lon, later, code="garbage")

    in_order, store = make(cfg)
    ordered = [c for x in (opened, rep, ended, jump) for c in run(in_order, store, x)]
    catching_up, store2 = make(cfg)
    behind = [c for x in (opened, ended, jump) for c in run(catching_up, store2, x)]
    [closing] = [c for c in behind if c.change == "closed"]
    assert closing.incident.status == "closed" and closing.incident.closed_ts is not None
    late = run(catching_up, store2, rep)

    assert [c.change for c in late] == ["source_added", "source_added"]  # merged, then confirmed by a resident
    joined = late[-1].incident
    assert joined.id == closing.incident.id and joined.status == "closed" and len(joined.sources) == 2
    assert [h.action for h in joined.history[-2:]] == ["merged", "confirmed"]
    assert sorted(i.id for i in catching_up.incidents()) == sorted(i.id for i in in_order.incidents())
    assert sum(c.change == "created" for c in behind + late) == sum(c.change == "created" for c in ordered) == 2
    run(catching_up, store2, rep)  # read again (a re-delivery): recognised, nothing changes
    assert run.last.changes == [] and run.last.duplicates == 1  # type: ignore[attr-defined]


def closed_cover(*before_closing: Any) -> tuple[IncidentProcessor, DictStore, int]:
    """A cover opens at T0 and its sensor clears at T0 + 1 h (auto-resolved, pending confirmation); then
    ``before_closing``; then a report far away, past the evaluation window, whose time makes supervision close
    the incident. Returns the processor, its store and that report's time."""
    cfg = load_incident_config()
    dev, far = MANHOLES[5], far_pair(1800, 2600)[1]
    later = T0 + int(cfg.lifecycle.evaluation_window_s * 1000) + 2 * H
    proc, store = make(cfg)
    for x in (event(dev, "manhole_open", "new", T0), event(dev, "manhole_open", "end", T0, T0 + H), *before_closing,
              report(far.lat, far.lon, later, code="garbage")):
        run(proc, store, x)
    return proc, store, later


def test_a_report_merged_while_resolved_does_not_hide_when_the_sensors_resolved_it():
    """Two reports of one open cover: the first read while the incident is resolved (pending confirmation),
    the second after it closed. Both join: the merge recorded while resolved does not count as the resolution."""
    dev = MANHOLES[5]
    proc, store, _ = closed_cover(report(dev.lat, dev.lon, T0 + 60_000))
    [inc] = [i for i in proc.incidents() if i.category_group == "manhole"]
    assert inc.status == "closed" and len(inc.sources) == 2
    changes = run(proc, store, report(dev.lat, dev.lon, T0 + 120_000, text="still open"))
    assert [c.change for c in changes] == ["source_added"] and changes[0].incident.id == inc.id


def test_a_report_made_after_its_incident_closed_opens_a_new_one():
    """Only what precedes the resolution joins a finished incident: a report made after it is new work."""
    dev = MANHOLES[5]
    proc, store, later = closed_cover()
    [closed] = [i for i in proc.incidents() if i.status == "closed"]
    # late (behind the watermark) yet after the resolution, and live after the closing: both new incidents
    for ts in (T0 + 2 * H, later + 60_000):
        [c] = [c for c in run(proc, store, report(dev.lat, dev.lon, ts, text=f"open {ts}")) if c.change == "created"]
        assert c.incident.id != closed.id


def test_where_a_batch_ends_does_not_change_what_a_late_report_joins():
    """The same inputs in one batch (supervision runs at its end: the incident is still resolved, pending
    confirmation, when the report comes) or one per batch (closed by then) give the same incidents: a
    re-processed backlog, cut into other batches after a crash, produces the same changes."""
    cfg = load_incident_config()
    dev = MANHOLES[5]
    far = far_pair(1800, 2600)[1]
    later = T0 + int(cfg.lifecycle.evaluation_window_s * 1000) + 2 * H
    inputs = [event(dev, "manhole_open", "new", T0), event(dev, "manhole_open", "end", T0, T0 + H),
              report(far.lat, far.lon, later, code="garbage"), report(dev.lat, dev.lon, T0 + 600_000)]
    together, store = make(cfg)
    run(together, store, *inputs)
    apart, store2 = make(cfg)
    for x in inputs:
        run(apart, store2, x)
    assert {i.id: len(i.sources) for i in together.incidents()} == {i.id: len(i.sources) for i in apart.incidents()}
    assert len(apart.incidents()) == 2


@pytest.mark.parametrize("end", ["resolve", "cancel"])
def test_a_late_report_does_not_join_what_an_operator_resolved_or_cancelled(end):
    """An operator's resolve or cancel carries the console's clock, which a report's event time cannot be
    compared with: a report read after such an incident closed is new work, as before."""
    cfg = load_incident_config()
    dev = MANHOLES[5]
    far = far_pair(1800, 2600)[1]
    proc, store = make(cfg)
    [c] = run(proc, store, event(dev, "manhole_open", "new", T0))
    run(proc, store, OperatorAction(c.incident.id, c.incident.grid_code, end, "op", T0 + H))
    run(proc, store, report(far.lat, far.lon, T0 + int(cfg.lifecycle.evaluation_window_s * 1000) + 2 * H,
                            code="garbage"))
    assert proc.partitions[0].incidents[c.incident.id].status in ("closed", "cancelled")
    changes = run(proc, store, report(dev.lat, dev.lon, T0 + 600_000))
    assert changes[0].change == "created" and changes[0].incident.id != c.incident.id


def test_sla_breach_escalates_level_and_tier_at_the_deadline_in_event_time():
    proc, store = make()
    a = MANHOLES[0]
    b = far_pair(1800, 2600)[1]
    [c] = run(proc, store, event(a, "manhole_tilted", "new", T0, level="yellow"))
    inc = c.incident
    assert inc.sla_deadline_ts == T0 + 24 * H
    # any later input of the partition moves the watermark (minus 5 s lateness)
    assert run(proc, store, report(b.lat, b.lon, T0 + 24 * H, code="garbage")) != []
    assert all(c.change != "escalated" for c in run(proc, store))  # exactly at the deadline: not yet past
    changes = run(proc, store, report(b.lat, b.lon, T0 + 24 * H + 6000, code="noise"))
    esc = [c for c in changes if c.change == "escalated"]
    assert len(esc) == 1
    e = esc[0].incident
    assert (e.level, e.tier, e.tier_code, e.overdue, e.escalations) == ("red", "street", a.grid_code[:9], True, 1)
    assert esc[0].transition.ts == T0 + 24 * H and esc[0].transition.actor == "supervision"
    assert e.sla_deadline_ts == T0 + 26 * H
    # a long silence then a jump: district, then city, then nowhere higher (no more deadlines)
    changes = run(proc, store, report(b.lat, b.lon, T0 + 40 * H, code="noise", text="later"))
    tiers = [c.incident.tier for c in changes if c.change == "escalated"]
    assert tiers == ["district", "city", "city"]
    final = [c for c in changes if c.incident.id == inc.id][-1].incident
    assert final.sla_deadline_ts is None and final.escalations == 4 and final.level == "red"


def test_resolved_but_not_evaluated_closes_then_leaves_the_table():
    cfg = load_incident_config()
    proc, store = make(cfg)
    dev = MANHOLES[0]
    [c] = run(proc, store, report(dev.lat, dev.lon, T0))
    iid = c.incident.id
    run(proc, store, OperatorAction(iid, c.incident.grid_code, "resolve", "op", T0 + H))
    week = int(cfg.lifecycle.evaluation_window_s * 1000)
    changes = run(proc, store, report(dev.lat, dev.lon, T0 + H + week + 10_000, code="garbage"))
    closed = [c for c in changes if c.change == "closed"]
    assert closed and closed[0].incident.status == "closed" and closed[0].incident.closed_ts == T0 + H + week
    assert f"inc:0:{iid}" in store.data
    retain = int(cfg.lifecycle.retain_closed_s * 1000)
    run(proc, store, report(dev.lat, dev.lon, T0 + H + week + retain + 10_000, code="noise"))
    assert f"inc:0:{iid}" not in store.data and run.last.writes[f"inc:0:{iid}"][1] is None  # type: ignore[attr-defined]


def test_a_new_processor_over_the_table_recovers_every_incident_with_its_history():
    proc, store = make()
    devs = MANHOLES[:3]
    run(proc, store, *[event(d, "manhole_open", "new", T0 + i) for i, d in enumerate(devs)])
    incs = {i.id: i for i in proc.incidents()}
    first = next(iter(incs.values()))
    run(proc, store, OperatorAction(first.id, first.grid_code, "dispatch", "op", T0 + 10))
    before = {i.id: i.to_dict() for i in proc.incidents()}
    # a restarted worker: nothing in memory, the table (changelog) only
    proc2 = IncidentProcessor(load_incident_config(), CITY.gridmap, store)
    proc2.partition(0)
    assert {i.id: i.to_dict() for i in proc2.incidents()} == before
    # re-delivered inputs after the restart are recognised; new work continues the history
    assert run(proc2, store, event(devs[0], "manhole_open", "new", T0)) == []
    [c] = run(proc2, store, OperatorAction(first.id, first.grid_code, "accept", "op", T0 + 20))
    assert [h.action for h in c.incident.history] == ["created", "dispatch", "accept"]


def test_unmapped_event_types_are_ignored_unless_configured_own():
    dev = MANHOLES[0]
    proc, store = make()
    assert run(proc, store, event(dev, "mystery", "new", T0)) == []
    cfg = parse_config({"fusion": {"unmapped_events": "own"}, "groups": {}})
    proc2, store2 = make(cfg)
    [c] = run(proc2, store2, event(dev, "mystery", "new", T0))
    assert c.incident.category_group == "mystery"


@pytest.mark.parametrize("doc, msg", [
    ({"fusion": {"radius": 1}}, "unknown key 'radius'"),
    ({"lifecycle": {"sla_s": {"red": 1}}}, "needs exactly the levels"),
    ({"groups": {"a": {"department": "x", "event_types": ["t"]}, "b": {"department": "y", "event_types": ["t"]}}},
     "event type 't' is in groups"),
    ({"groups": {"a": {"event_types": ["t"]}}}, "department: required"),
    ({"channels": [{"type": "mqtt"}]}, "unique name"),
    ({"fusion": {"radius_m": "far"}}, "expected float"),
])
def test_config_errors_name_the_key(doc, msg):
    with pytest.raises(ValueError, match=msg):
        parse_config(doc, "x.yaml")


def test_an_incident_is_written_as_its_dict_would_be_whatever_it_carries():
    """Incident.encode lets orjson write the dataclasses: the bytes must be those of the dict form (which
    the console, channels and changelog read), with supervision, history, assist and evidence set, and an
    integer beyond 64 bits (orjson refuses it) still written."""
    proc, store = make()
    dev = MANHOLES[0]
    ev = event(dev, "manhole_open", "new", T0)
    ev.evidence = [{"ts": T0, "cover_open": True, "tilt_deg": 12.5, "note": "\u533a", "none": None}]
    [inc] = latest(run(proc, store, ev, report(dev.lat + 0.0001, dev.lon, T0 + 60_000))).values()
    inc = proc.partition(0).incidents[inc.id]
    run(proc, store, OperatorAction(inc.id, inc.grid_code, "supervise", "jiwei", T0 + H, actor_tier_code="330100",
                                    note="\u7763\u529e", deadline=T0 + 5 * H))
    assert inc.supervision is not None and len(inc.history) >= 3
    inc.assist.append("water")
    assert inc.encode() == dumps(inc.to_dict())
    inc.sources[0].evidence.append({"big": 2**70})
    assert inc.encode() == dumps(inc.to_dict()) and b"1180591620717411303424" in inc.encode()
    assert Incident.decode(inc.encode()) == inc


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_position_or_evidence_is_refused_before_it_reaches_an_incident(bad):
    """Incident.encode does not look for NaN itself (orjson would write it as null): fusion refuses it
    where it enters, and nothing is changed."""
    proc, store = make()
    dev = MANHOLES[0]
    ev = event(dev, "manhole_open", "new", T0)
    ev.evidence = [{"ts": T0, "tilt_deg": bad}]
    with pytest.raises(SchemaError, match="not a finite number"):
        proc.on_event(0, ev, Outcome())
    rep = report(dev.lat, dev.lon, T0)
    rep.lat = bad
    with pytest.raises(SchemaError, match="not a finite number"):
        proc.on_report(0, rep, Outcome())
    assert not proc.partition(0).incidents
    ev.evidence = [{"ts": T0, "tilt_deg": 12.5}]  # the same event, finite, goes through
    assert [c.change for c in run(proc, store, ev)] == ["created"]
