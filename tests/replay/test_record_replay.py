"""Record a live span through real Mosquitto, replay it at 1x and as fast as possible into fresh
namespaces, and get the live run's grid events back, id for id; a rule change shows up in --compare;
a truncated or corrupt recording gives a clear error and the intact part is replayed.

Everything is real: Mosquitto and the embedded Kafka broker of the session, the live bridge and worker,
`gridwatch record` and `gridwatch replay` as an operator runs them (sub-processes), each replay with its
own worker.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gridwatch.core.procs import Proc
from gridwatch.core.settings import CONFIG_DIR
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import Fleet, Publisher
from gridwatch.pipeline.recordreplay.compare import (
    compare,
    high_watermarks,
    read_events,
    read_events_file,
    read_topic_all,
)
from gridwatch.pipeline.recordreplay.recording import scan
from gridwatch.pipeline.recordreplay.replay import wait_processed
from gridwatch.pipeline.schemas.events import is_control
from tests.harness import ARTIFACTS, Pipeline
from tests.replay.runs import incident_keys, key_set, late_events, settings_for

pytestmark = pytest.mark.slow

CITY = load_city()
NIGHT_S = 1_763_647_200  # 22:00 at the sample city (Asia/Shanghai): lamps must be lit
SPEED = 20.0  # simulated seconds per real second
DRIVE_S = 20.0  # real seconds of recorded traffic -> 400 s of event time



def make_fleet() -> Fleet:
    """300 devices of the sample city with one fault of every family, all inside the recorded span."""
    fleet = Fleet(CITY.registry, seed=5, limit=300)
    manholes = [d for d in fleet.devices if d.kind == "manhole"]
    lamps = [d for d in fleet.devices if d.kind == "streetlight"]
    gauges = [d for d in fleet.devices if d.kind == "water_gauge"]
    cams = [d for d in fleet.devices if d.kind == "camera"]
    in_fleet = Counter(d.circuit for d in lamps if d.circuit)
    circuits = sorted(c for c, n in in_fleet.items() if n == len(CITY.registry.circuit(c)))  # whole circuits
    t = NIGHT_S
    fleet.inject("cover_open", manholes[0].id, t + 40, 120)
    fleet.inject("cover_tilt", manholes[1].id, t + 20, 150, tilt_deg=20.0)
    fleet.inject("cover_tilt", manholes[2].id, t + 30, 200, tilt_deg=40.0)
    fleet.inject("cover_displaced", manholes[3].id, t + 60, 200, displacement_cm=15.0)
    fleet.inject("water_rising", gauges[0].id, t + 10, 300, peak_cm=400.0, ramp_s=60.0)
    fleet.inject("battery_low", gauges[1].id, t, 400, battery_pct=4.0)
    fleet.inject("lamp_out", next(d.id for d in lamps if d.circuit != circuits[1]), t + 30, 180)
    fleet.inject("circuit_dark", circuits[1], t + 100, 150)
    fleet.inject("offline", manholes[5].id, t + 50, 230)
    fleet.inject("offline", cams[0].id, t + 60, 150)
    return fleet


BAD = [  # malformed input: the live bridge dead-letters it, and so must every replay
    ("v1/devices/3301020101000003/telemetry", b"{not json"),
    ("v1/devices/NO-SUCH-DEVICE/telemetry", b'{"ts": 1763647260000, "values": {"tilt_deg": 1}}'),
    ("v1/gateway/GW-NOPE/telemetry", b'{"x": [{"ts": 1763647260000, "values": {"tilt_deg": 1}}]}'),
    ("v1/devices/3301020101000003/telemetry", b"\xff\xfe not utf-8"),
]


def publish_bad(mqtt_url: str) -> None:
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    c.connect(host, int(port))
    c.loop_start()
    for topic, payload in BAD:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def gridwatch(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gridwatch", *argv], capture_output=True, text=True,
                          timeout=timeout)


def spawn(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gridwatch", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)




def created_latency_ms(stack: Any, prefix: str) -> list[float]:
    """Per incident created by a grid event: Kafka CreateTime of the incident change minus that of the
    event (what the event-time merge costs in latency; printed, never asserted)."""
    import json

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read(topic: str) -> list[tuple[int, bytes]]:
        c = AIOKafkaConsumer(bootstrap_servers=stack.kafka_url.removeprefix("kafka://"), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            await c.topics()
            tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            out, idle = [], 0
            while idle < 3:
                got = await c.getmany(timeout_ms=300)
                idle = 0 if got else idle + 1
                out += [(r.timestamp, r.value) for recs in got.values() for r in recs]
            return out
        finally:
            await c.stop()

    sent: dict[str, int] = {}
    for ts, raw in asyncio.run(read(f"{prefix}.events")):
        if not is_control(raw):
            e = json.loads(raw)
            sent.setdefault(e["id"], ts)
    return sorted(float(ts - sent[d["source_id"]]) for ts, raw in asyncio.run(read(f"{prefix}.incidents"))
                  if (d := json.loads(raw))["change"] == "created" and d["source_id"] in sent)


def dead_reasons(stack: Any, prefix: str) -> Counter:
    import json

    recs = asyncio.run(read_topic_all(settings_for(stack, prefix), f"{prefix}.deadletter"))
    return Counter(json.loads(r)["reason"] for r in recs)


@pytest.fixture(scope="module")
def live(stack, tmp_path_factory) -> dict[str, Any]:
    """A live run: bridge + worker, a recorder, the simulated city with faults for DRIVE_S seconds."""
    work = tmp_path_factory.mktemp("rec")
    path = work / "live.mcap"
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url).start()
    rec = Proc(f"{pipe.prefix}-recorder", ["record", str(path), "--mqtt", stack.mqtt_url, "--kafka", stack.kafka_url],
               ARTIFACTS)
    try:
        rec.start()
        rec.wait_log("recorder subscribed", 30)
        fleet = make_fleet()
        host, port = stack.mqtt_url.removeprefix("mqtt://").split(":")
        pub = Publisher(fleet, qos=1)
        bad = threading.Timer(DRIVE_S / 2, publish_bad, args=(stack.mqtt_url,))
        bad.start()
        stats = pub.run(host, int(port), start_ts=NIGHT_S, speed=SPEED, duration_s=DRIVE_S * SPEED)
        bad.join()
        assert stats.acked == stats.messages
        time.sleep(1.0)
        assert rec.stop(signal.SIGINT) == 0, rec.log()[-2000:]  # Ctrl-C: a clean, complete file
        s = settings_for(stack, pipe.prefix)
        hw = asyncio.run(high_watermarks(s, s.topic("readings")))
        assert asyncio.run(wait_processed(s, hw, 120)), "live worker did not finish"
        events = asyncio.run(read_events(s, pipe.prefix))
        yield {"path": path, "work": work, "prefix": pipe.prefix, "events": events, "messages": stats.messages,
               "readings": stats.readings, "dead": dead_reasons(stack, pipe.prefix)}
    finally:
        rec.stop()
        pipe.stop()


def test_recording_is_complete_and_holds_every_message(live):
    rep = scan(live["path"])
    assert rep.complete and rep.intact, rep.problems
    assert rep.messages == live["messages"] + len(BAD)
    assert rep.metadata["gridwatch.recording"]["filters"] == "v1/#"
    assert rep.metadata["gridwatch.recording.end"]["messages"] == str(rep.messages)
    assert (rep.last_ns - rep.first_ns) / 1e9 > DRIVE_S * 0.8


def test_live_run_raised_every_fault_family(live):
    types = Counter((e["type"], e["phase"]) for e in live["events"])
    for t in ("manhole_open", "manhole_tilted", "manhole_displaced", "water_over_level", "battery_low",
              "lamp_out_night", "circuit_dark", "device_offline"):
        assert types[(t, "new")] >= 1, (t, types)
    assert types[("device_offline", "end")] >= 1  # back online inside the span
    assert live["dead"] == Counter({"malformed_json": 2, "unknown_device": 2}), live["dead"]


def test_replay_at_1x_and_max_speed_gives_the_live_events(live, stack):
    k = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url]
    ns1, ns2 = f"{live['prefix']}-r1x", f"{live['prefix']}-rmax"
    out1, out2 = live["work"] / "r1x.jsonl", live["work"] / "rmax.jsonl"
    p1 = spawn("replay", str(live["path"]), "--prefix", ns1, "--speed", "1", "--events-out", str(out1), *k)
    p2 = spawn("replay", str(live["path"]), "--prefix", ns2, "--max", "--events-out", str(out2), *k)
    o2, e2 = p2.communicate(timeout=240)
    o1, e1 = p1.communicate(timeout=240)
    assert p2.returncode == 0, o2 + e2
    assert p1.returncode == 0, o1 + e1
    live_set = key_set(live["events"])
    for out in (out1, out2):
        replayed = read_events_file(out)
        assert key_set(replayed) == live_set
        assert compare(live["events"], replayed).identical
    # the 1x replay took the recorded time; the max one much less
    import re

    fed = {name: re.search(r"fed .* in ([\d.,]+) s: ([\d.,]+)x real time", err) for name, err in (("1x", e1), ("max", e2))}
    assert fed["1x"] and fed["max"], (e1, e2)
    assert 0.9 < float(fed["1x"].group(2)) < 1.1, e1
    assert float(fed["max"].group(2)) > 3, e2
    assert f"{live['readings']:,}" in o1 and f"{live['readings']:,}" in o2
    live["replays"] = [ns1, ns2]
    # dead letters are reproduced too
    assert dead_reasons(stack, ns1) == live["dead"] == dead_reasons(stack, ns2)
    # and the CLI comparison of the two namespaces says so
    cmp = gridwatch("replay", "--compare", ns1, ns2, *k)
    assert cmp.returncode == 0 and "identical" in cmp.stdout, cmp.stdout + cmp.stderr
    cmp = gridwatch("replay", "--compare", live["prefix"], str(out2), *k)
    assert cmp.returncode == 0 and "identical" in cmp.stdout, cmp.stdout + cmp.stderr


def test_incidents_of_the_replays_match_the_live_run(live, stack):
    """Events of one grid come from several readings partitions, interleaved differently on every run;
    the incident agent's event-time merge (agents/event_order.py) makes the incidents identical anyway."""
    if "replays" not in live:
        pytest.skip("needs the replays of test_replay_at_1x_and_max_speed_gives_the_live_events")
    live_inc = incident_keys(stack, live["prefix"])
    assert live_inc, "the live run opened no incident"
    for ns in live["replays"]:
        got = incident_keys(stack, ns)
        assert got == live_inc, (ns, "late events live/replay:", late_events(stack, live["prefix"]),
                                 late_events(stack, ns), sorted(live_inc - got)[:8], sorted(got - live_inc)[:8])
    print(f"\nevents applied late (out of event-time order): live {late_events(stack, live['prefix'])}, "
          + ", ".join(f"{ns} {late_events(stack, ns)}" for ns in live["replays"]))
    lat = created_latency_ms(stack, live["prefix"])
    if lat:
        print(f"\nlive run: grid event produced -> its incident created, {len(lat)} incidents: "
              f"p50 {lat[len(lat) // 2]:.0f} ms, p90 {lat[int(len(lat) * 0.9)]:.0f} ms, max {lat[-1]:.0f} ms")


