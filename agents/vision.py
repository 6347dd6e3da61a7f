"""Vision agent: camera frames → batched ONNX detection → per-camera tracker and scene rules → grid events.

    <prefix>.frames (key = camera id) ──take_events(max_batch, within=batch_window_s)──► inference thread:
        decode JPEG → plan each frame (whole or motion regions) → detector threads, ``in_flight`` frames
        ahead → in order: SceneEngine per camera (tracker, zones, rules) → snapshot on new / end
        (FileEvidenceStore) → plate read for vehicles (optional) → GridEvent
    ──► <prefix>.events (key = grid code) ──► alerts agent ──► MQTT

* **Off the event loop.** Everything CPU-bound (JPEG decode, onnxruntime, tracker, rendering the snapshot)
  runs in one dedicated executor thread, so the worker's event loop keeps serving Kafka heartbeats,
  commits and the other agents.  One thread also means the per-camera engines need no locks.  Only the
  detector's work on a frame's pictures runs on its own threads (``detector.batch_workers``, each with
  ``detector.threads`` onnxruntime threads), while this thread plans the next frames and applies the
  finished ones (models/detect_pipeline.py, ``vision.in_flight``; same results as batches in turn).
* **Batching across cameras** as DeepStream does: the frames that arrived within ``batch_window_s`` (at
  most ``max_batch``) are taken together; with ``vision.in_flight: 0`` they go through the detector as one
  batch, else frame by frame on the detector's threads, up to ``in_flight`` ahead of the rules.
* **Event time.** Frames carry their capture time; a frame at or before the last one a camera's engine
  saw (a re-delivery after a restart, or out of order) is skipped — the tracker never sees time go back.
  Grid-event ids are the scene events' deterministic ids (camera, rule, zone, track start, track), so a
  re-processed frame produces the same id and the alert channel does not publish it twice.
* **Bad input** (not a frame, undecodable JPEG, unknown camera) goes to ``<prefix>.deadletter`` with the
  reason; the agent goes on with the next record.
* A ``camera_status`` record with ``online: false`` (the capture service lost the camera, or a file
  ended) ends the camera's open scene events and drops its tracks.
* Partitions are keyed by camera, so a camera's frames stay on one worker.
* **Scene state survives a restart or a rebalance.**  Each camera's whole scene memory (tracks, zone
  membership, open events with their ids and start times, dwell / crowd timers, line counts; see
  ``SceneEngine.export_state``) is checkpointed in the changelog-backed table ``vision-scene`` (key =
  camera, on the frame's partition) at most every ``CHECKPOINT_S`` of event time and at every new / end,
  after the batch's events are confirmed.  A worker that gets the partition (after a crash, a restart or a
  rebalance) restores the camera from it on its first record, skips re-delivered frames at or before the
  checkpoint's frame time, and so continues the open events (their "end" keeps the original id) instead
  of raising them again.  Frames after the checkpoint that the old worker had already processed are
  processed again and give the same events and ids (deterministic), which the alert channel de-duplicates.

Heavy imports (OpenCV, onnxruntime) happen in :func:`install`, so a worker that does not run this agent
(the default: ``worker.agents`` must name it) never loads the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gridwatch.pipeline.outputs.stats_publisher import StatsPublisher
from gridwatch.pipeline.schemas.events import GridEvent

from .runtime import AgentContext
from .tables import put

log = logging.getLogger("gridwatch.vision")
CHECKPOINT_S = 1.0  # event time between two checkpoints of a camera's scene state (and at every new / end)
LAG_KEEP_EVERY_S = 1.0  # while lagging, one frame per camera per this much event time is still analysed
VEHICLES = frozenset({"car", "truck", "bus", "motorcycle", "bicycle"})


def _ms(ts: float) -> int:
    return int(round(ts * 1000))


def _plain(obj: Any) -> Any:
    """JSON-ready copy (numpy scalars and tuples from the rules become plain numbers and lists)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return round(float(obj), 3) if obj == obj and abs(obj) != float("inf") else None
    if hasattr(obj, "item"):  # numpy scalar
        return _plain(obj.item())
    return str(obj)


