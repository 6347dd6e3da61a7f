"""Telemetry benchmark: MQTT in -> bridge -> Kafka -> Faust rules -> grid events on MQTT.

In one run, on one machine, beside each other:
  * ceiling   raw paho -> Mosquitto -> paho at QoS 1 (messages/s, and readings/s with the same
              gateway-batch payloads the pipeline gets)
  * sustained readings/s end to end (publish as fast as possible, until every partition's marker
              event came out on MQTT)
  * latency   publish -> alert on MQTT, p50/p95/p99, at a fixed 2,000 readings/s, split into stages; the
              probes of the first --settle-seconds after the throughput run also reported on their own
  * memory    worker RSS with every device of a 100k-device city tracked for offline detection

    python -m gridwatch.bench telemetry [--devices 100000] [--readings 300000] [--out FILE]
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.core.procs import Pipeline, cpu_s, late_events, rss_mb, wait_for
from gridwatch.core.settings import STATE_DIR
from gridwatch.devices.citygen import generate
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import build_messages, device_topic
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.mqtt_client import MAX_OUTSTANDING, check_queued
from gridwatch.stack import DEFAULT_ENGINE, ENGINES, EmbeddedStack

BASE_TS = 1_763_600_000_000  # an afternoon in Nov 2025 (UTC+8): daytime, so lamp rules stay quiet


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def client(mqtt_url: str, username: str | None = None, **kw: Any) -> mqtt.Client:
    """A started paho client; ``username``: log in as that device (the broker's publish limit is per login)."""
    host, port = mqtt_url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
    if username is not None:
        c.username_pw_set(username)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, int(port))
    c.loop_start()
    return c


def publish_all(c: mqtt.Client, msgs: list[tuple[str, bytes]], qos: int = 1, *, at: list[float] | None = None,
                stamps: list[float] | None = None) -> float:
    """Publish and wait for every PUBACK, at most MAX_OUTSTANDING awaiting theirs; returns seconds taken.
    ``at``: the wall time (time.time()) to send each message at, for a paced run; ``stamps`` gets the wall
    time each message was handed to paho."""
    t0 = time.perf_counter()
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    for i, (t, p) in enumerate(msgs):
        if len(pending) >= MAX_OUTSTANDING:
            pending.popleft().wait_for_publish(60)
        if at is not None:
            time.sleep(max(0.0, at[i] - time.time()))
        if stamps is not None:
            stamps.append(time.time())
        pending.append(check_queued(c.publish(t, p, qos=qos)))
    for info in pending:
        info.wait_for_publish(60)
    return time.perf_counter() - t0


# -- 1. ceiling -----------------------------------------------------------------------------------
def mqtt_ceiling(mqtt_url: str, msgs: list[tuple[str, bytes]], readings: int) -> dict[str, float]:
    """paho -> Mosquitto -> paho at QoS 1 for the exact messages the pipeline will get."""
    got = threading.Event()
    count = [0]

    def on_message(c: Any, u: Any, m: Any) -> None:
        count[0] += 1
        if count[0] >= len(msgs):
            got.set()

    sub = client(mqtt_url, client_id="bench-ceiling-sub")
    sub.on_message = on_message
    sub.subscribe([("bench/ceiling/#", 1)])
    time.sleep(0.5)
    pub = client(mqtt_url, client_id="bench-ceiling-pub")
    t0 = time.perf_counter()
    publish_all(pub, [("bench/ceiling/" + t, p) for t, p in msgs])
    if not got.wait(120):
        raise RuntimeError(f"ceiling: the subscriber got {count[0]:,} of {len(msgs):,} messages in 120 s")
    dt = time.perf_counter() - t0
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return {"messages_per_s": round(len(msgs) / dt), "readings_per_s": round(readings / dt), "seconds": round(dt, 2)}


def latency_summary(sent: dict[str, float], alerts: AlertClock) -> dict[str, Any]:
    """publish -> alert of the probes in ``sent`` (probe -> wall time published): percentiles in ms."""
    lat = [(at - t) * 1000 for pid, t in sent.items() if (at := alerts.opened(pid)) is not None]
    return {"samples": len(lat), "p50": round(percentile(lat, 50), 1), "p95": round(percentile(lat, 95), 1),
            "p99": round(percentile(lat, 99), 1), "max": round(max(lat), 1) if lat else None,
            "mean": round(statistics.fmean(lat), 1) if lat else None}


