"""Evidence snapshots for scene events: the frame with the zone and boxes drawn, stored behind a small
store interface and referenced from the event.

    store = FileEvidenceStore("var/evidence")                    # var/evidence/<camera>/<event_id>.jpg
    ref = save_evidence(store, frame.image, event, zones=engine.zones, tracks=result.tracks)
    event_dict["evidence"] = ref                                  # "cam1/<event_id>.jpg" (or url_prefix + that)

``render_evidence`` is pure (image in, image out); stores only see bytes.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np

if TYPE_CHECKING:
    from gridwatch.models.scene_rules import SceneEvent
    from gridwatch.models.tracker import TrackState
    from gridwatch.models.zones import Zone

LEVEL_COLOURS = {"red": (40, 40, 230), "yellow": (0, 200, 240), "blue": (220, 120, 30)}  # BGR
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A file-name-safe form of a camera or event id; ids that had to change get a short hash so that
    two different ids never share a file."""
    text = str(text)
    s = _SAFE.sub("_", text).strip("._")[:100]
    if s != text or not s:
        s = f"{s or '_'}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return s


class EvidenceStore(ABC):
    """Where snapshots go.  ``put`` returns the reference to put into the event."""

    @abstractmethod
    def put(self, camera_id: str, event_id: str, data: bytes, suffix: str = ".jpg") -> str: ...

    @abstractmethod
    def get(self, ref: str) -> bytes: ...

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except (KeyError, FileNotFoundError):
            return False
        return True


class FileEvidenceStore(EvidenceStore):
    """``<root>/<camera>/<event_id>.jpg``; the reference is the path relative to ``root`` (prefixed with
    ``url_prefix`` when given, e.g. ``"/evidence/"`` for a web console that serves ``root``)."""

    def __init__(self, root: str | Path = "var/evidence", url_prefix: str = ""):
        self.root = Path(root)
        self.url_prefix = url_prefix

    def path_for(self, camera_id: str, event_id: str, suffix: str = ".jpg") -> Path:
        return self.root / safe_name(camera_id) / f"{safe_name(event_id)}{suffix}"

    def put(self, camera_id: str, event_id: str, data: bytes, suffix: str = ".jpg") -> str:
        path = self.path_for(camera_id, event_id, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half a JPEG; a re-delivered event overwrites
        return self.url_prefix + path.relative_to(self.root).as_posix()

    def get(self, ref: str) -> bytes:
        rel = ref[len(self.url_prefix):] if self.url_prefix and ref.startswith(self.url_prefix) else ref
        path = (self.root / rel).resolve()
        if self.root.resolve() not in path.parents:
            raise FileNotFoundError(ref)
        return path.read_bytes()


class MemoryEvidenceStore(EvidenceStore):
    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def put(self, camera_id: str, event_id: str, data: bytes, suffix: str = ".jpg") -> str:
        ref = f"{safe_name(camera_id)}/{safe_name(event_id)}{suffix}"
        self.items[ref] = data
        return ref

    def get(self, ref: str) -> bytes:
        return self.items[ref]


def _put_label(img: np.ndarray, text: str, org: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    x = max(0, min(x, img.shape[1] - tw - 4))  # keep the label inside the picture
    y = max(y, th + base + 2)
    cv2.rectangle(img, (x, y - th - base - 2), (x + tw + 4, y), colour, -1)
    cv2.putText(img, text, (x + 2, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def render_evidence(image: np.ndarray, event: SceneEvent | None = None, *, zones: Iterable[Zone] = (),
                    tracks: Iterable[TrackState] = (), line: Sequence[Sequence[float]] | None = None,
                    title: str | None = None, tz: str = "UTC") -> np.ndarray:
    """Draw the zones (the event's filled, in its level colour), the boxes of the other tracks seen in this
    frame (thin grey), the event's boxes (thick) and a title line with the event and its time in ``tz``."""
    tracks = [t for t in tracks if t.matched]  # predicted boxes of briefly lost tracks are not evidence
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 900.0)
    thick = max(2, round(min(w, h) / 300))
    colour = LEVEL_COLOURS.get(event.level or "", (0, 0, 255)) if event else (0, 0, 255)
    zone_name = event.zone if event else None
    overlay = out.copy()
    for z in zones:
        poly = z.polygon_px((w, h)).round().astype(np.int32)
        hit = z.name == zone_name
        zc = colour if hit else (200, 200, 200)
        if hit:
            cv2.fillPoly(overlay, [poly], zc)
        cv2.polylines(out, [poly], True, zc, thick if hit else 1, cv2.LINE_AA)
        x0, y0 = poly.min(axis=0)
        _put_label(out, z.name, (int(x0), int(y0) + 14), zc if hit else (120, 120, 120), scale * 0.8)
    out = cv2.addWeighted(overlay, 0.25, out, 0.75, 0)
    if line is not None:
        (ax, ay), (bx, by) = line
        cv2.line(out, (round(ax), round(ay)), (round(bx), round(by)), colour, thick, cv2.LINE_AA)
    focus: dict[int, tuple[float, float, float, float]] = {}
    if event is not None:
        focus.update(event.boxes)
        if event.track_id is not None and event.box is not None:
            focus[event.track_id] = event.box
    for t in tracks:
        if t.track_id in focus:
            continue
        x1, y1, x2, y2 = (round(v) for v in t.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (180, 180, 180), 1)
    labels = {t.track_id: t for t in tracks}
    for tid, box in focus.items():
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        t = labels.get(tid)
        label = (t.label if t else (event.label if event and event.label else "")) or ""
        score = f" {t.max_score:.2f}" if t else ""
        _put_label(out, f"#{tid} {label}{score}", (x1, y1), colour, scale)
    if title is None and event is not None:
        when = datetime.fromtimestamp(event.ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")
        title = f"{event.kind} | {event.rule_id} | {event.zone} | {event.type} | {when}"  # Hershey: ASCII only
    if title:
        _put_label(out, title, (0, 0), colour, scale)
    return out


def save_evidence(store: EvidenceStore, image: np.ndarray, event: SceneEvent, *, zones: Iterable[Zone] = (),
                  tracks: Iterable[TrackState] = (), line: Sequence[Sequence[float]] | None = None,
                  quality: int = 85, tz: str = "UTC") -> str:
    """Render and store the snapshot for ``event``; return its reference (one file per event id: a later
    call for the same event — e.g. on ``end`` — replaces the picture)."""
    rendered = render_evidence(image, event, zones=zones, tracks=tracks, line=line, tz=tz)
    ok, buf = cv2.imencode(".jpg", rendered, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return store.put(event.camera_id, event.event_id, buf.tobytes())


def evidence_record(ref: str, event: SceneEvent) -> dict[str, Any]:
    """Small dict to attach to a grid event."""
    return {"ref": ref, "event_id": event.event_id, "camera_id": event.camera_id, "ts": event.ts,
            "content_type": "image/jpeg"}
