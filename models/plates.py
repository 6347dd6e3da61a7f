"""Optional Chinese licence-plate reading for vehicle events, with ``agentclpr`` (Apache-2.0: a plate
detector and a CRNN plate recogniser, ONNX, CPU).

Not a dependency of gridwatch (the set-up step ``./run`` installs it for the tests).  By hand::

    pip install --no-deps agentclpr==1.1.0 agentocr==2.0.0 pyclipper wget pillow six

(``--no-deps``: agentclpr also asks for flask and gevent, for a demo server the plate path never imports;
``agentocr`` imports ``wget`` and ``PIL`` at module level even though the plate path does not use them.)
Without it :func:`create_plate_reader` returns ``None`` and callers skip plate reading.

    reader = create_plate_reader({"threads": 1})
    if reader and event.kind == "vehicle_parked":
        plate = reader.best(frame.image, event.box)     # PlateRead("京A12345", 0.97, polygon) or None

Accuracy is the upstream model's.  The tests check the plumbing (no plate → nothing, reads map back to frame
pixels) and one real Chinese plate (litealpr's ``intro1.png``, see :mod:`gridwatch.models.footage`).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gridwatch.compat import limit_plate_sessions

log = logging.getLogger(__name__)
REQUIRED = ("agentclpr", "agentocr", "pyclipper", "wget", "PIL", "six", "shapely")
_PAD = 24
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class PlateRead:
    text: str
    score: float
    polygon: tuple[tuple[int, int], ...]  # 4 corners in frame pixels

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "score": round(self.score, 4), "polygon": [list(p) for p in self.polygon]}


class _QuietAgentOCR(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(
            part in record.pathname for part in ("/agentocr/", "/agentclpr/"))


def unavailable_reason() -> str | None:
    """``None`` when agentclpr can be used, else what is missing."""
    missing = [m for m in REQUIRED if importlib.util.find_spec(m) is None]
    return f"missing Python packages: {', '.join(missing)}" if missing else None


class PlateReader:
    def __init__(self, threads: int = 1, min_score: float = 0.5, margin: float = 0.05):
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"licence-plate reading unavailable: {reason}")
        self.min_score = min_score
        self.margin = margin
        root = logging.getLogger()
        saved = (list(root.handlers), root.level)
        with _lock:  # one thread count per CLPSystem: the sessions built next take it
            try:
                with warnings.catch_warnings():  # it imports imghdr (deprecated in 3.11) for a path we never use
                    warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
                    import agentocr  # noqa: F401  (on import it adds a stdout handler to the root logger, DEBUG)

                root.handlers[:] = saved[0]
                root.setLevel(saved[1])
                if not any(isinstance(f, _QuietAgentOCR) for f in root.filters):
                    root.addFilter(_QuietAgentOCR())  # it logs its INFO chatter on the root logger itself
                from agentclpr import CLPSystem

                limit_plate_sessions(threads)  # agentclpr gives no thread setting

                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore", RuntimeWarning)  # its warm-up averages an empty list
                    self._clp = CLPSystem(providers="cpu")
            finally:
                root.handlers[:] = saved[0]  # undo agentocr's logging set-up
                root.setLevel(saved[1])

    def read(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> list[PlateRead]:
        """Plates inside ``box`` (a vehicle, grown by ``margin``) or the whole image, best first."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = 0, 0, w, h
        if box is not None:
            bw, bh = box[2] - box[0], box[3] - box[1]
            x0 = max(0, int(box[0] - self.margin * bw))
            y0 = max(0, int(box[1] - self.margin * bh))
            x1 = min(w, int(box[2] + self.margin * bw) + 1)
            y1 = min(h, int(box[3] + self.margin * bh) + 1)
        crop = image[y0:y1, x0:x1]
        if crop.size == 0:
            return []
        # agentclpr crops 10 px around each plate without clamping: pad so plates near the edge still work
        padded = cv2.copyMakeBorder(crop, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REPLICATE)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = self._clp(padded)
        out = []
        for points, (text, score) in raw:
            text = str(text).strip()
            if not text or float(score) < self.min_score:
                continue
            poly = tuple((int(px) - _PAD + x0, int(py) - _PAD + y0) for px, py in points)
            out.append(PlateRead(text, float(score), poly))
        return sorted(out, key=lambda p: -p.score)

    def best(self, image: np.ndarray, box: tuple[float, float, float, float] | None = None) -> PlateRead | None:
        reads = self.read(image, box)
        return reads[0] if reads else None


def create_plate_reader(config: dict[str, Any] | None = None) -> PlateReader | None:
    """A :class:`PlateReader`, or ``None`` (logged once) when agentclpr is not installed."""
    reason = unavailable_reason()
    if reason:
        log.info("licence-plate reading off: %s", reason)
        return None
    return PlateReader(**(config or {}))
