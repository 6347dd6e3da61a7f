"""Motion regions: run the detector only where something moved or is being tracked, as Frigate does.

A fixed city camera sees mostly still background; on vtest.avi (a busy plaza) the boxes that need looking
at — the motion gate's changed areas and the tracker's current tracks, each with a margin — cover a median
28 % of the picture.  Instead of the whole frame, the vision agent then runs the detector on a few crops
around them, **at the whole frame's scale** (so a person is as many input pixels as in a full pass and
only the context beyond a crop's margin differs from a whole-frame pass), on a model whose input size may
vary (``dynamic`` build).

:func:`plan_crops` decides, per frame, between the whole frame and a set of crops:

* every box grows by ``margin_px`` input pixels (a motion box misses a walker's still limbs, a track's
  box lags a frame);
* boxes are merged greedily while one crop around two groups costs fewer input pixels than two crops
  (each crop pays ``region_overhead_px`` for its own session call and pre-/post-processing);
* when the crops would cost more than ``max_share`` of the whole frame's input pixels, the whole frame
  runs (a moving camera, a crowded scene: no saving, and no risk).

:func:`merge_detections` maps each crop's detections back to frame pixels and suppresses the duplicates
of an object seen by two overlapping crops.  The agent runs the whole frame anyway on the first frame of a
camera, on a motion-gate keyframe and at least every ``full_frame_interval_s`` of event time, so an object
that appeared without moving (or a track the crops lost) is found again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gridwatch.core.options import from_mapping

Box = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class RegionConfig:
    enabled: bool = True
    margin_px: int = 24  # input pixels around each motion / track box
    max_share: float = 0.7  # whole frame when the crops cost more than this share of its input pixels
    region_overhead_px: int = 6144  # one more crop costs as much as this many input pixels
    full_frame_interval_s: float = 2.0  # a whole frame per camera at least this often (event time)
    # sampled frames of a camera that may be missing (superseded or shed while the agent was behind) since
    # its last analysed frame for the next to still be cropped; more: the whole frame.  0 made an overloaded
    # agent search every frame whole after a gap, which overloaded it further
    max_gap_frames: int = 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RegionConfig:
        cfg = from_mapping(cls, data, "vision.regions")
        if not 0.0 < cfg.max_share <= 1.0 or cfg.margin_px < 0 or cfg.max_gap_frames < 0:
            raise ValueError("vision.regions: max_share in (0, 1], margin_px >= 0, max_gap_frames >= 0")
        return cfg


@dataclass(frozen=True, slots=True)
class Crop:
    """A part of the detector's input canvas (the frame scaled and padded as for a whole-frame pass), in
    canvas pixels, on the model's ``stride`` grid (x2, y2 exclusive)."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


