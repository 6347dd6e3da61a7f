"""Topic family ``frames``: sampled camera frames (JPEG) and camera status markers; key = camera id.

Two kinds of record share the topic so that a camera's status change stays in order with its frames
(one camera = one key = one partition):

* **frame** — the binary format of :func:`gridwatch.pipeline.schemas.frame_wire.pack_frame`::

      b"GWF1" + uint32 (big endian) header length + JSON header + JPEG

  header: ``camera_id``, ``seq``, ``ts`` (event time, seconds since the epoch: the decode time of a live
  camera, the file position of a recording), ``detect`` (the motion gate's verdict), ``motion``,
  ``reason``, ``width``, ``height``, ``v`` (this module's ``VERSION``), ``sent`` (wall clock at produce).
  The magic ``GWF1`` versions the container; ``v`` versions the header fields.

* **camera status** — JSON ``{"v": 1, "record": "camera_status", "camera_id", "online", "ts", "reason"}``:
  the capture service lost (or regained) the camera.  The vision agent ends the camera's open scene
  events on ``online: false`` (nothing would end them otherwise: no more frames, no more event time).

:func:`decode` tells them apart by the first bytes and raises :class:`SchemaError` for anything else
(the agent sends that record to the dead-letter topic and goes on).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import Any

from .codec import SchemaError, dumps, loads, require
from .frame_wire import FRAME_MAGIC, Frame, pack_frame, unpack_frame

VERSION = 1
STATUS_RECORD = "camera_status"


@dataclass(slots=True)
class FrameRecord:
    frame: Frame
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id

    @property
    def sent(self) -> float | None:
        s = self.header.get("sent")
        return float(s) if isinstance(s, int | float) else None


@dataclass(slots=True)
class CameraStatusRecord:
    camera_id: str
    online: bool
    ts: float  # event time of the transition (seconds)
    reason: str = ""
    record: str = STATUS_RECORD
    v: int = VERSION

    def encode(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def from_dict(cls, d: Any) -> CameraStatusRecord:
        if not isinstance(d, dict) or d.get("record") != STATUS_RECORD:
            raise SchemaError("frames: JSON record is not a camera_status record")
        if d.get("v") != VERSION:
            raise SchemaError(f"camera_status: unsupported or missing schema version {d.get('v')!r}")
        cam = require(d, "camera_id", str, "camera_status")
        online = require(d, "online", bool, "camera_status")
        ts = require(d, "ts", (int, float), "camera_status")
        reason = d.get("reason", "")
        if not cam:
            raise SchemaError("camera_status: empty camera_id")
        return cls(cam, online, float(ts), str(reason))


def encode_frame(frame: Frame, quality: int = 80, sent: float | None = None, **extra: Any) -> bytes:
    """A frame record (JPEG at ``quality``); ``sent`` defaults to now (wall clock)."""
    return pack_frame(frame, quality, {"v": VERSION, "sent": round(time.time() if sent is None else sent, 4),
                                       **extra})


def peek_header(raw: bytes | None) -> dict[str, Any] | None:
    """The JSON header of a frame record without decoding its JPEG (None for anything else), so a consumer
    can skip a frame it will not use (too old, motion-gated) for the cost of a small JSON parse."""
    if not raw or raw[:4] != FRAME_MAGIC or len(raw) < 8:
        return None
    n = int.from_bytes(raw[4:8], "big")
    try:
        head = json.loads(raw[8:8 + n])
    except ValueError:
        return None
    return head if isinstance(head, dict) else None


def decode(raw: bytes | None) -> FrameRecord | CameraStatusRecord:
    """A frame or a camera status record; :class:`SchemaError` for anything malformed."""
    if not raw:
        raise SchemaError("frames: empty record")
    if raw[:4] == FRAME_MAGIC:
        try:
            frame, header = unpack_frame(raw)
        except Exception as e:  # noqa: BLE001 - ValueError, KeyError, TypeError, cv2.error (empty JPEG)
            raise SchemaError(f"frame: {type(e).__name__}: {str(e).strip()[:300]}") from None
        v = header.get("v", VERSION)  # writers before v existed (bench, tests) are version 1
        if v != VERSION:
            raise SchemaError(f"frame: unsupported schema version {v!r}")
        if not frame.camera_id:
            raise SchemaError("frame: empty camera_id")
        if not (frame.ts > 0 and frame.ts == frame.ts):  # NaN / zero / negative
            raise SchemaError(f"frame: bad ts {frame.ts!r}")
        return FrameRecord(frame, header)
    if raw[:1] == b"{":
        return CameraStatusRecord.from_dict(loads(raw))
    raise SchemaError("frames: neither a packed frame (GWF1) nor a JSON status record")


def decode_all(raws: list[bytes | None], pool: Executor | None = None) -> list[FrameRecord | CameraStatusRecord | SchemaError]:
    """:func:`decode` of each record, a :class:`SchemaError` returned in its place rather than raised; on
    ``pool`` when given: JPEG decoding releases the GIL, so a batch decodes on several cores while the
    consumer's one thread would otherwise do ~1 ms a frame alone."""
    def one(raw: bytes | None) -> FrameRecord | CameraStatusRecord | SchemaError:
        try:
            return decode(raw)
        except SchemaError as e:
            return e

    if pool is None or len(raws) < 2:
        return [one(r) for r in raws]
    return list(pool.map(one, raws))
