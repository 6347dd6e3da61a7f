"""Camera capture: RTSP streams, video files and image folders → sampled, motion-gated frames.

* **Live sources** (``rtsp://``, ``rtsps://``, ``http(s)://``, ``udp://``, ``tcp://``): OpenCV's FFmpeg backend
  over TCP with low-delay flags (``OPENCV_FFMPEG_CAPTURE_OPTIONS``, set here unless the environment has it)
  and a **latest-frame reader thread** that keeps only the newest decoded frame, so a slow consumer never
  falls behind.  When the stream drops (read fails, nothing for ``stall_timeout_s``) the capture is
  recreated with exponential back-off; online/offline transitions go to the ``on_status`` callback.
  Frame time = wall clock when the frame was decoded: the event time of a live camera.
* **Video files**: read in order, nothing dropped; frame time = ``start_ts`` + the frame's position in the
  file, so a replay is deterministic.  ``loop`` restarts at the end (time runs on), ``realtime`` paces
  reading to the file's frame rate (a file pretending to be a camera).
* **Image folders**: sorted ``*.jpg/png/bmp/webp``; frame time = ``start_ts + index / folder_fps``.

Then every source is **sampled** at ``detect_fps`` (default 5) by frame time and passed through a cheap
**motion gate** (grey frame downscaled to ~160 px, blurred, differenced against the last sampled frame):
:meth:`CameraCapture.frames` yields every sampled :class:`Frame` with ``detect=True`` when it should go
to the detector — motion, the first frame, or a keyframe every ``keyframe_interval_s`` so stationary
objects (parked cars) still get seen — and ``detect=False`` otherwise (``yield_skipped=False`` drops those).

:func:`pack_frame` / :func:`unpack_frame` turn a frame into one self-describing byte string (small JSON
header + JPEG) for a Kafka topic keyed by camera id.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gridwatch.core.options import from_mapping
from gridwatch.pipeline.schemas.frame_wire import Frame

log = logging.getLogger(__name__)

FFMPEG_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_live_source(source: str) -> bool:
    return source.lower().startswith(LIVE_SCHEMES)


# ------------------------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class CameraStatus:
    camera_id: str
    online: bool
    ts: float  # wall-clock time of the transition (the event time of a live camera)
    reason: str  # connected | open_failed | read_failed | stalled | stopped
    source: str
    attempt: int = 0  # reconnect attempts since the last time the camera was online
    retry_in_s: float | None = None


StatusCallback = Callable[[CameraStatus], None]


@dataclass
class MotionGateConfig:
    enabled: bool = True
    width: int = 160  # the grey frame is downscaled to this width before differencing
    blur: int = 5  # Gaussian kernel (odd, 0 = none) against sensor and compression noise
    pixel_threshold: int = 20  # grey-level change that counts as a changed pixel
    min_changed: float = 0.002  # fraction of changed pixels that counts as motion
    keyframe_interval_s: float = 2.0  # detect at least this often without motion (0 = never)
    max_boxes: int = 16  # motion boxes sent with a frame (the largest; the detector's crops cover them)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MotionGateConfig:
        return _from_dict(cls, data or {})


@dataclass
class CaptureConfig:
    camera_id: str
    source: str  # rtsp://..., a video file, or a folder of images
    detect_fps: float = 5.0
    motion: MotionGateConfig = field(default_factory=MotionGateConfig)
    live: bool | None = None  # None: by URL scheme
    loop: bool = False  # files / folders: start again at the end
    realtime: bool = False  # files / folders: pace to the source frame rate
    start_ts: float | None = None  # files / folders: event time of the first frame (None: time at open)
    folder_fps: float = 5.0  # image folders: frames per second of the sequence
    max_width: int | None = None  # downscale wider frames (keeps the aspect ratio)
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    reconnect_factor: float = 2.0
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    stall_timeout_s: float = 5.0  # live: no new frame for this long counts as a drop

    def __post_init__(self) -> None:
        if isinstance(self.motion, dict):
            self.motion = MotionGateConfig.from_dict(self.motion)
        if self.detect_fps <= 0:
            raise ValueError("detect_fps must be > 0")
        if self.reconnect_initial_s <= 0 or self.reconnect_factor < 1:
            raise ValueError("bad reconnect settings")

    @property
    def is_live(self) -> bool:
        return self.live if self.live is not None else is_live_source(self.source)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptureConfig:
        return _from_dict(cls, data)


def _from_dict(cls, data: dict[str, Any]):
    return from_mapping(cls, data, cls.__name__)


# ------------------------------------------------------------------------------------------- motion gate


class MotionGate:
    """Decides per sampled frame whether it is worth running the detector."""

    def __init__(self, config: MotionGateConfig | None = None):
        self.config = config or MotionGateConfig()
        self._prev: np.ndarray | None = None
        self._last_detect_ts: float | None = None
        self.checked = 0
        self.passed = 0
        self.last_boxes: tuple[tuple[float, float, float, float], ...] | None = None

    def _small(self, image: np.ndarray) -> np.ndarray:
        cfg = self.config
        h, w = image.shape[:2]
        sw = min(cfg.width, w)
        sh = max(1, round(h * sw / w))
        # bilinear is ~25× cheaper than INTER_AREA here; the blur below takes care of the aliasing
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        if cfg.blur and cfg.blur > 1:
            k = cfg.blur | 1
            grey = cv2.GaussianBlur(grey, (k, k), 0)
        return grey

    def check(self, image: np.ndarray, ts: float) -> tuple[bool, float, str]:
        """Return ``(detect, changed_fraction, reason)``."""
        cfg = self.config
        self.checked += 1
        grey = self._small(image)
        prev, self._prev = self._prev, grey
        self.last_boxes = None
        if prev is None or prev.shape != grey.shape:
            changed, reason, detect = 1.0, "first", True
        else:
            mask = cv2.absdiff(grey, prev) > cfg.pixel_threshold
            changed = float(np.count_nonzero(mask)) / mask.size
            self.last_boxes = motion_boxes(mask, cfg.max_boxes)
            if not cfg.enabled or changed >= cfg.min_changed:
                detect, reason = True, "motion"
            elif cfg.keyframe_interval_s > 0 and (self._last_detect_ts is None
                                                  or ts - self._last_detect_ts >= cfg.keyframe_interval_s):
                detect, reason = True, "keyframe"
            else:
                detect, reason = False, "still"
        if detect:
            self.passed += 1
            self._last_detect_ts = ts
        return detect, changed, reason

    @property
    def skip_ratio(self) -> float:
        return 1.0 - self.passed / self.checked if self.checked else 0.0

    def reset(self) -> None:
        self._prev = None
        self._last_detect_ts = None


def motion_boxes(mask: np.ndarray, max_boxes: int) -> tuple[tuple[float, float, float, float], ...]:
    """Bounding boxes (0..1 of the picture, largest first) of the changed areas of the gate's small mask;
    neighbouring changes (a walker's head and feet) join through a 5 px dilation.  Beyond ``max_boxes``
    areas, the last box is the union of the rest: the list always covers every change (the detector's
    crops are planned from it)."""
    h, w = mask.shape
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    order = sorted(range(1, n), key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
    boxes = [(int(stats[i, 0]), int(stats[i, 1]), int(stats[i, 0] + stats[i, 2]), int(stats[i, 1] + stats[i, 3]))
             for i in order]
    if len(boxes) > max(1, max_boxes):
        rest = boxes[max(1, max_boxes) - 1:]
        boxes = boxes[:max(1, max_boxes) - 1] + [(min(b[0] for b in rest), min(b[1] for b in rest),
                                                  max(b[2] for b in rest), max(b[3] for b in rest))]
    return tuple((round(b[0] / w, 4), round(b[1] / h, 4), round(b[2] / w, 4), round(b[3] / h, 4)) for b in boxes)


# ------------------------------------------------------------------------------------------- sources


_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_USER_OPTIONS = os.environ.get(_OPTIONS_ENV)  # an operator's own setting wins for live sources
_open_lock = threading.Lock()


def open_video_capture(source: str, open_timeout_s: float = 5.0, read_timeout_s: float = 5.0) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` on the FFmpeg backend with open/read timeouts.

    OpenCV reads ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` from the environment at every open.  Live sources get
    the low-delay TCP options; files must *not* get them (seen here: with them set, seeking in vtest.avi
    lands on a different frame), so the variable is set or cleared for each open, under a lock."""
    options = (_USER_OPTIONS or FFMPEG_OPTIONS) if is_live_source(source) else None
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
    with _open_lock:
        before = os.environ.get(_OPTIONS_ENV)
        if options is None:
            os.environ.pop(_OPTIONS_ENV, None)
        else:
            os.environ[_OPTIONS_ENV] = options
        try:
            return cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
        finally:
            if before is None:
                os.environ.pop(_OPTIONS_ENV, None)
            else:
                os.environ[_OPTIONS_ENV] = before


def downscale(image: np.ndarray, max_width: int | None) -> np.ndarray:
    """``image`` shrunk to ``max_width`` (aspect kept) when wider.

    Halvings with INTER_AREA while the frame is at least twice too wide (OpenCV's fast 2× path: 0.2 ms for
    1280×720), then bilinear for the rest, a factor under 2 where it barely aliases (and the detector's
    letterbox is bilinear anyway).  One INTER_AREA step at a non-integer factor measured 3.0–3.4 ms a frame
    (768×576 → 640, 1920×1080 → 640) against 0.5–0.6 ms this way."""
    h0, w0 = image.shape[:2]
    if not max_width or w0 <= max_width:
        return image
    size = (max_width, max(1, round(h0 * max_width / w0)))
    while image.shape[1] >= 2 * max_width:
        h, w = image.shape[:2]
        image = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    if (image.shape[1], image.shape[0]) != size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return image


class LatestFrameReader:
    """Background thread reading a live stream, keeping only the newest frame; reconnects with back-off."""

    def __init__(self, config: CaptureConfig, on_status: StatusCallback | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.on_status = on_status
        self.clock = clock
        self._cond = threading.Condition()
        self._latest: tuple[int, float, np.ndarray] | None = None
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.online: bool | None = None  # None until the first connect attempt finished
        self.frames_read = 0
        self.frames_dropped = 0  # overwritten before anyone took them, or never converted (see _skip)
        self.frames_converted = 0  # decoded frames turned into BGR images
        self.reconnects = 0
        self._taken = 0
        self._want_from: float | None = None  # the consumer's next due frame time (clock)
        self._period: float | None = None  # smoothed interval between decoded frames (s)

    def start(self) -> LatestFrameReader:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"capture-{self.config.camera_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _report(self, online: bool, reason: str, attempt: int = 0, retry_in: float | None = None) -> None:
        if self.online is online:
            return
        self.online = online
        status = CameraStatus(self.config.camera_id, online, self.clock(), reason, self.config.source, attempt, retry_in)
        log.info("camera %s %s (%s)", status.camera_id, "online" if online else "offline", reason)
        if self.on_status is not None:
            try:
                self.on_status(status)
            except Exception:  # a broken callback must not kill the reader
                log.exception("on_status callback failed")

    def _run(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_initial_s
        attempt = 0
        while not self._stop.is_set():
            cap = open_video_capture(cfg.source, cfg.open_timeout_s, cfg.read_timeout_s)
            reason = "open_failed"
            if cap.isOpened():
                reason = self._read_loop(cap)
                if reason == "connected":  # had frames, then lost them
                    reason = "read_failed"
            cap.release()
            if self._stop.is_set():
                break
            if self.online:  # we were streaming: start the back-off from the beginning
                delay, attempt = cfg.reconnect_initial_s, 0
            attempt += 1
            self._report(False, reason, attempt, delay)
            if self._stop.wait(delay):
                break
            self.reconnects += 1
            delay = min(delay * cfg.reconnect_factor, cfg.reconnect_max_s)
        if self.online:
            self._report(False, "stopped")

    def want_from(self, ts: float | None) -> None:
        """The consumer's next due frame time (clock): frames decoded well before it are not converted."""
        self._want_from = ts

    def _skip(self, ts: float) -> bool:
        """Whether the frame decoded at ``ts`` can stay unconverted: a newer frame will arrive before the
        consumer's due time.  Converting to BGR (``retrieve``) is ~30 % of a frame's cost (1080p H.264: 2.7 ms
        decode + 1.1 ms conversion) and a 25 fps camera sampled at 5 fps needs only one frame in five.
        Frames within two source intervals of the due time are converted; so is everything while offline,
        before the first frame was taken, and when the due time is implausibly far (a clock step)."""
        want, period = self._want_from, self._period
        if want is None or period is None or not self.online:
            return False
        return max(2.0 * period, 0.03) < want - ts < 2.0 / self.config.detect_fps

    def _read_loop(self, cap: cv2.VideoCapture) -> str:
        cfg = self.config
        got_any = False
        last_frame_wall = time.monotonic()
        last_grab: float | None = None
        while not self._stop.is_set():
            ok = cap.grab()
            now = time.monotonic()
            if not ok:
                return "connected" if got_any else "open_failed"
            ts = self.clock()  # frame time: when it was decoded (grab decodes; retrieve converts to BGR)
            if last_grab is not None:
                dt = now - last_grab
                self._period = dt if self._period is None else 0.8 * self._period + 0.2 * dt
            last_grab = now
            if self._skip(ts):
                last_frame_wall = now
                self.frames_read += 1
                self.frames_dropped += 1
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                if now - last_frame_wall > cfg.stall_timeout_s:
                    return "stalled"
                continue
            last_frame_wall = now  # not downscaled here: most frames are overwritten before anyone takes them
            got_any = True
            self.frames_read += 1
            self.frames_converted += 1
            if not self.online:
                self._report(True, "connected")
            with self._cond:
                if self._latest is not None and self._latest[0] > self._taken:
                    self.frames_dropped += 1
                self._seq += 1
                self._latest = (self._seq, ts, image)
                self._cond.notify_all()
        return "stopped"

    def latest(self, after_seq: int = 0, timeout: float | None = None) -> tuple[int, float, np.ndarray] | None:
        """The newest frame with a sequence number above ``after_seq``; waits up to ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._stop.is_set():
                if self._latest is not None and self._latest[0] > after_seq:
                    self._taken = self._latest[0]
                    return self._latest
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
        return None


class _FileSource:
    """Sequential frames of a video file with timestamps from the file; optional loop / realtime pacing."""

    def __init__(self, config: CaptureConfig, on_status: StatusCallback | None, clock: Callable[[], float]):
        self.config = config
        self.on_status = on_status
        self.clock = clock
        self.start_ts = config.start_ts if config.start_ts is not None else clock()
        self._offset = 0.0

    def _status(self, online: bool, reason: str) -> None:
        if self.on_status is not None:
            self.on_status(CameraStatus(self.config.camera_id, online, self.clock(), reason, self.config.source))

    def frames(self, want: Callable[[float], bool]) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(ts, image)`` for the frames whose time ``want(ts)`` accepts (others are not converted)."""
        cfg = self.config
        wall0 = time.monotonic()
        while True:
            cap = open_video_capture(cfg.source, cfg.open_timeout_s, cfg.read_timeout_s)
            if not cap.isOpened():
                self._status(False, "open_failed")
                return
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            if not 0 < fps < 1000:
                fps = 25.0
            index = 0
            last_rel = 0.0
            while True:
                if not cap.grab():
                    break
                pos = cap.get(cv2.CAP_PROP_POS_MSEC)
                rel = pos / 1000.0 if pos and pos > 0 else index / fps
                if index and rel <= last_rel:  # containers without usable timestamps
                    rel = index / fps
                last_rel = rel
                index += 1
                ts = self.start_ts + self._offset + rel
                if cfg.realtime:
                    delay = (ts - self.start_ts) - (time.monotonic() - wall0)
                    if delay > 0:
                        time.sleep(delay)
                if want(ts):
                    ok, image = cap.retrieve()
                    if ok and image is not None:
                        yield ts, downscale(image, cfg.max_width)
            cap.release()
            if not cfg.loop or index == 0:
                return
            self._offset += last_rel + 1.0 / fps


class _FolderSource(_FileSource):
    def frames(self, want: Callable[[float], bool]) -> Iterator[tuple[float, np.ndarray]]:
        cfg = self.config
        files = sorted(p for p in Path(cfg.source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            self._status(False, "open_failed")
            return
        wall0 = time.monotonic()
        period = 1.0 / cfg.folder_fps
        index = 0
        while True:
            for path in files:
                ts = self.start_ts + index * period
                index += 1
                if cfg.realtime:
                    delay = (ts - self.start_ts) - (time.monotonic() - wall0)
                    if delay > 0:
                        time.sleep(delay)
                if want(ts):
                    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
                    if image is not None:
                        yield ts, downscale(image, cfg.max_width)
            if not cfg.loop:
                return


# ------------------------------------------------------------------------------------------- capture


class CameraCapture:
    """One camera: source → sampled at ``detect_fps`` → motion-gated :class:`Frame` s.

    ``for frame in CameraCapture(cfg, on_status=...).frames(): ...`` — blocks; for live sources it runs until
    :meth:`close` (from another thread), for files until the end (unless ``loop``).
    """

    def __init__(self, config: CaptureConfig | dict[str, Any], on_status: StatusCallback | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config if isinstance(config, CaptureConfig) else CaptureConfig.from_dict(config)
        self.on_status = on_status
        self.clock = clock
        self.gate = MotionGate(self.config.motion)
        self._closed = threading.Event()
        self._reader: LatestFrameReader | None = None
        self._seq = 0
        self.sampled = 0
        self.detected = 0

    @property
    def reader(self) -> LatestFrameReader | None:
        return self._reader

    def close(self) -> None:
        self._closed.set()
        if self._reader is not None:
            self._reader.stop()

    def __enter__(self) -> CameraCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make(self, ts: float, image: np.ndarray) -> Frame:
        detect, changed, reason = self.gate.check(image, ts)
        frame = Frame(self.config.camera_id, self._seq, ts, image, detect, changed, reason, self.gate.last_boxes)
        self._seq += 1
        self.sampled += 1
        self.detected += int(detect)
        return frame

    def frames(self, yield_skipped: bool = True) -> Iterator[Frame]:
        gen = self._live() if self.config.is_live else self._offline()
        for frame in gen:
            if frame.detect or yield_skipped:
                yield frame

    def _offline(self) -> Iterator[Frame]:
        cfg = self.config
        period = 1.0 / cfg.detect_fps
        src_cls = _FolderSource if Path(cfg.source).is_dir() else _FileSource
        src = src_cls(cfg, self.on_status, self.clock)
        grid: list[float] = []  # [origin, index of the next due slot]
        eps = min(1e-3, period / 100)  # frame times are float sums: never miss a slot by rounding

        def want(ts: float) -> bool:
            if not grid:
                grid.extend([ts, 1])
                return True
            origin, k = grid
            due = origin + k * period
            if ts + eps < due:
                return False
            # stay on the grid (no drift); skip the slots we are more than a period behind on
            grid[1] = k + 1 if ts - due < period else int((ts - origin + eps) // period) + 1
            return True

        for ts, image in src.frames(want):
            if self._closed.is_set():
                return
            yield self._make(ts, image)

    def _live(self) -> Iterator[Frame]:
        cfg = self.config
        period = 1.0 / cfg.detect_fps
        self._reader = LatestFrameReader(cfg, self.on_status, self.clock).start()
        last_seq = 0
        next_due: float | None = None
        try:
            while not self._closed.is_set():
                if next_due is not None:
                    wait = next_due - self.clock()
                    if wait > 0 and self._closed.wait(wait):
                        return
                item = self._reader.latest(last_seq, timeout=0.5)
                if item is None:
                    continue
                last_seq, ts, image = item
                next_due = ts + period if next_due is None or ts - next_due >= period else next_due + period
                self._reader.want_from(next_due)
                yield self._make(ts, downscale(image, cfg.max_width))
        finally:
            self._reader.stop()

    @property
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"camera_id": self.config.camera_id, "sampled": self.sampled,
                               "detected": self.detected, "skip_ratio": round(self.gate.skip_ratio, 4)}
        if self._reader is not None:
            out.update(online=self._reader.online, frames_read=self._reader.frames_read,
                       frames_converted=self._reader.frames_converted, frames_dropped=self._reader.frames_dropped,
                       reconnects=self._reader.reconnects)
        return out
