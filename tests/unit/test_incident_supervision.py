"""Supervision notices (督办) and joint handling (吹哨报到): lifecycle rules, event-time overdue in fusion,
timeline entries, and records of schema version 1 still reading."""

from __future__ import annotations

import json

import pytest

from gridwatch.agents import lifecycle as lc
from gridwatch.agents.fusion import IncidentProcessor
from gridwatch.agents.routing import load_incident_config
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.incidents import VERSION, Incident, IncidentChange, OperatorAction
from gridwatch.pipeline.schemas.reports import ResidentReport, hotline_report_id
from tests.unit.test_incident_fusion import CITY, MANHOLES, T0, DictStore, H, report, run
from tests.unit.test_incident_lifecycle import GRID, act, incident

CFG = load_incident_config()


def supervise(ts: int, deadline: int | None, note: str = "请于期限内办结", **kw) -> OperatorAction:
    return act("supervise", ts, actor=kw.pop("actor", "jiwei"), note=note, deadline=deadline, **kw)


def test_a_supervision_notice_is_recorded_with_its_deadline_and_replaced_by_a_later_one():
    inc = incident()
    lc.apply_action(inc, act("dispatch", T0 + 1), CFG)
    p0 = inc.priority
    t = lc.apply_action(inc, supervise(T0 + 2, T0 + 2 * H, actor_tier_code="330100"), CFG)
    assert (t.action, t.actor, t.deadline, t.note, t.to_status) == ("supervise", "jiwei", T0 + 2 * H, "请于期限内办结",
                                                                   "dispatched")
    sv = inc.supervision
    assert (sv.by, sv.deadline, sv.ts, sv.by_scope, sv.overdue, sv.notices) == ("jiwei", T0 + 2 * H, T0 + 2, "330100",
                                                                               False, 1)
    assert inc.priority == p0 + CFG.priority.supervised
    assert lc.next_deadline(inc, CFG) == T0 + 2 * H  # before the yellow SLA (24 h)
    lc.apply_action(inc, supervise(T0 + 3, T0 + 3 * H, note="再次督办"), CFG)
    assert (inc.supervision.notices, inc.supervision.deadline, inc.supervision.note) == (2, T0 + 3 * H, "再次督办")
    assert [h.action for h in inc.history] == ["dispatch", "supervise", "supervise"]


@pytest.mark.parametrize("deadline, note, reason", [(None, "x", "deadline"), (T0 + 5, "x", "deadline"),
                                                    (T0 + H, "  ", "note")])
def test_a_notice_without_a_future_deadline_or_a_note_is_refused(deadline, note, reason):
    with pytest.raises(SchemaError, match=reason):
        supervise(T0 + 10, deadline, note=note).validate()
    with pytest.raises(lc.LifecycleError) as e:
        lc.apply_action(incident(), supervise(T0 + 10, deadline, note=note), CFG)
    assert e.value.reason == "bad_action"


def test_a_finished_incident_cannot_be_supervised_and_scope_still_holds():
    inc = incident()
    lc.apply_action(inc, act("resolve", T0 + 1), CFG)
    with pytest.raises(lc.LifecycleError) as e:
        lc.apply_action(inc, supervise(T0 + 2, T0 + H), CFG)
    assert e.value.reason == "invalid_transition"
    with pytest.raises(lc.LifecycleError) as e:  # another district's commission
        lc.apply_action(incident(), supervise(T0 + 2, T0 + H, actor_tier_code="330106"), CFG)
    assert e.value.reason == "out_of_scope"


def test_supervision_marks_overdue_at_the_deadline_in_event_time_interleaved_with_sla_escalation():
    inc = incident("red")  # red SLA 2 h from T0
    lc.apply_action(inc, supervise(T0 + 1, T0 + H), CFG)
    assert list(lc.supervise(inc, CFG, T0 + H)) == []  # the watermark must pass the deadline
    steps = list(lc.supervise(inc, CFG, T0 + 2 * H + 1))
    assert [(c, t.action, t.ts) for c, t in steps] == [("supervision_overdue", "supervision_overdue", T0 + H),
                                                       ("escalated", "overdue", T0 + 2 * H)]
    assert inc.supervision.overdue and inc.overdue and steps[0][1].deadline == T0 + H
    assert list(lc.supervise(inc, CFG, T0 + 2 * H + 2)) == []  # flagged once


def test_an_incident_resolved_before_the_deadline_is_not_overdue():
    inc = incident()
    lc.apply_action(inc, supervise(T0 + 1, T0 + H), CFG)
    lc.apply_action(inc, act("resolve", T0 + H - 1), CFG)
    assert lc.supervision_deadline(inc) is None
    assert [c for c, _ in lc.supervise(inc, CFG, T0 + 10 * H)] == []
    assert inc.supervision is not None and not inc.supervision.overdue


