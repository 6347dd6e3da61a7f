"""End to end through real Mosquitto, the real bridge, the real embedded Kafka broker and a real Faust
worker: MQTT in -> grid events on the per-grid MQTT alert topic, and the dead-letter topic."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from gridwatch.devices.registry import load_city
from gridwatch.pipeline.kafka_io import partition_for
from tests.harness import MqttPublisher, MqttWatcher, Pipeline, read_topic, wait_for

# 2025-11-20 22:00 in Asia/Shanghai (14:00 UTC): night at the sample city, so lamps should be lit.
NIGHT = 1_763_647_200_000
ALERTS = "gridwatch/alerts/#"
CITY = load_city(os.environ.get("GRIDWATCH_CITY_PATH") or None)
REG = CITY.registry


def devices(kind: str, n: int, *, gateway: bool | None = None, skip: int = 0) -> list:
    out = [d for d in REG if d.kind == kind and (gateway is None or (d.gateway is not None) == gateway)]
    return out[skip:skip + n]


def send(pub: MqttPublisher, device, ts: int, **values) -> None:
    """Publish one reading the way the device would: on its own topic or through its gateway."""
    entry = {"ts": ts, "values": values}
    if device.gateway:
        pub.publish(f"v1/gateway/{device.gateway}/telemetry", {device.id: [entry]})
    else:
        pub.publish(f"v1/devices/{device.id}/telemetry", entry)


def events_for(watcher: MqttWatcher, subject: str, etype: str) -> list[dict]:
    return [b for _, b in watcher.matching(lambda t, b: isinstance(b, dict) and b.get("subject") == subject
                                           and b.get("type") == etype)]


@pytest.fixture(scope="module")
def pipe(stack) -> Iterator[Pipeline]:
    p = Pipeline(stack.kafka_url, stack.mqtt_url).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def watcher(stack) -> Iterator[MqttWatcher]:
    w = MqttWatcher(stack.mqtt_url, [ALERTS])
    yield w
    w.close()


@pytest.fixture(scope="module")
def pub(stack) -> Iterator[MqttPublisher]:
    p = MqttPublisher(stack.mqtt_url)
    yield p
    p.close()


def test_fault_raises_exactly_one_event_on_its_grid_topic_and_clearing_ends_it(pipe, watcher, pub):
    dev = devices("manhole", 1, gateway=False)[0]
    ts = NIGHT
    send(pub, dev, ts, cover_open=True, tilt_deg=70.0, battery_pct=80.0)
    send(pub, dev, ts + 60_000, cover_open=True, tilt_deg=72.0, battery_pct=80.0)  # still open: no new event
    new = wait_for(lambda: [e for e in events_for(watcher, dev.id, "manhole_open") if e["phase"] == "new"], 60,
                   "manhole_open alert")
    time.sleep(2)
    evs = events_for(watcher, dev.id, "manhole_open")
    assert [e["phase"] for e in evs] == ["new"], evs
    ev = new[0]
    assert ev["level"] == "red"
    assert ev["grid_code"] == dev.grid_code
    assert [t["code"] for t in ev["tiers"]][-1] == dev.grid_code
    assert ev["evidence"][-1]["cover_open"] is True
    topic = next(t for t, b in watcher.matching(lambda t, b: isinstance(b, dict) and b.get("id") == ev["id"]))
    chain = [t["code"] for t in ev["tiers"]]
    assert topic == "/".join(["gridwatch/alerts", *chain, "manhole_open"])

    # clear_after: 2 -> the first clear reading is not enough, the second ends the event
    send(pub, dev, ts + 120_000, cover_open=False, tilt_deg=1.0, battery_pct=80.0)
    send(pub, dev, ts + 180_000, cover_open=False, tilt_deg=1.0, battery_pct=80.0)
    end = wait_for(lambda: [e for e in events_for(watcher, dev.id, "manhole_open") if e["phase"] == "end"], 30,
                   "manhole_open end")
    assert end[0]["id"] == ev["id"] and end[0]["end_ts"] == ts + 180_000


def test_redelivered_readings_create_no_duplicate(pipe, watcher, pub):
    dev = devices("manhole", 1, gateway=True)[0]
    ts = NIGHT
    # tilted needs 2 readings (debounce); the same reading delivered twice must count once
    send(pub, dev, ts, tilt_deg=20.0)
    send(pub, dev, ts, tilt_deg=20.0)
    time.sleep(3)
    assert events_for(watcher, dev.id, "manhole_tilted") == []
    send(pub, dev, ts + 60_000, tilt_deg=21.0)
    wait_for(lambda: events_for(watcher, dev.id, "manhole_tilted"), 30, "manhole_tilted")
    # the whole sequence again, as a gateway resending after a reconnect would
    for k in (0, 0, 60_000):
        send(pub, dev, ts + k, tilt_deg=20.0)
    # escalation (tilt > 30 deg) updates the same event instead of raising another
    send(pub, dev, ts + 120_000, tilt_deg=40.0)
    wait_for(lambda: [e for e in events_for(watcher, dev.id, "manhole_tilted") if e["phase"] == "update"], 30,
             "escalation update")
    time.sleep(2)
    evs = events_for(watcher, dev.id, "manhole_tilted")
    assert [e["phase"] for e in evs] == ["new", "update"]
    assert evs[0]["level"] == "yellow" and evs[1]["level"] == "red"
    assert evs[0]["id"] == evs[1]["id"]


def test_malformed_payloads_go_to_the_dead_letter_topic_and_the_bridge_survives(pipe, watcher, pub):
    dev = devices("manhole", 2, gateway=False, skip=1)
    gw_dev = devices("streetlight", 1, gateway=True)[0]
    bad = [
        (f"v1/devices/{dev[0].id}/telemetry", b"{not json", "malformed_json"),
        ("v1/devices/NO-SUCH-DEVICE/telemetry", json.dumps({"ts": NIGHT, "values": {"tilt_deg": 1}}).encode(),
         "unknown_device"),
        (f"v1/devices/{dev[0].id}/telemetry", json.dumps({"ts": NIGHT, "values": {"tilt_deg": 500}}).encode(),
         "bad_value"),
        (f"v1/devices/{dev[0].id}/telemetry", json.dumps({"values": {"tilt_deg": 1}}).encode(), "bad_ts"),
        (f"v1/devices/{dev[0].id}/telemetry", json.dumps({"ts": NIGHT // 1000, "values": {"tilt_deg": 1}}).encode(),
         "bad_ts"),
        (f"v1/devices/{dev[0].id}/telemetry", json.dumps({"ts": NIGHT, "values": {}}).encode(), "bad_value"),
        (f"v1/devices/{dev[0].id}/telemetry", b"x" * 300_000, "oversized"),
        # each of these two once stopped the bridge: a lone surrogate escape in a field name (the batch could
        # not be encoded) and a 400-digit value (math.isfinite raised OverflowError)
        (f"v1/devices/{dev[0].id}/telemetry", b'{"ts": %d, "values": {"\\ud800": 1}}' % NIGHT, "bad_value"),
        (f"v1/devices/{dev[0].id}/telemetry", b'{"ts": %d, "values": {"tilt_deg": 1%s}}' % (NIGHT, b"0" * 400),
         "bad_value"),
        (f"v1/gateway/{gw_dev.gateway}/telemetry", json.dumps({dev[1].id: [{"ts": NIGHT, "values": {"tilt_deg": 1}}]}).encode(),
         "unknown_device"),  # a device that is not this gateway's
    ]
    for topic, payload, _ in bad:
        pub.publish(topic, payload)
    # the bridge still works: a good reading after the bad ones raises its event
    send(pub, dev[1], NIGHT, cover_open=True)
    wait_for(lambda: events_for(watcher, dev[1].id, "manhole_open"), 60, "event after bad input")
    dlq = wait_for(lambda: [r for r in read_topic(pipe.kafka_url, pipe.topic("deadletter"))
                            if r["stage"] == "bridge"] if True else None, 30, "dead letters")
    dlq = wait_for(lambda: (lambda rs: rs if len(rs) >= len(bad) else None)(
        [r for r in read_topic(pipe.kafka_url, pipe.topic("deadletter")) if r["stage"] == "bridge"]), 30,
        "all dead letters")
    reasons = Counter(r["reason"] for r in dlq)
    assert reasons == Counter(reason for _, _, reason in bad), reasons
    assert all(r["detail"] for r in dlq)
    assert any(r["payload"].startswith("{not json") for r in dlq)
    assert pipe.bridge.proc.poll() is None


def test_offline_by_event_time_and_back_online(pipe, watcher, pub):
    quiet = devices("water_gauge", 1)[0]
    part = partition_for(quiet.shard_key, 8)
    # a neighbour in the same Kafka partition keeps event time moving while `quiet` stays silent
    neighbour = next(d for d in REG if d.kind == "water_gauge" and d.id != quiet.id
                     and partition_for(d.shard_key, 8) == part)
    base = NIGHT + 3_600_000
    send(pub, quiet, base, water_level_cm=20.0, battery_pct=90.0)
    for k in range(1, 12):
        send(pub, neighbour, base + k * 30_000, water_level_cm=20.0, battery_pct=90.0)
    ev = wait_for(lambda: events_for(watcher, quiet.id, "device_offline"), 60, "device_offline")[0]
    # 3 report intervals of 30 s after the last reading, by event time
    assert ev["start_ts"] == base + max(3 * quiet.report_interval_s * 1000, 60_000)
    assert not events_for(watcher, neighbour.id, "device_offline")
    send(pub, quiet, base + 400_000, water_level_cm=20.0, battery_pct=90.0)
    wait_for(lambda: [e for e in events_for(watcher, quiet.id, "device_offline") if e["phase"] == "end"], 30,
             "back online")


def test_whole_lamp_circuit_dark_at_night_is_one_circuit_event(pipe, watcher, pub):
    circuits = REG.circuits()
    cid, lamps = next((c, ls) for c, ls in sorted(circuits.items()) if len(ls) >= 5)
    ts = NIGHT + 7_200_000
    for lamp in lamps:
        send(pub, lamp, ts, lamp_on=True, current_a=0.8, voltage_v=221.0)
    for lamp in lamps:
        send(pub, lamp, ts + 60_000, lamp_on=False, current_a=0.0, voltage_v=0.0)
    ev = wait_for(lambda: events_for(watcher, cid, "circuit_dark"), 60, "circuit_dark")
    time.sleep(1)
    assert len(events_for(watcher, cid, "circuit_dark")) == 1
    assert ev[0]["level"] == "red" and ev[0]["phase"] == "new"
