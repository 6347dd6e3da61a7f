"""Scene rules over tracked objects and zones → scene events with a new → update → end lifecycle.

Rules (``type`` in the config):

* ``vehicle_parked``  — a vehicle stationary inside a zone (no-parking, fire lane) for ``min_duration_s``;
* ``crowd``           — at least ``min_count`` people in a zone for ``min_duration_s``;
* ``restricted_zone`` — a person inside a zone during ``hours`` (local time in ``tz``) for ``min_duration_s``;
* ``line_crossing``   — a track's anchor crosses a line, optionally only in one ``direction``; counts.

One event per (camera, rule, zone/line, track) episode — per zone episode for ``crowd`` — never one per
frame: ``new`` when the condition has held long enough, ``update`` at most every ``update_interval_s`` (and
when a crowd grows or a track crosses again), ``end`` when it stops holding, the track is lost (ended at
the track's last-seen time), or the engine is closed.  The event id is a UUIDv5 of a readable key
``camera|rule|zone|track start ms|track id|n`` (``n`` counts episodes of the same track), so a replay of
the same frames yields the same ids.  Only frame timestamps are used — no wall clock.

State across restarts: :meth:`SceneEngine.export_state` gives the engine's whole memory — tracker, zone
membership with inertia, each rule's open events (ids, start times, update counters), dwell / crowd
timers, episode counters and line-crossing counts — as a JSON-ready dict, and
:meth:`SceneEngine.import_state` continues from it exactly: an engine restored from a checkpoint taken
after frame *k* produces, for frames *k+1...*, the very events an engine that never stopped produces.

Engine config for one camera (zones as in :mod:`gridwatch.models.zones`)::

    {"tz": "Asia/Shanghai",
     "zones": {"fire_lane": {"polygon": [[100, 400], [600, 400], [600, 560], [100, 560]], "kind": "fire_lane"}},
     "rules": [
       {"id": "fire-lane-parking", "type": "vehicle_parked", "zone": "fire_lane", "min_duration_s": 60,
        "level": "red"},
       {"id": "square-crowd", "type": "crowd", "zone": "square", "min_count": 10, "min_duration_s": 30},
       {"id": "depot-night", "type": "restricted_zone", "zone": "depot", "hours": ["22:00-06:00"]},
       {"id": "gate-flow", "type": "line_crossing", "line": [[0, 300], [768, 300]], "direction": "any",
        "labels": ["person", "bicycle"]}],
     "tracker": {"max_age_s": 3.0}}
"""

from __future__ import annotations

import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import numpy as np

from gridwatch.core.plugins import Plugins
from gridwatch.models.detectors.base import Detection
from gridwatch.models.labels import PERSON_LABELS, VEHICLE_LABELS
from gridwatch.models.tracker import Tracker, TrackerConfig, TrackState
from gridwatch.models.zones import Zone, ZoneMembership, zones_from_config

STATE_VERSION = 1  # of export_state's layout; another version is not imported (the engine starts fresh)
EVENT_NAMESPACE = uuid.UUID("6d1f3c1e-6c7a-5b43-9a0e-67726964776e")  # fixed: ids stay stable across versions
EventType = Literal["new", "update", "end"]


def event_key(camera_id: str, rule_id: str, zone: str, start_ts: float, track_id: int | None = None,
              seq: int = 0) -> str:
    tid = "-" if track_id is None else str(track_id)
    return f"{camera_id}|{rule_id}|{zone}|{int(round(start_ts * 1000))}|{tid}|{seq}"


def event_id_for(key: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, key))