def plan_crops(canvas: tuple[int, int], boxes: Iterable[Sequence[float]], cfg: RegionConfig,
               stride: int = 32) -> list[Crop] | None:
    """Crops of a ``canvas`` (w, h: the whole-frame input, multiples of the detector's ``stride``) that
    cover ``boxes`` (canvas pixels); ``None`` when the whole canvas is the better (or the only safe) choice.

    Works on the model's grid: each box (with its margin) marks the stride cells it touches, so a crop is
    exactly cells of a whole-frame pass — the model sees the same pixels on the same grid (yolov3-tiny's
    boxes move when the grid moves).  Touching marks form blobs; blobs are merged while one crop around
    two costs fewer input pixels than two crops."""
    w, h = canvas
    st, m = stride, cfg.margin_px

    def cost(b: tuple[int, int, int, int]) -> float:  # input pixels of a crop of cells, + one more call
        return (b[2] - b[0]) * (b[3] - b[1]) * st * st + cfg.region_overhead_px

    grid = np.zeros((h // st, w // st), np.uint8)
    for b in boxes:
        x1, y1 = max(0, math.floor((b[0] - m) / st)), max(0, math.floor((b[1] - m) / st))
        x2, y2 = min(grid.shape[1], math.ceil((b[2] + m) / st)), min(grid.shape[0], math.ceil((b[3] + m) / st))
        if x2 > x1 and y2 > y1:
            grid[y1:y2, x1:x2] = 1
    marked = int(grid.sum())
    if marked == 0 or marked * st * st > cfg.max_share * w * h:  # nothing to look at, or no saving possible
        return None
    n, _, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=4)
    groups = [(int(x), int(y), int(x + bw), int(y + bh)) for x, y, bw, bh, _ in stats[1:n]]
    costs = [cost(g) for g in groups]
    while len(groups) > 1:  # merge the pair that saves the most input pixels, while one does
        best, pair = 0.0, None
        for i in range(len(groups)):
            a = groups[i]
            for j in range(i + 1, len(groups)):
                b = groups[j]
                u = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                saving = costs[i] + costs[j] - cost(u)
                if saving > best:
                    best, pair = saving, (i, j, u)
        if pair is None:
            break
        i, j, u = pair
        groups[i], costs[i] = u, cost(u)
        del groups[j], costs[j]
    if sum(costs) - cfg.region_overhead_px > cfg.max_share * w * h:
        return None
    return [Crop(g[0] * st, g[1] * st, g[2] * st, g[3] * st) for g in groups]


def cut(image: np.ndarray, crop: Crop) -> np.ndarray:
    return image[crop.y1:crop.y2, crop.x1:crop.x2]


def merge_detections(per_crop: Sequence[Sequence[Any]], crops: Sequence[Crop], nms_iou: float,
                     contain_threshold: float | None = None) -> list[Any]:
    """Detections of each crop shifted by the crop's origin; where two crops overlap, an object found in
    both is kept once (per-class NMS, best score first), the rule the detector applies inside one picture."""
    from gridwatch.models.detectors.onnx_yolo import nms

    dets = []
    for found, c in zip(per_crop, crops, strict=True):
        for d in found:
            x1, y1, x2, y2 = d.box
            dets.append(dataclasses.replace(d, box=(x1 + c.x1, y1 + c.y1, x2 + c.x1, y2 + c.y1)))
    if len(crops) < 2 or len(dets) < 2:
        return dets
    boxes = np.array([d.box for d in dets], dtype=np.float32)
    scores = np.array([d.score for d in dets], dtype=np.float32)
    classes = np.array([d.class_id for d in dets], dtype=np.int64)
    keep = nms(boxes, scores, nms_iou, classes, contain_threshold=contain_threshold)
    return [dets[i] for i in sorted(int(k) for k in keep)]


class RegionPlanner:
    """Per camera, per frame: the whole frame or crops.  State per camera: the event time of its last
    whole-frame pass and the capture sequence number of its last analysed frame."""

    def __init__(self, cfg: RegionConfig) -> None:
        self.cfg = cfg
        self.full_ts: dict[str, float] = {}
        self.last_seq: dict[str, int] = {}

    def plan(self, camera: str, canvas: tuple[int, int], ts: float, reason: str,
             boxes: Sequence[Sequence[float]] | None, seq: int | None = None, stride: int = 32) -> list[Crop] | None:
        """``boxes``: the gate's motion boxes and the tracker's boxes, in canvas pixels (None: motion not
        known).  The whole frame on a camera's first frame, a keyframe (the gate saw no motion: look for
        still objects), without motion boxes, every ``full_frame_interval_s``, and after a gap in ``seq``
        of more than ``max_gap_frames`` frames (frames superseded, shed for lag or skipped by the gate: the
        motion boxes only cover the last 1/detect_fps, the tracks' predictions drift).  A short gap keeps
        the crops: what moved in a missing frame and still moves is in the motion boxes, a tracked object in
        its track's box, and anything else is found by the next whole frame (vtest at 5 fps, 2 or 3
        sampled frames apart: 99.9 % / 99.8 % of the whole pass's people and vehicles found, against
        99.9 % frame by frame; ``python -m gridwatch.bench vision``, ``regions``)."""
        cfg, last = self.cfg, self.full_ts.get(camera)
        prev = self.last_seq.get(camera)
        if seq is not None:
            self.last_seq[camera] = seq
        crops = None
        if (cfg.enabled and boxes is not None and reason == "motion" and last is not None
                and 0 <= ts - last < cfg.full_frame_interval_s
                and (seq is None or (prev is not None and 0 < seq - prev <= 1 + cfg.max_gap_frames))):
            crops = plan_crops(canvas, boxes, cfg, stride)
        if crops is None:
            self.full_ts[camera] = ts
        return crops

    def export(self, camera: str) -> dict[str, Any]:
        """The camera's planner state for its scene checkpoint (a restarted worker crops the same)."""
        return {"full_ts": self.full_ts.get(camera), "seq": self.last_seq.get(camera)}

    def restore(self, camera: str, state: Mapping[str, Any]) -> None:
        if isinstance(state.get("full_ts"), int | float):
            self.full_ts[camera] = float(state["full_ts"])
        if isinstance(state.get("seq"), int):
            self.last_seq[camera] = int(state["seq"])

    def forget(self, camera: str) -> None:
        self.full_ts.pop(camera, None)
        self.last_seq.pop(camera, None)


@dataclass(slots=True)
class PlannedFrame:
    """One frame made ready for the detector: the pictures to run (``jobs``) and how their detections map
    back to the frame (``info``: the whole-frame canvas's scale and padding; None: ``detect`` scales a
    whole frame itself).  ``plan``: the crops, None when the frame is searched whole."""

    jobs: list[np.ndarray]
    plan: list[Crop] | None
    info: Any = None


def plan_frame(detector: Any, planner: RegionPlanner | None, frame: Any,
               tracks_at: Callable[[str, float], Iterable[Sequence[float]]]) -> PlannedFrame:
    """Whole frame or crops for one capture frame (``camera_id``, ``ts``, ``image``, ``reason``,
    ``motion_boxes``, ``seq``).  Advances the planner's state for the frame's camera, so the camera's
    previous frame must have been applied to its tracker (``tracks_at``) before this is called.

    Without a planner, or with a detector of fixed input size, the frame runs whole (``detect``).  Else it
    is scaled and padded once, exactly as a whole-frame pass would be (``pad_to_stride``), and the planner
    picks crops of that canvas around the motion and the tracks (``tracks_at(camera, ts)``, frame pixels)."""
    from gridwatch.models.detectors.onnx_yolo import pad_to_stride

    if planner is None or not getattr(detector, "dynamic_input", False):
        return PlannedFrame([frame.image], None)
    cfg = detector.config
    h, w = frame.image.shape[:2]
    canvas, info = pad_to_stride(frame.image, detector.input_scale(w, h), cfg.stride, pad_value=cfg.pad_value)
    boxes = None
    if frame.motion_boxes is not None:  # the gate's boxes (0..1) and the tracks (frame pixels), on the canvas
        frame_px = [(b[0] * w, b[1] * h, b[2] * w, b[3] * h) for b in frame.motion_boxes]
        boxes = info.to_input(frame_px + [tuple(b) for b in tracks_at(frame.camera_id, frame.ts)]).tolist()
    plan = planner.plan(frame.camera_id, (canvas.shape[1], canvas.shape[0]), frame.ts, frame.reason, boxes,
                        frame.seq, cfg.stride)
    return PlannedFrame([canvas] if plan is None else [cut(canvas, c) for c in plan], plan, info)


def detect_planned(detector: Any, planned: Sequence[PlannedFrame]) -> list[list[Any]]:
    """Detections (frame pixels) of planned frames, all their jobs in one detector call: ``detect`` for
    whole frames of the detector's own scaling, else ``detect_scaled`` at scale 1 on the canvases and crops.
    Touches no planner or tracker state, so it may run on another thread than the planning."""
    jobs = [j for p in planned for j in p.jobs]
    if not jobs:
        return []
    if planned[0].info is None:  # one whole frame per planned frame, scaled by the detector
        return detector.detect(jobs)
    cfg = detector.config
    found = detector.detect_scaled(jobs, 1.0, clip=False)  # a crop's edge is not the object's: clip in _to_frame
    results, first = [], 0
    for p in planned:
        if p.plan is None:
            dets = found[first]
        else:
            dets = merge_detections(found[first:first + len(p.plan)], p.plan, cfg.nms_iou,
                                    getattr(cfg, "suppress_contained", None))
        first += len(p.jobs)
        results.append(_to_frame(dets, p.info))
    return results


def detect_frames(detector: Any, planner: RegionPlanner | None, frames: Sequence[Any],
                  tracks_at: Callable[[str, float], Iterable[Sequence[float]]]) -> tuple[list[list[Any]], list[list[Crop] | None]]:
    """Detections for a batch of capture frames (frame pixels) and each frame's plan (None: searched
    whole): every frame planned (:func:`plan_frame`), then all their jobs in one detector call."""
    planned = [plan_frame(detector, planner, f, tracks_at) for f in frames]
    return detect_planned(detector, planned), [p.plan for p in planned]


def _to_frame(dets: Sequence[Any], info: Any) -> list[Any]:
    """Canvas pixels → frame pixels (the inverse of the scale and padding)."""
    if not dets:
        return []
    boxes = info.to_source(np.array([d.box for d in dets], dtype=np.float32))
    return [dataclasses.replace(d, box=(float(b[0]), float(b[1]), float(b[2]), float(b[3])))
            for d, b in zip(dets, boxes, strict=True)]
