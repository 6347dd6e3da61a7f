"""The vision agent's own capacity: a backlog of real frame records through the worker (Kafka in, grid events
out, checkpoints, acks) against the same records through the agent's processor in process (the agent's
thread alone, no Kafka), in the same run.

    python -m gridwatch.bench vision_agent                 # 12 cameras x 60 frames, 3 runs
    python -m gridwatch.bench vision_agent --cameras 24 --frames 40 --runs 1

Frame records come from the real clips (vtest.avi and the Market Street film, 5 fps, 640 px, the capture's
motion gate), the cameras of the sample city, each with a rule that fires on every person.  They are marked
``replayed``, so the agent sheds none for lag: every record is taken, and the figure is how many frames per
second the agent gets through when it never waits for frames.  ``live`` cameras cannot show this on 2 cores:
the RTSP server and the capture service take most of the machine before the agent is busy (``bench vision
--e2e-only``).  Writes bench/results/vision_agent.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.bench.vision import CAPTURE_MAX_WIDTH, DETECT_FPS, E2E_RULES, SHARDED, detector_config
from gridwatch.core.procs import Proc, cpu_s
from gridwatch.models import footage
from gridwatch.models.build import DEFAULT_SIZE, build, calibration_images

MAX_BATCH = 8  # the shipped vision.max_batch


def frame_records(cameras: list[str], frames: int) -> list[tuple[str, bytes]]:
    """(camera, frame record) in the order live cameras would send them: frame k of every camera, then k+1."""
    from gridwatch.pipeline.schemas.frames import encode_frame
    from gridwatch.pipeline.sources.capture import CameraCapture

    clips = [footage.vtest_avi(), footage.market_street_mp4()]
    start = time.time() - 3600
    per_camera: list[list[bytes]] = []
    for i, cam in enumerate(cameras):
        cap = CameraCapture({"camera_id": cam, "source": str(clips[i % 2]), "detect_fps": DETECT_FPS,
                             "max_width": CAPTURE_MAX_WIDTH, "start_ts": start})
        skip = 10 * (i // 2)  # cameras on the same clip start at different points of it
        recs = []
        for k, frame in enumerate(cap.frames()):
            if k >= skip:
                frame = dataclasses.replace(frame, ts=start + (k - skip) / DETECT_FPS)
                recs.append(encode_frame(frame, replayed=True))
            if len(recs) == frames:
                break
        cap.close()
        per_camera.append(recs)
    return [(cam, recs[k]) for k in range(frames) for cam, recs in zip(cameras, per_camera, strict=True)
            if k < len(recs)]


def camera_config(cameras: list[str], variant: str) -> dict[str, Any]:
    return {"detector": detector_config(variant, DEFAULT_SIZE, **SHARDED, dynamic=True),  # as shipped
            "vision": {"max_batch": MAX_BATCH, "batch_window_s": 0.02, "stats_interval_s": 0.5, "plates": "off"},
            "cameras": {cam: {"source": "rtsp://127.0.0.1:1/unused", "detect_fps": DETECT_FPS,
                              "max_width": CAPTURE_MAX_WIDTH, **E2E_RULES} for cam in cameras}}


def in_process(config: dict[str, Any], records: list[tuple[str, bytes]]) -> dict[str, Any]:
    """The agent's processor over the records in batches of ``max_batch``, as its thread would take them."""
    from gridwatch.agents.vision import VisionProcessor
    from gridwatch.devices.registry import load_city
    from gridwatch.pipeline.outputs.evidence import MemoryEvidenceStore
    from gridwatch.pipeline.sources.camera_service import parse_camera_config, resolve_sites

    city = load_city()
    cfg = parse_camera_config(config)
    proc = VisionProcessor(cfg, resolve_sites(cfg, city.registry, city.gridmap), MemoryEvidenceStore())
    proc.warm()
    items = [(0, "frames", cam.encode(), value) for cam, value in records]
    events = 0
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(items), MAX_BATCH):
        events += len(proc.process(items[i:i + MAX_BATCH]).events)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    proc.detector.close()
    return {"records": len(items), "frames": proc.stats["frames"], "events": events, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "records_per_s": round(len(items) / wall, 1)}


async def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20, linger_ms=5)
    await p.start()
    try:
        futures = [await p.send(topic, value, key=cam.encode()) for cam, value in records]
        await asyncio.gather(*futures)
    finally:
        await p.stop()