def test_compare_shows_what_a_rule_change_does(live, stack, tmp_path):
    rules = (CONFIG_DIR / "rules.yaml").read_text()
    old = "    field: tilt_deg\n    above: 10 "
    assert old in rules
    (tmp_path / "rules.yaml").write_text(rules.replace(old, "    field: tilt_deg\n    above: 25 "))
    cfg = tmp_path / "tuned.yaml"
    cfg.write_text("worker:\n  rules: rules.yaml\n")
    k = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url]
    ns = f"{live['prefix']}-tuned"
    r = gridwatch("replay", str(live["path"]), "--prefix", ns, "--max", "--config", str(cfg), *k)
    assert r.returncode == 0, r.stdout + r.stderr
    cmp = gridwatch("replay", "--compare", live["prefix"], ns, *k)
    assert cmp.returncode == 1, cmp.stdout + cmp.stderr
    assert "removed (only in A): manhole_tilted 1" in cmp.stdout, cmp.stdout
    tuned = asyncio.run(read_events(settings_for(stack, ns), ns))
    res = compare(live["events"], tuned)
    assert [x["type"] for x in res.removed] == ["manhole_tilted"]
    assert not res.added
    assert {x["id"] for x in live["events"] if x["type"] != "manhole_tilted"} <= {x["id"] for x in tuned}


