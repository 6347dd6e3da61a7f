"""The telemetry benchmark's own parts: which records its latency stages key on, and its CPU meter."""

from __future__ import annotations

import json

from gridwatch.bench.telemetry import CpuMeter, new_events_of, readings_of
from gridwatch.pipeline.schemas.events import UpstreamMark, Watermarks
from gridwatch.pipeline.schemas.readings import Reading, ReadingBatch


def test_readings_of_keys_the_probes_readings_from_the_latency_phase_only() -> None:
    batch = ReadingBatch(3, [Reading("mh-1", 999, {"open": 0}), Reading("mh-1", 1000, {"open": 1}),
                             Reading("mh-2", 1500, {"open": 1}), Reading("lamp-9", 2000, {"on": 1})])
    keys = readings_of({"mh-1", "mh-2"}, since_ts=1000)
    assert list(keys(batch.encode())) == ["mh-1", "mh-2"]
    assert list(readings_of({"mh-1"}, since_ts=5000)(batch.encode())) == []  # the sustained phase's readings


def test_new_events_of_skips_control_records_other_phases_and_subjects() -> None:
    keys = new_events_of({"mh-1"})
    assert list(keys(Watermarks({"readings:0": UpstreamMark(5)}).encode())) == []
    ev = {"subject": "mh-1", "phase": "new"}
    assert list(keys(json.dumps(ev).encode())) == ["mh-1"]
    assert list(keys(json.dumps({**ev, "phase": "end"}).encode())) == []
    assert list(keys(json.dumps({**ev, "subject": "mh-2"}).encode())) == []


def test_cpu_meter_counts_this_process_and_says_what_the_cores_carry() -> None:
    meter = CpuMeter({}).start()
    sum(i * i for i in range(2_000_000))  # some CPU in this process (the paho clients' place)
    got = meter.stop(readings=1000)
    assert got["cpu_ms_per_1000_readings_total"] > 0
    assert set(got["cpu_ms_per_1000_readings"]) == {"bench (paho clients)"}
    total_s = got["cpu_ms_per_1000_readings_total"] / 1000  # 1,000 readings
    assert abs(got["cpu_bound_readings_per_s"] - got["cores"] * 1000 / total_s) <= 1 + 1e-3 * got["cpu_bound_readings_per_s"]


def test_the_workload_is_quiet_and_a_fault_is_not() -> None:
    """Three rounds of every device's quiet reading raise nothing (a workload that raised one event per
    water gauge from its second round on measured events, not readings); the fault readings raise."""
    from gridwatch.agents.partition_state import TelemetryProcessor
    from gridwatch.agents.rules.base import load_rules
    from gridwatch.agents.rules.engine import RuleEngine
    from gridwatch.bench.telemetry import BASE_TS, reading
    from gridwatch.core.settings import CONFIG_DIR
    from gridwatch.devices.registry import load_city

    city = load_city()
    engine = RuleEngine(load_rules(CONFIG_DIR / "rules.yaml"), city.registry, city.gridmap)
    store: dict[str, dict] = {}
    proc = TelemetryProcessor(engine, city.registry, store, lateness_ms=5000, scan_every_ms=10_000,
                              checkpoint_every_ms=30_000)
    devs = list(city.registry)
    for fault, rounds in ((False, range(3)), (True, range(3, 6))):
        raised: set[tuple[str, str]] = set()
        for k in rounds:
            res = proc.process(0, [Reading(d.id, BASE_TS + k * 1000, reading(d, 0, fault)) for d in devs])
            store.update(res.writes)
            raised |= {(e.type, e.phase) for e in res.events}
        if not fault:
            assert raised == set()
        else:
            assert {("water_over_level", "new"), ("manhole_open", "new")} <= raised
