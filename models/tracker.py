"""Per-camera multi-object tracker: IoU association, ByteTrack-style two-stage matching.

Each :meth:`Tracker.update` takes one frame's detections and its **event timestamp**:

1. predict every live track's box to ``ts`` with its smoothed velocity (constant-velocity model, so a
   car moving fast between 5 fps samples still overlaps its prediction);
2. match high-score detections (``>= high_threshold``) to all live tracks by IoU, greedily, best pair first,
   only between compatible labels (``car`` ↔ ``truck`` ↔ ``bus`` may swap: yolov3-tiny flips them);
3. match the remaining low-score detections (``low_threshold .. high_threshold``) to the tracks still
   unmatched, with a stricter IoU — the ByteTrack idea: a partly occluded person keeps its track;
4. start tentative tracks from unmatched detections ``>= new_track_threshold``; a track is confirmed after
   ``min_hits`` matches; a tentative track that misses a frame is dropped;
5. drop confirmed tracks not matched for ``max_age_s`` seconds of event time (time, not frames, because the
   motion gate skips frames of static scenes).

Track ids are small integers, stable for a track's life and never reused within one tracker.

:meth:`Tracker.export_state` / :meth:`Tracker.import_state` turn the whole tracker into a JSON-ready dict
and back (floats survive JSON exactly), so a worker that restarts continues every track — same ids,
same boxes and velocities — as if it had never stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridwatch.core.options import from_mapping
from gridwatch.models.detectors.base import Detection

DEFAULT_CLASS_GROUPS: tuple[tuple[str, ...], ...] = (("car", "truck", "bus"), ("bicycle", "motorcycle"))

Box = tuple[float, float, float, float]


@dataclass
class TrackerConfig:
    high_threshold: float = 0.45
    low_threshold: float = 0.15
    new_track_threshold: float = 0.5
    match_iou: float = 0.2
    low_match_iou: float = 0.4
    min_hits: int = 2
    max_age_s: float = 3.0
    max_velocity_dt_s: float = 1.0  # never extrapolate further than this
    velocity_smoothing: float = 0.5  # weight of the newest velocity sample
    match_buffer: float = 0.3  # grow boxes by this fraction of their size on each side before IoU (C-BIoU)
    class_groups: list[list[str]] = field(default_factory=lambda: [list(g) for g in DEFAULT_CLASS_GROUPS])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrackerConfig:
        return from_mapping(cls, data, "tracker")


@dataclass(frozen=True, slots=True)
class TrackState:
    """Read-only snapshot of a track after an update."""

    track_id: int
    label: str
    box: Box  # last matched box, or the prediction while the track is unmatched
    score: float  # score of the last matched detection
    max_score: float
    start_ts: float  # event time of the first detection
    last_ts: float  # event time of the last match
    hits: int
    matched: bool  # matched in the latest update
    velocity: tuple[float, float]  # anchor velocity, pixels per second

    @property
    def anchor(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, self.box[3])

    @property
    def diagonal(self) -> float:
        return float(np.hypot(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def to_dict(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "label": self.label, "box": [round(v, 1) for v in self.box],
                "score": round(self.score, 4), "start_ts": self.start_ts, "last_ts": self.last_ts,
                "hits": self.hits, "matched": self.matched}


class _Track:
    __slots__ = ("track_id", "box", "score", "max_score", "start_ts", "last_ts", "hits", "misses", "velocity",
                 "votes", "confirmed", "matched")

    def __init__(self, track_id: int, det: Detection, ts: float):
        self.track_id = track_id
        self.box = np.asarray(det.box, dtype=np.float64)
        self.score = det.score
        self.max_score = det.score
        self.start_ts = ts
        self.last_ts = ts
        self.hits = 1
        self.misses = 0
        self.velocity = np.zeros(4)
        self.votes: dict[str, float] = {det.label: det.score}
        self.confirmed = False
        self.matched = True

    @property
    def label(self) -> str:
        return max(self.votes.items(), key=lambda kv: kv[1])[0]

    def predict(self, ts: float, max_dt: float) -> np.ndarray:
        dt = min(max(ts - self.last_ts, 0.0), max_dt)
        return self.box + self.velocity * dt

    def update(self, det: Detection, ts: float, alpha: float) -> None:
        new = np.asarray(det.box, dtype=np.float64)
        dt = ts - self.last_ts
        if dt > 1e-6:
            v = (new - self.box) / dt
            self.velocity = alpha * v + (1 - alpha) * self.velocity if self.hits > 1 else v
        self.box = new
        self.score = det.score
        self.max_score = max(self.max_score, det.score)
        self.last_ts = ts
        self.hits += 1
        self.misses = 0
        self.votes[det.label] = self.votes.get(det.label, 0.0) + det.score
        self.matched = True

    def state(self, ts: float, max_dt: float) -> TrackState:
        box = self.box if self.matched else self.predict(ts, max_dt)
        v = self.velocity
        return TrackState(self.track_id, self.label, (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                          float(self.score), float(self.max_score), self.start_ts, self.last_ts, self.hits,
                          self.matched, (float((v[0] + v[2]) / 2), float(v[3])))


def _grow(b: np.ndarray, r: float) -> np.ndarray:
    if r <= 0:
        return b
    w = (b[:, 2] - b[:, 0]) * r
    h = (b[:, 3] - b[:, 1]) * r
    return np.stack([b[:, 0] - w, b[:, 1] - h, b[:, 2] + w, b[:, 3] + h], axis=1)


def _iou(a: np.ndarray, b: np.ndarray, buffer: float = 0.0) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a, b = _grow(a, buffer), _grow(b, buffer)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    ab = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-9)


def _greedy_match(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Pairs (row, col) with the highest IoU first; each row and column used once."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= min_iou)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class Tracker:
    """Multi-object tracker for one camera (not thread-safe; one instance per camera)."""

    def __init__(self, config: TrackerConfig | Mapping[str, Any] | None = None):
        self.config = config if isinstance(config, TrackerConfig) else TrackerConfig.from_dict(config)
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._group: dict[str, int] = {}
        for gi, group in enumerate(self.config.class_groups):
            for name in group:
                self._group[name] = gi
        self.last_ts: float | None = None

    def _compatible(self, a: str, b: str) -> bool:
        if a == b:
            return True
        ga, gb = self._group.get(a), self._group.get(b)
        return ga is not None and ga == gb

    def _assoc(self, tracks: list[_Track], dets: list[Detection], ts: float, min_iou: float):
        if not tracks or not dets:
            return [], list(range(len(tracks))), list(range(len(dets)))
        pred = np.stack([t.predict(ts, self.config.max_velocity_dt_s) for t in tracks])
        boxes = np.asarray([d.box for d in dets], dtype=np.float64)
        buf = self.config.match_buffer
        iou = _iou(pred, boxes, buf)
        # also accept the unpredicted box: a track whose velocity estimate is off should still match
        iou = np.maximum(iou, _iou(np.stack([t.box for t in tracks]), boxes, buf))
        for i, t in enumerate(tracks):
            tl = t.label
            for j, d in enumerate(dets):
                if not self._compatible(tl, d.label):
                    iou[i, j] = 0.0
        pairs = _greedy_match(iou, min_iou)
        mt = {p[0] for p in pairs}
        md = {p[1] for p in pairs}
        return pairs, [i for i in range(len(tracks)) if i not in mt], [j for j in range(len(dets)) if j not in md]

    def update(self, detections: Iterable[Detection], ts: float) -> list[TrackState]:
        """Feed one frame's detections at event time ``ts``; return the confirmed live tracks."""
        cfg = self.config
        if self.last_ts is not None and ts < self.last_ts:
            raise ValueError(f"timestamps must not go back ({ts} < {self.last_ts})")
        self.last_ts = ts
        dets = [d for d in detections if d.score >= cfg.low_threshold]
        high = [d for d in dets if d.score >= cfg.high_threshold]
        low = [d for d in dets if d.score < cfg.high_threshold]
        for t in self._tracks:
            t.matched = False

        pairs, un_t, un_d = self._assoc(self._tracks, high, ts, cfg.match_iou)
        for ti, di in pairs:
            self._tracks[ti].update(high[di], ts, cfg.velocity_smoothing)
        rest = [self._tracks[i] for i in un_t if self._tracks[i].confirmed]
        pairs2, _, _ = self._assoc(rest, low, ts, cfg.low_match_iou)
        for ti, di in pairs2:
            rest[ti].update(low[di], ts, cfg.velocity_smoothing)

        alive: list[_Track] = []
        for t in self._tracks:
            if t.matched:
                if t.hits >= cfg.min_hits:
                    t.confirmed = True
                alive.append(t)
            else:
                t.misses += 1
                if t.confirmed and ts - t.last_ts <= cfg.max_age_s:
                    alive.append(t)
        for di in un_d:
            d = high[di]
            if d.score >= cfg.new_track_threshold:
                t = _Track(self._next_id, d, ts)
                self._next_id += 1
                if cfg.min_hits <= 1:
                    t.confirmed = True
                alive.append(t)
        self._tracks = alive
        return [t.state(ts, cfg.max_velocity_dt_s) for t in alive if t.confirmed]

    @property
    def tracks(self) -> list[TrackState]:
        ts = self.last_ts or 0.0
        return [t.state(ts, self.config.max_velocity_dt_s) for t in self._tracks if t.confirmed]

    def boxes_at(self, ts: float) -> list[Box]:
        """Where every live track (confirmed or not) should be at ``ts``: what a detector that looks only
        at parts of the frame (models/regions.py) must still cover."""
        out = []
        for t in self._tracks:
            b = t.predict(ts, self.config.max_velocity_dt_s)
            out.append((float(b[0]), float(b[1]), float(b[2]), float(b[3])))
        return out

    def reset(self) -> None:
        self._tracks = []
        self.last_ts = None

    _SAVED = ("track_id", "score", "max_score", "start_ts", "last_ts", "hits", "misses", "confirmed", "matched")

    def export_state(self) -> dict[str, Any]:
        """Everything :meth:`update` depends on, JSON-ready (for a checkpoint)."""
        tracks = []
        for t in self._tracks:
            d = {k: getattr(t, k) for k in self._SAVED}
            d["box"] = [float(v) for v in t.box]
            d["velocity"] = [float(v) for v in t.velocity]
            d["votes"] = dict(t.votes)
            tracks.append(d)
        return {"next_id": self._next_id, "last_ts": self.last_ts, "tracks": tracks}

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`export_state`'s output (the configuration stays this tracker's own)."""
        tracks = []
        for d in state.get("tracks", ()):
            t = _Track.__new__(_Track)
            for k in self._SAVED:
                setattr(t, k, d[k])
            t.box = np.asarray(d["box"], dtype=np.float64)
            t.velocity = np.asarray(d["velocity"], dtype=np.float64)
            t.votes = {str(k): float(v) for k, v in d["votes"].items()}
            tracks.append(t)
        self._tracks = tracks
        self._next_id = int(state.get("next_id", 1))
        self.last_ts = state.get("last_ts")
