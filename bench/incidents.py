"""Incident benchmark: fusion throughput beside the telemetry baseline, in one run, on one machine.

  * telemetry  readings/s end to end (MQTT -> bridge -> Kafka -> rules -> events -> MQTT alert),
               the baseline, on the same stack and worker as the rest
  * fusion     grid-event + report inputs/s through the incidents agent (events and reports produced
               straight to Kafka as fast as possible, until a marker incident of every partition came
               out on <prefix>.incidents), and how many incidents and changes that made; the grid events
               carry order headers and watermark control records as the telemetry agent sends them, so
               the agent merges them in event time as in production
  * in-process the same records through IncidentProcessor alone (no Kafka, no Faust; it decodes them and
               merges the events, as the agent does): the ceiling of the fusion logic itself, before the stack
               starts; and again in a fresh process right after the fusion phase, with the stack's processes
               beside it as they were beside the worker (ratio.cpu_baseline_bracketed pools the two)
  * latency    event produced -> its incident "created" produced (Kafka CreateTime), at a fixed rate
  * written    the records and bytes the worker wrote for the fusion phase's inputs, to the incidents topic
               and to its table's changelog (whole incidents in both: what its producing costs scale with)
  * floor      the fusion phase's records moved again by bare aiokafka, the worker's outputs included
               (bench/transport_floor.py): what any aiokafka worker pays per input, and the worker's overhead
               above it (what Faust adds)

    python -m gridwatch.bench incidents [--shared] [--engine tansu|kafka] [--rounds 6] [--rate 200] [--out FILE]
    python -m gridwatch.bench incidents --in-process-only [--rounds 6]   (prints the in-process figures as JSON)
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from gridwatch.agents.fusion import IncidentProcessor, Outcome
from gridwatch.agents.routing import load_incident_config
from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.telemetry import AlertClock, client, percentile, publish_all, reading
from gridwatch.bench.transport_floor import end_positions
from gridwatch.core.procs import Pipeline, cpu_s, rss_mb, wait_for
from gridwatch.core.settings import STATE_DIR, load_settings
from gridwatch.devices.registry import load_city
from gridwatch.devices.simulator import build_messages, device_topic
from gridwatch.pipeline.group_progress import wait_caught_up
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.recordreplay.compare import read_topic_all
from gridwatch.pipeline.schemas.events import (
    GridEvent,
    TierRef,
    UpstreamMark,
    Watermarks,
    event_id,
    is_control,
    order_header,
    order_of,
)
from gridwatch.pipeline.schemas.reports import ResidentReport, report_id
from gridwatch.stack import DEFAULT_ENGINE, ENGINES, EmbeddedStack

BASE_TS = 1_763_600_000_000
DAY = 86_400_000
PARTS = 8


class MemStore:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def items(self) -> Any:
        return self.data.items()


def workload(city: Any, rounds: int, seed: int = 7) -> list[GridEvent | ResidentReport]:
    """Per manhole and round: the cover opens (event), half the time a resident reports it a minute
    later ~15 m away, and the sensor clears an hour later (auto-resolve). Rounds are 2 days apart so
    each round opens new incidents while supervision closes and evicts old ones."""
    rnd = random.Random(seed)
    chains: dict[str, list[TierRef]] = {}
    out: list[GridEvent | ResidentReport] = []
    manholes = [d for d in city.registry if d.kind == "manhole"]
    for k in range(rounds):
        for i, d in enumerate(manholes):
            tiers = chains.setdefault(d.grid_code, [TierRef(a.tier, a.code, a.name)
                                                    for a in city.gridmap.chain(d.grid_code)])
            t = BASE_TS + k * 2 * DAY + i * 1000
            eid = event_id("manhole_open", d.id, t)
            out.append(GridEvent(eid, "manhole_open", "new", "red", d.id, d.kind, d.grid_code, tiers, d.lat, d.lon,
                                 t, t, None, "cover_open is true", [{"ts": t, "cover_open": True}]))
            if rnd.random() < 0.5:
                lat, lon, text = d.lat + 0.0001, d.lon, f"cover open near {d.name}"
                out.append(ResidentReport(report_id("manhole_cover", lat, lon, t + 60_000, text), "manhole_cover", text,
                                          lat, lon, t + 60_000, d.grid_code))
            out.append(GridEvent(eid, "manhole_open", "end", "red", d.id, d.kind, d.grid_code, tiers, d.lat, d.lon,
                                 t, t + 3_600_000, t + 3_600_000, "cover_open is false"))
    out.sort(key=lambda x: x.ts if isinstance(x, GridEvent) else x.requested_ms)
    return out


Record = tuple[str, bytes, bytes, "list[tuple[str, bytes]] | None", "int | None"]  # family, key, value, headers, partition


def input_ts(x: GridEvent | ResidentReport) -> int:
    return x.ts if isinstance(x, GridEvent) else x.requested_ms


def feed_records(inputs: list[GridEvent | ResidentReport], marks_every: int = 200) -> list[Record]:
    """The inputs (in event-time order) as the incident agent gets them in production: each grid event
    with its readings partition's order header, and a watermark control record to every events partition
    (every readings partition at the event time reached) every ``marks_every`` inputs, about what the
    telemetry agent's 0.1 s announcements come to at this rate; first every upstream is announced, last
    every one is past the last input, so the merge releases everything. Reports go to their topic."""
    # Upstreams of their own, apart from the "readings:<p>" the worker's telemetry agent announces.
    ups = [f"bench-readings:{p}" for p in range(PARTS)]

    def marks(ts: int) -> list[Record]:
        raw = Watermarks({u: UpstreamMark(ts) for u in ups}).encode()
        return [("events", b"~watermark", raw, None, p) for p in range(PARTS)]

    out = marks(input_ts(inputs[0]) - 1)  # the first PARTS records: the bench sends them ahead
    for i, x in enumerate(inputs, 1):
        if isinstance(x, GridEvent):
            up = ups[partition_for(x.subject, PARTS)]
            out.append(("events", x.grid_code.encode(), x.encode(), order_header(up, x.ts), None))
        else:
            out.append(("reports", x.grid_code.encode(), x.encode(), None, None))
        if i % marks_every == 0:
            out += marks(input_ts(x))
    # Last every upstream past the last input, still active (idle, the merged clock would be the highest mark of
    # any upstream, the telemetry agent's included).
    return out + marks(input_ts(inputs[-1]) + 1)


def is_input(rec: Record) -> bool:
    return not is_control(rec[2])


def in_process(city: Any, records: list[Record]) -> dict[str, Any]:
    """The records through IncidentProcessor as the agent applies them, one input at a time."""
    # no wall time passes in this replay: a report waits for the grid events before it, never for a hold
    proc = IncidentProcessor(load_incident_config(), city.gridmap, MemStore(), wall_clock=lambda: 0.0)
    part = DefaultPartitioner()
    every = list(range(PARTS))
    changes = 0
    kinds: Counter[str] = Counter()
    parts = [partition if partition is not None else part(key, every, every) for _, key, _, _, partition in records]
    # Where each partition's grid events end in the feed: until then its reports' time waits, as the agent's
    # does while grid events of the partition are unread in Kafka (IncidentProcessor.advance, events_behind).
    last_event = {p: i for i, (rec, p) in enumerate(zip(records, parts, strict=True)) if rec[0] == "events"}
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i, ((family, _key, raw, headers, _), p) in enumerate(zip(records, parts, strict=True)):
        out = Outcome()
        if family == "reports":
            proc.on_report(p, ResidentReport.decode(raw), out)
        elif is_control(raw):
            proc.on_watermarks(p, Watermarks.decode(raw), out)
        else:
            up, order_ts = order_of(headers) or ("", 0)
            proc.on_ordered_event(p, up, order_ts, raw, out)
        proc.advance(p, out, last_event.get(p, -1) > i)
        changes += len(out.changes)
        for _, change in out.changes:  # the change kind follows the snapshot: a slice, not a parse (~1 % of the time)
            at = change.rfind(b'"change":"') + 10
            kinds[change[at:change.index(b'"', at)].decode()] += 1
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    n = sum(1 for r in records if is_input(r))
    return {"inputs": n, "control_records": len(records) - n, "seconds": round(dt, 2), "inputs_per_s": round(n / dt),
            "cpu_seconds": round(cpu, 2), "inputs_per_cpu_s": round(n / cpu),
            "changes": changes, "changes_by_kind": dict(sorted(kinds.items())),
            "incidents_in_memory": len(proc.incidents())}


def fusion_inputs(city: Any, rounds: int) -> tuple[list[GridEvent | ResidentReport], list[GridEvent | ResidentReport]]:
    """The bench's inputs: the workload, and the end markers later in event time (their jump in event time makes
    supervision close what is still open)."""
    inputs = workload(city, rounds)
    return inputs, markers(city, max(input_ts(x) for x in inputs) + 3 * DAY)


def in_process_fresh(rounds: int) -> dict[str, Any]:
    """:func:`in_process` in a new Python process: as cold as the first measurement (no caches warmed by it)."""
    cmd = [sys.executable, "-m", "gridwatch.bench.incidents", "--in-process-only", "--rounds", str(rounds)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"in-process run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pooled(*runs: dict[str, Any]) -> dict[str, Any]:
    """Several in-process runs of the same records as one: inputs and CPU seconds summed (each run's CPU from its
    rate, which is rounded far less than its ``cpu_seconds``)."""
    n, cpu = sum(r["inputs"] for r in runs), sum(r["inputs"] / r["inputs_per_cpu_s"] for r in runs)
    return {"runs": len(runs), "inputs_per_cpu_s": round(n / cpu), "us_per_input": round(1e6 * cpu / n, 1),
            "inputs_per_cpu_s_each": [r["inputs_per_cpu_s"] for r in runs]}


def markers(city: Any, ts: int) -> list[GridEvent | ResidentReport]:
    """A report and an event per Kafka partition (by the grid key), later in event time than the
    workload: events and reports are different topics, consumed independently, so the end of the
    workload is when both markers of every partition came out."""
    part = DefaultPartitioner()
    out: dict[int, list[GridEvent | ResidentReport]] = {}
    for area in city.gridmap.areas("grid"):
        p = part(area.code.encode(), list(range(PARTS)), list(range(PARTS)))
        if p not in out:
            lat, lon = city.gridmap.centroid(area.code)
            tiers = [TierRef(a.tier, a.code, a.name) for a in city.gridmap.chain(area.code)]
            subject = f"bench-marker-{p}-{ts}"
            out[p] = [ResidentReport(report_id("noise", lat, lon, ts, subject), "noise", subject, lat, lon, ts, area.code),
                      GridEvent(event_id("manhole_open", subject, ts), "manhole_open", "new", "red", subject, "manhole",
                                area.code, tiers, lat, lon, ts, ts)]
    return [m for ms in out.values() for m in ms]


def source_id(x: GridEvent | ResidentReport) -> str:
    return x.id if isinstance(x, GridEvent) else x.service_request_id


async def produce_all(kafka: str, pipe: Pipeline, records: list[Record], rate: float | None = None) -> None:
    """Produce the records to the pipeline's topics; as fast as possible, or at ``rate`` records/s."""
    p = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5, acks="all", max_batch_size=1 << 20)
    await p.start()
    try:
        futs = []
        t_next = time.perf_counter()
        for family, key, value, headers, partition in records:
            futs.append(await p.send(pipe.topic(family), value, key=key, headers=headers, partition=partition))
            if rate:
                t_next += 1 / rate
                await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def read_changes(kafka: str, topic: str, until: set[str], timeout: float) -> list[tuple[float, dict]]:
    """(Kafka timestamp s, change) of every record, until incidents of all ``until`` source ids came."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False,
                         max_partition_fetch_bytes=8 << 20)
    await c.start()
    out: list[tuple[float, dict]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until <= seen:
            got = await c.getmany(timeout_ms=200)
            for recs in got.values():
                for r in recs:
                    ch = json.loads(r.value)
                    out.append((r.timestamp / 1000, ch))
                    if ch["source_id"] in until:
                        seen.add(ch["source_id"])
    finally:
        await c.stop()
    if not until <= seen:
        raise TimeoutError(f"markers missing after {timeout}s: {len(until - seen)}")
    return out


def written(kafka_url: str, topics: dict[str, str], inputs: int) -> dict[str, dict[str, float]]:
    """What the worker wrote for the inputs, per topic (each read to its high watermark): the bytes its
    producing costs scale with."""
    settings = load_settings(None, {"kafka.url": kafka_url})
    out = {}
    for name, topic in topics.items():
        values = asyncio.run(read_topic_all(settings, topic))
        size = sum(len(v or b"") for v in values)
        out[name] = {"records": len(values), "mib": round(size / (1 << 20), 1), "bytes_per_input": round(size / inputs)}
    return out


def wait_drained(kafka: str, group: str, topics: list[str], timeout: float) -> float:
    """Seconds until the worker's consumer group has committed every record of ``topics`` (its agents
    digested what came before): the latency run then measures 200 events/s, not the backlog of the
    throughput phase that every agent of the one worker still works through."""
    return asyncio.run(wait_caught_up(kafka, group, topics, timeout))


def drain_all(kafka: str, pipe: Pipeline, groups: dict[str, tuple[str, ...]], timeout: float = 120) -> float:
    """:func:`wait_drained` for every consumer group of the pipeline; the seconds it took in all."""
    return sum(wait_drained(kafka, group, [pipe.topic(f) for f in families], timeout)
               for group, families in groups.items())


def telemetry_baseline(stack: EmbeddedStack, pipe: Pipeline, city: Any, rounds: int) -> dict[str, Any]:
    devs = list(city.registry)
    msgs: list[tuple[str, bytes]] = []
    for k in range(rounds):
        msgs += build_messages((d, BASE_TS - DAY + k * 1000, reading(d, 0)) for d in devs)
    n = rounds * len(devs)
    markers: dict[int, Any] = {}
    for d in devs:
        if d.kind == "manhole" and not d.gateway:
            markers.setdefault(partition_for(d.shard_key, PARTS), d)
    alerts = AlertClock(stack.mqtt_url)
    pub = client(stack.mqtt_url, client_id="bench-inc-pub")
    try:
        t0 = time.time()
        publish_all(pub, msgs)
        end_ts = BASE_TS - DAY + rounds * 1000
        publish_all(pub, [(device_topic(d.id), json.dumps({"ts": end_ts, "values": reading(d, 0, True)}).encode())
                          for d in markers.values()])
        wait_for(lambda: all(alerts.opened(d.id) for d in markers.values()), 300,
                 "telemetry markers")
        t_end = max(alerts.opened(d.id) or 0.0 for d in markers.values())
    finally:
        pub.disconnect()
        pub.loop_stop()
        alerts.close()
    return {"readings": n, "seconds": round(t_end - t0, 2), "readings_per_s": round(n / (t_end - t0))}


def transport_floor(kafka: str, inputs: list[str], outputs: list[str], start: dict[str, int],
                    results: dict[str, Any]) -> dict[str, Any]:
    """The fusion phase's records moved again by bare aiokafka in a process of its own (bench/transport_floor.py),
    beside the worker's overhead: how much of it any aiokafka worker pays, and the best ratio that leaves."""
    n = results["in_process"]["inputs"]
    cmd = [sys.executable, "-m", "gridwatch.bench.transport_floor", "--kafka", kafka, "--inputs", ",".join(inputs),
           "--outputs", ",".join(outputs), "--inputs-counted", str(n), "--start", json.dumps(start)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(f"transport floor failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    floor = json.loads(done.stdout.strip().splitlines()[-1])
    fusion_us = 1e6 * results["in_process"]["cpu_seconds"] / n
    floor["worker_overhead_above_floor_us"] = round(results["ratio"]["worker_overhead_us_per_input"]
                                                    - floor["us_per_input"], 1)
    # the agent ÷ in-process CPU ratio of a worker that added nothing to the fusion but this floor
    floor["best_cpu_ratio_on_aiokafka"] = round(fusion_us / (fusion_us + floor["us_per_input"]), 3)
    return floor


# The default topology (gridwatch/roles.py): the incident agent alone in a worker of its own (app id
# <app_id>-incidents, so its own consumer group and tables), the other default agents in the usual worker.
# --shared: one worker runs every agent (the single-worker deployment).
INCIDENT_APP_ID = "gridwatch-incidents"
# How often the bench's workers log their figures (agents/worker_stats.py): the CPU the fusion took inside the
# incident worker is read from those lines (``incident_fusion_cpu_us``), before and after the fusion phase.
STATS_EVERY_S = 0.5


def logged_total(proc: Any, counter: str) -> int:
    """The last total of ``counter`` in a worker's figures lines (0 before it first moved)."""
    totals = re.findall(rf"\b{re.escape(counter)} [+-][\d,]+ \(([\d,]+)\)", proc.log())
    return int(totals[-1].replace(",", "")) if totals else 0


def run(out: Path, rounds: int = 6, telemetry_rounds: int = 20, rate: float = 200.0,
        latency_s: float = 10.0, split: bool = True, engine: str = DEFAULT_ENGINE) -> dict[str, Any]:
    city = load_city()
    inputs, ends = fusion_inputs(city, rounds)
    last = max(input_ts(x) for x in inputs)
    results: dict[str, Any] = {"city": "sample", "devices": len(city.registry), "partitions": PARTS, "broker": engine,
                               "incident_worker": "own process" if split else "shared with every agent"}
    recs = feed_records([*inputs, *ends])  # the same inputs as the agent gets, end markers included
    results["in_process"] = in_process(city, recs)
    n_inputs = results["in_process"]["inputs"]
    print(f"in-process fusion: {results['in_process']}", flush=True)
    logs = STATE_DIR / "bench-logs"
    with EmbeddedStack(engine=engine) as stack:
        pipe = Pipeline(stack.kafka_url, stack.mqtt_url, logs, split=split,
                        env={"GRIDWATCH_WORKER_STATS_INTERVAL_S": str(STATS_EVERY_S)})
        fusion_worker = pipe.incident_worker
        groups = {f"gridwatch-{pipe.prefix}": ("events", "reports", "incidents")}
        if split:
            groups[f"{INCIDENT_APP_ID}-{pipe.prefix}"] = ("events", "reports")
        pipe.start()
        kafka = stack.kafka_url.removeprefix("kafka://")
        try:
            # -- fusion throughput through the real agent ------------------------------------------
            end_ids = {source_id(m) for m in ends}
            # The bench's upstreams are announced before any input, as a running telemetry agent's are: the merge
            # waits only for upstreams it has heard of.
            asyncio.run(produce_all(kafka, pipe, recs[:PARTS]))
            fusion_group = f"{INCIDENT_APP_ID if split else 'gridwatch'}-{pipe.prefix}"
            wait_drained(kafka, fusion_group, [pipe.topic("events")], 60)
            inputs_from = asyncio.run(end_positions(kafka, [pipe.topic("events"), pipe.topic("reports")]))
            print(f"fusion phase: sending {len(recs) - PARTS} records to the incident agent", flush=True)
            time.sleep(3 * STATS_EVERY_S)  # the warm-up's figures logged: the worker is idle, its totals final
            f0 = logged_total(fusion_worker, "incident_fusion_cpu_us")
            c0 = cpu_s(fusion_worker.pid)
            t0 = time.time()
            asyncio.run(produce_all(kafka, pipe, recs[PARTS:]))
            t_prod = time.time() - t0
            changes = asyncio.run(read_changes(kafka, pipe.topic("incidents"), end_ids, 600))
            worker_cpu = cpu_s(fusion_worker.pid) - c0
            time.sleep(3 * STATS_EVERY_S)
            fusion_cpu = (logged_total(fusion_worker, "incident_fusion_cpu_us") - f0) / 1e6
            t_end = max(ts for ts, ch in changes if ch["source_id"] in end_ids)
            created = sum(1 for _, ch in changes if ch["change"] == "created")
            results["fusion"] = {
                "inputs": n_inputs, "control_records": len(recs) - n_inputs, "events": sum(isinstance(x, GridEvent) for x in inputs),
                "reports": sum(isinstance(x, ResidentReport) for x in inputs), "seconds": round(t_end - t0, 2),
                "inputs_per_s": round(n_inputs / (t_end - t0)), "incidents": created,
                "incidents_per_s": round(created / (t_end - t0)), "changes": len(changes),
                "changes_per_s": round(len(changes) / (t_end - t0)), "produce_seconds": round(t_prod, 2),
                # events and reports are two topics, read as fetched: compare the kinds with the in-process run's
                "changes_by_kind": dict(sorted(Counter(ch["change"] for _, ch in changes).items())),
                # the CPU of the worker running the incident agent (all its agents, all threads) from the first
                # input until the markers' changes were read back; the other agents' backlog is not all in it
                "worker_cpu_seconds": round(worker_cpu, 2), "inputs_per_worker_cpu_s": round(n_inputs / worker_cpu),
                # of it, what the agent's fusion took (decoding, fusion, supervision), timed inside the worker
                "fusion_cpu_seconds_in_worker": round(fusion_cpu, 3),
                "fusion_us_per_input_in_worker": round(1e6 * fusion_cpu / n_inputs, 1),
            }
            print(f"fusion through the agent: {results['fusion']}", flush=True)
            # Every worker idle again: the in-process baseline again, in a fresh process (pooled with the first
            # run, it brackets the worker's run in time), then the telemetry baseline (run before the fusion phase,
            # its grid events became incidents that the workload's clock then escalated tier by tier, changes and
            # CPU the in-process run has no part in)
            drain_all(kafka, pipe, groups)
            results["in_process_after"] = in_process_fresh(rounds)
            base = results["in_process_pooled"] = pooled(results["in_process"], results["in_process_after"])
            print(f"in-process fusion again, after the phase: {results['in_process_after']}", flush=True)
            first = results["in_process"]
            results["ratio"] = {"wall": round(results["fusion"]["inputs_per_s"] / first["inputs_per_s"], 3),
                                "cpu": round(results["fusion"]["inputs_per_worker_cpu_s"] / first["inputs_per_cpu_s"], 3),
                                # against both in-process runs pooled: the baseline measured around the worker's
                                # run, not only before it (docs/benchmarks.md, "Incidents")
                                "cpu_baseline_bracketed": round(results["fusion"]["inputs_per_worker_cpu_s"]
                                                                / base["inputs_per_cpu_s"], 3),
                                # what Kafka and Faust add per input, whatever the fusion logic costs: the ratio
                                # falls when only the shared logic gets faster, this does not move then
                                "worker_overhead_us_per_input": round(
                                    1e6 * (worker_cpu / n_inputs - first["cpu_seconds"] / first["inputs"])),
                                "worker_overhead_us_per_input_bracketed": round(1e6 * worker_cpu / n_inputs
                                                                                - base["us_per_input"]),
                                # the fusion's share of the worker's CPU, both measured in the worker over the same
                                # phase: what the ratio is where the fusion costs in the worker what it costs in
                                # process (fusion.fusion_us_per_input_in_worker against in_process), and free of
                                # the machine's drift between the in-process runs and the phase
                                "cpu_fusion_share_in_worker": round(fusion_cpu / worker_cpu, 3)}
            print(f"agent / in-process: {results['ratio']}", flush=True)
            cur, peak = rss_mb(fusion_worker.pid)
            results["rss_mb"] = {"worker": round(cur), "worker_peak": round(peak)}

            # Each change record carries the whole incident, and so does the table's changelog: producing those
            # bytes is most of what the worker adds to the fusion (docs/benchmarks.md, "Incidents")
            results["written"] = written(stack.kafka_url, {"incidents topic": pipe.topic("incidents"),
                                                 "table changelog": f"{fusion_group}-incidents-changelog"}, n_inputs)
            print(f"written for the {n_inputs} inputs: {results['written']}", flush=True)
            results["transport_floor"] = transport_floor(
                kafka, [pipe.topic("events"), pipe.topic("reports")],
                [pipe.topic("incidents"), f"{fusion_group}-incidents-changelog"], inputs_from, results)
            print(f"the same records moved by bare aiokafka: {results['transport_floor']}", flush=True)
            results["telemetry_baseline"] = telemetry_baseline(stack, pipe, city, telemetry_rounds)
            print(f"telemetry baseline (readings -> events -> MQTT): {results['telemetry_baseline']}", flush=True)

            # -- latency at a fixed rate: event produced -> incident created produced ----------------
            probe_ts = last + 10 * DAY
            manholes = [d for d in city.registry if d.kind == "manhole"]
            n = int(rate * latency_s)
            evs = []
            for i in range(n):
                d = manholes[i % len(manholes)]
                t = probe_ts + i * 10
                tiers = [TierRef(a.tier, a.code, a.name) for a in city.gridmap.chain(d.grid_code)]
                evs.append(GridEvent(event_id("manhole_displaced", d.id, t), "manhole_displaced", "new", "red", d.id,
                                     d.kind, d.grid_code, tiers, d.lat, d.lon, t, t))
            stamps: dict[str, float] = {}

            async def timed() -> None:
                p = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=0, acks="all")
                await p.start()
                try:
                    for e in evs:
                        md = await p.send_and_wait(pipe.topic("events"), e.encode(), key=e.grid_code.encode())
                        stamps[e.id] = md.timestamp / 1000
                        await asyncio.sleep(1 / rate)
                finally:
                    await p.stop()

            # warm-up: the jump in event time makes supervision close and evict the whole workload first
            warm = markers(city, probe_ts - 1000)
            asyncio.run(produce_all(kafka, pipe, feed_records(warm)))
            asyncio.run(read_changes(kafka, pipe.topic("incidents"), {source_id(m) for m in warm}, 120))
            drained = drain_all(kafka, pipe, groups)
            results["drain_seconds"] = round(drained, 1)
            print(f"worker drained the throughput phase {drained:.1f} s after the warm-up markers", flush=True)
            asyncio.run(timed())
            lat_changes = asyncio.run(read_changes(kafka, pipe.topic("incidents"), set(stamps), 120))
            lat = [(ts - stamps[ch["source_id"]]) * 1000 for ts, ch in lat_changes
                   if ch["source_id"] in stamps and ch["change"] in ("created", "source_added")]
            sent = sorted((stamps[ch["source_id"]], (ts - stamps[ch["source_id"]]) * 1000) for ts, ch in lat_changes
                          if ch["source_id"] in stamps and ch["change"] in ("created", "source_added"))
            t_first = sent[0][0] if sent else 0.0
            windows: dict[int, list[float]] = {}
            for t, ms in sent:
                windows.setdefault(int((t - t_first) // 2), []).append(ms)
            results["latency_ms"] = {"rate_events_per_s": rate, "samples": len(lat), "expected": n,
                                     "p50": round(percentile(lat, 50), 1), "p95": round(percentile(lat, 95), 1),
                                     "p99": round(percentile(lat, 99), 1),
                                     # where in the run the tail is: the p99 of each 2 s of sending
                                     "p99_per_2s": [round(percentile(w, 99)) for _, w in sorted(windows.items())]}
            print(f"event -> incident change at {rate}/s: {results['latency_ms']}", flush=True)
        finally:
            pipe.stop()
    write_results(out, results)
    print(f"wrote {out}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("incidents", __doc__)
    p.add_argument("--rounds", type=int, default=6, help="workload rounds (each: every manhole opens once)")
    p.add_argument("--telemetry-rounds", type=int, default=20, help="readings per device for the baseline")
    p.add_argument("--rate", type=float, default=200.0, help="fixed event rate for the latency run (events/s)")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--shared", action="store_true",
                   help="one worker runs every agent (default: the two workers of `gridwatch worker --role`)")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help="the embedded stack's Kafka broker: tansu (in memory, the default) or kafka (one Apache "
                        "Kafka node, as a city runs it; starts in ~10 s)")
    p.add_argument("--in-process-only", action="store_true",
                   help="only the fusion in process, no stack: print its figures as one JSON line (the bench runs "
                        "this in a fresh process after the fusion phase)")
    a = p.parse_args(argv)
    if a.in_process_only:
        city = load_city()
        inputs, ends = fusion_inputs(city, a.rounds)
        print(json.dumps(in_process(city, feed_records([*inputs, *ends]))), flush=True)
        return 0
    run(a.out, a.rounds, a.telemetry_rounds, a.rate, a.latency_seconds, split=not a.shared, engine=a.engine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