class CpuMeter:
    """CPU seconds of named processes (and of this one: the publishing and subscribing paho clients)
    between ``start`` and ``stop``. Its use: where a rate is bound by the machine's cores, the CPU spent
    per reading says so, and which process spends it; the wall-clock rate alone cannot."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {"bench (paho clients)": time.process_time()}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                out[name] = cpu_s(pid)
        return out

    def start(self) -> CpuMeter:
        self.t0 = self._now()
        return self

    def stop(self, readings: int) -> dict[str, Any]:
        """CPU ms per 1,000 readings per process and in all, and the readings/s the machine's cores
        could carry at that cost (``cpu_bound_readings_per_s``)."""
        used = {k: v - self.t0[k] for k, v in self._now().items() if k in self.t0}
        total = sum(used.values())
        per_k = {k: round(v / readings * 1e6, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        return {"cpu_ms_per_1000_readings": per_k, "cpu_ms_per_1000_readings_total": round(total / readings * 1e6, 1),
                "cores": os.cpu_count(), "cpu_bound_readings_per_s": round((os.cpu_count() or 1) * readings / total)
                if total else None}


def stack_pids(stack: EmbeddedStack) -> dict[str, int]:
    """The broker's and Mosquitto's process ids."""
    out = {}
    for name, label in (("kafka", "broker"), ("mqtt", "mosquitto")):
        proc = getattr(stack.procs.get(name), "proc", None)
        if proc is not None:
            out[label] = proc.pid
    return out


# -- helpers over the city ------------------------------------------------------------------------
def reading(dev: Any, ts: int, fault: bool = False) -> dict[str, Any]:
    """A quiet reading of ``dev``; ``fault``: an open manhole cover, a flooded water gauge. Every gauge's
    alarm level is 15-27 cm (citygen), so a dry gauge reads 5 cm: a workload meant to be quiet must not
    raise one yellow event per gauge from its second round on."""
    if dev.kind == "streetlight":
        return {"lamp_on": False, "current_a": 0.0, "voltage_v": 221.0, "lux": 30000.0}
    if dev.kind == "manhole":
        return {"tilt_deg": 1.2, "cover_open": fault, "displacement_cm": 0.0, "water_level_cm": 20.0,
                "battery_pct": 88.0}
    if dev.kind == "water_gauge":
        return {"water_level_cm": 40.0 if fault else 5.0, "battery_pct": 90.0}
    return {"online": True}


class AlertClock:
    """Records when each alert arrives on MQTT (wall time), keyed by (subject, phase)."""

    def __init__(self, mqtt_url: str) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.c = client(mqtt_url, client_id="bench-alerts")
        self.c.on_message = self.on_message
        self.c.subscribe([("gridwatch/alerts/#", 1)])
        time.sleep(0.5)

    def on_message(self, c: Any, u: Any, m: Any) -> None:
        body = json.loads(m.payload)
        self.arrived.setdefault((body["subject"], body["phase"], body["type"]), time.time())

    def opened(self, device_id: str) -> float | None:
        """When the manhole_open "new" alert of ``device_id`` arrived (the benches' probe), or None."""
        return self.arrived.get((device_id, "new", "manhole_open"))

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def produce_times(kafka_url: str, topic: str, keys: Callable[[bytes], Iterable[str]]) -> dict[str, float]:
    """Wall time (Kafka CreateTime: when its producer made the record) of the first record of ``topic``
    each key of ``keys(value)`` shows up in."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def main() -> dict[str, float]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=kafka_url.removeprefix("kafka://"),
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        out: dict[str, float] = {}
        try:
            for _ in range(40):
                got = await c.getmany(timeout_ms=300)
                if not got and out:
                    break
                for recs in got.values():
                    for r in recs:
                        for k in keys(r.value):
                            out.setdefault(k, r.timestamp / 1000)
        finally:
            await c.stop()
        return out

    return asyncio.run(main())


def new_events_of(subjects: set[str]) -> Callable[[bytes], Iterable[str]]:
    """Keys for :func:`produce_times` over the events topic: the subjects of 'new' events."""
    from gridwatch.pipeline.schemas.events import is_control

    def keys(raw: bytes) -> Iterable[str]:
        if is_control(raw):
            return ()
        ev = json.loads(raw)
        return (ev["subject"],) if ev["subject"] in subjects and ev["phase"] == "new" else ()
    return keys


def readings_of(devices: set[str], since_ts: int) -> Callable[[bytes], Iterable[str]]:
    """Keys for :func:`produce_times` over the readings topic: the devices with a reading of event time
    ``since_ts`` or later in the record (the bridge's batch)."""
    from gridwatch.pipeline.schemas.readings import ReadingBatch

    def keys(raw: bytes) -> Iterable[str]:
        return [r.device_id for r in ReadingBatch.decode(raw).readings if r.device_id in devices and r.ts >= since_ts]
    return keys


def rules_only(city: Any, rounds: int = 3) -> dict[str, float]:
    """Decode + rule engine throughput on one core, no Kafka or MQTT: what the worker's Python costs."""
    from gridwatch.agents.partition_state import TelemetryProcessor
    from gridwatch.agents.rules.base import load_rules
    from gridwatch.agents.rules.engine import RuleEngine
    from gridwatch.core.settings import CONFIG_DIR
    from gridwatch.pipeline.schemas.readings import Reading, ReadingBatch

    engine = RuleEngine(load_rules(CONFIG_DIR / "rules.yaml"), city.registry, city.gridmap)
    store: dict[str, dict] = {}
    proc = TelemetryProcessor(engine, city.registry, store, lateness_ms=5000, scan_every_ms=10_000,
                              checkpoint_every_ms=30_000)
    devs = list(city.registry)
    records = [ReadingBatch(0, [Reading(d.id, BASE_TS + k * 60_000, reading(d, 0)) for d in devs[i:i + 250]]).encode()
               for k in range(rounds) for i in range(0, len(devs), 250)]
    n = 0
    t0 = time.perf_counter()
    for raw in records:
        batch = ReadingBatch.decode(raw)
        store.update(proc.process(0, batch.readings).writes)
        n += len(batch.readings)
    dt = time.perf_counter() - t0
    return {"readings": n, "seconds": round(dt, 2), "readings_per_s_one_core": round(n / dt)}


def run(out: Path, devices: int = 100_000, total_readings: int = 300_000, latency_rate: int = 2000,
        latency_s: float = 30.0, split: bool = True, engine: str = "tansu", settle_s: float = 10.0) -> dict[str, Any]:
    city_dir = STATE_DIR / f"bench-city-{devices}"
    if not (city_dir / "devices.csv").exists():
        print(f"generating a {devices:,}-device city in {city_dir} ...", flush=True)
        generate(city_dir, n_devices=devices, seed=11)
    city = load_city(city_dir)
    reg = city.registry
    devs = list(reg)  # every device, cameras included (their heartbeat)
    manholes = [d for d in devs if d.kind == "manhole" and not d.gateway]
    parts = 8
    results: dict[str, Any] = {"devices": len(devs), "city": str(city_dir), "engine": engine}
    results["rules_only"] = rules_only(city)
    print(f"rules only (decode + rule engine, one core, no I/O): {results['rules_only']}", flush=True)

    # workload: every device reports in turn, 1 s of event time apart per round
    rounds = max(1, total_readings // len(devs))
    msgs: list[tuple[str, bytes]] = []
    for k in range(rounds):
        msgs += build_messages((d, BASE_TS + k * 1000, reading(d, 0)) for d in devs)
    n_readings = rounds * len(devs)
    print(f"workload: {n_readings:,} readings of {len(devs):,} devices in {len(msgs):,} MQTT messages "
          f"(gateway batches + single devices)", flush=True)

    logs = STATE_DIR / "bench-logs"
    with EmbeddedStack(engine=engine) as stack:
        meter = CpuMeter({"mosquitto": stack_pids(stack)["mosquitto"]}).start()
        results["ceiling_qos1"] = mqtt_ceiling(stack.mqtt_url, msgs, n_readings)
        results["ceiling_qos1"]["cpu"] = meter.stop(n_readings)
        print(f"ceiling   paho -> mosquitto -> paho QoS 1: {results['ceiling_qos1']}", flush=True)
        pipe = Pipeline(stack.kafka_url, stack.mqtt_url, logs, extra=["--city", str(city_dir)], split=split).start()
        pids = {**stack_pids(stack), "bridge": pipe.bridge.pid,
                **{f"worker {w.argv[w.argv.index('--role') + 1]}" if "--role" in w.argv else "worker": w.pid
                   for w in pipe.workers}}
        alerts = AlertClock(stack.mqtt_url)
        pub = client(stack.mqtt_url, client_id="bench-pub")
        try:
            # -- 2. sustained throughput: then one marker fault per partition -----------------------
            markers = {}
            for d in manholes:
                markers.setdefault(partition_for(d.shard_key, parts), d)
            t0 = time.time()
            meter = CpuMeter(pids).start()
            publish_all(pub, msgs)
            t_pub = time.time() - t0
            end_ts = BASE_TS + rounds * 1000
            publish_all(pub, [(device_topic(d.id), json.dumps({"ts": end_ts, "values": reading(d, 0, True)}).encode())
                              for d in markers.values()])
            wait_for(lambda: all(alerts.opened(d.id) for d in markers.values()), 600,
                     "marker events from every partition")
            t_end = max(alerts.opened(d.id) or 0.0 for d in markers.values())
            cpu = meter.stop(n_readings)
            e2e = n_readings / (t_end - t0)
            results["sustained"] = {"readings": n_readings, "seconds": round(t_end - t0, 2),
                                    "readings_per_s": round(e2e), "publish_seconds": round(t_pub, 2), "cpu": cpu}
            print(f"sustained end to end: {results['sustained']}", flush=True)
            cur, peak = rss_mb(pipe.worker.pid)
            bcur, bpeak = rss_mb(pipe.bridge.pid)
            results["rss_mb"] = {"worker": round(cur), "worker_peak": round(peak), "bridge": round(bcur),
                                 "bridge_peak": round(bpeak), "devices_tracked": len(devs)}
            print(f"memory: {results['rss_mb']}", flush=True)

            # -- 3. latency at a fixed rate -----------------------------------------------------------
            # Probes of the first ``settle_s`` are also reported on their own (and every probe together):
            # these seconds were slower (max per second 140-245 ms against 45-96 ms later) while each table
            # changelog partition's first record held the worker's fetches back 100 ms, until
            # gridwatch.compat.install_faust_changelog_pause_fix (docs/benchmarks.md). A start-up effect
            # shows as a gap between the two rows.
            tick = 0.05
            per_tick = int(latency_rate * tick)
            probes = [d for d in manholes if d.id not in {m.id for m in markers.values()}]
            ticks = int((settle_s + latency_s) / tick)
            probe_ids = {d.id for d in probes[:ticks]}
            background = [d for d in devs if d.id not in probe_ids]  # a probe's own closed reading never races it
            sent: dict[str, float] = {}
            t_steady = time.time() + settle_s
            cursor = 0
            ts = end_ts + 1000
            t_next = time.time()
            for i in range(ticks):
                batch = [(d, ts, reading(d, 0)) for d in (background[(cursor + j) % len(background)]
                                                          for j in range(per_tick - 1))]
                cursor += per_tick - 1
                probe = probes[i % len(probes)]
                for topic, payload in build_messages(batch):
                    pub.publish(topic, payload, qos=1)
                sent[probe.id] = time.time()
                pub.publish(device_topic(probe.id), json.dumps({"ts": ts, "values": reading(probe, 0, i // len(probes) % 2 == 0)}).encode(), qos=1)
                ts += int(tick * 1000)  # event time at the pace of real time
                t_next += tick
                time.sleep(max(0.0, t_next - time.time()))
            def missing() -> list[str]:
                return sorted(pid for pid in sent if alerts.opened(pid) is None)

            deadline = time.time() + 30  # every probe must arrive; a late one still counts (its p99 shows it)
            while missing() and time.time() < deadline:
                time.sleep(0.2)
            lost = missing()
            steady = {pid: t for pid, t in sent.items() if t >= t_steady}
            settling = {pid: t for pid, t in sent.items() if t < t_steady}
            results["latency_ms"] = {"rate_readings_per_s": latency_rate, "expected": len(steady),
                                     **latency_summary(steady, alerts), "lost": lost}
            print(f"latency publish -> alert at {latency_rate}/s: {results['latency_ms']}", flush=True)
            results["latency_after_burst_ms"] = {"first_seconds": settle_s, "expected": len(settling),
                                                 **latency_summary(settling, alerts)}
            print(f"  the first {settle_s:g} s after the throughput run: {results['latency_after_burst_ms']}",
                  flush=True)
            results["latency_all_ms"] = {"expected": len(sent), **latency_summary(sent, alerts)}
            print(f"  every probe, the first {settle_s:g} s included: {results['latency_all_ms']}", flush=True)
            # where the time goes: Kafka record timestamps of the events (set when the worker produced)
            produced = produce_times(stack.kafka_url, pipe.topic("events"), new_events_of(set(steady)))
            bridged = produce_times(stack.kafka_url, pipe.topic("readings"), readings_of(set(steady), end_ts + 1000))
            arrived = {k: at for k in steady if (at := alerts.opened(k)) is not None}
            stages = (("publish_to_reading_in_kafka (MQTT, bridge)", steady, bridged),
                      ("reading_in_kafka_to_event_produced (telemetry agent)", bridged, produced),
                      ("publish_to_event_produced", steady, produced),
                      ("event_produced_to_mqtt_alert (alerts agent, MQTT)", produced, arrived))
            results["latency_breakdown_ms"] = {}
            for name, a, b in stages:
                xs = [(b[k] - a[k]) * 1000 for k in a if k in b]
                results["latency_breakdown_ms"][name] = {q: round(percentile(xs, int(q[1:])), 1)
                                                         for q in ("p50", "p95", "p99")}
            print(f"breakdown: {results['latency_breakdown_ms']}", flush=True)
            cur, peak = rss_mb(pipe.worker.pid)
            results["rss_mb"].update({"worker_after_latency": round(cur), "worker_peak_after": round(peak)})
        finally:
            pub.disconnect()
            pub.loop_stop()
            alerts.close()
            pipe.stop()
    # grid events the incident worker's event-time merge applied late (out of order), over the whole run
    results["late_grid_events"] = late_events(pipe.incident_worker.log())
    ratio = results["sustained"]["readings_per_s"] / results["ceiling_qos1"]["readings_per_s"]
    results["sustained_vs_ceiling"] = round(ratio, 3)
    results["targets"] = {"sustained_vs_ceiling": 0.9, "p99_ms_every_probe_at_2000": 100, "worker_rss_mb_100k": 500}
    every = results.get("latency_all_ms", {})
    print(f"targets: sustained ÷ ceiling {ratio:.2f} (≥ 0.9); every probe's alert p99 {every.get('p99')} ms, "
          f"{every.get('samples')} of {every.get('expected')} probes (≤ 100 ms, every one); worker RSS "
          f"{results['rss_mb']['worker_peak_after']} MB (≤ 500)", flush=True)
    write_results(out, results)
    print(f"wrote {out}", flush=True)
    lost = results.get("latency_ms", {}).get("lost")
    if lost:
        raise SystemExit(f"FAILED: {len(lost)} of {results['latency_ms']['expected']} probes never raised their "
                         f"alert within 30 s of the last publish: {', '.join(lost[:10])} (see the dead-letter "
                         f"topic and the worker log under {logs})")
    return results


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("telemetry", __doc__)
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--readings", type=int, default=300_000)
    p.add_argument("--rate", type=int, default=2000, help="fixed rate for the latency run (readings/s)")
    p.add_argument("--latency-seconds", type=float, default=30.0,
                   help="how long the probes of the latency row run at the fixed rate, after the settling")
    p.add_argument("--settle-seconds", type=float, default=10.0,
                   help="probes of this long right after the throughput run are reported on their own "
                        "(latency_after_burst_ms), not in the latency row")
    p.add_argument("--engine", choices=ENGINES, default=os.environ.get("GRIDWATCH_STACK_ENGINE", DEFAULT_ENGINE),
                   help="the embedded stack's Kafka broker: tansu (in memory) or kafka (Apache Kafka, one KRaft node)")
    p.add_argument("--shared", action="store_true",
                   help="one worker runs every agent (default: the two workers of `gridwatch worker --role`)")
    a = p.parse_args(argv)
    run(a.out, a.devices, a.readings, a.rate, a.latency_seconds, split=not a.shared, engine=a.engine,
        settle_s=a.settle_seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
