"""The capture service (`gridwatch cameras`): N cameras → sampled, motion-gated JPEG frames on Kafka.

    cameras.yaml ──► one thread per camera: CameraCapture (RTSP / file / image folder, reconnect with
                     back-off) → sample at detect_fps → motion gate → JPEG  ──► <prefix>.frames (key = camera id)
                 └─► camera online/offline ──► <prefix>.events: camera_offline new / end (grid code of the camera)
                                           └─► <prefix>.frames: camera_status record (the vision agent ends
                                               the camera's open scene events)

* **Newest frame wins.** Each camera has one pending slot: when Kafka is slower than the cameras, a new
  frame replaces the one not yet sent (counted as ``superseded``), so latency stays bounded and the
  service never builds a backlog.  Frames are sent and confirmed in rounds (one in flight per camera).
* **Offline events** go out ``offline_after_s`` after the capture lost the camera (a short blip that
  reconnects within the grace raises nothing) and end when it delivers frames again.  ``start_ts`` is
  the moment the camera was lost (the event time of a live camera is the wall clock at the edge), and
  the id is ``event_id("camera_offline", camera, start_ts)`` — deterministic.  Grid events are retried
  until Kafka confirms them; frames are not (a newer frame is coming anyway).

The same file (``cameras.yaml``) configures the vision agent (detector, batching, evidence) and each
camera's zones and rules; :func:`load_camera_config` parses and validates all of it, so both processes
fail fast with the key's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from gridwatch.core.settings import STATE_DIR, Settings
from gridwatch.pipeline.schemas.events import LEVELS, GridEvent, TierRef, event_id, tier_refs
from gridwatch.pipeline.schemas.frames import CameraStatusRecord, encode_frame
from gridwatch.pipeline.sources.capture import CameraCapture, CameraStatus, CaptureConfig, is_live_source

log = logging.getLogger("gridwatch.cameras")

OFFLINE_TYPE = "camera_offline"
SCENE_KEYS = frozenset({"zones", "rules", "tracker", "tz"})
SITE_KEYS = frozenset({"name", "grid_code", "lat", "lon", "enabled"})
CAPTURE_KEYS = frozenset(f.name for f in fields(CaptureConfig)) - {"camera_id"}
_CREDENTIALS = re.compile(r"(://[^:/@]+:)[^@/]*@")


def redact(url: str) -> str:
    """A source URL fit for logs and events: ``rtsp://user:secret@host`` → ``rtsp://user:***@host``."""
    return _CREDENTIALS.sub(r"\1***@", url)


# ------------------------------------------------------------------------------------------- config


@dataclass
class VisionOptions:
    """``vision:`` — the vision agent (`gridwatch worker --agents +vision`)."""

    max_batch: int = 8  # frames per inference batch, across cameras
    in_flight: int = 8  # frames at the detector while the agent's thread plans and applies rules (0 = in turn)
    batch_window_s: float = 0.05  # how long the agent waits to fill a batch
    max_lag_s: float = 1.0  # frames that waited longer: thinned to 1 per s of event time (0 = process all)
    evidence_url_prefix: str = ""  # prepended to snapshot references (e.g. /evidence/ for a web console)
    evidence_quality: int = 85
    evidence_max_age_days: float = 90.0  # snapshots older than this are removed (0 = keep)
    evidence_max_mb: float = 10240.0  # and the oldest beyond this much in the folder (0 = no limit)
    plates: str = "auto"  # auto (when agentclpr is installed) | on | off
    plate_threads: int = 1
    plate_min_score: float = 0.5
    stats_interval_s: float = 5.0  # agent stats: log + MQTT <stats_prefix>/vision/<worker>
    regions: dict[str, Any] = field(default_factory=dict)  # motion regions (models/regions.py RegionConfig)



@dataclass
class CaptureOptions:
    """``capture:`` — the capture service (`gridwatch cameras`)."""

    jpeg_quality: int = 80
    offline_after_s: float = 3.0  # grace before a lost camera becomes a camera_offline event
    offline_level: str = "yellow"
    send_skipped: bool = False  # also send frames the motion gate skipped (the agent ignores them)
    stats_interval_s: float = 30.0
    shutdown_s: float = 10.0  # SIGTERM/SIGINT: exit at most this long after (frames are not acknowledged input)


@dataclass
class CameraSpec:
    camera_id: str
    capture: CaptureConfig
    scene: dict[str, Any]  # zones / rules / tracker / tz for SceneEngine.from_config
    site: dict[str, Any]  # name / grid_code / lat / lon overrides of the registry
    enabled: bool = True

    @property
    def has_rules(self) -> bool:
        return bool(self.scene.get("rules"))


