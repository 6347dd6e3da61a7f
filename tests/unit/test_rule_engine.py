"""Rule engine unit tests over the shipped rules.yaml and sample city (no Kafka here)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gridwatch.agents.partition_state import TelemetryProcessor
from gridwatch.agents.rules.base import RuleConfigError, build_rule, load_rules
from gridwatch.agents.rules.engine import RuleEngine
from gridwatch.agents.rules.lamp import sun
from gridwatch.core.settings import CONFIG_DIR
from gridwatch.devices.registry import load_city
from gridwatch.pipeline.schemas.readings import Reading

CITY = load_city()
NIGHT = 1_763_647_200_000  # 22:00 at the sample city
NOON = NIGHT - 10 * 3_600_000


@pytest.fixture(scope="module")
def engine() -> RuleEngine:
    return RuleEngine(load_rules(CONFIG_DIR / "rules.yaml"), CITY.registry, CITY.gridmap)


def dev(kind: str, i: int = 0) -> Any:
    return [d for d in CITY.registry if d.kind == kind][i]


def feed(engine: RuleEngine, device: Any, state: dict, ts: int, groups: dict | None = None, **values: Any) -> list:
    groups = groups if groups is not None else {}
    events, _, _ = engine.on_reading(Reading(device.id, ts, values), device, state,
                                     lambda g, k: groups.setdefault(g, {}))
    return events


def test_debounce_hysteresis_escalation_and_end(engine):
    d, st = dev("manhole"), {}
    assert feed(engine, d, st, NIGHT, tilt_deg=12) == []  # 1 of 2
    [new] = feed(engine, d, st, NIGHT + 1, tilt_deg=13)
    assert (new.type, new.phase, new.level, new.start_ts) == ("manhole_tilted", "new", "yellow", NIGHT + 1)
    assert feed(engine, d, st, NIGHT + 2, tilt_deg=8) == []  # under 10 but above clear_below 5: still active
    assert feed(engine, d, st, NIGHT + 3, tilt_deg=9) == []
    [up] = feed(engine, d, st, NIGHT + 4, tilt_deg=35)
    assert (up.phase, up.level, up.id) == ("update", "red", new.id)
    assert feed(engine, d, st, NIGHT + 5, tilt_deg=4) == []  # clear_after 2
    [end] = feed(engine, d, st, NIGHT + 6, tilt_deg=3)
    assert (end.phase, end.id, end.end_ts) == ("end", new.id, NIGHT + 6)
    [again] = [e for e in feed(engine, d, st, NIGHT + 7, tilt_deg=40) + feed(engine, d, st, NIGHT + 8, tilt_deg=40)]
    assert again.id != new.id  # a new occurrence is a new event


def test_duplicate_or_older_readings_are_ignored(engine):
    d, st = dev("manhole", 1), {}
    feed(engine, d, st, NIGHT, tilt_deg=20)
    assert feed(engine, d, st, NIGHT, tilt_deg=20) == []  # same reading again: not a second debounce step
    assert feed(engine, d, st, NIGHT - 1, tilt_deg=20) == []
    assert len(feed(engine, d, st, NIGHT + 1, tilt_deg=20)) == 1


def test_same_input_same_ids(engine):
    d = dev("manhole", 2)
    runs = []
    for _ in range(2):
        st: dict = {}
        runs.append([e.id for t in range(4) for e in feed(engine, d, st, NIGHT + t, cover_open=t % 2 == 0)])
    assert runs[0] == runs[1] and len(runs[0]) >= 1


def test_lamp_rules_follow_the_sun(engine):
    lamp, st = dev("streetlight"), {}
    assert feed(engine, lamp, st, NOON, lamp_on=False, current_a=0.0) == []  # dark at noon: fine
    feed(engine, lamp, st, NIGHT, lamp_on=False, current_a=0.0)
    [out] = feed(engine, lamp, st, NIGHT + 60_000, lamp_on=False, current_a=0.0)
    assert out.type == "lamp_out_night" and out.level == "blue"
    st2: dict = {}
    evs = [e for k in range(3) for e in feed(engine, dev("streetlight", 1), st2, NOON + k * 60_000, lamp_on=True, current_a=0.9)]
    assert [e.type for e in evs] == ["lamp_lit_day"]


def test_the_sun_follows_a_lamp_a_registry_reload_moved():
    """sun() keeps each lamp's rounded position; a reloaded registry's Device (a new object) is re-read."""
    lamp = dev("streetlight")
    here = sun(lamp, NIGHT)
    assert here < -6  # night at the sample city
    moved = dataclasses.replace(lamp, lon=lamp.lon - 120)  # the same id, eight hours west: afternoon there
    assert sun(moved, NIGHT) > 6
    assert sun(lamp, NIGHT) == here


def test_circuit_dark_needs_most_of_the_circuit(engine):
    cid, lamps = next((c, ls) for c, ls in sorted(CITY.registry.circuits().items()) if len(ls) >= 10)
    groups: dict = {}
    states: dict = {lamp.id: {} for lamp in lamps}
    events = []
    for i, lamp in enumerate(lamps):
        events += [e for e in feed(engine, lamp, states[lamp.id], NIGHT + i, groups, lamp_on=False, current_a=0.0)
                   if e.type == "circuit_dark"]
        if i + 1 < 0.6 * len(lamps):
            assert not events, f"raised after {i + 1} of {len(lamps)} lamps"
    assert len(events) == 1 and events[0].subject == cid and events[0].level == "red"


def test_offline_by_watermark_and_processor_recovery(engine):
    store: dict[str, dict] = {}

    class Store:
        def get(self, key: str) -> dict | None:
            return store.get(key)

    def proc() -> TelemetryProcessor:
        return TelemetryProcessor(engine, CITY.registry, Store(), lateness_ms=5000, scan_every_ms=10_000,
                                  checkpoint_every_ms=30_000)

    gauges = [d for d in CITY.registry if d.kind == "water_gauge"][:2]
    quiet, busy = gauges
    p = proc()
    res = p.process(0, [Reading(quiet.id, NIGHT, {"water_level_cm": 10.0})])
    store.update(res.writes)
    for k in range(1, 3):  # up to 80 s: the watermark (75 s) stays under the 90 s deadline
        res = p.process(0, [Reading(busy.id, NIGHT + k * 40_000, {"water_level_cm": 10.0})])
        store.update(res.writes)
    assert all(e.subject != quiet.id for e in res.events)
    # a new processor (a restarted worker) recovers presence from the checkpoint and still detects it
    p2 = proc()
    res = p2.process(0, [Reading(busy.id, NIGHT + 200_000, {"water_level_cm": 10.0})])
    [off] = [e for e in res.events if e.subject == quiet.id]
    assert off.type == "device_offline" and off.start_ts == NIGHT + 90_000


def test_rule_config_errors_name_the_problem():
    with pytest.raises(RuleConfigError, match="unknown rule type"):
        build_rule({"type": "nope", "kinds": ["manhole"]}, "rules[0]")
    with pytest.raises(RuleConfigError, match="level"):
        build_rule({"type": "threshold", "kinds": ["manhole"], "field": "x", "above": 1, "level": "purple"}, "r")
    with pytest.raises(RuleConfigError, match="exactly one"):
        build_rule({"type": "threshold", "kinds": ["manhole"], "field": "x"}, "r")
    with pytest.raises(RuleConfigError, match="kinds"):
        build_rule({"type": "threshold", "field": "x", "above": 1}, "r")


def test_partitions_checkpoint_presence_at_different_moments(engine):
    """A worker's partitions share event time; their presence checkpoints must not all fall in one batch
    (100k devices: ~3.3 MB of changelog at once, and the next events queued behind it)."""
    proc = TelemetryProcessor(engine, CITY.registry, {}, lateness_ms=5000, scan_every_ms=10_000,
                              checkpoint_every_ms=30_000)
    gauges = [d for d in CITY.registry if d.kind == "water_gauge"][:8]
    moments: dict[int, list[int]] = {p: [] for p in range(8)}
    for step in range(0, 120):  # two minutes of event time, one reading a second on each partition
        ts = NIGHT + step * 1000
        for p, g in enumerate(gauges):
            res = proc.process(p, [Reading(g.id, ts, {"water_level_cm": 10.0})])
            if any(k.startswith("presence:") for k in res.writes):
                moments[p].append(step)
    later = {p: [s for s in steps if s > 0] for p, steps in moments.items()}  # step 0: every partition's first
    assert all(len(steps) >= 3 for steps in later.values()), later  # still one at least every 30 s
    assert all(b - a <= 30 for steps in later.values() for a, b in zip(steps, steps[1:], strict=False)), later
    shared = {s for p in later for s in later[p] if any(s in later[q] for q in later if q != p)}
    assert not shared, f"partitions checkpointed together at {sorted(shared)}: {later}"