def describe(ev: Any) -> str:
    """A one-line message for operators."""
    who = f"{ev.label or 'object'} #{ev.track_id}" if ev.track_id is not None else (ev.label or "objects")
    d = ev.data or {}
    if ev.kind == "vehicle_parked":
        text = f"{who} parked in {ev.zone} for {float(d.get('stationary_s', ev.duration_s)):.0f} s"
    elif ev.kind == "crowd":
        text = f"crowd of {d.get('count', len(ev.track_ids))} in {ev.zone} (peak {d.get('peak', '?')})"
    elif ev.kind == "restricted_zone":
        text = f"{who} in restricted zone {ev.zone}"
    elif ev.kind == "line_crossing":
        text = f"{who} crossed {ev.zone}" + (f" ({d['direction']})" if d.get("direction") else "")
    else:
        text = f"{ev.kind}: {who} in {ev.zone}"
    if ev.type == "end":
        text += f"; ended after {ev.duration_s:.0f} s ({ev.reason})"
    return text


def camera_rounds(recs: list[Any], max_batch: int) -> list[list[Any]]:
    """Detector batches with at most one frame per camera (round k = each camera's k-th frame), each camera's
    frames in order.  A frame's motion regions follow its camera's tracks, which the previous frame's
    detections move: so every frame is planned after its camera's previous one was applied, and a replay
    that batches differently (faster, slower) crops, detects and raises exactly the same."""
    rounds: list[list[Any]] = []
    seen: Counter = Counter()
    for rec in recs:
        k = seen[rec.frame.camera_id]
        seen[rec.frame.camera_id] += 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(rec)
    return [r[i:i + max_batch] for r in rounds for i in range(0, len(r), max_batch)]


@dataclass
class Outcome:
    """What one batch produced, for the event loop to send."""

    events: list[GridEvent] = field(default_factory=list)
    dead: list[tuple[str, str, str, bytes, str | None]] = field(default_factory=list)  # reason, detail, topic, payload, camera
    writes: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # camera -> (partition, scene state)