@dataclass
class SceneEvent:
    event_id: str
    key: str
    type: EventType
    kind: str  # vehicle_parked | crowd | restricted_zone | line_crossing
    camera_id: str
    rule_id: str
    zone: str  # zone name, or the line's name for line_crossing
    level: str | None
    start_ts: float  # event time the condition began (stationary since / entered / crowd formed / crossed)
    ts: float  # event time of this message
    end_ts: float | None = None
    label: str | None = None
    track_id: int | None = None
    track_start_ts: float | None = None
    track_ids: list[int] = field(default_factory=list)
    score: float = 0.0  # best detection score seen for the track(s)
    box: tuple[float, float, float, float] | None = None  # current box (source pixels)
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)  # crowd members
    reason: str | None = None  # why it ended
    update_seq: int = 0  # 0 for new, then 1, 2, ... (idempotency key together with event_id)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.end_ts if self.end_ts is not None else self.ts) - self.start_ts

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "key": self.key, "type": self.type, "kind": self.kind,
            "camera_id": self.camera_id, "rule_id": self.rule_id, "zone": self.zone, "level": self.level,
            "start_ts": self.start_ts, "ts": self.ts, "end_ts": self.end_ts,
            "duration_s": round(self.duration_s, 3), "label": self.label, "track_id": self.track_id,
            "track_start_ts": self.track_start_ts, "track_ids": list(self.track_ids),
            "score": round(self.score, 4), "box": None if self.box is None else [round(v, 1) for v in self.box],
            "boxes": {str(k): [round(v, 1) for v in b] for k, b in self.boxes.items()},
            "reason": self.reason, "update_seq": self.update_seq, "data": dict(self.data),
        }


@dataclass
class FrameContext:
    camera_id: str
    ts: float
    frame_size: tuple[int, int] | None
    tracks: dict[int, TrackState]  # live (confirmed) tracks, matched or briefly unmatched
    zones_of: dict[int, set[str]]  # zone membership after inertia
    removed: dict[int, TrackState]  # tracks gone since the previous frame (their last state)
    tz: str = "UTC"


@dataclass
class _Open:
    event: SceneEvent
    last_emit_ts: float