def test_truncated_recording_replays_the_intact_part(live, stack, tmp_path):
    data = live["path"].read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # as a recorder killed mid-way, or a copy cut short
    out = tmp_path / "cut.jsonl"
    k = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url]
    r = gridwatch("replay", str(cut), "--prefix", f"{live['prefix']}-cut", "--max", "--events-out", str(out), *k)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "recording ends abruptly at byte" in r.stderr and "what was intact was replayed" in r.stderr
    events = read_events_file(out)
    assert events and key_set(events) < key_set(live["events"])  # a prefix of the live run's events


def test_corrupt_chunk_is_skipped_and_the_rest_replayed(live, stack, tmp_path):
    from mcap.reader import make_reader

    with open(live["path"], "rb") as fh:
        chunks = make_reader(fh).get_summary().chunk_indexes
    assert len(chunks) >= 3
    mid = chunks[len(chunks) // 2]
    data = bytearray(live["path"].read_bytes())
    at = mid.chunk_start_offset + mid.chunk_length // 2
    data[at:at + 16] = bytes(b ^ 0x5A for b in data[at:at + 16])
    bad = tmp_path / "corrupt.mcap"
    bad.write_bytes(bytes(data))
    k = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url]
    r = gridwatch("replay", str(bad), "--prefix", f"{live['prefix']}-bad", "--max", "--no-worker", *k)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"damaged chunk at byte {mid.chunk_start_offset}" in r.stderr, r.stderr
    rep = scan(bad)
    assert 0 < rep.messages < live["messages"] + len(BAD)
    assert f"messages        {rep.messages:,}" in r.stdout, r.stdout


def test_recorder_killed_leaves_a_readable_prefix(stack, tmp_path):
    path = tmp_path / "killed.mcap"
    rec = Proc(f"recorder-killed-{uuid.uuid4().hex[:8]}", ["record", str(path), "--mqtt", stack.mqtt_url], ARTIFACTS)
    rec.start()
    rec.wait_log("recorder subscribed", 30)
    host, port = stack.mqtt_url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
    c.connect(host, int(port))
    c.loop_start()
    infos = [c.publish(f"v1/devices/K{i % 7}/telemetry", b'{"ts": 1763647200000, "values": {"x": %d}}' % i, qos=1)
             for i in range(200)]
    for info in infos:
        info.wait_for_publish(10)
    time.sleep(3.0)  # > flush interval: what arrived is on disk
    c.disconnect()
    c.loop_stop()
    rec.kill()
    rep = scan(path)
    assert not rep.complete
    assert rep.messages == 200
    assert any("did not stop cleanly" in p or "ends abruptly" in p for p in rep.problems), rep.problems
