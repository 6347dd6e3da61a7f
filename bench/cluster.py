"""Scale-out benchmark: the same input through 1, 2 and 3 Faust workers on the three-broker Kafka cluster
(gridwatch.cluster: each broker, bridge and worker on its own network-namespace host), beside one worker
on the single-node Tansu and the single-node Apache Kafka stacks, in the same run.

Per set-up:
  * sustained  readings/s end to end: every device of the sample city reports ``--rounds`` times as fast
               as Mosquitto takes it, then one marker fault per partition; until every marker's alert
               came out on MQTT
  * latency    publish -> alert on MQTT p50/p99 at a fixed ``--rate`` readings/s for ``--seconds``

All set-ups use one bridge (the workers are what scales here). The cluster's topics have 4 partitions and
replication 3 (acks=all, min ISR 2); the single nodes 8 partitions and replication 1. Every figure is on
this one machine: the "hosts" share its cores, so the cluster figures show the cost of replication and
the partition spread, not a gain from more hardware. ``--runs`` repeats everything; the JSON has each
run and the median with its spread.

    python -m gridwatch.bench cluster [--runs 3] [--rounds 5] [--rate 500] [--seconds 20] [--out FILE]
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.telemetry import BASE_TS, client, percentile, publish_all, reading
from gridwatch.cluster import PARTITIONS, Cluster, Run
from gridwatch.core.procs import Pipeline, wait_for
from gridwatch.core.settings import STATE_DIR
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import build_messages, device_topic
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.stack import EmbeddedStack

MARKER_WAIT_S = 180  # a set-up that has not alerted on every partition by then is reported as failed


class Alerts:
    """When each (subject, phase) alert first arrived on MQTT under ``prefix``."""

    def __init__(self, mqtt_url: str, prefix: str) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.c = client(mqtt_url, client_id=f"bench-alerts-{uuid.uuid4().hex[:6]}")
        self.c.on_message = self._on_message
        self.c.subscribe([(f"{prefix}/#", 1)])
        time.sleep(0.5)

    def _on_message(self, c: Any, u: Any, m: Any) -> None:
        body = json.loads(m.payload)
        if body.get("type") == "manhole_open":
            self.arrived.setdefault((body["subject"], body["phase"]), time.time())

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def measure(mqtt_url: str, alert_prefix: str, partitions: int, rounds: int, rate: int, seconds: float) -> dict:
    city = load_city()
    devs = list(city.registry)
    manholes = [d for d in devs if d.kind == "manhole" and not d.gateway]
    msgs: list[tuple[str, bytes]] = []
    for k in range(rounds):
        msgs += build_messages((d, BASE_TS + k * 1000, reading(d, 0)) for d in devs)
    n = rounds * len(devs)
    markers: dict[int, Any] = {}
    for d in manholes:
        markers.setdefault(partition_for(d.shard_key, partitions), d)
    alerts = Alerts(mqtt_url, alert_prefix)
    pub = client(mqtt_url, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    out: dict[str, Any] = {}
    try:
        t0 = time.time()
        publish_all(pub, msgs)
        end_ts = BASE_TS + rounds * 1000
        publish_all(pub, [(device_topic(d.id), json.dumps({"ts": end_ts, "values": reading(d, 0, True)}).encode())
                          for d in markers.values()])
        wait_for(lambda: all((d.id, "new") in alerts.arrived for d in markers.values()), MARKER_WAIT_S,
                 "marker alerts")
        t_end = max(alerts.arrived[(d.id, "new")] for d in markers.values())
        out["readings_per_s"] = round(n / (t_end - t0))
        out["readings"] = n
        # latency: probes alternate open/closed covers, one per tick, the rest plain readings
        probes = [d for d in manholes if d.id not in {m.id for m in markers.values()}]
        tick, ts, cursor = 0.05, end_ts + 1000, 0
        per_tick = max(1, int(rate * tick))
        sent: dict[str, float] = {}
        t_next = time.time()
        for i in range(int(seconds / tick)):
            batch = [(devs[(cursor + j) % len(devs)], ts, reading(devs[0], 0)) for j in range(per_tick - 1)]
            cursor += per_tick - 1
            for topic, payload in build_messages((d, t, reading(d, 0)) for d, t, _ in batch):
                pub.publish(topic, payload, qos=1)
            probe = probes[i % len(probes)]
            sent[probe.id] = time.time()
            opened = i // len(probes) % 2 == 0
            pub.publish(device_topic(probe.id), json.dumps({"ts": ts, "values": reading(probe, 0, opened)}).encode(),
                        qos=1)
            ts += int(tick * 1000)
            t_next += tick
            time.sleep(max(0.0, t_next - time.time()))
        time.sleep(3)
        lat = [(alerts.arrived[(p, "new")] - t) * 1000 for p, t in sent.items() if (p, "new") in alerts.arrived]
        out["latency_ms"] = {"rate": rate, "samples": len(lat), "expected": len(sent),
                             "p50": round(percentile(lat, 50), 1), "p99": round(percentile(lat, 99), 1)}
    finally:
        pub.disconnect()
        pub.loop_stop()
        alerts.close()
    return out


@contextmanager
def single(engine: str) -> Iterator[tuple[str, str, int]]:
    with EmbeddedStack(engine=engine) as stack:
        pipe = Pipeline(stack.kafka_url, stack.mqtt_url, STATE_DIR / "bench-logs").start()
        try:
            yield stack.mqtt_url, "gridwatch/alerts", 8
        finally:
            pipe.stop()


def on_cluster(cluster: Cluster, workers: int) -> Callable[[], Any]:
    @contextmanager
    def ctx() -> Iterator[tuple[str, str, int]]:
        run = Run(cluster, f"bench{workers}-{uuid.uuid4().hex[:4]}", bridges=1, workers=workers).start()
        try:
            if workers > 1:  # every worker has its share before the clock starts
                wait_for(lambda: all("worker ready" in p.log() for h, p in run.procs.items() if h.startswith("w")),
                         60, "every worker assigned")
                time.sleep(3)
            yield cluster.mqtt_url, run.alert_prefix, PARTITIONS
        finally:
            run.stop()
    return ctx


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


def guarded(what: str, fn: Callable[[], dict]) -> dict:
    """A set-up that fails is reported as failed (with why), and the others still run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the figure says what went wrong
        print(f"{what} FAILED: {type(e).__name__}: {e}", flush=True)
        return {"error": f"{type(e).__name__}: {e}"[:300]}


