"""The frame wire format ``GWF1``: one sampled camera frame as one Kafka value (key = camera id).

``b"GWF1" + uint32 (big endian) header length + JSON header + JPEG``. Capture packs it, the vision agent,
the recorder and the replayer read it; it lives with the schemas so that none of them imports another's
code (and the schemas never import the OpenCV capture).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    camera_id: str
    seq: int  # index of the sampled frame for this capture (0, 1, 2, ...)
    ts: float  # event time, seconds since the epoch
    image: np.ndarray  # BGR uint8
    detect: bool = True  # the motion gate's verdict
    motion: float = 1.0  # fraction of changed pixels against the previous sampled frame
    reason: str = "motion"  # first | motion | keyframe | still
    # where it changed: (x1, y1, x2, y2) in 0..1 of the picture, largest first; None: not known (first
    # frame, gate off, an older recording) — the detector then looks at the whole frame
    motion_boxes: tuple[tuple[float, float, float, float], ...] | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return int(self.image.shape[1]), int(self.image.shape[0])



def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable JPEG")
    return image


FRAME_MAGIC = b"GWF1"


def pack_frame(frame: Frame, quality: int = 80, extra: dict[str, Any] | None = None) -> bytes:
    """``b"GWF1" + uint32 header length + JSON header + JPEG`` — one Kafka value, key = camera id."""
    header = {"camera_id": frame.camera_id, "seq": frame.seq, "ts": frame.ts, "detect": frame.detect,
              "motion": round(frame.motion, 5), "reason": frame.reason, "width": frame.size[0],
              "height": frame.size[1], **(extra or {})}
    if frame.motion_boxes is not None:
        header["motion_boxes"] = [list(b) for b in frame.motion_boxes]
    return _pack(header, encode_jpeg(frame.image, quality))


def _pack(header: dict[str, Any], jpeg: bytes) -> bytes:
    hb = json.dumps(header, separators=(",", ":")).encode()
    return FRAME_MAGIC + struct.pack(">I", len(hb)) + hb + jpeg


def with_header(data: bytes, header: dict[str, Any]) -> bytes:
    """A packed frame with its JSON header replaced and its JPEG bytes untouched."""
    (n,) = struct.unpack(">I", data[4:8])
    return _pack(header, data[8 + n:])


def unpack_frame(data: bytes) -> tuple[Frame, dict[str, Any]]:
    """Inverse of :func:`pack_frame`: ``(frame, header)``. Raises ``ValueError`` on malformed input."""
    if len(data) < 8 or data[:4] != FRAME_MAGIC:
        raise ValueError("not a packed frame")
    (n,) = struct.unpack(">I", data[4:8])
    if 8 + n > len(data):
        raise ValueError("truncated frame header")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as exc:
        raise ValueError(f"bad frame header: {exc}") from exc
    image = decode_jpeg(data[8 + n:])
    frame = Frame(str(header["camera_id"]), int(header["seq"]), float(header["ts"]), image,
                  bool(header.get("detect", True)), float(header.get("motion", 1.0)), str(header.get("reason", "")),
                  _boxes(header.get("motion_boxes")))
    return frame, header


def _boxes(raw: Any) -> tuple[tuple[float, float, float, float], ...] | None:
    """``motion_boxes`` of a header; anything malformed counts as not known (the whole frame is searched)."""
    if not isinstance(raw, list):
        return None
    out = []
    for b in raw:
        if not (isinstance(b, list) and len(b) == 4 and all(isinstance(v, int | float) for v in b)):
            return None
        x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in b)
        if x2 > x1 and y2 > y1:
            out.append((x1, y1, x2, y2))
    return tuple(out)
