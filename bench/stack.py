"""The embedded stack's two Kafka engines side by side: start time, memory, durability.

    python -m gridwatch.bench stack [--runs 3] [--engines tansu,kafka] [--mb 50]

Each run starts `gridwatch stack --engine E` exactly as an operator would, in a fresh state folder, and
measures: the time from the command to "embedded stack running" (cold: for Apache Kafka this includes
formatting its log folder); the resident memory of the broker process and of the whole stack (the
command, broker, Mosquitto) when idle, and again after ``--mb`` MB of camera-frame-sized records
(50 KB each, acks=all) went into a topic; then the stack is stopped and started again in the same
folder (warm start time) and the records still there are counted (durability).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.core.procs import Proc, cpu_s, rss_mb
from gridwatch.core.settings import STATE_DIR
from gridwatch.stack import ENGINES

TOPIC = "bench-stack-frames"
RECORD = 50 * 1024


def children(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def broker_cpu_s(stack: Proc) -> float:
    """CPU seconds (user + system) the broker process used so far: a start cost that, unlike the wall
    time, hardly depends on what else the machine is doing."""
    for p in children(stack.pid):
        try:
            if b"kafka.Kafka" in Path(f"/proc/{p}/cmdline").read_bytes() or b"tansu" in Path(
                    f"/proc/{p}/cmdline").read_bytes():
                return round(cpu_s(p), 2)
        except (OSError, IndexError, ValueError):
            continue
    return 0.0


def memory(stack: Proc) -> dict[str, float]:
    """RSS in MiB of the broker process and of the whole stack (command + broker + Mosquitto)."""
    pids = [stack.pid, *children(stack.pid)]
    broker = 0.0
    for p in pids:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"kafka.Kafka" in cmd or b"tansu" in cmd:
            broker = rss_mb(p)[0]
    return {"broker_rss_mb": round(broker, 1), "stack_rss_mb": round(sum(rss_mb(p)[0] for p in pids), 1)}


def start(engine: str, state: Path, logs: Path) -> tuple[Proc, float, str]:
    t0 = time.monotonic()
    proc = Proc(f"bench-stack-{engine}-{uuid.uuid4().hex[:8]}", ["stack", "--engine", engine], logs, {"GRIDWATCH_STATE_DIR": str(state)})
    proc.start()
    proc.wait_log("embedded stack running", 180)
    seconds = time.monotonic() - t0
    return proc, seconds, json.loads((state / "stack.json").read_text())["kafka"].removeprefix("kafka://")


async def produce(bootstrap: str, n: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20, linger_ms=5)
    await p.start()
    try:
        payload = os.urandom(RECORD)
        for _ in range(n):
            await p.send(TOPIC, payload)
        await p.flush()
    finally:
        await p.stop()


async def count(bootstrap: str) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await c.start()
    try:
        if TOPIC not in await c.topics():
            return 0
        from aiokafka import TopicPartition

        tp = TopicPartition(TOPIC, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        n, idle = 0, 0
        while idle < 3:
            got = await c.getmany(timeout_ms=500, max_records=5000)
            n += sum(len(v) for v in got.values())
            idle = 0 if got else idle + 1
        return n
    finally:
        await c.stop()


def one_run(engine: str, records: int, logs: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-stack-{engine}-") as tmp:
        state = Path(tmp)
        stack, cold_s, bootstrap = start(engine, state, logs)
        cold_cpu = broker_cpu_s(stack)
        try:
            time.sleep(2)  # settle (JIT, first GC) before reading the idle figure
            idle = memory(stack)
            asyncio.run(produce(bootstrap, records))
            time.sleep(1)
            loaded = memory(stack)
        finally:
            stack.stop(timeout=60)
        stack, warm_s, bootstrap = start(engine, state, logs)
        warm_cpu = broker_cpu_s(stack)
        try:
            kept = asyncio.run(count(bootstrap))
        finally:
            stack.stop(timeout=60)
    return {"cold_start_s": round(cold_s, 2), "warm_start_s": round(warm_s, 2), "cold_start_broker_cpu_s": cold_cpu,
            "warm_start_broker_cpu_s": warm_cpu, "load_avg_1m": os.getloadavg()[0], "idle": idle,
            "after_load": loaded, "records_written": records, "records_after_restart": kept}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2), "max": round(max(values), 2)}


def run(out: Path | None, runs: int, engines: list[str], mb: int) -> dict[str, Any]:
    logs = STATE_DIR / "bench-logs"
    records = max(1, mb * 1024 * 1024 // RECORD)
    results: dict[str, Any] = {"runs": runs, "load_mb": mb, "record_bytes": RECORD, "engines": {}}
    per: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for i in range(runs):  # engines interleaved, so a slow moment of the machine hits both
        for engine in engines:
            r = one_run(engine, records, logs)
            per[engine].append(r)
            print(f"{engine:6s} run {i + 1}: cold start {r['cold_start_s']:.2f}s ({r['cold_start_broker_cpu_s']:.1f} CPU s), "
                  f"warm start {r['warm_start_s']:.2f}s ({r['warm_start_broker_cpu_s']:.1f} CPU s), "
                  f"load {r['load_avg_1m']:.1f}, "
                  f"broker RSS idle {r['idle']['broker_rss_mb']:.0f} MB -> {r['after_load']['broker_rss_mb']:.0f} MB "
                  f"after {mb} MB, stack RSS idle {r['idle']['stack_rss_mb']:.0f} MB, "
                  f"records after restart {r['records_after_restart']}/{records}", flush=True)
    for engine, rs in per.items():
        results["engines"][engine] = {
            "cold_start_s": spread([r["cold_start_s"] for r in rs]),
            "warm_start_s": spread([r["warm_start_s"] for r in rs]),
            "cold_start_broker_cpu_s": spread([r["cold_start_broker_cpu_s"] for r in rs]),
            "warm_start_broker_cpu_s": spread([r["warm_start_broker_cpu_s"] for r in rs]),
            "broker_rss_idle_mb": spread([r["idle"]["broker_rss_mb"] for r in rs]),
            "broker_rss_after_load_mb": spread([r["after_load"]["broker_rss_mb"] for r in rs]),
            "stack_rss_idle_mb": spread([r["idle"]["stack_rss_mb"] for r in rs]),
            "records_after_restart": [r["records_after_restart"] for r in rs],
            "runs": rs,
        }
    print(json.dumps({e: {k: v for k, v in r.items() if k != "runs"} for e, r in results["engines"].items()}, indent=1))
    write_results(out, results)
    return results


def main(argv: list[str]) -> None:
    p = bench_parser("stack", __doc__)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--mb", type=int, default=50, help="MB of 50 KB records written between the two memory readings")
    a = p.parse_args(argv)
    run(a.out, a.runs, [e for e in a.engines.split(",") if e], a.mb)