class Rule(ABC):
    """A scene rule; holds the open events it owns.  Subclasses implement :meth:`process`."""

    kind: ClassVar[str]
    default_labels: ClassVar[frozenset[str] | None] = None
    default_level: ClassVar[str | None] = "yellow"
    options: ClassVar[set[str]] = set()

    def __init__(self, rule_id: str, zone: str, *, level: str | None = None,
                 labels: Iterable[str] | None = None, min_duration_s: float = 0.0,
                 update_interval_s: float = 30.0):
        self.rule_id = rule_id
        self.zone = zone
        self.level = level if level is not None else self.default_level
        self.labels = frozenset(labels) if labels is not None else self.default_labels
        self.min_duration_s = float(min_duration_s)
        self.update_interval_s = float(update_interval_s)
        self._open: dict[Any, _Open] = {}
        self._episodes: dict[Any, int] = {}

    # -- config
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], zones: Mapping[str, Zone], defaults: Mapping[str, Any]) -> Rule:
        common = {"id", "type", "module", "zone", "level", "labels", "min_duration_s", "update_interval_s"}
        unknown = set(data) - common - cls.options
        if unknown:
            raise ValueError(f"rule {data.get('id')!r} ({cls.kind}): unknown option(s) {sorted(unknown)}")
        kwargs = {k: data[k] for k in cls.options if k in data}
        for k, v in defaults.items():
            if k in cls.options:
                kwargs.setdefault(k, v)
        zone = data.get("zone", "")
        if cls.kind != "line_crossing" and zone not in zones:
            raise ValueError(f"rule {data.get('id')!r}: zone {zone!r} not defined (zones: {sorted(zones)})")
        rule_id = str(data.get("id") or f"{cls.kind}-{zone}")
        common_kwargs = {k: data[k] for k in ("level", "labels", "min_duration_s", "update_interval_s") if k in data}
        return cls(rule_id, str(zone), **common_kwargs, **kwargs)

    def accepts(self, label: str) -> bool:
        return self.labels is None or label in self.labels

    # -- lifecycle helpers
    def _new(self, ctx: FrameContext, okey: Any, start_ts: float, track: TrackState | None, **extra: Any) -> SceneEvent:
        seq = self._episodes.get(okey, 0)
        self._episodes[okey] = seq + 1
        key = event_key(ctx.camera_id, self.rule_id, self.zone, track.start_ts if track else start_ts,
                        track.track_id if track else None, seq)
        fields: dict[str, Any] = {
            "label": track.label if track else None, "track_id": track.track_id if track else None,
            "track_start_ts": track.start_ts if track else None, "track_ids": [track.track_id] if track else [],
            "score": track.max_score if track else 0.0, "box": track.box if track else None}
        fields.update(extra)
        ev = SceneEvent(event_id=event_id_for(key), key=key, type="new", kind=self.kind, camera_id=ctx.camera_id,
                        rule_id=self.rule_id, zone=self.zone, level=self.level, start_ts=start_ts, ts=ctx.ts,
                        **fields)
        self._open[okey] = _Open(ev, ctx.ts)
        return _copy(ev)

    def _update(self, okey: Any, ts: float, track: TrackState | None = None, force: bool = False,
                **changes: Any) -> SceneEvent | None:
        op = self._open[okey]
        ev = op.event
        if track is not None:
            ev.box = track.box
            ev.score = max(ev.score, track.max_score)
            ev.label = track.label
        for k, v in changes.items():
            setattr(ev, k, v)
        ev.ts = ts
        if not force and ts - op.last_emit_ts + 1e-6 < self.update_interval_s:
            return None
        op.last_emit_ts = ts
        ev.type = "update"
        ev.update_seq += 1
        return _copy(ev)

    def _end(self, okey: Any, ts: float, reason: str, track: TrackState | None = None) -> SceneEvent:
        op = self._open.pop(okey)
        ev = op.event
        if track is not None:
            ev.box = track.box
            ev.score = max(ev.score, track.max_score)
        ev.type = "end"
        ev.ts = max(ts, ev.start_ts)
        ev.end_ts = ev.ts
        ev.reason = reason
        ev.update_seq += 1
        return _copy(ev)

    def is_open(self, okey: Any) -> bool:
        return okey in self._open

    @property
    def open_events(self) -> list[SceneEvent]:
        return [_copy(o.event) for o in self._open.values()]

    def close(self, ts: float) -> list[SceneEvent]:
        """End every open event (stream stopped, rule removed)."""
        return [self._end(k, ts, "closed") for k in list(self._open)]

    # -- checkpoint (keys are track ids or "crowd": kept in [key, value] pairs, JSON has string keys only)
    def export_state(self) -> dict[str, Any]:
        return {"open": [[k, _event_state(o.event), o.last_emit_ts] for k, o in self._open.items()],
                "episodes": [[k, n] for k, n in self._episodes.items()], **self._export_extra()}

    def import_state(self, state: Mapping[str, Any]) -> None:
        self._open = {k: _Open(_event_from_state(ev), float(t)) for k, ev, t in state.get("open", ())}
        self._episodes = {k: int(n) for k, n in state.get("episodes", ())}
        self._import_extra(state)

    def _export_extra(self) -> dict[str, Any]:
        return {}

    def _import_extra(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - rules without timers
        pass

    @abstractmethod
    def process(self, ctx: FrameContext) -> list[SceneEvent]:
        """Advance with one frame; return the events it produced."""


def _event_state(ev: SceneEvent) -> dict[str, Any]:
    d = dict(ev.__dict__)
    d["box"] = None if ev.box is None else [float(v) for v in ev.box]
    d["boxes"] = [[int(k), [float(v) for v in b]] for k, b in ev.boxes.items()]
    d["track_ids"] = [int(t) for t in ev.track_ids]
    d["data"] = _json_ready(ev.data)
    return d


def _event_from_state(d: Mapping[str, Any]) -> SceneEvent:
    ev = SceneEvent(**{**d, "box": None, "boxes": {}})
    ev.box = None if d.get("box") is None else tuple(float(v) for v in d["box"])  # type: ignore[assignment]
    ev.boxes = {int(k): tuple(float(v) for v in b) for k, b in d.get("boxes", ())}  # type: ignore[misc]
    ev.track_ids = [int(t) for t in d.get("track_ids", ())]
    ev.data = dict(d.get("data") or {})
    return ev


def _json_ready(obj: Any) -> Any:
    """Plain JSON types (numpy scalars, tuples) without rounding: a restored event must equal the original."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def _pairs(d: Mapping[int, Any]) -> list[list[Any]]:
    return [[int(k), _json_ready(v)] for k, v in d.items()]


def _copy(ev: SceneEvent) -> SceneEvent:
    return SceneEvent(**{**ev.__dict__, "track_ids": list(ev.track_ids), "boxes": dict(ev.boxes),
                         "data": dict(ev.data)})


class _PerTrackRule(Rule):
    """Shared handling of track loss for rules with one event per track."""

    def _lost(self, ctx: FrameContext) -> list[SceneEvent]:
        out = []
        for tid, last in ctx.removed.items():
            if self.is_open(tid):
                out.append(self._end(tid, last.last_ts, "track_lost", last))
            self._forget(tid)
        return out

    def _forget(self, track_id: int) -> None:  # noqa: B027
        pass


class VehicleParkedRule(_PerTrackRule):
    """A vehicle that stays (anchor moves less than ``max_movement`` × its box diagonal, at least
    ``min_movement_px``) inside the zone for ``min_duration_s`` seconds."""

    kind = "vehicle_parked"
    default_labels = VEHICLE_LABELS
    options: ClassVar[set[str]] = {"max_movement", "min_movement_px"}

    def __init__(self, rule_id: str, zone: str, *, max_movement: float = 0.15, min_movement_px: float = 8.0,
                 min_duration_s: float = 60.0, **kw: Any):
        super().__init__(rule_id, zone, min_duration_s=min_duration_s, **kw)
        self.max_movement = float(max_movement)
        self.min_movement_px = float(min_movement_px)
        self._still: dict[int, tuple[float, tuple[float, float]]] = {}  # track -> (since, reference anchor)

    def _forget(self, track_id: int) -> None:
        self._still.pop(track_id, None)

    def _export_extra(self) -> dict[str, Any]:
        return {"still": _pairs(self._still)}

    def _import_extra(self, state: Mapping[str, Any]) -> None:
        self._still = {int(k): (float(since), (float(ref[0]), float(ref[1]))) for k, (since, ref) in state.get("still", ())}

    def process(self, ctx: FrameContext) -> list[SceneEvent]:
        out = self._lost(ctx)
        for tid, t in ctx.tracks.items():
            if not t.matched or not self.accepts(t.label):
                continue
            if self.zone not in ctx.zones_of.get(tid, ()):
                if self.is_open(tid):
                    out.append(self._end(tid, ctx.ts, "left_zone", t))
                self._still.pop(tid, None)
                continue
            since, ref = self._still.get(tid, (ctx.ts, t.anchor))
            limit = max(self.min_movement_px, self.max_movement * t.diagonal)
            if math.dist(ref, t.anchor) > limit:
                if self.is_open(tid):
                    out.append(self._end(tid, ctx.ts, "moved", t))
                since, ref = ctx.ts, t.anchor
            self._still[tid] = (since, ref)
            dwell = ctx.ts - since
            if self.is_open(tid):
                ev = self._update(tid, ctx.ts, t, data={"stationary_s": round(dwell, 2)})
                if ev:
                    out.append(ev)
            elif dwell >= self.min_duration_s:
                out.append(self._new(ctx, tid, since, t, data={"stationary_s": round(dwell, 2)}))
        return out


class RestrictedZoneRule(_PerTrackRule):
    """A person (by default) inside the zone during ``hours`` for ``min_duration_s`` seconds."""

    kind = "restricted_zone"
    default_labels = PERSON_LABELS
    default_level = "red"
    options: ClassVar[set[str]] = {"hours", "tz"}

    def __init__(self, rule_id: str, zone: str, *, hours: str | Sequence[str] | None = None, tz: str = "UTC",
                 **kw: Any):
        super().__init__(rule_id, zone, **kw)
        self.tz = ZoneInfo(tz)
        self.hours = [_parse_range(h) for h in ([hours] if isinstance(hours, str) else (hours or []))]
        self._inside_since: dict[int, float] = {}

    def _forget(self, track_id: int) -> None:
        self._inside_since.pop(track_id, None)

    def _export_extra(self) -> dict[str, Any]:
        return {"inside_since": _pairs(self._inside_since)}

    def _import_extra(self, state: Mapping[str, Any]) -> None:
        self._inside_since = {int(k): float(v) for k, v in state.get("inside_since", ())}

    def active_at(self, ts: float) -> bool:
        if not self.hours:
            return True
        now = datetime.fromtimestamp(ts, self.tz).time()
        for start, end in self.hours:
            if (start <= now < end) if start < end else (now >= start or now < end):
                return True
        return False

    def process(self, ctx: FrameContext) -> list[SceneEvent]:
        out = self._lost(ctx)
        active = self.active_at(ctx.ts)
        for tid, t in ctx.tracks.items():
            if not t.matched or not self.accepts(t.label):
                continue
            inside = self.zone in ctx.zones_of.get(tid, ())
            if not (inside and active):
                if self.is_open(tid):
                    out.append(self._end(tid, ctx.ts, "left_zone" if not inside else "outside_hours", t))
                self._inside_since.pop(tid, None)
                continue
            since = self._inside_since.setdefault(tid, ctx.ts)
            if self.is_open(tid):
                ev = self._update(tid, ctx.ts, t, data={"dwell_s": round(ctx.ts - since, 2)})
                if ev:
                    out.append(ev)
            elif ctx.ts - since >= self.min_duration_s:
                out.append(self._new(ctx, tid, since, t, data={"dwell_s": round(ctx.ts - since, 2)}))
        return out


class CrowdRule(Rule):
    """At least ``min_count`` people in the zone for ``min_duration_s``; ends after ``end_after_s`` below.

    A person counts while its track was seen within ``max_unseen_s`` (brief occlusions in a crowd do not
    change the count; people who left stop counting before the tracker drops them)."""

    kind = "crowd"
    default_labels = PERSON_LABELS
    options: ClassVar[set[str]] = {"min_count", "end_after_s", "max_unseen_s"}

    def __init__(self, rule_id: str, zone: str, *, min_count: int = 10, end_after_s: float = 5.0,
                 min_duration_s: float = 30.0, max_unseen_s: float = 1.0, **kw: Any):
        super().__init__(rule_id, zone, min_duration_s=min_duration_s, **kw)
        if min_count < 1:
            raise ValueError("min_count must be >= 1")
        self.min_count = int(min_count)
        self.end_after_s = float(end_after_s)
        self.max_unseen_s = float(max_unseen_s)
        self._above_since: float | None = None
        self._below_since: float | None = None
        self._last_above_ts: float | None = None
        self._peak = 0

    _TIMERS = ("_above_since", "_below_since", "_last_above_ts", "_peak")

    def _export_extra(self) -> dict[str, Any]:
        return {"timers": {k.lstrip("_"): getattr(self, k) for k in self._TIMERS}}

    def _import_extra(self, state: Mapping[str, Any]) -> None:
        for k in self._TIMERS:
            setattr(self, k, state.get("timers", {}).get(k.lstrip("_"), getattr(self, k)))

    def process(self, ctx: FrameContext) -> list[SceneEvent]:
        members = sorted(tid for tid, t in ctx.tracks.items()
                         if self.accepts(t.label) and self.zone in ctx.zones_of.get(tid, ())
                         and ctx.ts - t.last_ts <= self.max_unseen_s)
        count = len(members)
        out: list[SceneEvent] = []
        okey = "crowd"
        boxes = {tid: ctx.tracks[tid].box for tid in members}
        score = max((ctx.tracks[tid].max_score for tid in members), default=0.0)
        if count >= self.min_count:
            self._below_since = None
            self._last_above_ts = ctx.ts
            if self._above_since is None:
                self._above_since = ctx.ts
            if self.is_open(okey):
                grew = count > self._peak
                self._peak = max(self._peak, count)
                ev = self._update(okey, ctx.ts, force=grew, track_ids=members, boxes=boxes,
                                  score=max(self._open[okey].event.score, score),
                                  data={"count": count, "peak": self._peak})
                if ev:
                    out.append(ev)
            elif ctx.ts - self._above_since >= self.min_duration_s:
                self._peak = count
                out.append(self._new(ctx, okey, self._above_since, None, track_ids=members, boxes=boxes,
                                     score=score, data={"count": count, "peak": count}))
        else:
            if self._below_since is None:
                self._below_since = ctx.ts
            if self.is_open(okey):
                if ctx.ts - self._below_since >= self.end_after_s:
                    out.append(self._end(okey, self._last_above_ts or ctx.ts, "dispersed"))
                    self._above_since = None
                else:
                    ev = self._update(okey, ctx.ts, track_ids=members, boxes=boxes,
                                      data={"count": count, "peak": self._peak})
                    if ev:
                        out.append(ev)
            elif ctx.ts - self._below_since >= self.end_after_s:
                self._above_since = None
        return out


class LineCrossingRule(_PerTrackRule):
    """Counts anchors crossing the segment ``line`` = [p1, p2].

    Sides are as seen on screen looking from p1 towards p2: for p1 = (0, 300), p2 = (768, 300) the *left*
    side is above the line and *right* below, so ``left_to_right`` means moving down the image.  A track
    must be at least ``margin_px`` off the line to count as on a side (no double counts from jitter), and the
    path between its last two sided positions must cut the segment.  ``direction``: ``any``,
    ``left_to_right`` or ``right_to_left``.  One event per track (``new`` at its first counted crossing,
    ``update`` on each further one, ``end`` when the track is lost); ``counts`` holds the totals.
    """

    kind = "line_crossing"
    default_level = "blue"
    options: ClassVar[set[str]] = {"line", "direction", "margin_px", "name", "relative"}

    def __init__(self, rule_id: str, zone: str = "", *, line: Sequence[Sequence[float]] = (), direction: str = "any",
                 margin_px: float = 3.0, name: str | None = None, relative: bool | None = None, **kw: Any):
        super().__init__(rule_id, name or zone or rule_id, **kw)
        pts = np.asarray(line, dtype=np.float64).reshape(-1, 2)
        if pts.shape != (2, 2):
            raise ValueError(f"rule {rule_id!r}: line needs two points")
        if direction not in ("any", "left_to_right", "right_to_left"):
            raise ValueError("direction must be any, left_to_right or right_to_left")
        self.line_raw = pts
        self.relative = relative if relative is not None else bool(np.all((pts >= 0) & (pts <= 1)))
        self.direction = direction
        self.margin_px = float(margin_px)
        self.counts: dict[str, int] = {"left_to_right": 0, "right_to_left": 0}
        self.counts_by_label: dict[str, dict[str, int]] = {}
        self._side: dict[int, tuple[int, tuple[float, float]]] = {}

    def _forget(self, track_id: int) -> None:
        self._side.pop(track_id, None)

    def _export_extra(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "counts_by_label": {k: dict(v) for k, v in self.counts_by_label.items()},
                "side": _pairs(self._side)}

    def _import_extra(self, state: Mapping[str, Any]) -> None:
        self.counts = {**self.counts, **state.get("counts", {})}
        self.counts_by_label = {k: dict(v) for k, v in state.get("counts_by_label", {}).items()}
        self._side = {int(k): (int(side), (float(p[0]), float(p[1]))) for k, (side, p) in state.get("side", ())}

    def line_px(self, frame_size: tuple[int, int] | None) -> np.ndarray:
        if self.relative:
            if frame_size is None:
                raise ValueError("relative line coordinates need the frame size")
            return self.line_raw * np.array(frame_size, dtype=np.float64)
        return self.line_raw

    def process(self, ctx: FrameContext) -> list[SceneEvent]:
        out = self._lost(ctx)
        (ax, ay), (bx, by) = self.line_px(ctx.frame_size)
        length = math.hypot(bx - ax, by - ay) or 1.0
        for tid, t in ctx.tracks.items():
            if not t.matched or not self.accepts(t.label):
                continue
            px, py = t.anchor
            signed = ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / length  # > 0: right side (screen)
            if abs(signed) < self.margin_px:
                continue
            side = 1 if signed > 0 else -1
            prev = self._side.get(tid)
            self._side[tid] = (side, (px, py))
            if prev is None or prev[0] == side or not _segments_cross(prev[1], (px, py), (ax, ay), (bx, by)):
                continue
            direction = "left_to_right" if side > 0 else "right_to_left"
            if self.direction not in ("any", direction):
                continue
            self.counts[direction] += 1
            per = self.counts_by_label.setdefault(t.label, {"left_to_right": 0, "right_to_left": 0})
            per[direction] += 1
            data = {"direction": direction, "counts": dict(self.counts),
                    "counts_by_label": {k: dict(v) for k, v in self.counts_by_label.items()}}
            if self.is_open(tid):
                ev = self._update(tid, ctx.ts, t, force=True, data=data)
                if ev:
                    out.append(ev)
            else:
                out.append(self._new(ctx, tid, ctx.ts, t, data=data))
        return out


def _segments_cross(p: tuple[float, float], q: tuple[float, float], a: tuple[float, float],
                    b: tuple[float, float]) -> bool:
    def orient(o, s, t) -> float:
        return (s[0] - o[0]) * (t[1] - o[1]) - (s[1] - o[1]) * (t[0] - o[0])

    d1, d2 = orient(a, b, p), orient(a, b, q)
    d3, d4 = orient(p, q, a), orient(p, q, b)
    return (d1 * d2 <= 0) and (d3 * d4 <= 0)


def _parse_range(spec: str) -> tuple[dtime, dtime]:
    try:
        a, b = (s.strip() for s in spec.split("-"))
        return dtime.fromisoformat(a), dtime.fromisoformat(b)
    except ValueError as exc:
        raise ValueError(f"hours must look like '22:00-06:00', got {spec!r}") from exc


# The scene-rule plug-ins, by the ``type`` of a camera's rule entry (aliases included). A rule of one's own
# registers itself with ``SCENE_RULES.add("my_rule", MyRule)`` in its module, named by the entry's ``module``.
SCENE_RULES: Plugins[type[Rule]] = Plugins("scene rule", None, ValueError)
for _name, _cls in (("vehicle_parked", VehicleParkedRule), ("parked", VehicleParkedRule), ("crowd", CrowdRule),
                    ("restricted_zone", RestrictedZoneRule), ("restricted", RestrictedZoneRule),
                    ("line_crossing", LineCrossingRule)):
    SCENE_RULES.add(_name, _cls)


def rules_from_config(rules: Iterable[Mapping[str, Any] | Rule], zones: Iterable[Zone],
                      defaults: Mapping[str, Any] | None = None) -> list[Rule]:
    zmap = {z.name: z for z in zones}
    out: list[Rule] = []
    for r in rules:
        if isinstance(r, Rule):
            out.append(r)
            continue
        cls = SCENE_RULES.get(r.get("type"), r.get("module"), f"rule {r.get('id')!r}")
        out.append(cls.from_dict(r, zmap, defaults or {}))
    ids = [r.rule_id for r in out]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate rule ids in {ids}")
    return out


@dataclass
class SceneResult:
    ts: float
    tracks: list[TrackState]
    zones_of: dict[int, set[str]]
    events: list[SceneEvent]


class SceneEngine:
    """Tracker + zones + rules for one camera.  Feed it detections of sampled frames in time order."""

    def __init__(self, camera_id: str, zones: Iterable[Zone] = (), rules: Iterable[Rule] = (),
                 tracker: Tracker | TrackerConfig | Mapping[str, Any] | None = None, tz: str = "UTC"):
        self.camera_id = camera_id
        self.zones = list(zones)
        self.rules = list(rules)
        self.tracker = tracker if isinstance(tracker, Tracker) else Tracker(tracker)
        self.membership = ZoneMembership(self.zones)
        self.tz = tz
        self._live: dict[int, TrackState] = {}
        self.last_ts: float | None = None

    @classmethod
    def from_config(cls, camera_id: str, config: Mapping[str, Any]) -> SceneEngine:
        allowed = {"zones", "rules", "tracker", "tz"}
        unknown = set(config) - allowed
        if unknown:
            raise ValueError(f"camera {camera_id!r}: unknown scene option(s) {sorted(unknown)}")
        zones = zones_from_config(config.get("zones"))
        tz = str(config.get("tz", "UTC"))
        rules = rules_from_config(config.get("rules", []), zones, {"tz": tz})
        return cls(camera_id, zones, rules, config.get("tracker"), tz=tz)

    def update(self, detections: Iterable[Detection], ts: float,
               frame_size: tuple[int, int] | None = None) -> SceneResult:
        """Track this frame's detections and run the rules. ``frame_size`` = (width, height)."""
        tracks = self.tracker.update(detections, ts)
        zones_of, events = self._rules(tracks, ts, frame_size)
        return SceneResult(ts, tracks, zones_of, events)

    def process_tracks(self, tracks: list[TrackState], ts: float,
                       frame_size: tuple[int, int] | None = None) -> list[SceneEvent]:
        """Run zones and rules on tracks from an external tracker."""
        return self._rules(tracks, ts, frame_size)[1]

    def _rules(self, tracks: list[TrackState], ts: float, frame_size: tuple[int, int] | None):
        self.last_ts = ts
        current = {t.track_id: t for t in tracks}
        removed = {tid: st for tid, st in self._live.items() if tid not in current}
        self._live = current
        zones_of = self.membership.update(tracks, frame_size)
        ctx = FrameContext(self.camera_id, ts, frame_size, current, zones_of, removed, self.tz)
        events: list[SceneEvent] = []
        for rule in self.rules:
            events.extend(rule.process(ctx))
        return zones_of, events

    def close(self, ts: float | None = None) -> list[SceneEvent]:
        """End all open events (e.g. the stream ended); ``ts`` defaults to the last frame's time."""
        t = ts if ts is not None else (self.last_ts or 0.0)
        out: list[SceneEvent] = []
        for rule in self.rules:
            out.extend(rule.close(t))
        return out

    @property
    def open_events(self) -> list[SceneEvent]:
        return [ev for r in self.rules for ev in r.open_events]

    def export_state(self) -> dict[str, Any]:
        """The engine's whole memory, JSON-ready; ``ts`` is the last frame it covers."""
        return {"v": STATE_VERSION, "camera": self.camera_id, "ts": self.last_ts,
                "tracker": self.tracker.export_state(), "zones": self.membership.export_state(),
                "live": [_track_state(t) for t in self._live.values()],
                "rules": {r.rule_id: r.export_state() for r in self.rules}}

    def import_state(self, state: Mapping[str, Any]) -> bool:
        """Continue from :meth:`export_state`'s output.  Rules are matched by id: a rule added since starts
        empty, a removed one's state is dropped.  False (and nothing changed) for another layout version."""
        if state.get("v") != STATE_VERSION:
            return False
        self.last_ts = state.get("ts")
        self.tracker.import_state(state.get("tracker") or {})
        self.membership.import_state(state.get("zones") or ())
        self._live = {int(d["track_id"]): _track_from_state(d) for d in state.get("live", ())}
        saved = state.get("rules") or {}
        for rule in self.rules:
            if rule.rule_id in saved:
                rule.import_state(saved[rule.rule_id])
        return True


def _track_state(t: TrackState) -> dict[str, Any]:
    return {"track_id": t.track_id, "label": t.label, "box": list(t.box), "score": t.score,
            "max_score": t.max_score, "start_ts": t.start_ts, "last_ts": t.last_ts, "hits": t.hits,
            "matched": t.matched, "velocity": list(t.velocity)}


def _track_from_state(d: Mapping[str, Any]) -> TrackState:
    return TrackState(int(d["track_id"]), str(d["label"]), tuple(d["box"]), float(d["score"]),  # type: ignore[arg-type]
                      float(d["max_score"]), float(d["start_ts"]), float(d["last_ts"]), int(d["hits"]),
                      bool(d["matched"]), tuple(d["velocity"]))  # type: ignore[arg-type]
