"""Fleet model: solar day/night, realistic values, fault injection; payload builders; due schedule."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from gridwatch.devices.registry import City, Device
from gridwatch.devices.simulator import (
    FAULTS,
    Fleet,
    Publisher,
    build_messages,
    device_payload,
    device_topic,
    gateway_payload,
    gateway_topic,
)
from gridwatch.devices.solar import NIGHT_ELEVATION_DEG, ambient_lux, is_night, solar_elevation_deg

CST = dt.timezone(dt.timedelta(hours=8))


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=CST).timestamp()


NOON = local(2024, 6, 21, 12)
MIDNIGHT = local(2024, 6, 22, 0)
LAT, LON = 30.27, 120.15


# ------------------------------------------------------------------------------------------ solar
def test_solar_elevation_known_values() -> None:
    day = [solar_elevation_deg(LAT, LON, local(2024, 6, 21, 11) + 60 * m) for m in range(120)]
    assert max(day) == pytest.approx(90 - LAT + 23.44, abs=0.3)  # summer solstice noon
    winter = max(solar_elevation_deg(LAT, LON, local(2024, 12, 21, 11) + 60 * m) for m in range(120))
    assert winter == pytest.approx(90 - LAT - 23.44, abs=0.3)
    # Hangzhou sunrise on 21 June is about 04:57 local: sun crosses the horizon between 04:45 and 05:10
    assert solar_elevation_deg(LAT, LON, local(2024, 6, 21, 4, 45)) < -0.8 < solar_elevation_deg(LAT, LON, local(2024, 6, 21, 5, 10))
    assert solar_elevation_deg(LAT, LON, MIDNIGHT) < -30
    assert is_night(LAT, LON, MIDNIGHT) and not is_night(LAT, LON, NOON)
    with pytest.raises(ValueError, match="out of range"):
        solar_elevation_deg(120.15, 30.27, NOON)


def test_ambient_lux_follows_the_sun() -> None:
    lux = ambient_lux(np.array([-30.0, -6.0, 0.0, 10.0, 60.0]))
    assert list(lux) == sorted(lux)
    assert lux[0] < 1 and 1 < lux[1] < 10 and 200 < lux[2] < 600 and lux[4] > 80_000


# ------------------------------------------------------------------------------------------ fleet values
@pytest.fixture()
def fleet(sample_city: City) -> Fleet:
    return Fleet(sample_city.registry, seed=7)


def _by_kind(readings: list[tuple[Device, dict]]) -> dict[str, list[tuple[Device, dict]]]:
    out: dict[str, list[tuple[Device, dict]]] = {}
    for d, v in readings:
        out.setdefault(d.kind, []).append((d, v))
    return out


def test_lamps_are_dark_at_noon_and_lit_at_midnight(fleet: Fleet) -> None:
    noon = _by_kind(fleet.readings(NOON))["streetlight"]
    assert all(not v["lamp_on"] and v["current_a"] == 0.0 and v["lux"] > 10_000 for _, v in noon)
    night = _by_kind(fleet.readings(MIDNIGHT))["streetlight"]
    assert all(v["lamp_on"] and v["lux"] < 5 for _, v in night)
    for d, v in night:
        assert v["current_a"] == pytest.approx(d.attrs["rated_current_a"], rel=0.15)
        assert 0.4 <= v["current_a"] <= 1.3 and 205 < v["voltage_v"] < 235


def test_lamps_switch_at_dusk_and_dawn_by_solar_elevation(fleet: Fleet, sample_city: City) -> None:
    cid, lamps = next(iter(sample_city.registry.circuits().items()))
    lat = float(np.mean([d.lat for d in lamps]))
    lon = float(np.mean([d.lon for d in lamps]))
    for start, want_on in ((local(2024, 6, 21, 19, 0), True), (local(2024, 6, 22, 4, 0), False)):
        states = []
        for m in range(120):
            ts = start + 60 * m
            on = {v["lamp_on"] for _, v in fleet.readings(ts, lamps)}
            assert len(on) == 1, f"lamps of {cid} must switch together"
            states.append(on.pop())
        k = states.index(want_on)  # first minute in the new state
        assert k > 0 and all(s == want_on for s in states[k:])
        before, after = (solar_elevation_deg(lat, lon, start + 60 * (k + d)) for d in (-1, 0))
        assert (after < NIGHT_ELEVATION_DEG <= before) if want_on else (before < NIGHT_ELEVATION_DEG <= after)


def test_values_follow_the_contract(fleet: Fleet) -> None:
    for ts in (NOON, MIDNIGHT, local(2024, 12, 1, 7, 30)):
        by = _by_kind(fleet.readings(ts))
        assert {k: len(v) for k, v in by.items()} == {"streetlight": 1500, "manhole": 1140, "water_gauge": 90, "camera": 270}
        for _, v in by["streetlight"]:
            assert set(v) == {"lamp_on", "current_a", "voltage_v", "lux"} and isinstance(v["lamp_on"], bool)
            assert 0 <= v["lux"] <= 100_000
        for d, v in by["manhole"]:
            assert set(v) == {"tilt_deg", "cover_open", "displacement_cm", "water_level_cm", "battery_pct"}
            assert 0 <= v["tilt_deg"] < 5 and v["cover_open"] is False and 0 <= v["displacement_cm"] < 2
            assert 0 <= v["water_level_cm"] < d.water_alarm_cm * 0.8  # normal traffic raises no alarm
            assert 5 <= v["battery_pct"] <= 100
        for d, v in by["water_gauge"]:
            assert set(v) == {"water_level_cm", "battery_pct"} and 0 <= v["water_level_cm"] < d.water_alarm_cm / 2
        assert all(v == {"online": True} for _, v in by["camera"])
        json.dumps([v for _, v in fleet.readings(ts)], allow_nan=False)  # plain JSON types only


def test_values_are_reproducible_and_noisy(sample_city: City) -> None:
    a = Fleet(sample_city.registry, seed=7).readings(MIDNIGHT)
    b = Fleet(sample_city.registry, seed=7).readings(MIDNIGHT)
    assert a == b
    c = Fleet(sample_city.registry, seed=7).readings(MIDNIGHT + 60)
    diff = sum(x[1] != y[1] for x, y in zip(a, c, strict=True))
    assert diff > 1000  # noise moves between samples
    subset = [d for d, _ in a[::10]]
    assert Fleet(sample_city.registry, seed=7).readings(MIDNIGHT, subset) == a[::10]  # per-device, not per-batch


def test_battery_drains_slowly(fleet: Fleet) -> None:
    now = dict((d.id, v["battery_pct"]) for d, v in fleet.readings(NOON) if "battery_pct" in v)
    later = dict((d.id, v["battery_pct"]) for d, v in fleet.readings(NOON + 30 * 86400) if "battery_pct" in v)
    drops = [now[k] - later[k] for k in now]
    assert sum(0.3 <= x <= 3.0 for x in drops) > 0.95 * len(drops)  # 0.02-0.08 %/day
    assert all(5 <= x <= 100 for x in later.values())


# ------------------------------------------------------------------------------------------ faults
def _one(fleet: Fleet, dev: Device, ts: float) -> dict | None:
    r = fleet.readings(ts, [dev])
    return r[0][1] if r else None


def test_manhole_faults(fleet: Fleet, sample_city: City) -> None:
    m1, m2, m3, m4 = sample_city.registry.by_kind("manhole")[:4]
    t = NOON
    fleet.inject("cover_open", m1.id, t, 600)
    fleet.inject("cover_tilt", m2.id, t, 600)
    fleet.inject("cover_displaced", m3.id, t, 600)
    fleet.inject("battery_low", m4.id, t)
    assert _one(fleet, m1, t - 1)["cover_open"] is False
    v = _one(fleet, m1, t + 1)
    assert v["cover_open"] is True and 60 <= v["tilt_deg"] <= 90
    assert _one(fleet, m1, t + 600)["cover_open"] is False  # ended
    v = _one(fleet, m2, t + 1)
    assert v["cover_open"] is False and 15 <= v["tilt_deg"] <= 25
    assert 10 <= _one(fleet, m3, t + 1)["displacement_cm"] <= 30
    assert _one(fleet, m4, t + 86400)["battery_pct"] < 10
    assert len(fleet.active_faults(t + 1)) == 4 and len(fleet.active_faults(t + 700)) == 1


def test_water_rising_ramps_above_alarm(fleet: Fleet, sample_city: City) -> None:
    mh = sample_city.registry.by_kind("manhole")[10]
    gauge = sample_city.registry.by_kind("water_gauge")[0]
    for dev in (mh, gauge):
        f = fleet.inject("water_rising", dev.id, NOON, 7200)
        levels = [_one(fleet, dev, NOON + s)["water_level_cm"] for s in (0, f.params["ramp_s"] / 2, f.params["ramp_s"] + 1)]
        assert levels[0] < dev.water_alarm_cm and levels == sorted(levels)
        assert levels[2] > dev.water_alarm_cm * 1.15
        assert _one(fleet, dev, NOON + 7200)["water_level_cm"] < dev.water_alarm_cm  # drained
    f = fleet.inject("water_rising", mh.id, NOON, peak_cm=10_000, ramp_s=60)
    assert _one(fleet, mh, NOON + 120)["water_level_cm"] == mh.attrs["depth_cm"]  # overflows at the rim


def test_lamp_faults(fleet: Fleet, sample_city: City) -> None:
    circuits = list(sample_city.registry.circuits().values())
    out_lamp, burn_lamp = circuits[0][0], circuits[0][1]
    fleet.inject("lamp_out", out_lamp.id, MIDNIGHT - 60, 3600)
    fleet.inject("lamp_day_burn", burn_lamp.id, NOON - 60, 3600)
    v = _one(fleet, out_lamp, MIDNIGHT)
    assert v["lamp_on"] is False and v["current_a"] == 0.0 and v["voltage_v"] > 200
    v = _one(fleet, burn_lamp, NOON)
    assert v["lamp_on"] is True and v["current_a"] > 0.4 and v["lux"] > 10_000
    assert all(v["lamp_on"] for _, v in fleet.readings(MIDNIGHT, circuits[0][1:]))  # neighbours still lit
    dark, lit = circuits[1], circuits[2]
    fleet.inject("circuit_dark", dark[0].circuit, MIDNIGHT - 10, 600)
    assert all(not v["lamp_on"] and v["current_a"] == 0.0 and v["voltage_v"] == 0.0 for _, v in fleet.readings(MIDNIGHT, dark))
    assert all(v["lamp_on"] for _, v in fleet.readings(MIDNIGHT, lit))
    assert all(v["lamp_on"] for _, v in fleet.readings(MIDNIGHT + 600, dark))


def test_offline_device_and_gateway(fleet: Fleet, sample_city: City) -> None:
    reg = sample_city.registry
    cam = reg.by_kind("camera")[0]
    gw = reg.gateways()[0]
    fleet.inject("offline", cam.id, NOON, 300)
    fleet.inject("offline", gw, NOON, 300)
    ids = {d.id for d, _ in fleet.readings(NOON + 1)}
    assert cam.id not in ids and not ids & {d.id for d in reg.by_gateway(gw)}
    assert len(ids) == 3000 - 1 - len(reg.by_gateway(gw))
    assert len(fleet.readings(NOON + 300)) == 3000


def test_inject_rejects_bad_targets(fleet: Fleet, sample_city: City) -> None:
    lamp = sample_city.registry.by_kind("streetlight")[0]
    with pytest.raises(ValueError, match="unknown fault 'meltdown'"):
        fleet.inject("meltdown", lamp.id, NOON)
    with pytest.raises(ValueError, match="does not apply to streetlight"):
        fleet.inject("cover_open", lamp.id, NOON)
    with pytest.raises(ValueError, match="does not apply to streetlight .* it targets circuit"):
        fleet.inject("circuit_dark", lamp.id, NOON)
    with pytest.raises(ValueError, match="target 'CIR-nope' is not a circuit of this fleet"):
        fleet.inject("circuit_dark", "CIR-nope", NOON)
    with pytest.raises(ValueError, match="is not a streetlight / manhole / water_gauge / camera / gateway"):
        fleet.inject("offline", "GW-nope", NOON)
    with pytest.raises(ValueError, match="is not a streetlight"):
        fleet.inject("lamp_out", "nope", NOON)
    with pytest.raises(ValueError, match="duration_s must be positive"):
        fleet.inject("lamp_out", lamp.id, NOON, 0)
    fleet.inject("lamp_out", lamp.id, NOON)
    fleet.clear(lamp.id)
    assert fleet.faults() == []


def test_random_faults_are_reproducible(sample_city: City) -> None:
    a = Fleet(sample_city.registry, seed=7).random_faults(30, NOON, 4 * 3600)
    b = Fleet(sample_city.registry, seed=7).random_faults(30, NOON, 4 * 3600)
    assert a == b and [f.params for f in a] == [f.params for f in b]
    assert 80 <= len(a) <= 160  # Poisson(120)
    assert {f.fault for f in a} <= set(FAULTS) and len({f.fault for f in a}) >= 7
    reg = sample_city.registry
    for f in a:
        assert NOON <= f.start_ts < NOON + 4 * 3600 and 300 <= f.end_ts - f.start_ts <= 7200
        if f.fault == "circuit_dark":
            assert reg.circuit(f.target)
        else:
            assert reg.get(f.target) is not None
    only = Fleet(sample_city.registry, seed=7).random_faults(10, NOON, 3600, kinds=["cover_open"])
    assert {f.fault for f in only} == {"cover_open"}


# ------------------------------------------------------------------------------------------ payloads
def test_payload_builders() -> None:
    assert json.loads(device_payload([(1732350000000, {"online": True})])) == {"ts": 1732350000000, "values": {"online": True}}
    assert json.loads(device_payload([(1, {"a": 1.5}), (2, {"a": 2.5})])) == [
        {"ts": 1, "values": {"a": 1.5}}, {"ts": 2, "values": {"a": 2.5}},
    ]
    assert json.loads(gateway_payload({"d1": [(5, {"lamp_on": False})]})) == {"d1": [{"ts": 5, "values": {"lamp_on": False}}]}
    assert device_topic("x") == "v1/devices/x/telemetry" and gateway_topic("GW-1") == "v1/gateway/GW-1/telemetry"
    assert b" " not in device_payload([(1, {"a": 1.5, "b": True})])  # compact


def test_build_messages_groups_by_gateway(fleet: Fleet, sample_city: City) -> None:
    ts_ms = int(MIDNIGHT * 1000)
    rows = [(d, ts_ms, v) for d, v in fleet.readings(MIDNIGHT)]
    msgs = build_messages(rows)
    reg = sample_city.registry
    n_own = sum(1 for d in reg if d.gateway is None)
    assert len(msgs) == len(reg.gateways()) + n_own
    seen = 0
    for topic, payload in msgs:
        doc = json.loads(payload)
        kind, ident = topic.split("/")[1:3]
        if kind == "gateway":
            assert set(doc) == {d.id for d in reg.by_gateway(ident)}
            for entries in doc.values():
                assert isinstance(entries, list) and entries[0]["ts"] == ts_ms and entries[0]["values"]
                seen += len(entries)
        else:
            assert reg.get(ident).gateway is None and doc["ts"] == ts_ms and isinstance(doc["values"], dict)
            seen += 1
    assert seen == 3000


def test_messages_pass_the_bridge_parser(fleet: Fleet, sample_city: City) -> None:
    parser = pytest.importorskip("gridwatch.pipeline.sources.telemetry_parser")
    ts = MIDNIGHT
    rows = [(d, int(ts * 1000), v) for d, v in fleet.readings(ts)]
    total = 0
    for topic, payload in build_messages(rows):
        res = parser.parse_message(topic, payload, sample_city.registry, now_ms=int(ts * 1000) + 1000)
        assert not res.rejections, res.rejections[:3]
        total += len(res.readings)
    assert total == 3000


# ------------------------------------------------------------------------------------------ schedule
def test_every_device_is_due_once_per_interval_spread_evenly(fleet: Fleet) -> None:
    pub = Publisher(fleet)
    t0 = int(NOON)
    counts = np.zeros(len(fleet), dtype=int)
    per_second = []
    for s in range(t0, t0 + 60):
        idx = pub.due(s)
        counts[idx] += 1
        per_second.append(len(idx))
    expected = 60 // fleet.interval
    assert (counts == expected).all()
    assert max(per_second) < 2 * np.mean(per_second)  # no thundering herd
    msgs, n = pub.messages_for(t0, t0 + 59)
    assert n == expected.sum() == 1500 + 1140 + 90 * 2 + 270 * 2
    for _topic, payload in msgs:
        doc = json.loads(payload)
        if _topic.startswith("v1/devices/"):
            entries = doc if isinstance(doc, list) else [doc]  # a 30 s device reports twice in 60 s: a list
        else:
            entries = [e for v in doc.values() for e in v]
        assert all(t0 * 1000 <= e["ts"] < (t0 + 60) * 1000 for e in entries)


def test_fleet_limit_keeps_the_kind_mix(sample_city: City) -> None:
    fleet = Fleet(sample_city.registry, seed=7, limit=300)
    kinds = {k: sum(1 for d in fleet.devices if d.kind == k) for k in ("streetlight", "manhole", "water_gauge", "camera")}
    assert kinds == {"streetlight": 150, "manhole": 114, "water_gauge": 9, "camera": 27}
    assert len(fleet.readings(NOON)) == 300
    lamp_out_of_fleet = sample_city.registry.by_kind("streetlight")[-1]
    with pytest.raises(ValueError, match="is not a streetlight"):
        fleet.inject("lamp_out", lamp_out_of_fleet.id, NOON)
    assert all(fleet.index.get(f.target) is not None or f.fault == "circuit_dark" for f in fleet.random_faults(50, NOON))
    assert len(Fleet(sample_city.registry, limit=10**6)) == 3000
    with pytest.raises(ValueError, match="limit must be >= 1"):
        Fleet(sample_city.registry, limit=0)