def through_worker(config: dict[str, Any], records: list[tuple[str, bytes]], warmup: list[tuple[str, bytes]],
                   work: Path) -> dict[str, Any]:
    """A real worker running the vision agent alone: the warm-up records first (the detector's first runs),
    then the backlog. The rate is taken between two of the agent's own stats messages, the first that counts
    backlog records and the one that counts them all, so the time the bench spends producing the backlog
    (while the agent already works on it) does not enter it; the worker's CPU is counted from before it."""
    import json
    import threading

    import paho.mqtt.client as mqtt

    from gridwatch.stack import EmbeddedStack

    prefix = f"ba{uuid.uuid4().hex[:6]}"
    (work / "cameras.yaml").write_text(yaml.safe_dump(config))
    stats: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with lock:
            stats.append((time.perf_counter(), json.loads(msg.payload)))

    def records_done() -> int:
        with lock:
            return int(stats[-1][1].get("records") or 0) if stats else 0

    def wait_records(n: int, timeout: float) -> tuple[float, int]:
        """(arrival, records counted) of the first stats message counting ``n`` records or more."""
        deadline = time.perf_counter() + timeout
        while records_done() < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the vision agent took {records_done()} of {n} records in {timeout:.0f} s; "
                                   f"see {work}")
            time.sleep(0.05)
        with lock:
            return next((t, int(s["records"])) for t, s in stats if int(s.get("records") or 0) >= n)

    with EmbeddedStack() as stack:
        bootstrap = stack.kafka_url.removeprefix("kafka://")
        common = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url, "--prefix", prefix,
                  "--cameras", str(work / "cameras.yaml"), "--log-level", "info"]
        env = {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on", "GRIDWATCH_WEB_EVIDENCE_DIR": str(work / "evidence")}
        worker = Proc(f"{prefix}-worker", ["worker", *common, "--agents", "vision"], work, env)
        host, port = stack.mqtt_url.removeprefix("mqtt://").split(":")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.on_message = on_message
        client.connect(host, int(port))
        client.subscribe([("gridwatch/stats/vision/#", 0)])
        client.loop_start()
        try:
            worker.start()
            worker.wait_log("worker ready", 120)
            asyncio.run(_produce(bootstrap, f"{prefix}.frames", warmup))
            wait_records(len(warmup), 120)
            c0 = cpu_s(worker.pid)
            asyncio.run(_produce(bootstrap, f"{prefix}.frames", records))
            t0, n0 = wait_records(len(warmup) + 1, 120)
            t1, n1 = wait_records(len(warmup) + len(records), 600)
            cpu = cpu_s(worker.pid) - c0
        finally:
            worker.stop()
            client.loop_stop()
            client.disconnect()
    with lock:
        last = stats[-1][1]
    wall = t1 - t0
    return {"records": len(records), "frames": int(last.get("frames") or 0), "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "records_per_s": round((n1 - n0) / wall, 1),
            "mean_batch": last.get("mean_batch"), "stats_interval_s": 0.5,
            "note": "records per second between the agent's first stats message counting backlog records and the "
                    "first counting all of them (stats every 0.5 s); CPU over the whole backlog"}


def run(out: Path | None, cameras: int, frames: int, runs: int) -> dict[str, Any]:
    from gridwatch.devices.registry import load_city

    build(quiet=True)
    variant = "int8" if calibration_images() else "fp32"
    cams = [d.id for d in load_city().registry.by_kind("camera")][:cameras]
    if len(cams) < cameras:
        raise SystemExit(f"the sample city has {len(cams)} cameras; ask for at most that many")
    print(f"vision agent: reading {cameras} x {frames + 1} frames of the clips ...", flush=True)
    recs = frame_records(cams, frames + 1)
    warmup, backlog = recs[:cameras], recs[cameras:]
    config = camera_config(cams, variant)
    rows = []
    for r in range(runs):
        base = in_process(config, backlog)
        with tempfile.TemporaryDirectory(prefix="gw-bench-vagent-") as tmp:
            agent = through_worker(config, backlog, warmup, Path(tmp))
        ratio = round(agent["records_per_s"] / base["records_per_s"], 3)
        rows.append({"in_process": base, "worker": agent, "ratio": ratio})
        print(f"run {r + 1}/{runs}: worker {agent['records_per_s']} records/s ({agent['cpu_s']} CPU-s, mean batch "
              f"{agent['mean_batch']}), in process {base['records_per_s']} records/s ({base['cpu_s']} CPU-s): "
              f"ratio {ratio}", flush=True)
    result = {"variant": variant, "cameras": cameras, "frames_per_camera": frames, "records": len(backlog),
              "runs": rows, "ratio": [row["ratio"] for row in rows],
              "ratio_median": statistics.median(row["ratio"] for row in rows)}
    write_results(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = bench_parser("vision_agent", __doc__)
    ap.add_argument("--cameras", type=int, default=12, help="cameras of the sample city (default 12)")
    ap.add_argument("--frames", type=int, default=60, help="frames per camera in the backlog (5 fps: 60 = 12 s)")
    ap.add_argument("--runs", type=int, default=3, help="runs, each with its in-process baseline (default 3)")
    args = ap.parse_args(argv)
    run(args.out, args.cameras, args.frames, args.runs)
    return 0
