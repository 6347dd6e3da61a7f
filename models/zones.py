"""Zones: polygons per camera, membership by the box's bottom-centre anchor, with inertia (like Frigate).

A track is *in* a zone once its anchor (where it touches the ground) has been inside the polygon for
``inertia`` consecutive observations, and *out* again after ``inertia`` consecutive observations outside —
one stray box does not enter or leave a zone.  Unmatched (predicted) track positions are not observations
and change nothing.

Coordinates are source pixels, or fractions of the frame (all values within 0..1, or ``relative: true``).

Config (per camera)::

    zones:
      fire_lane: {polygon: [[0.05, 0.6], [0.4, 0.6], [0.4, 0.95], [0.05, 0.95]], kind: fire_lane,
                  labels: [car, truck, bus], inertia: 3}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridwatch.models.tracker import TrackState

ZONE_KINDS = ("generic", "no_parking", "fire_lane", "crowd", "restricted")
Point = tuple[float, float]


def point_in_polygon(point: Point, polygon: np.ndarray) -> bool:
    """Even-odd ray casting; points on an edge count as inside."""
    x, y = point
    n = len(polygon)
    inside = False
    j = n - 1
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        # on-edge check (collinear and within the segment's bounding box)
        cross = (xj - xi) * (y - yi) - (yj - yi) * (x - xi)
        if abs(cross) < 1e-9 and min(xi, xj) - 1e-9 <= x <= max(xi, xj) + 1e-9 \
                and min(yi, yj) - 1e-9 <= y <= max(yi, yj) + 1e-9:
            return True
        if (yi > y) != (yj > y):
            x_cross = (xj - xi) * (y - yi) / (yj - yi) + xi
            if x < x_cross:
                inside = not inside
        j = i
    return inside


def _to_px(points: Sequence[Sequence[float]], relative: bool | None, frame_size: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    rel = relative if relative is not None else bool(np.all((arr >= 0.0) & (arr <= 1.0)))
    if rel:
        if frame_size is None:
            raise ValueError("relative coordinates need the frame size")
        w, h = frame_size
        arr = arr * np.array([w, h], dtype=np.float64)
    return arr


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: tuple[Point, ...]
    kind: str = "generic"
    labels: frozenset[str] | None = None  # None: every label counts
    inertia: int = 3
    relative: bool | None = None  # None: auto (all coordinates within 0..1)

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.name!r}: a polygon needs at least 3 points")
        if self.kind not in ZONE_KINDS:
            raise ValueError(f"zone {self.name!r}: kind must be one of {ZONE_KINDS}")
        if self.inertia < 1:
            raise ValueError(f"zone {self.name!r}: inertia must be >= 1")

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> Zone:
        allowed = {"polygon", "coordinates", "kind", "labels", "objects", "inertia", "relative"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"zone {name!r}: unknown option(s) {sorted(unknown)}")
        pts = data.get("polygon", data.get("coordinates"))
        if isinstance(pts, str):  # Frigate style "x1,y1,x2,y2,..."
            vals = [float(v) for v in pts.split(",")]
            pts = list(zip(vals[::2], vals[1::2], strict=True))
        if pts is None:
            raise ValueError(f"zone {name!r} needs a polygon")
        labels = data.get("labels", data.get("objects"))
        return cls(name=name, polygon=tuple((float(p[0]), float(p[1])) for p in pts),
                   kind=str(data.get("kind", "generic")), labels=frozenset(labels) if labels else None,
                   inertia=int(data.get("inertia", 3)), relative=data.get("relative"))

    def polygon_px(self, frame_size: tuple[int, int] | None = None) -> np.ndarray:
        return _to_px(self.polygon, self.relative, frame_size)

    def contains(self, point: Point, frame_size: tuple[int, int] | None = None) -> bool:
        return point_in_polygon(point, self.polygon_px(frame_size))

    def accepts(self, label: str) -> bool:
        return self.labels is None or label in self.labels


def zones_from_config(data: Mapping[str, Mapping[str, Any]] | Iterable[Zone] | None) -> list[Zone]:
    if data is None:
        return []
    if isinstance(data, Mapping):
        return [Zone.from_dict(name, z) for name, z in data.items()]
    return list(data)


class ZoneMembership:
    """Which tracks are in which zones, with inertia; one instance per camera."""

    def __init__(self, zones: Iterable[Zone]):
        self.zones = {z.name: z for z in zones}
        # (track_id, zone) -> [inside, contrary observations in a row]
        self._state: dict[tuple[int, str], list[Any]] = {}
        self._poly_cache: dict[tuple[str, tuple[int, int] | None], np.ndarray] = {}

    def _poly(self, zone: Zone, frame_size: tuple[int, int] | None) -> np.ndarray:
        key = (zone.name, frame_size)
        if key not in self._poly_cache:
            self._poly_cache[key] = zone.polygon_px(frame_size)
        return self._poly_cache[key]

    def update(self, tracks: Iterable[TrackState], frame_size: tuple[int, int] | None = None) -> dict[int, set[str]]:
        """Advance membership with this frame's tracks; return ``{track_id: {zone names}}`` for live tracks."""
        result: dict[int, set[str]] = {}
        live: set[int] = set()
        for t in tracks:
            live.add(t.track_id)
            current: set[str] = set()
            for zone in self.zones.values():
                if not zone.accepts(t.label):
                    continue
                st = self._state.setdefault((t.track_id, zone.name), [False, 0])
                if t.matched:
                    raw = point_in_polygon(t.anchor, self._poly(zone, frame_size))
                    if raw != st[0]:
                        st[1] += 1
                        if st[1] >= zone.inertia:
                            st[0], st[1] = raw, 0
                    else:
                        st[1] = 0
                if st[0]:
                    current.add(zone.name)
            result[t.track_id] = current
        for key in [k for k in self._state if k[0] not in live]:
            del self._state[key]
        return result

    def export_state(self) -> list[list[Any]]:
        """``[[track_id, zone, inside, contrary], ...]``, JSON-ready (for a checkpoint)."""
        return [[tid, zone, bool(st[0]), int(st[1])] for (tid, zone), st in self._state.items()]

    def import_state(self, state: Iterable[Sequence[Any]]) -> None:
        """Continue from :meth:`export_state`'s output; zones no longer configured are dropped."""
        self._state = {(int(tid), str(zone)): [bool(inside), int(n)] for tid, zone, inside, n in state
                       if zone in self.zones}

    def members(self, zone: str) -> list[int]:
        return sorted(tid for (tid, z), st in self._state.items() if z == zone and st[0])