class VisionProcessor:
    """Runs in the inference thread only (not thread-safe by design: one thread owns it)."""

    def __init__(self, config: Any, sites: dict[str, Any], store: Any, *, detector: Any = None,
                 plate_reader: Any = None, clock: Any = time.time) -> None:
        self.config = config
        self.opts = config.vision
        self.sites = sites
        self.store = store
        self.detector = detector
        self.plate_reader = plate_reader
        self._plates_checked = plate_reader is not None
        self.clock = clock
        self.engines: dict[str, Any] = {}
        self.partition_of: dict[str, int] = {}
        self.refs: dict[str, str] = {}  # open scene event id -> snapshot ref of its "new"
        self.stats: Counter = Counter()
        self.latency_s: deque[float] = deque(maxlen=4000)  # frame time -> scene result, per processed frame
        self.kafka_s: deque[float] = deque(maxlen=4000)  # produced -> taken by this agent
        self.infer_ms: deque[float] = deque(maxlen=1000)  # per frame
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._unknown: dict[str, float] = {}  # camera -> when its last unknown_camera dead letter went out
        self.saved_ts: dict[str, float | None] = {}  # camera -> frame time of its last checkpoint
        self._kept_ts: dict[Any, float] = {}  # camera -> frame time of the last frame not shed for lag
        from gridwatch.models.regions import RegionConfig, RegionPlanner

        regions = RegionConfig.from_dict(getattr(self.opts, "regions", None))
        self._regions: Any = RegionPlanner(regions) if regions.enabled else None  # motion regions (see _planner)
        self._regions_checked = False
        self._decoder: ThreadPoolExecutor | None = None  # JPEG decoding of a batch on 2 threads
        self._pipeline: Any = None  # frames → detector → rules (see _detect_pipeline)

    # -- set-up ------------------------------------------------------------------------------------
    def warm(self) -> None:
        import numpy as np

        from gridwatch.models.detectors import create_detector

        if self.detector is None:
            t0 = time.perf_counter()
            self.detector = create_detector(dict(self.config.detector))
            self.detector.detect([np.full((360, 640, 3), 127, np.uint8)])  # first run allocates; not on a live frame
            log.info("vision: detector %s ready in %.1f s", self.config.detector.get("type"), time.perf_counter() - t0)
        if not self._plates_checked:
            self._plates_checked = True
            if self.opts.plates != "off":
                from gridwatch.models.plates import create_plate_reader

                self.plate_reader = create_plate_reader({"threads": self.opts.plate_threads,
                                                         "min_score": self.opts.plate_min_score})
                if self.plate_reader is None and self.opts.plates == "on":
                    log.warning("vision.plates is on but agentclpr is not installed: no plate reading")

    def _planner(self) -> Any:
        """Motion regions (models/regions.py) when ``vision.regions.enabled`` and the detector takes any
        input size; else every frame runs whole."""
        if not self._regions_checked and self.detector is not None:
            self._regions_checked = True
            if self._regions is not None and getattr(self.detector, "dynamic_input", False):
                log.info("vision: motion regions on (whole frame at least every %.1f s per camera)",
                         self._regions.cfg.full_frame_interval_s)
            elif self._regions is not None:
                log.info("vision: motion regions off: the detector's model has a fixed input size "
                         "(detector.dynamic: true enables them)")
                self._regions = None
        return self._regions if self._regions_checked else None

    def forget_partitions(self, partitions: set[int]) -> None:
        gone = [cam for cam, p in self.partition_of.items() if p in partitions]
        for cam in gone:
            if self._regions is not None:
                self._regions.forget(cam)
            self.engines.pop(cam, None)
            self.partition_of.pop(cam, None)
            self.saved_ts.pop(cam, None)
            self._kept_ts.pop(cam, None)
        if gone:
            log.info("vision: partitions %s revoked; forgot cameras %s", sorted(partitions), gone)

    def _engine(self, cam: str) -> Any:
        engine = self.engines.get(cam)
        if engine is None:
            from gridwatch.models.scene_rules import SceneEngine

            spec, site = self.config.cameras[cam], self.sites[cam]
            engine = SceneEngine.from_config(cam, {**spec.scene, "tz": site.tz})
            self.engines[cam] = engine
        return engine

    def _restore(self, cam: str, state: dict[str, Any]) -> None:
        """A camera this worker has no engine for, with a checkpoint in the table: continue from it."""
        engine = self._engine(cam)
        if state.get("reset"):  # the camera went offline: start fresh, but not with frames before that
            engine.last_ts = state.get("ts")
        elif not engine.import_state(state):
            log.warning("vision: camera %s: scene state of another version (%s) ignored", cam, state.get("v"))
            return
        elif isinstance(state.get("regions"), dict) and self._regions is not None:
            self._regions.restore(cam, state["regions"])  # crops continue as the old worker chose them
        self.saved_ts[cam] = engine.last_ts
        self.stats["restored"] += 1
        log.info("vision: camera %s: scene state restored at frame time %s (%d open events)", cam,
                 engine.last_ts, len(engine.open_events))

    def _checkpoint(self, cam: str, engine: Any, out: Outcome, force: bool) -> None:
        saved = self.saved_ts.get(cam)
        if engine.last_ts is None or cam not in self.partition_of:
            return
        if force or saved is None or engine.last_ts - saved >= CHECKPOINT_S:
            state = engine.export_state()
            if self._regions is not None:
                state["regions"] = self._regions.export(cam)
            out.writes[cam] = (self.partition_of[cam], state)
            self.saved_ts[cam] = engine.last_ts
            self.stats["checkpoints"] += 1

    # -- one batch ---------------------------------------------------------------------------------
    def process(self, items: list[tuple[int, str, bytes | None, bytes | None]],
                restore: dict[str, Any] | None = None) -> Outcome:
        """``items``: (partition, topic, key, value) in arrival order; ``restore``: camera -> checkpointed
        scene state (the table's value, or None), used for a camera this processor has no engine for."""
        from gridwatch.pipeline.schemas.codec import SchemaError, dumps
        from gridwatch.pipeline.schemas.frames import CameraStatusRecord, decode_all, peek_header

        for cam, state in (restore or {}).items():
            if state and cam not in self.engines and cam in self.sites:
                self._restore(cam, state)
        out = Outcome()
        frames: list[Any] = []
        now = self.clock()
        wanted = []
        for item in items:
            self.stats["records"] += 1
            head = peek_header(item[3])
            if head is None or not self._skip_early(head, now):  # a skipped frame's JPEG is never decoded
                wanted.append(item)
        if self._decoder is None and len(wanted) > 1:
            self._decoder = ThreadPoolExecutor(2, thread_name_prefix="vision-decode")
        for (partition, topic, key, value), rec in zip(wanted, decode_all([it[3] for it in wanted], self._decoder),
                                                       strict=True):
            cam_key = key.decode(errors="replace") if isinstance(key, bytes | bytearray) else None
            if isinstance(rec, SchemaError):
                out.dead.append(("bad_frame", str(rec), topic, value or b"", cam_key))
                continue
            cam = rec.camera_id
            if cam not in self.sites:
                # capture and worker disagree on the camera list: park one record per camera per minute
                # (its header, not the picture) instead of every frame at 5 fps
                self.stats["unknown_camera"] += 1
                if now - self._unknown.get(cam, -1e18) >= 60.0:
                    self._unknown[cam] = now
                    head = dumps(getattr(rec, "header", None) or {"camera_id": cam, "record": "camera_status"})
                    out.dead.append(("unknown_camera", f"camera {cam!r} is not in the camera config "
                                     f"({self.config.path}); further frames of it are counted, not parked",
                                     topic, head, cam))
                continue
            self.partition_of[cam] = partition
            if isinstance(rec, CameraStatusRecord):
                self._run(frames, out)  # frames before the status record first: keep each camera's order
                frames = []
                if not rec.online:
                    self._close(cam, rec, out)
                continue
            if rec.sent is not None and not rec.header.get("replayed"):
                self.kafka_s.append(max(0.0, now - rec.sent))
            frames.append(rec)
        self._run(frames, out)
        return out

    def _skip_early(self, head: dict[str, Any], now: float) -> bool:
        if head.get("detect") is False:
            self.stats["skipped_still"] += 1  # the motion gate said nothing moved
            return True
        sent = head.get("sent")
        if self._shed(head.get("camera_id"), head.get("ts"), head.get("replayed"), sent, now):
            self.stats["skipped_lagging"] += 1  # waited too long in Kafka / for the detector: catch up
            return True
        return False

    def _shed(self, cam: Any, ts: Any, replayed: Any, sent: Any, now: float) -> bool:
        """Live load shedding: while frames wait longer than ``max_lag_s`` (wall clock), keep only one per
        ``LAG_KEEP_EVERY_S`` of event time per camera, so the agent catches up (a backlog after a restart,
        a slow detector) while tracks, dwell timers and open events carry on (the tracker drops a track
        unseen for ``max_age_s``).  Never for a replayed frame (``gridwatch replay`` marks them): lag
        depends on the machine's speed and the replay's pace, and a replay must process exactly the frames
        the live run did to give the same vision events.  A frame checked twice gets the same answer."""
        if not isinstance(ts, int | float):
            return False
        last = self._kept_ts.get(cam)
        lagging = (self.opts.max_lag_s > 0 and not replayed and isinstance(sent, int | float)
                   and now - sent > self.opts.max_lag_s)
        if lagging and last is not None and last < ts < last + LAG_KEEP_EVERY_S:
            return True
        self._kept_ts[cam] = max(ts, last if last is not None else ts)
        return False

    def process_each(self, items: list[tuple[int, str, bytes | None, bytes | None]],
                     restore: dict[str, Any] | None = None) -> Outcome:
        """Fallback after a failed batch: one record at a time, so only the culprit is dead-lettered."""
        out = Outcome()
        for item in items:
            try:
                one = self.process([item], restore)
            except Exception as e:  # noqa: BLE001 - parked with the reason, the agent goes on
                log.exception("vision: record failed")
                _, topic, key, value = item
                cam = key.decode(errors="replace") if isinstance(key, bytes | bytearray) else None
                one = Outcome(dead=[("vision_error", f"{type(e).__name__}: {e}", topic, value or b"", cam)])
            out.events.extend(one.events)
            out.dead.extend(one.dead)
            out.writes.update(one.writes)
        return out

    def _close(self, cam: str, rec: Any, out: Outcome) -> None:
        engine = self.engines.pop(cam, None)
        if self._regions is not None:
            self._regions.forget(cam)
        if engine is None:
            return
        reason = "stream_ended" if rec.reason == "ended" else "camera_offline"
        ts = max(rec.ts, engine.last_ts or rec.ts)
        for ev in engine.close(ts):
            out.events.append(self._grid_event(dataclasses.replace(ev, reason=reason), engine, None, []))
        if cam in self.partition_of:  # a restarted worker must not resume the closed events
            out.writes[cam] = (self.partition_of[cam], {"v": 1, "ts": ts, "reset": True})
        self.saved_ts.pop(cam, None)
        log.info("vision: camera %s %s; its scene state is reset", cam, reason.replace("_", " "))

    def _run(self, recs: list[Any], out: Outcome) -> None:
        if not recs:
            return
        keep = []
        newest: dict[str, float] = {}
        now = self.clock()
        for rec in recs:
            f = rec.frame
            cam = f.camera_id
            if not f.detect:
                self.stats["skipped_still"] += 1  # the motion gate said nothing moved
                continue
            if not self.config.cameras[cam].has_rules:
                self.stats["skipped_no_rules"] += 1
                continue
            engine = self.engines.get(cam)
            last = newest.get(cam, engine.last_ts if engine is not None else None)
            if last is not None and f.ts <= last:
                self.stats["skipped_stale"] += 1  # re-delivered or out of order
                continue
            if self._shed(cam, f.ts, rec.header.get("replayed"), rec.sent or f.ts, now):
                self.stats["skipped_lagging"] += 1  # waited too long in Kafka / for the detector: catch up
                continue
            newest[cam] = f.ts
            keep.append(rec)
        if not keep:
            return
        if self.detector is None:
            self.warm()
        changed: dict[str, bool] = {}  # camera -> a new / end in this batch (checkpoint at once)
        rounds = camera_rounds(keep, self.opts.max_batch)
        rec_of = {id(r.frame): r for r in keep}
        applying = [0.0]

        def apply(f: Any, dets: Any, plan: Any) -> None:
            t0 = time.perf_counter()
            if isinstance(dets, Exception):  # parked with its header; the batch's other frames go on
                self._failed(rec_of[id(f)], dets, out)
            else:
                self.stats["whole_frames" if plan is None else "region_frames"] += 1
                self.stats["crops"] += len(plan or ())
                self._apply(f, dets, out, changed)
            applying[0] += time.perf_counter() - t0

        def tracks_at(cam: str, ts: float) -> list[Any]:
            engine = self.engines.get(cam)
            return engine.tracker.boxes_at(ts) if engine is not None else []

        t0 = time.perf_counter()
        self._detect_pipeline().run([[r.frame for r in chunk] for chunk in rounds], tracks_at, apply)
        detect_s = time.perf_counter() - t0 - applying[0]  # planning and the detector, not the rules
        self.batch_sizes.extend(len(chunk) for chunk in rounds)
        self.infer_ms.extend([detect_s * 1000 / len(keep)] * len(keep))
        for cam, force in changed.items():
            engine = self.engines.get(cam)
            if engine is not None:
                self._checkpoint(cam, engine, out, force)
        self.stats["detections_batches"] += 1

    def _detect_pipeline(self) -> Any:
        """Frames → detector → rules, the detector working while this thread plans and applies
        (``vision.in_flight``; models/detect_pipeline.py)."""
        if self._pipeline is None:
            from gridwatch.models.detect_pipeline import DetectPipeline

            self._pipeline = DetectPipeline(self.detector, self._planner(), self.opts.in_flight)
        return self._pipeline

    def _failed(self, rec: Any, e: Exception, out: Outcome) -> None:
        """A frame the detector (or its planning) failed on: its header to the dead letters."""
        from gridwatch.pipeline.schemas.codec import dumps

        log.error("vision: detector failed on a frame of camera %s", rec.frame.camera_id, exc_info=e)
        out.dead.append(("vision_error", f"{type(e).__name__}: {e}", "frames", dumps(rec.header),
                         rec.frame.camera_id))

    def _apply(self, f: Any, dets: list[Any], out: Outcome, changed: dict[str, bool]) -> None:
        """One frame's detections through its camera's tracker and rules."""
        engine = self._engine(f.camera_id)
        try:
            result = engine.update(dets, f.ts, f.size)
        except Exception as e:  # noqa: BLE001 - a rule bug must not stop the agent
            log.exception("vision: scene rules failed for camera %s", f.camera_id)
            out.dead.append(("scene_error", f"{type(e).__name__}: {e}", "frames", b"", f.camera_id))
            self.engines.pop(f.camera_id, None)
            if self._regions is not None:
                self._regions.forget(f.camera_id)  # a new engine starts with a whole frame
            return
        for ev in result.events:
            out.events.append(self._grid_event(ev, engine, f.image, result.tracks))
        changed[f.camera_id] = changed.get(f.camera_id, False) or any(e.type != "update" for e in result.events)
        self.stats["frames"] += 1
        self.latency_s.append(self.clock() - f.ts)

    # -- scene event -> grid event -----------------------------------------------------------------
    def _snapshot(self, ev: Any, engine: Any, image: Any, tracks: list[Any]) -> str | None:
        import cv2

        from gridwatch.models.scene_rules import LineCrossingRule
        from gridwatch.pipeline.outputs.evidence import render_evidence

        rule = next((r for r in engine.rules if r.rule_id == ev.rule_id), None)
        line = None
        if isinstance(rule, LineCrossingRule):
            h, w = image.shape[:2]
            line = rule.line_px((w, h)).tolist()
        picture = render_evidence(image, ev, zones=engine.zones, tracks=tracks, line=line, tz=engine.tz)
        ok, buf = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, int(self.opts.evidence_quality)])
        if not ok:
            return None
        name = ev.event_id if ev.type == "new" else f"{ev.event_id}-{ev.type}"
        return self.store.put(ev.camera_id, name, buf.tobytes())

    def _plate(self, ev: Any, image: Any) -> dict[str, Any] | None:
        if self.plate_reader is None or ev.box is None or ev.type != "new":
            return None
        if ev.kind != "vehicle_parked" and (ev.label or "") not in VEHICLES:
            return None
        try:
            read = self.plate_reader.best(image, ev.box)
        except Exception:  # noqa: BLE001 - an optional reader must not cost the event
            log.exception("vision: plate reading failed")
            return None
        self.stats["plates_read" if read else "plates_none"] += 1
        return read.to_dict() if read else None

    def _grid_event(self, ev: Any, engine: Any, image: Any, tracks: list[Any]) -> GridEvent:
        site = self.sites[ev.camera_id]
        ref = None
        plate = None
        if image is not None:
            if ev.type in ("new", "end"):
                try:
                    ref = self._snapshot(ev, engine, image, tracks)
                    self.stats["snapshots"] += 1
                except Exception:  # noqa: BLE001 - a full disk must not stop the alerts
                    log.exception("vision: snapshot for %s failed", ev.event_id)
                    self.stats["snapshot_errors"] += 1
            plate = self._plate(ev, image)
        first = self.refs.get(ev.event_id)
        entry: dict[str, Any] = {
            "snapshot": ref or first, "phase": ev.type, "ts": _ms(ev.ts), "camera": ev.camera_id,
            "rule_id": ev.rule_id, "zone": ev.zone, "label": ev.label, "track_id": ev.track_id,
            "score": round(float(ev.score), 3),
            "box": None if ev.box is None else [round(float(v), 1) for v in ev.box],
            "update_seq": ev.update_seq, "data": _plain(ev.data)}
        if ev.track_ids:
            entry["track_ids"] = [int(t) for t in ev.track_ids]
        if ev.reason:
            entry["reason"] = ev.reason
        if plate:
            entry["plate"] = plate
        if entry["snapshot"] is None:
            del entry["snapshot"]
        evidence = [entry]
        if ev.type == "end" and first and ref and first != ref:  # the end has its own picture too
            evidence.append({"snapshot": first, "phase": "new"})
        if ev.type == "new" and ref:
            self.refs[ev.event_id] = ref
        elif ev.type == "end":
            self.refs.pop(ev.event_id, None)
        self.stats[f"events_{ev.type}"] += 1
        return GridEvent(
            id=ev.event_id, type=ev.kind, phase=ev.type, level=ev.level or "yellow", subject=ev.camera_id,
            device_kind="camera", grid_code=site.grid_code, tiers=list(site.tiers), lat=site.lat, lon=site.lon,
            start_ts=_ms(ev.start_ts), ts=_ms(ev.ts), end_ts=_ms(ev.end_ts) if ev.end_ts is not None else None,
            message=describe(ev), evidence=evidence, source="vision", rule=ev.rule_id)

    # -- numbers -------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        import numpy as np

        def q(xs: deque, p: float, scale: float = 1000.0) -> float | None:
            return round(float(np.percentile(np.asarray(xs), p)) * scale, 1) if xs else None

        return {
            **dict(self.stats), "cameras": sorted(self.engines),
            "latency_ms": {"p50": q(self.latency_s, 50), "p95": q(self.latency_s, 95), "n": len(self.latency_s)},
            "kafka_ms": {"p50": q(self.kafka_s, 50), "p95": q(self.kafka_s, 95)},
            "infer_ms_per_frame": q(self.infer_ms, 50, 1.0),
            "mean_batch": round(sum(self.batch_sizes) / len(self.batch_sizes), 2) if self.batch_sizes else None,
        }


