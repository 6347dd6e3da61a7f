"""Frames for a replay taken again from a recording's video segments (``gridwatch replay --video-from segments``).

For engineers who change capture settings (detect fps, motion gate, width, JPEG quality) and want to see
what the vision agent makes of the recorded footage with them.  Each recorded camera is matched to a
camera of the camera config (by its RTSP URL, else by its recorded name being the camera id); each of its
segments is read as a file source with the segment's recorded wall-clock start as event time, sampled
and gated by that camera's capture settings, and packed as the capture service would.  The result is
deterministic — two such replays give the same vision events — but not the live run's: live sampling
picked frames by arrival time (``--video-from frames``, the default, reproduces the live run).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gridwatch.pipeline.recordreplay.recording import RecordedFrame


class SegmentError(ValueError):
    """The recording's cameras cannot be matched to the camera config; the message says which."""


def match_cameras(segments: list[dict[str, Any]], config: Any) -> dict[str, str]:
    """Recorded camera name -> configured camera id (by RTSP URL, else by name)."""
    by_url = {spec.capture.source: cam for cam, spec in config.cameras.items()}
    out: dict[str, str] = {}
    for seg in segments:
        name = seg["camera"]
        cam = by_url.get(seg.get("url", "")) or (name if name in config.cameras else None)
        if cam is None:
            raise SegmentError(f"recorded camera {name!r} ({seg.get('url')}) is in no camera of {config.path}: "
                               f"give it the same source URL there, or record it as --camera <camera id>=URL")
        out[name] = cam
    return out


def _camera_frames(root: Path, cam: str, spec: Any, segs: list[dict[str, Any]], quality: int) -> Iterator[RecordedFrame]:
    from gridwatch.pipeline.schemas.frames import encode_frame
    from gridwatch.pipeline.sources.capture import CameraCapture

    seq = 0
    gate = None  # one motion gate across the segments: a cut between files is not a scene change
    for seg in sorted(segs, key=lambda s: s["start_ns"]):
        cfg = dataclasses.replace(spec.capture, camera_id=cam, source=str(root / seg["file"]), live=False,
                                  loop=False, realtime=False, start_ts=seg["start_ns"] / 1e9)
        cap = CameraCapture(cfg)
        if gate is None:
            gate = cap.gate
        cap.gate = gate
        try:
            for frame in cap.frames(yield_skipped=False):
                frame = dataclasses.replace(frame, seq=seq)
                seq += 1
                value = encode_frame(frame, quality, sent=frame.ts, replayed=True)
                yield RecordedFrame(cam, value, int(round(frame.ts * 1e9)))
        finally:
            cap.close()


def segment_frames(recording: str | Path, segments: list[dict[str, Any]], config: Any) -> Iterator[RecordedFrame]:
    """Every camera's re-captured frames, merged in event-time order."""
    names = match_cameras(segments, config)
    root = Path(recording).parent
    per_cam: dict[str, list[dict[str, Any]]] = {}
    for seg in segments:
        per_cam.setdefault(names[seg["camera"]], []).append(seg)
    quality = int(config.capture.jpeg_quality)
    streams = [_camera_frames(root, cam, config.cameras[cam], segs, quality) for cam, segs in per_cam.items()]
    return heapq.merge(*streams, key=lambda f: f.recv_ns)