@dataclass
class CameraConfig:
    path: str
    detector: dict[str, Any]
    vision: VisionOptions
    capture: CaptureOptions
    cameras: dict[str, CameraSpec] = field(default_factory=dict)

    def enabled(self) -> list[CameraSpec]:
        return [c for c in self.cameras.values() if c.enabled]


class CameraConfigError(ValueError):
    """cameras.yaml is malformed; the message names the file and key."""


def _options(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise CameraConfigError(f"{where}: must be a mapping")
    obj = cls()
    known = {f.name: f for f in fields(cls)}
    for k, v in data.items():
        if k not in known:
            raise CameraConfigError(f"{where}: unknown key {k!r} (known: {', '.join(sorted(known))})")
        cur = getattr(obj, k)
        if isinstance(cur, bool) or isinstance(v, bool):
            ok = isinstance(v, bool) and isinstance(cur, bool)
        elif isinstance(cur, float):
            ok = isinstance(v, int | float)
        else:
            ok = isinstance(v, type(cur))
        if not ok:
            raise CameraConfigError(f"{where}.{k}: expected {type(cur).__name__}, got {v!r}")
        setattr(obj, k, float(v) if isinstance(cur, float) else v)
    return obj


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_camera_config(data: Any, where: str = "<cameras>") -> CameraConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CameraConfigError(f"{where}: top level must be a mapping")
    allowed = {"detector", "vision", "capture", "defaults", "cameras"}
    unknown = set(data) - allowed
    if unknown:
        raise CameraConfigError(f"{where}: unknown section(s) {sorted(unknown)} (known: {sorted(allowed)})")
    detector = data.get("detector") or {"type": "yolo_darknet_onnx", "variant": "int8", "dynamic": True,
                                        "threads": 1, "batch_workers": 2}
    if not isinstance(detector, dict) or "type" not in detector:
        raise CameraConfigError(f"{where}: detector must be a mapping with a type (e.g. yolo_darknet_onnx)")
    try:
        from gridwatch.models.detectors import parse_detector_config

        parse_detector_config(dict(detector))
    except ImportError:  # pragma: no cover - the models package is part of gridwatch
        pass
    except (ValueError, TypeError) as e:
        raise CameraConfigError(f"{where}: detector: {e}") from None
    vision = _options(VisionOptions, data.get("vision"), f"{where}:vision")
    capture = _options(CaptureOptions, data.get("capture"), f"{where}:capture")
    if vision.max_batch < 1 or vision.batch_window_s < 0 or vision.in_flight < 0:
        raise CameraConfigError(f"{where}:vision: max_batch must be >= 1, batch_window_s and in_flight >= 0")
    try:
        from gridwatch.models.regions import RegionConfig

        RegionConfig.from_dict(vision.regions)
    except (ValueError, TypeError) as e:
        raise CameraConfigError(f"{where}:vision.regions: {e}") from None
    if vision.plates not in ("auto", "on", "off"):
        raise CameraConfigError(f"{where}:vision.plates: auto, on or off, not {vision.plates!r}")
    if not 0 < capture.shutdown_s <= 3600:
        raise CameraConfigError(f"{where}:capture.shutdown_s: more than 0 and at most 3600 s")
    if capture.offline_level not in LEVELS:
        raise CameraConfigError(f"{where}:capture.offline_level: one of {LEVELS}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CameraConfigError(f"{where}:defaults: must be a mapping")
    cams = data.get("cameras") or {}
    if not isinstance(cams, dict):
        raise CameraConfigError(f"{where}:cameras: must be a mapping of camera id -> settings")
    out = CameraConfig(where, dict(detector), vision, capture)
    for raw_id, body in cams.items():
        # GB/T 28181 ids are 20 digits: YAML reads an unquoted one as an int (quote them; str() is the same)
        cam_id = str(raw_id)
        here = f"{where}:cameras.{cam_id}"
        if not isinstance(body, dict):
            raise CameraConfigError(f"{here}: must be a mapping (at least source: URL or file)")
        merged = _merge(defaults, body)
        unknown = set(merged) - CAPTURE_KEYS - SCENE_KEYS - SITE_KEYS
        if unknown:
            raise CameraConfigError(f"{here}: unknown key(s) {sorted(unknown)}")
        if "source" not in merged:
            raise CameraConfigError(f"{here}: source is required (rtsp://..., a video file or an image folder)")
        cap_dict = {k: v for k, v in merged.items() if k in CAPTURE_KEYS}
        try:
            capture_cfg = CaptureConfig.from_dict({"camera_id": cam_id, **cap_dict})
        except (ValueError, TypeError) as e:
            raise CameraConfigError(f"{here}: {e}") from None
        scene = {k: v for k, v in merged.items() if k in SCENE_KEYS}
        try:
            from gridwatch.models.scene_rules import SceneEngine

            SceneEngine.from_config(cam_id, scene)  # validate zones and rules now, not at the first frame
        except (ValueError, TypeError, KeyError) as e:
            raise CameraConfigError(f"{here}: {e}") from None
        site = {k: merged[k] for k in ("name", "grid_code", "lat", "lon") if k in merged}
        out.cameras[cam_id] = CameraSpec(cam_id, capture_cfg, scene, site, bool(merged.get("enabled", True)))
    return out


def load_camera_config(path: str | Path) -> CameraConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CameraConfigError(f"cannot read camera config {p}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise CameraConfigError(f"camera config {p} is not valid YAML: {e}") from None
    return parse_camera_config(data, str(p))


def camera_config_path(settings: Settings) -> Path:
    return settings.config_path(settings.vision.cameras)


def evidence_root(settings: Settings) -> Path:
    """Where snapshots go: ``web.evidence_dir`` (the console serves the same folder), else var/evidence."""
    configured = getattr(getattr(settings, "web", None), "evidence_dir", "") or ""
    return Path(configured) if configured else STATE_DIR / "evidence"


# ------------------------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class CameraSite:
    """Where a camera stands: what its grid events carry."""

    camera_id: str
    name: str
    grid_code: str
    lat: float
    lon: float
    tiers: tuple[TierRef, ...]
    tz: str = "UTC"


def resolve_sites(config: CameraConfig, registry: Any, gridmap: Any, tz: str = "UTC") -> dict[str, CameraSite]:
    """Each configured camera's grid code, position and tier chain: from the device registry (kind
    ``camera``), or from ``grid_code``/``lat``/``lon`` in cameras.yaml (which win over the registry)."""
    out: dict[str, CameraSite] = {}
    for cam_id, spec in config.cameras.items():
        dev = registry.get(cam_id) if registry is not None else None
        if dev is not None and dev.kind != "camera":
            raise CameraConfigError(f"{config.path}:cameras.{cam_id}: the registry says it is a {dev.kind}, not a camera")
        site = spec.site
        grid = str(site.get("grid_code") or (dev.grid_code if dev else ""))
        if not grid:
            raise CameraConfigError(
                f"{config.path}:cameras.{cam_id}: not a camera of the device registry; add it to the city's "
                "devices.csv (kind camera) or give grid_code, lat and lon here")
        try:
            lat = float(site["lat"]) if "lat" in site else (dev.lat if dev else None)
            lon = float(site["lon"]) if "lon" in site else (dev.lon if dev else None)
        except (TypeError, ValueError):
            raise CameraConfigError(f"{config.path}:cameras.{cam_id}: lat/lon must be numbers") from None
        if lat is None or lon is None:
            raise CameraConfigError(f"{config.path}:cameras.{cam_id}: lat and lon are needed (not in the registry)")
        name = str(site.get("name") or (dev.name if dev else cam_id))
        out[cam_id] = CameraSite(cam_id, name, grid, float(lat), float(lon), tier_refs(gridmap, grid),
                                 str(spec.scene.get("tz", tz)))
    return out


def ms(ts: float) -> int:
    return int(round(ts * 1000))


def offline_event(site: CameraSite, phase: str, start_ts: float, ts: float, *, level: str, reason: str,
                  source: str, attempt: int = 0, end_ts: float | None = None) -> GridEvent:
    if phase == "end":
        message = f"camera {site.name} is back online (was offline {max(0.0, ts - start_ts):.0f} s)"
    else:
        message = f"camera {site.name} offline ({reason}); reconnecting"
    return GridEvent(
        id=event_id(OFFLINE_TYPE, site.camera_id, ms(start_ts)), type=OFFLINE_TYPE, phase=phase,  # type: ignore[arg-type]
        level=level, subject=site.camera_id, device_kind="camera", grid_code=site.grid_code,
        tiers=list(site.tiers), lat=site.lat, lon=site.lon, start_ts=ms(start_ts), ts=ms(ts),
        end_ts=ms(end_ts) if end_ts is not None else None, message=message,
        evidence=[{"ts": ms(ts), "camera": site.camera_id, "reason": reason, "source": redact(source),
                   "attempt": attempt}],
        source="camera", rule=OFFLINE_TYPE)


# ------------------------------------------------------------------------------------------- service


@dataclass
class _Down:
    since: float
    reason: str
    attempt: int
    raised: bool = False


class CameraService:
    """Runs the captures of ``specs`` and publishes frames, status records and camera_offline events."""

    def __init__(self, settings: Settings, config: CameraConfig, sites: dict[str, CameraSite],
                 specs: list[CameraSpec] | None = None, *, clock: Any = time.time) -> None:
        self.settings = settings
        self.config = config
        self.sites = sites
        self.specs = specs if specs is not None else config.enabled()
        self.clock = clock
        self.opts = config.capture
        self.frames_topic = settings.topic("frames")
        self.events_topic = settings.topic("events")
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self._sent = threading.Condition(self._lock)  # a pending slot was taken (files wait on it)
        self._pending: dict[str, bytes] = {}
        self._status: list[CameraStatus | CameraStatusRecord] = []
        self._down: dict[str, _Down] = {}
        self._captures: dict[str, CameraCapture] = {}
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    # -- capture threads (blocking OpenCV) ------------------------------------------------------
    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed while stopping
                loop.call_soon_threadsafe(wake.set)

    def _on_status(self, status: CameraStatus) -> None:
        with self._lock:
            self._status.append(status)
        self._notify()

    def _run_camera(self, spec: CameraSpec) -> None:
        cam = spec.camera_id
        cap = self._captures[cam]
        try:
            live = spec.capture.is_live
            for frame in cap.frames(yield_skipped=self.opts.send_skipped):
                if self._closing.is_set():
                    break
                data = encode_frame(frame, self.opts.jpeg_quality)
                with self._sent:
                    # a file or folder (a replay) waits for its slot: every sampled frame is delivered
                    while not live and cam in self._pending and not self._closing.is_set():
                        self._sent.wait(0.5)
                    if cam in self._pending:
                        self.stats["superseded"] += 1  # live: Kafka slower than the camera, keep the newest
                    self._pending[cam] = data
                    self.stats["sampled"] += 1
                self._notify()
        except Exception:  # noqa: BLE001 - one broken camera must not stop the others
            log.exception("camera %s: capture failed", cam)
            if not self._closing.is_set():
                self._on_status(CameraStatus(cam, False, self.clock(), "capture_error", spec.capture.source))
            return
        if not self._closing.is_set() and not spec.capture.is_live:
            # a file / folder source reached its end: the vision agent closes the camera's open events
            log.info("camera %s: %s ended", cam, redact(spec.capture.source))
            with self._lock:
                self._status.append(CameraStatusRecord(cam, False, self.clock(), "ended"))
            self._notify()

    # -- the asyncio side ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, ready: threading.Event | None = None) -> None:
        from gridwatch.pipeline.kafka_io import ensure_topics, start_producer

        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await ensure_topics(self.settings, ("frames", "events", "deadletter"))
        producer = await start_producer(self.settings)
        for spec in self.specs:
            self._captures[spec.camera_id] = CameraCapture(spec.capture, on_status=self._on_status, clock=self.clock)
            t = threading.Thread(target=self._run_camera, args=(spec,), name=f"camera-{spec.camera_id}", daemon=True)
            self._threads.append(t)
            t.start()
        log.info("capture service running: %d cameras -> %s (%s)", len(self.specs), self.frames_topic,
                 ", ".join(f"{s.camera_id}={redact(s.capture.source)}" for s in self.specs))
        if ready is not None:
            ready.set()
        next_stats = time.monotonic() + self.opts.stats_interval_s
        try:
            while not stop.is_set():
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopper, waker}, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
                self._wake.clear()
                await self._send_frames(producer)
                await self._handle_status(producer, stop)
                await self._check_offline(producer, stop)
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self.opts.stats_interval_s
                    log.info("capture stats: %s", self.snapshot())
        finally:
            self._closing.set()
            with self._sent:
                self._sent.notify_all()
            for cap in self._captures.values():
                threading.Thread(target=cap.close, daemon=True).start()  # joins its reader: in parallel
            for t in self._threads:
                t.join(2.0)
            await producer.stop()
            log.info("capture service stopped: %s", self.snapshot())

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats)
        out["cameras"] = {cam: cap.stats for cam, cap in self._captures.items()}
        out["offline"] = sorted(c for c, d in self._down.items() if d.raised)
        return out

    async def _send_frames(self, producer: Any) -> None:
        with self._sent:
            pending, self._pending = self._pending, {}
            self._sent.notify_all()
        if not pending:
            return
        futures = [await producer.send(self.frames_topic, value=data, key=cam.encode())
                   for cam, data in pending.items()]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for cam, res in zip(pending, results, strict=True):
            if isinstance(res, BaseException):
                self.stats["send_errors"] += 1
                log.warning("camera %s: frame not sent (%s); the next one will be", cam, res)
            else:
                self.stats["sent"] += 1

    async def _send_reliably(self, producer: Any, topic: str, key: bytes, value: bytes, stop: asyncio.Event) -> bool:
        delay = 0.2
        while True:
            try:
                await (await producer.send(topic, value=value, key=key))
                return True
            except Exception as e:  # noqa: BLE001 - Kafka unavailable: retry with back-off
                if stop.is_set():
                    log.error("not sent to %s while stopping: %s", topic, e)
                    return False
                log.warning("send to %s failed (%s); retrying in %.1f s", topic, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _handle_status(self, producer: Any, stop: asyncio.Event) -> None:
        with self._lock:
            todo, self._status = self._status, []
        for st in todo:
            if isinstance(st, CameraStatusRecord):  # end of a file source: tell the agent only
                await self._send_reliably(producer, self.frames_topic, st.camera_id.encode(), st.encode(), stop)
                continue
            if st.reason == "stopped" and self._closing.is_set():
                continue  # we are shutting down: the camera is not offline
            cam = st.camera_id
            rec = CameraStatusRecord(cam, st.online, st.ts, st.reason)
            await self._send_reliably(producer, self.frames_topic, cam.encode(), rec.encode(), stop)
            if not st.online:
                self.stats["went_offline"] += 1
                if cam not in self._down:
                    self._down[cam] = _Down(st.ts, st.reason, st.attempt)
                else:
                    self._down[cam].attempt = st.attempt
                continue
            down = self._down.pop(cam, None)
            if down is None:
                continue
            if down.raised:
                site = self.sites[cam]
                ev = offline_event(site, "end", down.since, st.ts, level=self.opts.offline_level, reason="connected",
                                   source=self._source(cam), end_ts=st.ts)
                await self._send_reliably(producer, self.events_topic, site.grid_code.encode(), ev.encode(), stop)
                self.stats["offline_events_ended"] += 1
                log.info("camera %s back online after %.1f s: camera_offline %s ended", cam, st.ts - down.since, ev.id)
            else:
                log.info("camera %s back within %.1f s: no offline event", cam, st.ts - down.since)

    async def _check_offline(self, producer: Any, stop: asyncio.Event) -> None:
        now = self.clock()
        for cam, down in self._down.items():
            if down.raised or now - down.since < self.opts.offline_after_s:
                continue
            site = self.sites[cam]
            ev = offline_event(site, "new", down.since, down.since, level=self.opts.offline_level,
                               reason=down.reason, source=self._source(cam), attempt=down.attempt)
            if await self._send_reliably(producer, self.events_topic, site.grid_code.encode(), ev.encode(), stop):
                down.raised = True
                self.stats["offline_events"] += 1
                log.warning("camera %s offline since %.1f s (%s): camera_offline %s raised", cam, now - down.since,
                            down.reason, ev.id)

    def _source(self, cam: str) -> str:
        cap = self._captures.get(cam)
        return cap.config.source if cap else ""


def select_cameras(config: CameraConfig, only: list[str] | None) -> list[CameraSpec]:
    if not only:
        return config.enabled()
    missing = [c for c in only if c not in config.cameras]
    if missing:
        raise CameraConfigError(f"{config.path}: no camera(s) {missing} (configured: {sorted(config.cameras)})")
    return [config.cameras[c] for c in only]


def run_service(settings: Settings, config: CameraConfig, only: list[str] | None = None) -> int:
    """`gridwatch cameras`: run until Ctrl-C / SIGTERM."""
    from gridwatch.core.procs import run_async
    from gridwatch.devices.registry import city_of

    city = city_of(settings)
    sites = resolve_sites(config, city.registry, city.gridmap, city.timezone)
    specs = select_cameras(config, only)
    if not specs:
        raise CameraConfigError(f"{config.path}: no enabled cameras")
    live = sum(is_live_source(s.capture.source) for s in specs)
    log.info("cameras from %s: %d (%d live)", config.path, len(specs), live)
    service = CameraService(settings, config, sites, specs)
    run_async(service.run, config.capture.shutdown_s, "cameras")
    return 0
