"""Vision benchmark: where the CPU goes per camera, and how many cameras at 5 fps this machine sustains.

    python -m gridwatch.bench vision [--out bench/results/vision.json] [--seconds 20] [--quick] [--sizes 416,416x320,320]
    python -m gridwatch.bench vision --live-only [--seconds 15] [--cameras 16] [--street-cameras 24] [--setups 0:0,shipped]
    python -m gridwatch.bench vision --regions-only
    from gridwatch.bench.vision import run; result = run("bench/results/vision.json")

In one run, on real footage (``vtest.avi``: fixed camera over a plaza; the 1906 Market Street film: a
camera on a moving cable car), frames downscaled to ``max_width`` 640 as the shipped cameras.yaml does:

* **model**    inference ms per frame and per batch at batch 1, 4, 8 — wall time with 2 and 1 intra-op
               threads, and CPU time per frame; frames/s per core = 1000 / CPU ms per frame; float and int8
               variants, at the 416×416 input of the issue's target, at 416×320 (the same scale for 4:3 and
               16:9 cameras, less letterbox padding) and at 320×320 (``--sizes``; keys ``int8``,
               ``int8_416x320``, ``int8_320``);
* **stages**   per frame: decode (per source frame), downscale to ``max_width``, motion gate, JPEG encode +
               decode (the Kafka hop), pre-/post-processing, tracker + zones + rules;
* **gate**     motion-gate skip ratio per clip (fraction of sampled frames that skip inference);
* **regions**  motion regions against whole frames per clip (250 frames at 5 fps, one thread, the dynamic
               model): frames cropped, input pixels, CPU ms per frame, and the share of the whole-frame
               pass's people and vehicles (score ≥ 0.4) that the regions pass also found;
* **capacity** cameras at 5 fps = CPU budget (cores × 85 %) / CPU cost of one camera per second, from the
               measured numbers above, per clip and model variant (and Frigate's detector-only figure
               1000 / inference ms);
* **live**     that many cameras actually run for ``seconds``: file sources paced in real time, sampled
               and gated, JPEG-packed, batched across cameras (≤ 8) through the detector, tracked, rules
               applied; frame → scene-result latency p50/p95/p99, frames processed vs offered, CPU use and
               where the CPU went (JPEG unpack, detector, rules, the camera threads);
               always also 16 cameras (the issue's target) with each int8 size, whole frames; 16 cameras
               as shipped (dynamic-input model, motion regions: crops around motion and tracks, see
               models/regions.py); and 16 fixed street cameras (vtest only) with whole frames and regions;
               the detector as shipped: each batch split over 2 one-thread shards (batch_workers 2);
* **live-only** just the as-shipped live rows (16 cameras on both clips, 24 fixed street cameras), each once
               per ``--setups`` entry (``vision.in_flight``:``vision.regions.max_gap_frames``; ``0:0`` is the
               agent before both existed: batches in turn, whole frames after any gap), interleaved;
               ``--regions-only`` just the regions rows;
* **sustained** cameras at 5 fps as shipped, measured live: from the 16-camera run, 4 more cameras at a
               time until a run analyses < 98 % of the offered frames or its p95 exceeds 1 s;
* **memory**   RSS and peak RSS of this process;
* **e2e**      the real pipeline: footage served by the GStreamer RTSP server → ``gridwatch cameras``
               (capture process) → Kafka ``frames`` (embedded broker) → ``gridwatch worker --agents
               alerts,vision`` → grid events → alerts agent → Mosquitto.  Frame → alert latency p50/p95 (event
               time of the frame that raised an event → the alert arriving at an MQTT subscriber), and the
               agent's own frame → scene-result latency over every processed frame (its stats on MQTT);
               frames captured / processed / skipped as stale, CPU and RSS of the processes (and the CPU of
               the RTSP server's H.264 encoding, which a real camera does itself).
               ``python -m gridwatch.bench vision --e2e-only [--e2e-cameras 4 --seconds 30 --e2e-size
               416x320]`` runs just this part and merges it into the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gridwatch.core.procs import cpu_s
from gridwatch.models import footage
from gridwatch.models.build import (
    DEFAULT_SIZE,
    Size,
    build,
    calibration_images,
    check_size,
    parse_size,
    size_name,
)
from gridwatch.models.detect_pipeline import DetectPipeline
from gridwatch.models.detectors import create_detector
from gridwatch.models.detectors.onnx_yolo import stride_size
from gridwatch.models.regions import RegionConfig, RegionPlanner, detect_frames
from gridwatch.models.scene_rules import SceneEngine
from gridwatch.pipeline.schemas.frame_wire import pack_frame, unpack_frame
from gridwatch.pipeline.schemas.frames import decode_all
from gridwatch.pipeline.sources.capture import CameraCapture, MotionGate, downscale

DETECT_FPS = 5.0
TARGET_UTILISATION = 0.85
MAX_BATCH = 8
CAPTURE_MAX_WIDTH = 640  # the shipped cameras.yaml default: frames wider than this are downscaled before JPEG
# detector inputs: the target (416×416), the same scale with less padding, Frigate's default (320×320)
SIZES: tuple[Size, ...] = ((416, 416), (416, 320), (320, 320))
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "vision.json"
SCENE = {  # a realistic rule load: a zone, a crowd rule, a line counter
    "zones": {"area": {"polygon": [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]], "kind": "crowd"}},
    "rules": [{"id": "crowd", "type": "crowd", "zone": "area", "min_count": 8, "min_duration_s": 10},
              {"id": "flow", "type": "line_crossing", "line": [[0.0, 0.6], [1.0, 0.6]]}],
}


def rss_mb() -> dict[str, float]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key = "rss_mb" if line.startswith("VmRSS") else "peak_rss_mb"
                out[key] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        import resource

        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat; zeros elsewhere)."""
    try:
        fields_ = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields_[3] + (fields_[4] if len(fields_) > 4 else 0)  # idle + iowait
    return (sum(fields_[:8]) - idle) / tick, sum(fields_[:8]) / tick


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return float(np.percentile(np.asarray(xs), q))