def install(ctx: AgentContext) -> Any:
    from gridwatch.pipeline.outputs.evidence import FileEvidenceStore
    from gridwatch.pipeline.sources.camera_service import (
        camera_config_path,
        evidence_root,
        load_camera_config,
        resolve_sites,
    )

    app, settings = ctx.app, ctx.settings
    config = load_camera_config(camera_config_path(settings))
    sites = resolve_sites(config, ctx.registry, ctx.gridmap, getattr(ctx, "timezone", "UTC") or "UTC")
    store = FileEvidenceStore(evidence_root(settings), url_prefix=config.vision.evidence_url_prefix,
                              max_age_s=config.vision.evidence_max_age_days * 86400,
                              max_bytes=int(config.vision.evidence_max_mb * 1024 * 1024))
    store.prune()  # what an earlier run left beyond the retention
    processor = VisionProcessor(config, sites, store)
    app.gridwatch_vision = processor  # type: ignore[attr-defined]
    frames_topic = app.topic(settings.topic("frames"), key_serializer="raw", value_serializer="raw",
                             partitions=settings.kafka.partitions)
    scene_table = app.Table("vision-scene", partitions=settings.kafka.partitions, default=None)
    executor = ThreadPoolExecutor(1, thread_name_prefix="vision-infer")
    events_topic = ctx.events_topic
    opts = config.vision
    log.info("vision agent: %d cameras from %s, detector %s, evidence in %s", len(sites), config.path,
             config.detector, store.root)

    @app.on_partitions_revoked.connect
    async def _revoked(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        parts = {tp.partition for tp in (revoked or ()) if tp.topic == frames_topic.get_topic_name()}
        if parts:
            executor.submit(processor.forget_partitions, parts)  # after the batch in flight, in order

    @app.agent(frames_topic, name="vision")
    async def vision(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, processor.warm)
        except Exception:  # noqa: BLE001 - logged; the first batch tries again
            log.exception("vision: detector failed to load")
        async for batch in stream.take_events(opts.max_batch, within=opts.batch_window_s):
            items = [(e.message.partition, e.message.topic, e.key, e.value) for e in batch]
            # checkpoints of the batch's cameras, read here on the loop (the table is not thread-safe);
            # the processor uses one only for a camera it has no engine for (restart, rebalance)
            restore = {c: scene_table.get(c) for c in {k.decode(errors="replace") for _, _, k, _ in items
                                                       if isinstance(k, bytes | bytearray)}}
            try:
                result = await loop.run_in_executor(executor, processor.process, items, restore)
            except Exception:  # noqa: BLE001 - a bug or the detector cannot load: park, do not crash
                log.exception("vision: batch of %d failed; retrying its records one by one", len(items))
                result = await loop.run_in_executor(executor, processor.process_each, items, restore)
            for reason, detail, topic, payload, cam in result.dead:
                await ctx.dead_letter("vision", reason, detail, topic, payload, cam)
            if result.events:
                futures = [await events_topic.send(key=ev.grid_code.encode(), value=ev.encode())
                           for ev in result.events]
                await asyncio.gather(*futures)
                ctx.stats["vision_events"] += len(result.events)
            for cam, (partition, state) in result.writes.items():  # after the events: a crash re-raises, never loses
                put(scene_table, cam, state, partition)

    figures = StatsPublisher(settings, "vision")
    logged = [0]

    @app.timer(max(0.5, opts.stats_interval_s))
    async def vision_stats() -> None:
        snap = processor.snapshot()
        if snap.get("records", 0) != logged[0]:  # log only when something arrived
            logged[0] = snap.get("records", 0)
            log.info("vision stats: %s", snap)
        await figures.publish(snap)

    return vision
