"""Soak: steady simulated load for a bounded time, watching memory, consumer lag and latency drift.

    python -m gridwatch.bench soak [--minutes 10] [--rate 2000]

Drives the real pipeline (embedded stack, bridge, worker) with the fleet simulator's payloads at a fixed
rate, sends one fault probe per second and measures publish -> alert latency for each, and samples
worker/bridge RSS and the worker's consumer lag on the readings topic every few seconds. Only loopback
traffic, bounded in time; it stops by itself. Prints its figures and writes bench/results/soak.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.telemetry import AlertClock, client, percentile, reading
from gridwatch.compat import true_highwaters
from gridwatch.core.procs import Pipeline, rss_mb
from gridwatch.core.settings import STATE_DIR
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import build_messages, device_topic
from gridwatch.stack import EmbeddedStack


def consumer_lag(kafka_url: str, group: str, topic: str, partitions: int = 8) -> int:
    """Records in `topic` not yet committed by the Faust worker's consumer group."""

    async def main() -> int:
        boot = kafka_url.removeprefix("kafka://")
        c = AIOKafkaConsumer(bootstrap_servers=boot, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            ends = await true_highwaters(boot, await c.end_offsets(tps))
            lag = 0
            for tp in tps:
                committed = await c.committed(tp) or 0
                lag += max(0, ends[tp] - committed)
            return lag
        finally:
            await c.stop()

    return asyncio.run(main())


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return 0.0
    xs = [t / 60 for t, _ in samples]
    ys = [v for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def run(out: Path | None, seconds: float = 600, rate: int = 2000, sample_every: float = 5.0) -> dict[str, Any]:
    city = load_city()
    devs = list(city.registry)
    probes = [d for d in devs if d.kind == "manhole" and not d.gateway]
    res: dict[str, Any] = {"seconds": seconds, "rate_readings_per_s": rate}
    with EmbeddedStack() as stack:
        pipe = Pipeline(stack.kafka_url, stack.mqtt_url, STATE_DIR / "bench-logs").start()
        alerts = AlertClock(stack.mqtt_url)
        pub = client(stack.mqtt_url, client_id="soak-pub")
        samples: list[dict[str, float]] = []
        sent: dict[str, float] = {}
        try:
            t0 = time.time()
            ts = int(t0 * 1000) - 3_600_000  # an hour ago: inside the bridge's clock-skew window
            tick, cursor, k = 0.1, 0, 0
            next_sample = t0
            next_probe = t0
            t_next = t0
            while time.time() - t0 < seconds:
                n = int(rate * tick)
                batch = [(devs[(cursor + j) % len(devs)], ts, None) for j in range(n)]
                cursor += n
                for topic, payload in build_messages((d, ts, reading(d, ts)) for d, _, _ in batch):
                    pub.publish(topic, payload, qos=1)
                now = time.time()
                if now >= next_probe:  # one fault probe a second, alternating open / closed per device
                    probe = probes[k % len(probes)]
                    sent[f"{probe.id}:{k // len(probes)}"] = now
                    fault = (k // len(probes)) % 2 == 0
                    for extra in (0,) if fault else (0, 1):  # clearing takes two readings (clear_after: 2)
                        pub.publish(device_topic(probe.id),
                                    json.dumps({"ts": ts + extra, "values": reading(probe, ts, fault)}), qos=1)
                    k += 1
                    next_probe += 1.0
                if now >= next_sample:
                    w, _ = rss_mb(pipe.worker.pid)
                    b, _ = rss_mb(pipe.bridge.pid)
                    lag = consumer_lag(stack.kafka_url, f"gridwatch-{pipe.prefix}", pipe.topic("readings"))
                    samples.append({"t": round(now - t0, 1), "worker_rss_mb": round(w, 1), "bridge_rss_mb": round(b, 1),
                                    "lag_records": lag})
                    print(f"t={now - t0:6.0f}s worker {w:6.0f} MB bridge {b:6.0f} MB lag {lag:5d} records", flush=True)
                    next_sample += sample_every
                ts += int(tick * 1000)
                t_next += tick
                time.sleep(max(0.0, t_next - time.time()))
            time.sleep(5)
        finally:
            pub.disconnect()
            pub.loop_stop()
            alerts.close()
            pipe.stop()
    # latency per probe (only the "new" phases: the fault probes of even rounds)
    lat = []
    for key, t in sent.items():
        dev_id, rnd = key.rsplit(":", 1)
        if int(rnd) % 2 == 0 and (at := alerts.opened(dev_id)) is not None:
            lat.append((t, (at - t) * 1000))
    lat.sort()
    expected = sum(1 for key in sent if int(key.rsplit(":", 1)[1]) % 2 == 0)
    third = max(1, len(lat) // 3)
    first, last = [x for _, x in lat[:third]], [x for _, x in lat[-third:]]
    res.update({
        "probes_expected": expected, "probes_alerted": len(lat), "lost": expected - len(lat),
        "latency_ms": {"p50": round(percentile([x for _, x in lat], 50), 1), "p99": round(percentile([x for _, x in lat], 99), 1),
                       "p50_first_third": round(percentile(first, 50), 1), "p50_last_third": round(percentile(last, 50), 1)},
        "worker_rss_mb": {"first": samples[0]["worker_rss_mb"] if samples else None,
                          "last": samples[-1]["worker_rss_mb"] if samples else None,
                          "slope_mb_per_min": round(slope_per_min([(s["t"], s["worker_rss_mb"]) for s in samples[len(samples) // 3:]]), 2)},
        "lag_records": {"max": max((s["lag_records"] for s in samples), default=0),
                        "last": samples[-1]["lag_records"] if samples else None},
        "samples": samples,
    })
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2), flush=True)
    write_results(out, res)
    return res


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("soak", __doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=2000)
    a = p.parse_args(argv)
    run(a.out, a.minutes * 60, a.rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