def _timed(fn, n: int) -> tuple[float, float]:
    """(wall ms, process-CPU ms) per call, mean over ``n`` calls."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w0) * 1000 / n, (time.process_time() - c0) * 1000 / n


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def model_key(variant: str, size: Size) -> str:
    """``int8`` for the 416×416 model (the keys of earlier results), ``int8_416x320`` for another size."""
    return variant if check_size(size) == (DEFAULT_SIZE, DEFAULT_SIZE) else f"{variant}_{size_name(size)}"


def detector_config(variant: str, size: Size, threads: int = 2, batch_workers: int = 1,
                    dynamic: bool = False) -> dict[str, Any]:
    w, h = check_size(size)
    return {"type": "yolo_darknet_onnx", "variant": variant, "threads": threads, "input_width": w, "input_height": h,
            "batch_workers": batch_workers, "dynamic": dynamic}


SHARDED = {"threads": 1, "batch_workers": 2}  # the shipped cameras.yaml: a batch split over 2 one-thread shards
IN_FLIGHT = 8  # the shipped vision.in_flight: frames at the detector while the worker plans and applies rules


def sample_frames(path: Path, n: int, step: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(f)
        i += 1
    cap.release()
    return out


# ----------------------------------------------------------------------------------------------- model


def bench_model(variant: str, frames: list[np.ndarray], quick: bool, size: Size = DEFAULT_SIZE) -> dict[str, Any]:
    out: dict[str, Any] = {"variant": variant, "input_size": size_name(size)}
    reps = {1: 8 if quick else 25, 4: 3 if quick else 8, 8: 2 if quick else 5}
    for threads in (2, 1):
        det = create_detector(detector_config(variant, size, threads))
        blob1, infos = det.preprocess(frames[:1])
        for _ in range(3):
            det.infer(blob1)
        rows = {}
        for batch, n in reps.items():
            blob, _ = det.preprocess((frames * 8)[:batch])
            wall, cpu = _timed(lambda b=blob, d=det: d.infer(b), n)
            rows[str(batch)] = {"ms_per_batch": round(wall, 2), "ms_per_frame": round(wall / batch, 2),
                                "cpu_ms_per_frame": round(cpu / batch, 2)}
        out[f"threads_{threads}"] = rows
        if threads == 2:
            pre, _ = _timed(lambda d=det: d.preprocess(frames[:1]), 20)
            raw = det.infer(blob1)
            post, _ = _timed(lambda d=det, r=raw, i=infos: d.postprocess(r, i), 20)
            out["preprocess_ms"] = round(pre, 2)
            out["postprocess_ms"] = round(post, 2)
        det.close()
    # whole detect() (pre + inference + post) on a batch of 8: 2 intra-op threads against 2 one-thread shards
    sharded: dict[str, Any] = {}
    for name, (threads, workers) in {"intra_op_2_threads": (2, 1), "shards_2x1_thread": (1, 2)}.items():
        det = create_detector(detector_config(variant, size, threads, workers))
        batch = (frames * 8)[:8]
        det.detect(batch)
        wall, cpu = _timed(lambda d=det, b=batch: d.detect(b), 2 if quick else 6)
        sharded[name] = {"ms_per_frame": round(wall / 8, 2), "frames_per_s": round(8000 / wall, 1),
                         "cpu_ms_per_frame": round(cpu / 8, 2)}
        det.close()
    out["sharded"] = sharded
    best_cpu = min(r["cpu_ms_per_frame"] for t in ("threads_1", "threads_2") for r in out[t].values())
    out["cpu_ms_per_frame_best"] = best_cpu
    out["fps_per_core"] = round(1000 / best_cpu, 1)
    out["frigate_capacity_fps"] = round(1000 / out["threads_2"]["1"]["ms_per_frame"], 1)
    return out


# ----------------------------------------------------------------------------------------------- clips


def bench_clip(name: str, path: Path, detector, quick: bool) -> dict[str, Any]:
    cap = cv2.VideoCapture(str(path))
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    n_src = 0
    c0 = time.process_time()
    while cap.grab():
        cap.retrieve()
        n_src += 1
    decode_ms = (time.process_time() - c0) * 1000 / max(1, n_src)
    cap.release()

    # motion gate over the whole clip at 5 fps (the capture path, frame time from the file)
    capture = CameraCapture({"camera_id": name, "source": str(path), "detect_fps": DETECT_FPS, "start_ts": 0.0,
                             "max_width": CAPTURE_MAX_WIDTH})
    sampled = list(capture.frames())
    raw = sample_frames(path, 20, 7)
    scale_ms, _ = _timed(lambda: [downscale(f, CAPTURE_MAX_WIDTH) for f in raw], 1)
    gate = MotionGate()
    gate_ms, _ = _timed(lambda: [gate.check(f.image, f.ts) for f in sampled[:50]], 1)
    gate_ms /= min(50, len(sampled))
    imgs = [f.image for f in sampled[:40]]
    packed: list[bytes] = []
    enc_ms, _ = _timed(lambda: packed.extend(pack_frame(f) for f in sampled[:40]), 1)
    dec_ms, _ = _timed(lambda: [unpack_frame(p) for p in packed], 1)
    n = 30 if quick else 80
    dets = [detector.detect_one(f.image) for f in sampled[:n]]
    engine = SceneEngine.from_config(name, SCENE)
    w, h = sampled[0].size
    track_ms, _ = _timed(lambda: [engine.update(d, f.ts, (w, h)) for d, f in zip(dets, sampled, strict=False)], 1)
    return {
        "file": str(path), "source_fps": round(src_fps, 3), "size": [w, h], "source_frames": n_src,
        "decode_cpu_ms_per_source_frame": round(decode_ms, 3),
        "sampled_frames": len(sampled), "gate_skip_ratio": round(capture.gate.skip_ratio, 4),
        "downscale_ms": round(scale_ms / len(raw), 3), "gate_ms": round(gate_ms, 3), "jpeg_pack_ms": round(enc_ms / len(imgs), 3),
        "jpeg_unpack_ms": round(dec_ms / len(packed), 3), "track_rules_ms": round(track_ms / len(dets), 3),
        "people_per_frame": round(float(np.mean([sum(d.label == "person" for d in ds) for ds in dets])), 2),
    }


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def bench_regions(path: Path, variant: str, n: int = 250, step: int = 1) -> dict[str, Any]:
    """Motion regions against whole frames on one clip (5 fps, one thread, the same dynamic model): share of
    frames cropped, input pixels, CPU ms per frame, and how many of the whole-frame pass's people and
    vehicles (score ≥ 0.4) the regions pass also found (same label, IoU > 0.5).  ``step`` > 1: only every
    step-th sampled frame is analysed (an agent that fell behind; gaps in ``seq``)."""
    det = create_detector(detector_config(variant, DEFAULT_SIZE, threads=1, dynamic=True))
    cap = CameraCapture({"camera_id": "c", "source": str(path), "detect_fps": DETECT_FPS, "start_ts": 0.0,
                         "max_width": CAPTURE_MAX_WIDTH})
    frames = list(cap.frames())[::step][:n]
    engine = SceneEngine.from_config("c", {})
    planner = RegionPlanner(RegionConfig())
    whole_s = regions_s = 0.0
    cropped = pixels = found = missed = 0
    for f in frames:
        c0 = time.process_time()
        ref = det.detect([f.image])[0]
        c1 = time.process_time()
        (got,), (plan,) = detect_frames(det, planner, [f], lambda _c, ts: engine.tracker.boxes_at(ts))
        regions_s += time.process_time() - c1
        whole_s += c1 - c0
        engine.update(got, f.ts, f.size)
        cw, ch, _, _ = stride_size(*f.size, det.input_scale(*f.size), det.config.stride)
        canvas = cw * ch
        cropped += plan is not None
        pixels += sum(c.width * c.height for c in plan) / canvas if plan else 1.0
        for r in ref:
            if r.score >= 0.4 and r.label in ("person", "car", "truck", "bus", "bicycle", "motorcycle"):
                hit = any(g.label == r.label and _iou(g.box, r.box) > 0.5 for g in got)
                found += hit
                missed += not hit
    det.close()
    k = max(1, len(frames))
    return {"frames": len(frames), "step": step, "cropped_share": round(cropped / k, 3), "input_pixels_share": round(pixels / k, 3),
            "cpu_ms_per_frame_whole": round(whole_s * 1000 / k, 2), "cpu_ms_per_frame_regions": round(regions_s * 1000 / k, 2),
            "recall_vs_whole": round(found / max(1, found + missed), 4), "objects_whole": found + missed}


def regions_rows(vtest: Path, market: Path, variant: str) -> dict[str, Any]:
    """Both clips frame by frame, and vtest with every 2nd / 3rd sampled frame missing."""
    return {"vtest_plaza": bench_regions(vtest, variant), "market_street_1906": bench_regions(market, variant),
            "vtest_plaza_every_2nd": bench_regions(vtest, variant, step=2),
            "vtest_plaza_every_3rd": bench_regions(vtest, variant, step=3)}


def capacity(clip: dict[str, Any], model: dict[str, Any], n_cores: int) -> dict[str, Any]:
    per_sampled = clip.get("downscale_ms", 0.0) + clip["gate_ms"] + clip["jpeg_pack_ms"] + clip["jpeg_unpack_ms"]
    per_detected = model["cpu_ms_per_frame_best"] + model["preprocess_ms"] + model["postprocess_ms"] \
        + clip["track_rules_ms"]
    decode = clip["decode_cpu_ms_per_source_frame"] * clip["source_fps"]
    detect_share = 1.0 - clip["gate_skip_ratio"]
    per_camera = decode + DETECT_FPS * (per_sampled + detect_share * per_detected)  # CPU ms per second
    budget = n_cores * 1000.0 * TARGET_UTILISATION
    def cams(skip: float) -> int:
        return int(budget // (decode + DETECT_FPS * (per_sampled + (1 - skip) * per_detected)))

    fixed = decode + DETECT_FPS * per_sampled
    need = (budget / 16 - fixed) / (DETECT_FPS * per_detected)  # detected share that still fits 16 cameras
    return {
        "cpu_ms_per_camera_second": round(per_camera, 1),
        "cameras_if_gate_skips": {f"{s:.0%}": cams(s) for s in (0.0, 0.25, 0.5, 0.75, 0.9)},
        "gate_skip_needed_for_16_cameras": round(min(1.0, max(0.0, 1 - need)), 3) if need > 0 else None,
        "split_ms_per_camera_second": {
            "decode": round(decode, 1), "downscale_gate_and_jpeg": round(DETECT_FPS * per_sampled, 1),
            "inference": round(DETECT_FPS * detect_share * model["cpu_ms_per_frame_best"], 1),
            "pre_post_track_rules": round(DETECT_FPS * detect_share * (per_detected - model["cpu_ms_per_frame_best"]), 1),
        },
        "cameras_at_5fps": int(budget // per_camera),
        "cameras_at_5fps_decode_elsewhere": int(budget // (per_camera - decode)),
    }


# ----------------------------------------------------------------------------------------------- live


def bench_live(variant: str, sources: list[Path], n_cameras: int, seconds: float,
               size: Size = DEFAULT_SIZE, threading_: dict[str, int] | None = None,
               regions: bool = False, dynamic: bool | None = None, in_flight: int = IN_FLIGHT,
               max_gap_frames: int | None = None) -> dict[str, Any]:
    """``n_cameras`` real-time file cameras → one batching vision worker; latency frame time → result.
    ``in_flight``: frames at the detector while the worker plans and applies rules, as ``vision.in_flight``
    (0: each batch planned, detected and applied in turn); ``max_gap_frames``: ``vision.regions``' (None: the
    shipped default);
    ``threading_``: the detector's ``threads`` / ``batch_workers`` (default: the shipped two shards);
    ``regions``: detect in motion regions as the vision agent does (needs the dynamic-input model);
    ``dynamic``: the dynamic-input model (default: with regions) — whole frames padded only to the grid."""
    threading_ = dict(threading_ or SHARDED)
    dynamic = regions if dynamic is None else dynamic
    detector = create_detector(detector_config(variant, size, **threading_, dynamic=dynamic))
    gap = {} if max_gap_frames is None else {"max_gap_frames": max_gap_frames}
    planner = RegionPlanner(RegionConfig(**gap)) if regions else None
    plan_counts = {"whole": 0, "regions": 0, "crops": 0}
    inbox: dict[str, bytes] = {}
    lock = threading.Condition()
    stop = threading.Event()
    offered = [0]
    dropped = [0]
    camera_cpu = [0.0] * n_cameras  # each camera thread's CPU seconds (file decode, downscale, gate, JPEG)

    def camera(i: int) -> None:
        cam_id = f"cam{i + 1}"
        cap = CameraCapture({"camera_id": cam_id, "source": str(sources[i % len(sources)]), "realtime": True,
                             "loop": True, "detect_fps": DETECT_FPS, "max_width": CAPTURE_MAX_WIDTH})
        for frame in cap.frames(yield_skipped=False):
            if stop.is_set():
                break
            data = pack_frame(frame)
            with lock:
                offered[0] += 1
                if cam_id in inbox:
                    dropped[0] += 1  # the worker did not get to the previous one: keep the newest
                inbox[cam_id] = data
                lock.notify()
        camera_cpu[i] = time.thread_time()
        cap.close()

    engines: dict[str, SceneEngine] = {}
    latencies: list[float] = []
    batches: list[int] = []
    events = [0]
    split = {"rules": 0.0}  # worker thread CPU seconds in the tracker and rules
    busy = [0.0]  # wall seconds the worker spent on batches (not waiting for frames)
    decoder = ThreadPoolExecutor(2)

    pipeline = DetectPipeline(detector, planner, in_flight)

    def tracks_at(cam: str, ts: float) -> list[Any]:
        return engines[cam].tracker.boxes_at(ts) if cam in engines else []

    def apply(f: Any, dets: Any, plan: Any) -> None:  # the agent's order: frames applied as they were given
        t0 = time.thread_time()
        plan_counts["whole" if plan is None else "regions"] += 1
        plan_counts["crops"] += len(plan or ())
        eng = engines.get(f.camera_id) or engines.setdefault(f.camera_id, SceneEngine.from_config(f.camera_id, SCENE))
        events[0] += len(eng.update(dets, f.ts, f.size).events)
        latencies.append(time.time() - f.ts)
        split["rules"] += time.thread_time() - t0

    def worker() -> None:
        while not stop.is_set():
            with lock:
                while not inbox and not stop.is_set():
                    lock.wait(0.2)
                items = list(inbox.items())[:MAX_BATCH]
                for k, _ in items:
                    del inbox[k]
            if not items:
                continue
            w0 = time.perf_counter()
            frames = [r.frame for r in decode_all([v for _, v in items], decoder)]  # as the agent does
            pipeline.run([frames], tracks_at, apply)  # one frame per camera: the inbox keeps the newest
            busy[0] += time.perf_counter() - w0
            batches.append(len(frames))

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(n_cameras)]
    wt = threading.Thread(target=worker, daemon=True)
    w0, c0, m0 = time.perf_counter(), time.process_time(), machine_cpu()
    for t in threads:
        t.start()
    wt.start()
    time.sleep(seconds)
    stop.set()
    wall, cpu, m1 = time.perf_counter() - w0, time.process_time() - c0, machine_cpu()
    others = max(0.0, (m1[0] - m0[0]) - cpu)  # CPU seconds of other processes: a busy machine skews the run
    wt.join(5)
    for t in threads:
        t.join(5)
    decoder.shutdown(wait=True)
    pipeline.close()
    detector.close()
    warm = latencies[len(latencies) // 10:]  # skip the start-up
    n = max(1, len(latencies))
    cameras_cpu = sum(camera_cpu)
    return {
        "variant": variant, "input_size": size_name(size), "capture_max_width": CAPTURE_MAX_WIDTH,
        "detector_threading": threading_, "sources": sorted({p.name for p in sources}), "cameras": n_cameras,
        "motion_regions": plan_counts if regions else None, "dynamic_input": dynamic, "in_flight": in_flight,
        "max_gap_frames": planner.cfg.max_gap_frames if planner else None,
        "seconds": round(wall, 1),
        "frames_offered": offered[0], "frames_processed": len(latencies), "frames_superseded": dropped[0],
        "processed_fps": round(len(latencies) / wall, 1), "mean_batch": round(statistics.mean(batches), 2) if batches else 0,
        "latency_ms": {"p50": round(pct(warm, 50) * 1000, 1), "p95": round(pct(warm, 95) * 1000, 1),
                       "p99": round(pct(warm, 99) * 1000, 1)},
        "cpu_utilisation": round(cpu / wall / cores(), 3), "scene_events": events[0],
        "other_processes_cpu_utilisation": round(others / max(1e-9, m1[1] - m0[1]), 3),
        "worker_busy_share": round(busy[0] / wall, 3),  # near 1: the worker thread, not the CPU, is the limit
        "processed_per_camera_fps": round(len(latencies) / wall / n_cameras, 2),
        "cpu_ms_per_processed_frame": {
            "total": round(cpu * 1000 / n, 2),
            "camera_threads": round(cameras_cpu * 1000 / n, 2),
            "worker_track_rules": round(split["rules"] * 1000 / n, 2),
            "decode_and_detector": round((cpu - split["rules"] - cameras_cpu) * 1000 / n, 2),
            "note": "camera threads: file decode, downscale, gate, JPEG pack of every offered frame; "
                    "decode_and_detector: the rest of the process (JPEG decode on 2 pool threads, region "
                    "planning, pre-/post-processing and inference on the shard and onnxruntime threads)",
        },
    }


def sustained(run: dict[str, Any]) -> bool:
    """A live run kept up: ≥ 98 % of the offered frames analysed, frame → result p95 ≤ 1 s."""
    return run["frames_processed"] >= 0.98 * run["frames_offered"] and run["latency_ms"]["p95"] <= 1000.0


def ramp(variant: str, sources: list[Path], seconds: float, size: Size, done: list[dict[str, Any]]) -> dict[str, Any]:
    """Cameras at 5 fps sustained, as shipped (motion regions, both clips): more cameras, 4 at a time from
    the 16-camera run, until a run does not keep up."""
    shipped = [r for r in done if r.get("motion_regions") and len(r["sources"]) == len(sources)]
    runs = [{"cameras": r["cameras"], "sustained": sustained(r), "processed_per_camera_fps": r["processed_per_camera_fps"],
             "p95_ms": r["latency_ms"]["p95"], "cpu_utilisation": r["cpu_utilisation"]} for r in shipped]
    n = max((r["cameras"] for r in runs), default=12)
    while all(r["sustained"] for r in runs) and n < 64:
        n += 4
        r = bench_live(variant, sources, n, seconds, size, regions=True)
        runs.append({"cameras": n, "sustained": sustained(r), "processed_per_camera_fps": r["processed_per_camera_fps"],
                     "p95_ms": r["latency_ms"]["p95"], "cpu_utilisation": r["cpu_utilisation"]})
    ok = [r["cameras"] for r in runs if r["sustained"]]
    return {"cameras_at_5fps": max(ok) if ok else 0, "criterion": "≥ 98 % of offered frames analysed, p95 ≤ 1 s",
            "runs": runs}


# ----------------------------------------------------------------------------------------------- run


E2E_RULES = {  # fires often: every person track entering the lower two thirds raises an event (and ends)
    "zones": {"street": {"polygon": [[0.0, 0.33], [1.0, 0.33], [1.0, 1.0], [0.0, 1.0]], "labels": ["person"]}},
    "rules": [{"id": "person-seen", "type": "restricted_zone", "zone": "street", "min_duration_s": 0,
               "level": "blue", "update_interval_s": 3600}],
}


def bench_e2e(sources: list[Path], n_cameras: int, seconds: float, variant: str = "int8",
              size: Size = DEFAULT_SIZE) -> dict[str, Any]:
    """The real processes end to end; latency from the frame's event time to the MQTT alert."""
    import tempfile
    import uuid

    import paho.mqtt.client as mqtt
    import yaml

    from gridwatch.core.procs import Proc
    from gridwatch.core.procs import rss_mb as proc_rss
    from gridwatch.devices.registry import load_city
    from gridwatch.pipeline.sources.rtsp_server import check_available, serve
    from gridwatch.stack import EmbeddedStack, free_port

    reason = check_available()
    if reason:
        return {"skipped": f"GStreamer RTSP server unavailable: {reason}"}
    cams = [d.id for d in load_city().registry.by_kind("camera")][:n_cameras]
    work = Path(tempfile.mkdtemp(prefix="gw-bench-vision-"))
    port = free_port()
    names = [f"cam{i + 1}" for i in range(n_cameras)]
    files = [sources[i % len(sources)] for i in range(n_cameras)]
    prefix = f"bv{uuid.uuid4().hex[:6]}"
    config = {"detector": detector_config(variant, size, **SHARDED, dynamic=True),  # as shipped (+ regions)
              "vision": {"max_batch": 8, "batch_window_s": 0.02, "stats_interval_s": 2.0, "plates": "off"},
              "capture": {"offline_after_s": 5.0},
              "cameras": {cam: {"source": f"rtsp://127.0.0.1:{port}/{name}", "detect_fps": DETECT_FPS,
                                "max_width": CAPTURE_MAX_WIDTH, **E2E_RULES}
                          for cam, name in zip(cams, names, strict=True)}}
    (work / "cameras.yaml").write_text(yaml.safe_dump(config))
    alerts: list[tuple[float, dict[str, Any]]] = []
    stats: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        now = time.time()
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        with lock:
            if "/stats/vision/" in msg.topic:
                stats.append(body)
            else:
                alerts.append((now, body))

    with EmbeddedStack() as stack:
        server = serve(files, port, names=names)
        common = ["--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url, "--prefix", prefix,
                  "--cameras", str(work / "cameras.yaml"), "--log-level", "info"]
        env = {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on", "GRIDWATCH_WEB_EVIDENCE_DIR": str(work / "evidence")}
        worker = Proc(f"{prefix}-worker", ["worker", *common, "--agents", "alerts,vision"], work, env)
        capture = Proc(f"{prefix}-cameras", ["cameras", *common], work, env)
        host, mport = stack.mqtt_url.removeprefix("mqtt://").split(":")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.on_message = on_message
        client.connect(host, int(mport))
        client.subscribe([("gridwatch/alerts/#", 1), ("gridwatch/stats/vision/#", 0)])
        client.loop_start()
        try:
            worker.start()
            worker.wait_log("worker ready", 120)
            capture.start()
            capture.wait_log("capture service running", 60)
            deadline = time.time() + 60
            while time.time() < deadline and not alerts:
                time.sleep(0.2)
            with lock:
                alerts.clear()  # warm-up over: measure from here
                start = {k: (stats[-1] if stats else {}).get(k) or 0 for k in WINDOW_STATS}
            pids = {worker.name: worker.pid, capture.name: capture.pid, "rtsp-server": server.process.pid}
            cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
            w0 = time.time()
            time.sleep(seconds)
            wall = time.time() - w0
            cpu = {name: round((_cpu_s(pid) - cpu0[name]) / wall, 3) for name, pid in pids.items()}
            with lock:
                window = {k: ((stats[-1] if stats else {}).get(k) or 0) - start[k] for k in WINDOW_STATS}
            frames_window = window["frames"]
            mem = {"worker_rss_mb": round(proc_rss(worker.pid)[0], 1),
                   "cameras_rss_mb": round(proc_rss(capture.pid)[0], 1)}
        finally:
            capture.stop()
            worker.stop()
            server.stop()
            client.loop_stop()
            client.disconnect()
    with lock:
        new = [(t, b) for t, b in alerts if b.get("phase") == "new"]
        last = stats[-1] if stats else {}
    lat = [t - b["ts"] / 1000 for t, b in new]
    offered = n_cameras * DETECT_FPS * wall  # frames the cameras were due to send in the measured window
    return {
        "variant": variant, "input_size": size_name(size), "cameras": n_cameras, "detect_fps": DETECT_FPS,
        "seconds": round(wall, 1),
        "alerts": len(alerts), "new_events": len(new),
        "frame_to_alert_ms": {"p50": round(pct(lat, 50) * 1000, 1), "p95": round(pct(lat, 95) * 1000, 1),
                              "max": round(max(lat) * 1000, 1) if lat else None, "n": len(lat)},
        "agent": {k: last.get(k) for k in ("records", "frames", "skipped_lagging", "skipped_stale", "skipped_still",
                                           "latency_ms", "kafka_ms", "infer_ms_per_frame", "mean_batch",
                                           "whole_frames", "region_frames", "crops")},
        # the measured window alone: frame records the agent took (offered: cameras x fps x seconds), and of them
        # analysed, found still by the capture's motion gate, or shed because the agent lagged
        "window": {**window, "offered": round(offered),
                   "taken_share": round(window["records"] / max(1.0, offered), 3),
                   "shed_share": round(window["skipped_lagging"] / max(1, window["records"]), 3)},
        "detector": config["detector"],
        "cpu_cores_used": cpu, **mem,
        # the whole worker (Faust, Kafka client, JPEG decode, detector, rules, alerts agent) per analysed frame,
        # against the detector's own CPU per frame in the model section: the difference is the pipeline's share
        "cpu_ms_per_analysed_frame": {
            name: round(cores * wall * 1000 / frames_window, 1) if frames_window > 0 else None
            for name, cores in cpu.items()},
        "note": "frame time = decode time in the capture process; the alert time = arrival at an MQTT subscriber",
    }


WINDOW_STATS = ("records", "frames", "skipped_still", "skipped_lagging", "skipped_stale")


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process and its children that were waited for (from /proc)."""
    try:
        return cpu_s(pid, children=True)
    except (OSError, IndexError, ValueError):
        return 0.0


def run_e2e_only(out_json_path: str | Path | None, *, seconds: float, n_cameras: int,
                 size: Size = DEFAULT_SIZE) -> dict[str, Any]:
    build(quiet=True, size=size)
    variant = "int8" if calibration_images() else "fp32"
    e2e = bench_e2e([footage.vtest_avi(), footage.market_street_mp4()], n_cameras, seconds, variant, size)
    result: dict[str, Any] = {}
    if out_json_path and Path(out_json_path).exists():
        result = json.loads(Path(out_json_path).read_text())
    result["e2e"] = e2e
    if out_json_path:
        Path(out_json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json_path).write_text(json.dumps(result, indent=2) + "\n")
    print_e2e(e2e)
    return result


def print_e2e(e: dict[str, Any]) -> None:
    if "skipped" in e:
        print(f"\ne2e: skipped ({e['skipped']})")
        return
    lat, ag = e["frame_to_alert_ms"], e["agent"]
    al = ag.get("latency_ms") or {}
    print(f"\ne2e ({e['variant']} {e.get('input_size', DEFAULT_SIZE)}, {e['cameras']} RTSP cameras at "
          f"{e['detect_fps']:.0f} fps, {e['seconds']} s): "
          f"frame -> MQTT alert p50 {lat['p50']} ms, p95 {lat['p95']} ms (n={lat['n']}); agent frame -> result "
          f"p50 {al.get('p50')} ms p95 {al.get('p95')} ms over {ag.get('frames')} frames "
          f"(skipped as lagging {ag.get('skipped_lagging') or 0}); inference {ag.get('infer_ms_per_frame')} ms/frame, "
          f"mean batch {ag.get('mean_batch')}; CPU cores {e['cpu_cores_used']}; CPU ms per analysed frame "
          f"{e.get('cpu_ms_per_analysed_frame')}; RSS worker {e['worker_rss_mb']} MB, "
          f"capture {e['cameras_rss_mb']} MB")
    w = e.get("window") or {}
    if w:
        print(f"measured window: {w['records']} frame records taken of ~{w['offered']} offered "
              f"({w['taken_share']:.1%}); {w['skipped_lagging']} shed as lagging ({w['shed_share']:.1%}), "
              f"{w['frames']} analysed, {w['skipped_still']} still")


def run(out_json_path: str | Path | None = DEFAULT_OUT, *, seconds: float = 20.0, quick: bool = False,
        e2e_cameras: int = 4, sizes: tuple[Size, ...] = SIZES, e2e_size: Size | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    for size in sizes:
        build(quiet=True, size=size)
    variants = ["fp32"] + (["int8"] if calibration_images() else [])
    vtest, market = footage.vtest_avi(), footage.market_street_mp4()
    frames = sample_frames(vtest, 8, 40)
    n_cores = cores()
    result: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": n_cores, "python": platform.python_version(),
                    "onnxruntime": __import__("onnxruntime").__version__, "opencv": cv2.__version__},
        "detect_fps": DETECT_FPS, "target_utilisation": TARGET_UTILISATION, "capture_max_width": CAPTURE_MAX_WIDTH,
        "model": {}, "clips": {}, "capacity": {}, "live": [],
    }
    models = [(v, size) for size in sizes for v in variants]
    for v, size in models:
        result["model"][model_key(v, size)] = bench_model(v, frames, quick, size)
    det = create_detector({"type": "yolo_darknet_onnx", "threads": 2})
    result["clips"]["vtest_plaza"] = bench_clip("vtest_plaza", vtest, det, quick)
    result["clips"]["market_street_1906"] = bench_clip("market_street_1906", market, det, quick)
    det.close()
    fastest = variants[-1]
    result["regions"] = regions_rows(vtest, market, fastest)
    for key, mod in result["model"].items():
        result["capacity"][key] = {c: capacity(clip, mod, n_cores) for c, clip in result["clips"].items()}
    live_seconds = min(seconds, 8.0) if quick else seconds
    runs = [(v, sizes[0], result["capacity"][model_key(v, sizes[0])]["vtest_plaza"]["cameras_at_5fps"], False)
            for v in variants]  # each variant at its estimated capacity (the input size), whole frames
    runs += [(fastest, size, 16, False) for size in sizes]  # the target: 16 cameras, whole frames
    for v, size, n, _ in dict.fromkeys(runs):
        if n > 0:
            result["live"].append(bench_live(v, [vtest, market], n, live_seconds, size))
    # the dynamic-input model on whole frames (padded only to the grid), then as shipped with motion
    # regions: both clips, and fixed street cameras only (vtest: a plaza seen from a wall)
    for sources in ([vtest, market], [vtest]):
        for regions in (False, True):
            result["live"].append(bench_live(fastest, sources, 16, live_seconds, sizes[0], regions=regions,
                                             dynamic=True))
    result["sustained"] = ramp(fastest, [vtest, market], live_seconds, sizes[0], result["live"])
    result["memory"] = rss_mb()
    if e2e_cameras > 0:
        result["e2e"] = bench_e2e([vtest, market], e2e_cameras, live_seconds, fastest, e2e_size or sizes[0])
    result["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    if out_json_path:
        out = Path(out_json_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        result["out"] = str(out)
    print_table(result)
    return result


def run_live_only(out_json_path: str | Path | None, *, seconds: float, cameras: int = 16, street_cameras: int = 24,
                  setups: tuple[tuple[int, int | None], ...] = ((IN_FLIGHT, None),),
                  size: Size = DEFAULT_SIZE) -> dict[str, Any]:
    """Only the as-shipped live rows (motion regions, the dynamic int8 model): ``cameras`` on both clips and
    ``street_cameras`` fixed street cameras (vtest), each once per setup (``vision.in_flight``,
    ``vision.regions.max_gap_frames``; ``(0, 0)``: batches in turn, whole frames after any gap), interleaved."""
    build(quiet=True, size=size)
    variant = "int8" if calibration_images() else "fp32"
    vtest, market = footage.vtest_avi(), footage.market_street_mp4()
    result: dict[str, Any] = {"machine": {"cpu": cpu_model(), "cores": cores()}, "live": []}
    for sources, n in (([vtest, market], cameras), ([vtest], street_cameras)):
        for depth, gap in setups:
            if n > 0:
                result["live"].append(bench_live(variant, sources, n, seconds, size, regions=True, in_flight=depth,
                                                 max_gap_frames=gap))
    result["memory"] = rss_mb()
    if out_json_path:
        Path(out_json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json_path).write_text(json.dumps(result, indent=2) + "\n")
    print_live(result["live"])
    return result


def print_live(rows: list[dict[str, Any]]) -> None:
    for lv in rows:
        lat = lv["latency_ms"]
        split = lv.get("cpu_ms_per_processed_frame") or {}
        mode = ("motion regions" if lv.get("motion_regions") else
                "whole frames, dynamic input" if lv.get("dynamic_input") else "whole frames")
        print(f"\nlive {lv['variant']} {lv.get('input_size', DEFAULT_SIZE)} {mode}, {'+'.join(lv.get('sources', []))}, "
              f"in_flight {lv.get('in_flight', 0)}, max_gap_frames {lv.get('max_gap_frames')}: {lv['cameras']} cameras for {lv['seconds']} s: "
              f"{lv['frames_processed']}/{lv['frames_offered']} frames processed "
              f"({lv['frames_processed'] / max(1, lv['frames_offered']):.1%}; {lv['processed_fps']} fps = "
              f"{lv['processed_per_camera_fps']} per camera, mean batch {lv['mean_batch']}), "
              f"latency p50 {lat['p50']} ms p95 {lat['p95']} ms p99 {lat['p99']} ms, CPU {lv['cpu_utilisation']:.0%} "
              f"(other processes {lv.get('other_processes_cpu_utilisation', 0):.0%})")
        if split:
            print(f"  CPU ms per processed frame {split['total']}: camera threads {split['camera_threads']}, "
                  f"JPEG decode + detector {split['decode_and_detector']}, tracker + rules "
                  f"{split['worker_track_rules']}; worker thread busy {lv['worker_busy_share']:.0%} of the time "
                  f"(detector {lv['detector_threading']})")
        mr = lv.get("motion_regions")
        if mr:
            print(f"  motion regions: {mr['regions']} frames in {mr['crops']} crops, {mr['whole']} whole frames")


def print_regions(regions: dict[str, Any]) -> None:
    for name, g in regions.items():
        print(f"\nmotion regions, {name} ({g['frames']} frames, every {g.get('step', 1)}. sampled, 1 thread): "
              f"{g['cropped_share']:.0%} of frames cropped, "
              f"{g['input_pixels_share']:.0%} of the input pixels, {g['cpu_ms_per_frame_regions']} ms a frame against "
              f"{g['cpu_ms_per_frame_whole']} ms whole; found {g['recall_vs_whole']:.1%} of the whole pass's "
              f"{g['objects_whole']} people and vehicles")


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"\nvision benchmark — {m['cpu']}, {m['cores']} cores, onnxruntime {m['onnxruntime']}")
    print("\nmodel                               batch  ms/frame 2thr  ms/batch 2thr  ms/frame 1thr  CPU ms/frame")
    for v, mod in r["model"].items():
        size = mod.get("input_size", DEFAULT_SIZE)
        for b in ("1", "4", "8"):
            t2, t1 = mod["threads_2"][b], mod["threads_1"][b]
            print(f"  yolov3-tiny {v:<13} {size:>7}  {b:>5}  {t2['ms_per_frame']:>13.1f}  {t2['ms_per_batch']:>13.1f}"
                  f"  {t1['ms_per_frame']:>13.1f}  {min(t1['cpu_ms_per_frame'], t2['cpu_ms_per_frame']):>12.1f}")
        print(f"  {v}: {mod['fps_per_core']} frames/s per core; pre {mod['preprocess_ms']} ms, "
              f"post {mod['postprocess_ms']} ms; Frigate-style capacity {mod['frigate_capacity_fps']} fps")
        sh = mod.get("sharded")
        if sh:
            a, b = sh["intra_op_2_threads"], sh["shards_2x1_thread"]
            print(f"  {v}: detect() batch 8: {a['frames_per_s']} frames/s on 2 intra-op threads, "
                  f"{b['frames_per_s']} frames/s as 2 one-thread shards (batch_workers 2)")
    print("\nclip                   decode ms/src  scale ms  gate ms  gate skip  jpeg pack+unpack ms  track+rules ms")
    for name, c in r["clips"].items():
        print(f"  {name:<20} {c['decode_cpu_ms_per_source_frame']:>13.2f}  {c.get('downscale_ms', 0):>8.2f}  "
              f"{c['gate_ms']:>7.2f}  "
              f"{c['gate_skip_ratio']:>9.1%}  {c['jpeg_pack_ms'] + c['jpeg_unpack_ms']:>19.2f}  {c['track_rules_ms']:>14.2f}")
    print_regions(r.get("regions", {}))
    print(f"\ncameras at {r['detect_fps']:.0f} fps ({r['target_utilisation']:.0%} of {m['cores']} cores)"
          "   CPU ms/camera/s  (decode/scale+gate+jpeg/inference/rest)  cameras  (decode elsewhere)")
    for v, caps in r["capacity"].items():
        for name, c in caps.items():
            s = c["split_ms_per_camera_second"]
            print(f"  {v:<13} {name:<20} {c['cpu_ms_per_camera_second']:>16.1f}  ({s['decode']}/"
                  f"{s['downscale_gate_and_jpeg']}/"
                  f"{s['inference']}/{s['pre_post_track_rules']}){'':>8}{c['cameras_at_5fps']:>4}  "
                  f"({c['cameras_at_5fps_decode_elsewhere']})")
    print("\nif the gate skipped a share of frames (measured costs, vtest_plaza):")
    for v, caps in r["capacity"].items():
        c = caps["vtest_plaza"]
        sweep = ", ".join(f"{k}: {n}" for k, n in c["cameras_if_gate_skips"].items())
        print(f"  {v:<13} cameras at skip {sweep}; 16 cameras need {c['gate_skip_needed_for_16_cameras']} skipped")
    print_live(r["live"])
    if "sustained" in r:
        sus = r["sustained"]
        steps = ", ".join(f"{x['cameras']}: {x['processed_per_camera_fps']} fps/camera p95 {x['p95_ms']} ms "
                          f"{'ok' if x['sustained'] else 'falls behind'}" for x in sus["runs"])
        print(f"\ncameras at 5 fps sustained (as shipped, both clips; {sus['criterion']}): "
              f"{sus['cameras_at_5fps']}  ({steps})")
    if "e2e" in r:
        print_e2e(r["e2e"])
    mem = r["memory"]
    print(f"\nmemory: RSS {mem.get('rss_mb')} MB, peak {mem.get('peak_rss_mb')} MB; bench took {r['bench_seconds']} s")
    if "out" in r:
        print(f"wrote {r['out']}")


def parse_setup(text: str) -> tuple[int, int | None]:
    """``8:2`` → (8, 2); ``shipped`` → the shipped in_flight and the planner's default gap."""
    if text.strip() == "shipped":
        return IN_FLIGHT, None
    depth, _, gap = text.partition(":")
    return int(depth), int(gap) if gap else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gridwatch.bench vision", description="vision benchmark")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each live run")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, 8 s live runs")
    ap.add_argument("--e2e-cameras", type=int, default=4,
                    help="RTSP cameras in the end-to-end run through Kafka and the worker (0 = skip it)")
    ap.add_argument("--e2e-only", action="store_true", help="run only the end-to-end part (merged into --out)")
    ap.add_argument("--sizes", default=",".join(map(size_name, SIZES)),
                    help="detector inputs to measure (W or WxH), the first is the reference (default %(default)s)")
    ap.add_argument("--e2e-size", type=parse_size, default=None,
                    help="detector input of the end-to-end run (default: the first of --sizes, 416)")
    ap.add_argument("--live-only", action="store_true",
                    help="only the as-shipped live rows: --cameras on both clips, --street-cameras on vtest")
    ap.add_argument("--cameras", type=int, default=16, help="--live-only: cameras on both clips")
    ap.add_argument("--street-cameras", type=int, default=24, help="--live-only: fixed street cameras (vtest)")
    ap.add_argument("--setups", default="shipped",
                    help="--live-only: IN_FLIGHT:MAX_GAP_FRAMES,... each row once per setup (vision.in_flight, "
                         "vision.regions.max_gap_frames; 'shipped' = the defaults; e.g. 0:0,shipped)"),
    ap.add_argument("--regions-only", action="store_true",
                    help="only the motion-region rows (recall against whole frames; vtest also with frames missing)")
    args = ap.parse_args(argv)
    if args.regions_only:
        build(quiet=True)
        rows = regions_rows(footage.vtest_avi(), footage.market_street_mp4(),
                            "int8" if calibration_images() else "fp32")
        out = args.out if args.out != DEFAULT_OUT else DEFAULT_OUT.with_name("vision-regions.json")
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print_regions(rows)
    elif args.live_only:
        out = args.out if args.out != DEFAULT_OUT else DEFAULT_OUT.with_name("vision-live.json")
        run_live_only(out, seconds=args.seconds, cameras=args.cameras, street_cameras=args.street_cameras,
                      setups=tuple(parse_setup(x) for x in args.setups.split(",") if x.strip()))
    elif args.e2e_only:
        run_e2e_only(args.out, seconds=args.seconds, n_cameras=args.e2e_cameras, size=args.e2e_size or DEFAULT_SIZE)
    else:
        sizes = tuple(parse_size(x) for x in args.sizes.split(",") if x.strip())
        run(args.out, seconds=args.seconds, quick=args.quick, e2e_cameras=args.e2e_cameras, sizes=sizes,
            e2e_size=args.e2e_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