def test_dispatch_to_a_lead_department_with_assisting_departments_shows_in_the_timeline():
    inc = incident()
    t = lc.apply_action(inc, act("dispatch", T0 + 1, department="roads",
                                 assist=["traffic_police", "roads", " traffic_police", "power_supply"]), CFG)
    assert inc.department == "roads" and inc.assist == ["traffic_police", "power_supply"]  # lead and repeats dropped
    assert (t.department, t.assist) == ("roads", ["traffic_police", "power_supply"])
    lc.apply_action(inc, act("dispatch", T0 + 2, note="same team, another lead", department="traffic_police"), CFG)
    assert inc.assist == ["power_supply"]  # kept (no assist given), minus the new lead
    lc.apply_action(inc, act("dispatch", T0 + 3, assist=[]), CFG)
    assert inc.assist == []
    with pytest.raises(SchemaError, match="dispatch only"):
        act("comment", T0 + 4, note="x", assist=["roads"]).validate()
    with pytest.raises(SchemaError, match="assist"):
        act("dispatch", T0 + 4, assist="roads").validate()  # type: ignore[arg-type]


def test_fusion_flags_supervision_overdue_when_later_inputs_move_the_watermark():
    proc, store = IncidentProcessor(CFG, CITY.gridmap, DictStore()), None
    store = proc.store
    dev = MANHOLES[0]
    rep = report(dev.lat, dev.lon, T0)
    [created] = run(proc, store, rep)
    iid = created.incident.id
    notice = OperatorAction(iid, created.incident.grid_code, "supervise", "jiwei", T0 + 60_000, actor_tier_code="330100",
                            note="限期办结", deadline=T0 + H)
    [ch] = run(proc, store, notice)
    assert ch.change == "supervised" and ch.transition.deadline == T0 + H
    assert ch.incident.supervision.by == "jiwei" and not ch.incident.supervision.overdue
    assert run(proc, store, notice) == []  # a re-delivered notice changes nothing
    # a report elsewhere in the same partition, 2 h later: the watermark (minus 5 s lateness) passes the deadline
    far = next(d for d in MANHOLES if d.grid_code != dev.grid_code)
    changes = run(proc, store, report(far.lat, far.lon, T0 + 2 * H, code="garbage", text="垃圾"))
    over = [c for c in changes if c.incident.id == iid]
    assert [c.change for c in over] == ["supervision_overdue"]
    assert over[0].ts == T0 + H and over[0].incident.supervision.overdue
    assert over[0].incident.history[-1].action == "supervision_overdue"
    # the table holds it: a fresh processor over the same store recovers the flag
    again = IncidentProcessor(CFG, CITY.gridmap, store)
    [inc] = [i for i in again.incidents() or again.partition(0).incidents.values() if i.id == iid]
    assert inc.supervision.overdue and inc.supervision.deadline == T0 + H


def test_hotline_reports_carry_their_order_id_into_the_incident_source():
    proc = IncidentProcessor(CFG, CITY.gridmap, DictStore())
    dev = MANHOLES[3]
    rid = hotline_report_id("12345-0001")
    rep = ResidentReport(rid, "manhole_cover", "井盖松动", dev.lat, dev.lon, T0, dev.grid_code, source="hotline",
                         external_id="12345-0001")
    [c] = run(proc, proc.store, rep)
    src = c.incident.sources[0]
    assert (src.origin, src.external_id, src.id) == ("hotline", "12345-0001", rid)
    assert run(proc, proc.store, rep) == []  # the same order again: nothing new
    assert hotline_report_id("12345-0001") == rid != hotline_report_id("12345-0002")


def test_version_1_records_still_read_and_come_back_as_the_current_version():
    inc = incident()
    d = inc.to_dict()
    for k in ("supervision", "assist"):
        d.pop(k)
    for h in d["history"]:
        h.pop("assist"), h.pop("deadline")
    d["v"] = 1
    old = Incident.from_dict(d)
    assert old.supervision is None and old.assist == [] and old.v == VERSION
    change = IncidentChange.decode(json.dumps({"incident": d, "change": "created", "ts": T0, "transition": None,
                                               "source_id": "", "v": 1}).encode())
    assert change.v == VERSION and change.incident.id == "i1"
    a = OperatorAction.decode(json.dumps({"incident_id": "i1", "grid_code": GRID, "action": "ack", "actor": "x",
                                          "ts": T0, "v": 1}).encode())
    assert a.v == VERSION and a.assist is None
    with pytest.raises(SchemaError):
        Incident.from_dict({**d, "v": 99})