def run(out: Path, runs: int, rounds: int, rate: int, seconds: float, setups: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {"runs": [], "rounds": rounds, "rate": rate, "seconds": seconds}
    for r in range(runs):
        one: dict[str, Any] = {}
        for engine in ("tansu", "kafka"):
            if engine not in setups:
                continue

            def single_run(engine: str = engine) -> dict:
                with single(engine) as (mqtt_url, prefix, parts):
                    return measure(mqtt_url, prefix, parts, rounds, rate, seconds)

            one[f"single-{engine}"] = guarded(f"single {engine}", single_run)
            print(f"run {r + 1} single {engine}: {one[f'single-{engine}']}", flush=True)
        if "cluster" not in setups:
            results["runs"].append(one)
            continue
        with Cluster(STATE_DIR / f"bench-cluster-{int(time.time())}") as cluster:
            for workers in (1, 2, 3):
                def cluster_run(workers: int = workers) -> dict:
                    with on_cluster(cluster, workers)() as (mqtt_url, prefix, parts):
                        return measure(mqtt_url, prefix, parts, rounds, rate, seconds)

                one[f"cluster-{workers}w"] = guarded(f"cluster {workers} workers", cluster_run)
                print(f"run {r + 1} cluster {workers} workers: {one[f'cluster-{workers}w']}", flush=True)
        results["runs"].append(one)
    names = list(results["runs"][0])
    ok = [[x[name] for x in results["runs"] if "error" not in x[name]] for name in names]
    results["summary"] = {name: {"runs_ok": len(good), "readings_per_s": spread([g["readings_per_s"] for g in good]),
                                 "p99_ms": spread([g["latency_ms"]["p99"] for g in good])}
                          for name, good in zip(names, ok, strict=True)}
    for name, s in results["summary"].items():
        print(f"{name:14s} readings/s {s['readings_per_s']}  p99 ms {s['p99_ms']}", flush=True)
    write_results(out, results)
    print(f"wrote {out}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("cluster", __doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="readings per device of the sustained part")
    p.add_argument("--rate", type=int, default=500, help="readings/s of the latency part")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the latency part")
    p.add_argument("--setups", default="tansu,kafka,cluster", help="which of tansu,kafka,cluster to run")
    a = p.parse_args(argv)
    run(a.out, a.runs, a.rounds, a.rate, a.seconds, tuple(a.setups.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
