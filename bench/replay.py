"""Replay and time-series sink benchmark.

    python -m gridwatch.bench replay [--devices 10000] [--hours 1] [--out bench/results/replay.json]
    python -m gridwatch.bench replay --sink-only --out /tmp/sink.json    # the sink figures alone
    from gridwatch.bench.replay import run; result = run("bench/results/replay.json")

In one run, on one machine:

* **recording**  an hour of a 10k-device city, synthesised with the simulator's own payload builders
                 (``Publisher.messages_for``: gateway batches + single devices, random faults), written
                 with the recorder's writer and receive times one hour long — no hour of waiting;
* **replay**     ``Replayer`` at max speed into a fresh namespace with a real worker (embedded broker):
                 feed speed-up = recorded seconds / feed seconds, and end-to-end speed-up = recorded
                 seconds / seconds until the worker committed every readings record (target >= 50x);
* **sink**       the raw ``influxdb-client`` write ceiling (pre-built line protocol, async client, as many
                 concurrent requests as the sink uses) beside the sink itself (readings records decoded,
                 points built, batched, written and confirmed) against VictoriaMetrics (InfluxDB v2 write API).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.core.procs import Proc, cpu_s, rss_mb
from gridwatch.core.settings import STATE_DIR, InfluxSettings, load_settings, with_prefix
from gridwatch.devices.citygen import generate
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import Fleet, Publisher
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.outputs.influx import InfluxSink, PointBuilder, Presence
from gridwatch.pipeline.recordreplay.recording import RecordingWriter
from gridwatch.pipeline.recordreplay.replay import Replayer, wait_processed
from gridwatch.pipeline.schemas.readings import ReadingBatch
from gridwatch.stack import EmbeddedStack, free_port, wait_port

START_S = 1_763_636_400  # 2025-11-20 19:00 at UTC+8: dusk inside the hour, so lamp rules work too
RESULTS = Path(__file__).parent / "results"


def synth_recording(path: Path, registry: Any, hours: float, seed: int = 11) -> dict[str, Any]:
    """An hour (or ``hours``) of the whole fleet as the recorder would have written it."""
    fleet = Fleet(registry, seed=seed)
    span = int(hours * 3600)
    fleet.random_faults(6.0, START_S, span)
    pub = Publisher(fleet)
    w = RecordingWriter(path, metadata={"synthetic": "bench/replay.py", "devices": str(len(fleet))})
    t0 = time.perf_counter()
    readings = messages = 0
    for s in range(START_S, START_S + span):
        msgs, n = pub.messages_for(s, s)
        readings += n
        base_ns = s * 1_000_000_000 + 300_000_000  # received 0.3 s into the second, after the readings' ts
        for i, (topic, payload) in enumerate(msgs):
            w.add(topic, payload, base_ns + i * 1000, 1)
        messages += len(msgs)
    w.close()
    return {"seconds": span, "messages": messages, "readings": readings, "file_mb": round(path.stat().st_size / 1e6, 1),
            "synth_s": round(time.perf_counter() - t0, 1)}


def bench_replay(path: Path, city_dir: Path, rec: dict[str, Any], logs: Path) -> dict[str, Any]:
    with EmbeddedStack() as stack:
        ns = f"bench-replay-{int(time.time())}"
        s = with_prefix(load_settings(None, {"kafka.url": stack.kafka_url, "mqtt.url": stack.mqtt_url,
                                             "city.path": str(city_dir)}), ns)
        env = {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on", "GRIDWATCH_INFLUX_ENABLED": "false",
               "GRIDWATCH_MQTT_ALERT_PREFIX": f"replay/{ns}/alerts"}
        worker = Proc(f"{ns}-worker", ["worker", "--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url, "--prefix", ns,
                                       "--city", str(city_dir), "--agents", "telemetry"], logs, env)
        city = load_city(city_dir)
        from gridwatch.pipeline.kafka_io import ensure_topics

        asyncio.run(ensure_topics(s, ("readings", "events", "deadletter")))
        worker.start()
        try:
            worker.wait_log("worker ready", 120)

            async def main() -> tuple[Any, float, float, bool]:
                t0 = time.perf_counter()
                st = await Replayer(s, city.registry, path, speed=None).run()
                t_feed = time.perf_counter() - t0
                ok = await wait_processed(s, st.end_offsets, 900)
                return st, t_feed, time.perf_counter() - t0, ok

            st, t_feed, t_all, ok = asyncio.run(main())
            from gridwatch.pipeline.recordreplay.compare import read_events

            events = asyncio.run(read_events(s, ns))
            cur, peak = rss_mb(worker.pid)
        finally:
            worker.stop()
    return {
        "messages": st.messages, "readings": st.readings, "dead_letters": sum(st.dead_letters.values()),
        "feed_seconds": round(t_feed, 2), "feed_speedup": round(rec["seconds"] / t_feed, 1),
        "feed_readings_per_s": round(st.readings / t_feed),
        "end_to_end_seconds": round(t_all, 2), "end_to_end_speedup": round(rec["seconds"] / t_all, 1),
        "end_to_end_readings_per_s": round(st.readings / t_all), "worker_finished": ok,
        "grid_event_records": len(events), "worker_rss_mb": round(cur), "worker_peak_rss_mb": round(peak),
    }


class _VM:
    def __init__(self) -> None:
        exe = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
        if not os.path.exists(exe):
            raise RuntimeError("victoria-metrics is not installed (./run setup)")
        self.tmp = tempfile.TemporaryDirectory(prefix="gridwatch-vm-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([exe, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.tmp.name}",
                                      "-retentionPeriod=100y", "-loggerLevel=ERROR"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port, 30, self.proc, "victoria-metrics")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.tmp.cleanup()


def bench_sink(city_dir: Path, n_readings: int = 300_000) -> dict[str, Any]:
    """Raw client ceiling and the sink, same server, same concurrency, same (or equivalent) points."""
    city = load_city(city_dir)
    fleet = Fleet(city.registry, seed=3)
    pub = Publisher(fleet)
    parts = 8
    batches: list[bytes] = []
    readings = 0
    s = START_S
    from gridwatch.pipeline.sources.ingest import Routed, Router

    router = Router(city.registry, parts, load_settings().bridge)
    while readings < n_readings:  # the records the sink consumes: ReadingBatch per partition
        msgs, _ = pub.messages_for(s, s + 59)
        routed = Routed()
        for topic, payload in msgs:
            router.add(routed, topic, payload, (s + 60) * 1000)
        for p, rs in routed.by_partition.items():
            for i in range(0, len(rs), 2000):
                batches.append(ReadingBatch(p, rs[i:i + 2000]).encode())
        readings += routed.readings
        s += 60
    cfg = replace(InfluxSettings(enabled=True), batch_size=5000, writers=2, max_pending_points=100_000)
    builder = PointBuilder(city.registry, city.gridmap, "bench")
    lines = builder.readings(r for raw in batches for r in ReadingBatch.decode(raw).readings)
    vm = _VM()
    try:
        cfg = replace(cfg, url=vm.url)

        async def ceiling() -> float:
            from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

            bodies = ["\n".join(lines[i:i + cfg.batch_size]) for i in range(0, len(lines), cfg.batch_size)]
            async with InfluxDBClientAsync(url=vm.url, token="x", org=cfg.org, timeout=30_000) as client:
                api = client.write_api()
                queue = list(bodies)
                t0 = time.perf_counter()

                async def worker() -> None:
                    while queue:
                        body = queue.pop()
                        await api.write(bucket=cfg.bucket, org=cfg.org, record=body, write_precision="ms")

                await asyncio.gather(*(worker() for _ in range(cfg.writers)))
                return time.perf_counter() - t0

        async def sink_run() -> tuple[float, Any, int]:
            b = PointBuilder(city.registry, city.gridmap, "bench-sink")
            pres = Presence(city.registry, b, parts, 60_000, partition_for)
            sink = InfluxSink(cfg)
            await sink.start()
            n = 0
            t0 = time.perf_counter()

            def lines_of(raw: bytes) -> list[str]:  # what the sink agent does per Kafka record
                partition, points, seen = b.batch(raw)
                return points + pres.observe(partition, seen)

            for i in range(0, len(batches), 50):  # like the agent: a take of records, written and confirmed
                n += await sink.write_take(batches[i:i + 50], lines_of)
            dt = time.perf_counter() - t0
            await sink.stop()
            return dt, sink.stats, n

        # CPU seconds of this process and of the server per phase: both share the machine's cores, so on a
        # small machine the ratio is bound by the CPU the two need together, not by either alone
        me, c0, v0 = os.getpid(), cpu_s(os.getpid()), cpu_s(vm.proc.pid)
        t_raw = asyncio.run(ceiling())
        c1, v1 = cpu_s(me), cpu_s(vm.proc.pid)
        t_sink, stats, n_points = asyncio.run(sink_run())
        c2, v2 = cpu_s(me), cpu_s(vm.proc.pid)
    finally:
        vm.close()
    return {
        "server": "VictoriaMetrics (InfluxDB v2 write API), loopback", "batch_size": cfg.batch_size,
        "concurrent_writes": cfg.writers,
        "raw_client_points": len(lines), "raw_client_points_per_s": round(len(lines) / t_raw),
        "sink_points": n_points, "sink_points_per_s": round(n_points / t_sink),
        "sink_readings_per_s": round(readings / t_sink), "sink_stats": stats.as_dict(),
        "sink_vs_raw": round((n_points / t_sink) / (len(lines) / t_raw), 2),
        "cpu_s": {"raw_client": round(c1 - c0, 2), "raw_server": round(v1 - v0, 2), "raw_wall": round(t_raw, 2),
                  "sink": round(c2 - c1, 2), "sink_server": round(v2 - v1, 2), "sink_wall": round(t_sink, 2)},
    }


def run(out_json: str | Path = RESULTS / "replay.json", devices: int = 10_000, hours: float = 1.0,
        sink_readings: int = 300_000, sink_only: bool = False) -> dict[str, Any]:
    out = Path(out_json)
    city_dir = STATE_DIR / f"bench-city-{devices}"
    if not (city_dir / "devices.csv").exists():
        print(f"generating a {devices:,}-device city in {city_dir} ...", flush=True)
        generate(city_dir, n_devices=devices, seed=11)
    city = load_city(city_dir)
    results: dict[str, Any] = {"devices": len(city.registry), "machine": {"cpus": os.cpu_count(),
                                                                          "python": platform.python_version()}}
    work = Path(tempfile.mkdtemp(prefix="gridwatch-bench-replay-"))
    try:
        if sink_only:
            results["sink"] = bench_sink(city_dir, sink_readings)
            print(f"sink: {results['sink']}", flush=True)
            write_results(out, results)
            return results
        path = work / "city-hour.mcap"
        print(f"synthesising {hours:g} h of a {len(city.registry):,}-device city ...", flush=True)
        results["recording"] = synth_recording(path, city.registry, hours)
        print(f"recording: {results['recording']}", flush=True)
        results["replay"] = bench_replay(path, city_dir, results["recording"], STATE_DIR / "bench-logs")
        print(f"replay: {results['replay']}", flush=True)
        results["sink"] = bench_sink(city_dir, sink_readings)
        print(f"sink: {results['sink']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["targets"] = {"replay_speedup": 50}
    write_results(out, results)
    print(f"wrote {out}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("replay", __doc__)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--sink-readings", type=int, default=300_000)
    p.add_argument("--sink-only", action="store_true", help="only the InfluxDB sink against the raw client")
    a = p.parse_args(argv)
    run(a.out, a.devices, a.hours, a.sink_readings, a.sink_only)
    return 0
