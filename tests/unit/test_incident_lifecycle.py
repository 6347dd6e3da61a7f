"""The five-ticket workflow as pure functions: allowed and rejected transitions, history, scope."""

from __future__ import annotations

import pytest

from gridwatch.agents import lifecycle as lc
from gridwatch.agents.routing import load_incident_config
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import TierRef
from gridwatch.pipeline.schemas.incidents import Incident, IncidentSource, OperatorAction

CFG = load_incident_config()
T0 = 1_763_647_200_000
GRID = "330102001001005"
TIERS = [TierRef("city", "330100", "c"), TierRef("district", "330102", "d"), TierRef("street", "330102001", "s"),
         TierRef("community", "330102001001", "v"), TierRef("grid", GRID, "g")]


def incident(level: str = "yellow") -> Incident:
    src = IncidentSource("report", "r1", "manhole_cover", T0, T0)
    return Incident("i1", "manhole", "t", level, 20, "reported", "community", "330102001001", "municipal_facilities",
                    GRID, TIERS, 30.0, 120.0, T0, T0, T0 + CFG.sla_ms(level), [src])


def act(action: str, ts: int, **kw) -> OperatorAction:
    return OperatorAction("i1", GRID, action, kw.pop("actor", "op-village"), ts, **kw)


def test_the_five_tickets_in_order_with_every_transition_recorded():
    inc = incident()
    steps = [("ack", None), ("dispatch", "dispatched"), ("accept", "accepted"), ("start", "in_progress"),
             ("resolve", "resolved")]
    for k, (a, status) in enumerate(steps):
        t = lc.apply_action(inc, act(a, T0 + k + 1, note=f"n{k}"), CFG)
        assert t.actor == "op-village" and t.note == f"n{k}" and t.ts == T0 + k + 1
        assert inc.status == (status or "reported") == t.to_status
    assert inc.acked and inc.resolved_ts == T0 + 5 and inc.sla_deadline_ts is None
    t = lc.apply_action(inc, act("evaluate", T0 + 9, actor="resident:r1", rating=5), CFG)
    assert (inc.status, inc.rating, inc.closed_ts, t.from_status) == ("evaluated", 5, T0 + 9, "resolved")
    assert [h.action for h in inc.history] == ["ack", "dispatch", "accept", "start", "resolve", "evaluate"]
    assert [h.to_status for h in inc.history][1:4] == ["dispatched", "accepted", "in_progress"]


@pytest.mark.parametrize("prior, action", [
    ([], "accept"), ([], "start"), ([], "evaluate"), ([], "confirm"), ([], "reopen"),
    (["dispatch"], "start"), (["resolve"], "resolve"), (["resolve"], "dispatch"), (["cancel"], "resolve"),
    (["ack"], "ack"),
])
def test_invalid_transitions_are_rejected_with_a_reason(prior, action):
    inc = incident()
    for k, a in enumerate(prior):
        lc.apply_action(inc, act(a, T0 + k + 1), CFG)
    before = inc.to_dict()
    with pytest.raises(lc.LifecycleError) as e:
        lc.apply_action(inc, act(action, T0 + 100, rating=3), CFG)
    assert e.value.reason == "invalid_transition"
    assert inc.to_dict() == before


def test_an_operator_outside_the_incidents_tiers_cannot_act():
    inc = incident()
    with pytest.raises(lc.LifecycleError) as e:
        lc.apply_action(inc, act("ack", T0 + 1, actor_tier_code="330102002"), CFG)  # another town
    assert e.value.reason == "out_of_scope"
    lc.apply_action(inc, act("ack", T0 + 1, actor_tier_code="330102001"), CFG)  # its own town
    assert inc.acked


def test_dispatch_uses_the_routing_table_or_an_override():
    inc = incident()
    inc.department = ""
    lc.apply_action(inc, act("dispatch", T0 + 1), CFG)
    assert inc.department == "municipal_facilities"
    lc.apply_action(inc, act("dispatch", T0 + 2, department="drainage", level="red"), CFG)
    assert inc.department == "drainage" and inc.level == "red" and inc.sla_deadline_ts == T0 + 2 + CFG.sla_ms("red")


def test_operator_escalation_moves_up_and_stops_at_the_top():
    inc = incident("blue")
    lc.apply_action(inc, act("escalate", T0 + 1), CFG)
    assert (inc.level, inc.tier, inc.tier_code, inc.escalations, inc.overdue) == ("yellow", "street", "330102001", 1,
                                                                                  False)
    lc.apply_action(inc, act("escalate", T0 + 2, level="red"), CFG)
    lc.apply_action(inc, act("escalate", T0 + 3), CFG)
    assert (inc.level, inc.tier) == ("red", "city")
    with pytest.raises(lc.LifecycleError):
        lc.apply_action(inc, act("escalate", T0 + 4), CFG)
    with pytest.raises(lc.LifecycleError, match="cannot lower"):
        lc.apply_action(incident("red"), act("escalate", T0 + 4, level="blue"), CFG)


def test_reopen_returns_to_the_status_it_was_resolved_from():
    inc = incident()
    for k, a in enumerate(["dispatch", "accept", "resolve"]):
        lc.apply_action(inc, act(a, T0 + k + 1), CFG)
    lc.apply_action(inc, act("reopen", T0 + 10, note="still broken"), CFG)
    assert inc.status == "accepted" and inc.sla_deadline_ts == T0 + 10 + CFG.sla_ms("yellow")


def test_supervision_is_a_no_op_before_the_deadline_and_idempotent_after():
    inc = incident("red")
    assert list(lc.supervise(inc, CFG, inc.sla_deadline_ts)) == []
    out = list(lc.supervise(inc, CFG, inc.sla_deadline_ts + 1))
    assert [c for c, _ in out] == ["escalated"] and inc.tier == "street" and inc.level == "red"
    assert list(lc.supervise(inc, CFG, out[0][1].ts + 1)) == []


def test_action_records_validate_their_shape():
    with pytest.raises(SchemaError, match="unknown action"):
        OperatorAction.decode(OperatorAction("i1", GRID, "explode", "op", T0).encode())
    with pytest.raises(SchemaError, match="rating"):
        OperatorAction.decode(OperatorAction("i1", GRID, "evaluate", "op", T0, rating=9).encode())
    a = OperatorAction("i1", GRID, "ack", "op", T0)
    assert OperatorAction.decode(a.encode()) == a and a.id == OperatorAction("i1", GRID, "ack", "op", T0).id
