"""`gridwatch record` and `gridwatch replay`: CLI glue around pipeline/recordreplay/record.py, replay.py, compare.py.

    gridwatch record city.mcap --duration 600 [--camera gate=rtsp://10.0.0.7/main] [--frames]
    gridwatch replay city.mcap --max --events-out replay.jsonl       # fresh namespace, own worker
    gridwatch replay city.mcap --speed 10 --from +300 --to +900 --devices 3301020101000003
    gridwatch replay --compare gw replay-city-20261120-220000        # or two exported .jsonl files
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gridwatch.core.settings import STATE_DIR, Settings, load_settings

log = logging.getLogger("gridwatch.replay")


def _bar(frac: float, width: int = 28) -> str:
    n = int(frac * width)
    return "[" + "#" * n + "." * (width - n) + f"] {frac * 100:5.1f}%"


class _Line:
    """A progress line: redrawn in place on a terminal, a log line every few seconds otherwise."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self._last = 0.0

    def show(self, text: str, final: bool = False) -> None:
        if self.tty:
            sys.stderr.write("\r" + text[:160].ljust(100) + ("\n" if final else ""))
            sys.stderr.flush()
        elif final or time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            log.info("%s", text)


# -- record ----------------------------------------------------------------------------------------
def add_record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="recording file to write (MCAP), e.g. city-2026-11-20.mcap")
    p.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--topics", nargs="+", default=None, metavar="FILTER",
                   help="MQTT topic filters to record (default: v1/# = every device and gateway topic)")
    p.add_argument("--camera", action="append", default=[], metavar="[NAME=]RTSP_URL",
                   help="also record this camera's stream as segments without re-encoding (repeatable)")
    p.add_argument("--segment-s", type=float, default=10.0, help="video segment length in seconds")
    p.add_argument("--frames", action="store_true",
                   help="also record the live Kafka <prefix>.frames topic (the frames the vision agent analysed), "
                        "so a replay reproduces the vision events; needs --kafka")


def _cameras(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, spec in enumerate(specs, 1):
        name, sep, url = spec.partition("=")
        if not sep or name.startswith("rtsp"):
            name, url = f"cam{i}", spec
        if not url.startswith("rtsp://"):
            raise ValueError(f"--camera {spec!r}: expected [NAME=]rtsp://host[:port]/path")
        out[name] = url
    return out


def run_record(settings: Settings, args: argparse.Namespace) -> int:
    from gridwatch.pipeline.recordreplay.record import Recorder, RecordStats

    rec = Recorder(settings, args.out, filters=tuple(args.topics or ("v1/#",)), cameras=_cameras(args.camera),
                   duration_s=args.duration or None, segment_s=args.segment_s, frames=args.frames)
    line = _Line()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping:  # a second Ctrl-C: the file is still closed properly by the finally below
            raise KeyboardInterrupt
        stopping.append(signum)
        rec.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    host, port, _, _ = settings.mqtt_endpoint()
    log.info("recording %s from MQTT %s:%d into %s (Ctrl-C stops and closes the file)",
             ", ".join(rec.filters), host, port, args.out)

    def progress(st: RecordStats) -> None:
        line.show(st.line())

    st = rec.run(progress)
    line.show(st.line(), final=True)
    print(f"wrote {args.out}: {st.messages:,} messages, {st.file_bytes / 1e6:,.2f} MB"
          + (f", {st.frames:,} camera frames" if args.frames else "")
          + (f", {st.segments} video segments in {args.out}.video/" if st.segments else ""), flush=True)
    return 0


# -- replay ----------------------------------------------------------------------------------------
def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="recording (MCAP) made by gridwatch record")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    speed.add_argument("--max", action="store_true", help="as fast as possible")
    p.add_argument("--from", dest="from_", metavar="T",
                   help="start of the slice: +SECONDS from the recording's start, epoch seconds, or ISO time")
    p.add_argument("--to", metavar="T", help="end of the slice (exclusive), same forms as --from")
    p.add_argument("--devices", metavar="ID,...|@FILE", help="replay only these devices (gateway messages are cut down)")
    p.add_argument("--no-worker", action="store_true",
                   help="only feed the namespace; run `gridwatch worker --prefix NS` yourself (e.g. on other machines)")
    p.add_argument("--events-out", metavar="FILE", help="when done, export the namespace's grid events as JSON lines")
    p.add_argument("--cameras", metavar="FILE",
                   help="camera config (zones, rules, detector) for the replay worker's vision agent "
                        "(default vision.cameras); the worker runs the vision agent when the recording has frames")
    p.add_argument("--no-frames", action="store_true", help="replay only the MQTT messages, not the recorded frames")
    p.add_argument("--video-from", choices=("frames", "segments"), default="frames",
                   help="frames (default): the recorded frames-topic records, as the live agent saw them; "
                        "segments: capture frames again from the recorded video with the camera config's "
                        "capture settings (to try other settings; deterministic, but not the live frames)")
    p.add_argument("--timeout", type=float, default=600.0, help="how long to wait for the worker to finish (s)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="compare the grid events of two runs (namespaces or exported .jsonl files) and exit")
    p.add_argument("--json", action="store_true", help="with --compare: print the comparison as JSON")


def _devices(spec: str | None) -> list[str] | None:
    if not spec:
        return None
    if spec.startswith("@"):
        text = Path(spec[1:]).read_text()
        return [x.strip() for x in text.replace(",", "\n").splitlines() if x.strip()]
    return [x.strip() for x in spec.split(",") if x.strip()]


def run_compare(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from gridwatch.pipeline.recordreplay.compare import compare, load_run

    a, b = args.compare
    res = compare(load_run(settings, a), load_run(settings, b), a, b)
    print(json.dumps(res.as_dict(), indent=2, ensure_ascii=False) if args.json else res.render())
    return 0 if res.identical else 1


# Agents whose effects leave the namespace (webhooks, incident MQTT channels): a replay must not
# notify the outside world. Alerts stay: their MQTT topics move under replay/<ns>/ (worker_env).
EXTERNAL_AGENTS = frozenset({"incident_channels"})


def replay_agents(settings: Settings, vision: bool = False) -> str | None:
    """The agent list of a replay's worker: the configured ones minus those with outside effects, plus
    the vision agent when the recording has camera frames."""
    try:
        from gridwatch.app import resolve_agents
    except ImportError:
        return None
    names = [a for a in resolve_agents(settings.worker.agents, settings) if a not in EXTERNAL_AGENTS]
    if vision and "vision" not in names:
        names.append("vision")
    return ",".join(names)


def _worker_argv(args: argparse.Namespace, ns: str, settings: Settings, vision: bool = False) -> list[str]:
    argv = ["worker", "--prefix", ns]
    agents = replay_agents(settings, vision)
    if agents:
        argv += ["--agents", agents]
    for flag, value in (("--kafka", args.kafka), ("--mqtt", args.mqtt), ("--config", args.config),
                        ("--city", args.city), ("--cameras", getattr(args, "cameras", None))):
        if value:
            argv += [flag, value]
    return argv


def run_replay(settings: Settings, args: argparse.Namespace) -> int:
    from gridwatch.core.procs import Proc
    from gridwatch.core.settings import with_prefix
    from gridwatch.devices.registry import city_of
    from gridwatch.pipeline.kafka_io import ensure_topics
    from gridwatch.pipeline.recordreplay.compare import read_events, write_events
    from gridwatch.pipeline.recordreplay.replay import (
        Replayer,
        ReplayError,
        ReplayStats,
        check_namespace,
        fresh_namespace,
        parse_time,
        recording_frames,
        recording_span,
        wait_events_merged,
        wait_processed,
        worker_env,
    )

    if args.compare:
        return run_compare(settings, args)
    if not args.file:
        raise ReplayError("give a recording to replay (or --compare A B)")
    if not Path(args.file).is_file():
        raise FileNotFoundError(f"recording {args.file} does not exist")
    live_prefix = load_settings(args.config).kafka.topic_prefix
    ns = args.prefix or fresh_namespace(args.file)
    check_namespace(ns, live_prefix)
    settings = with_prefix(settings, ns)
    first, last, count = recording_span(args.file)
    start_ns, end_ns = parse_time(args.from_, first), parse_time(args.to, first)
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise ReplayError("--to must be after --from")
    speed = None if args.max else args.speed
    city = city_of(settings)
    video = None
    if args.video_from == "segments" and not args.no_frames:
        from gridwatch.pipeline.recordreplay.recording import scan
        from gridwatch.pipeline.recordreplay.segment_frames import match_cameras, segment_frames
        from gridwatch.pipeline.sources.camera_service import camera_config_path, load_camera_config

        if args.cameras:
            settings.vision.cameras = args.cameras
        segments = scan(args.file).segments
        if not segments:
            raise ReplayError(f"{args.file} has no video segments (record with --camera)")
        config = load_camera_config(camera_config_path(settings))
        match_cameras(segments, config)  # fail before starting anything
        video = segment_frames(args.file, segments, config)
        print(f"camera frames: captured again from {len(segments)} video segments with the capture settings "
              f"of {config.path}", flush=True)
    frames = 0 if args.no_frames or video is not None else recording_frames(args.file)
    print(f"replaying {args.file} ({count:,} records, {(last - first) / 1e9:,.1f} s recorded"
          + (f", {frames:,} camera frames" if frames else "") + f") into namespace "
          f"{ns!r} at {'max speed' if speed is None else f'{speed:g}x'}", flush=True)
    vision = bool(frames) or video is not None
    asyncio.run(ensure_topics(settings, ("readings", "events", "deadletter") + (("frames",) if vision else ())))
    worker = None
    if not args.no_worker:
        worker = Proc(f"{ns}-worker", _worker_argv(args, ns, settings, vision=vision),
                      STATE_DIR / "replay-logs", worker_env(ns, settings))
        worker.start()
        print(f"started a worker for {ns} (log {worker.log_path}); waiting until it is ready", flush=True)
        try:
            worker.wait_log("worker ready", 180)
        except (RuntimeError, TimeoutError) as e:
            worker.stop()
            raise ReplayError(f"the replay worker did not start: {e}") from None
    line = _Line()
    span = (last - first) / 1e9

    def progress(st: ReplayStats, frac: float) -> None:
        rec = st.recorded_s
        elapsed = time.monotonic() - t_start
        line.show(f"{_bar(frac)} {rec:,.0f}/{span:,.0f} s recorded | {st.messages:,} msgs "
                  f"{st.readings:,} readings | {rec / elapsed if elapsed else 0:,.1f}x")

    stop = threading.Event()
    code = 0
    try:
        t_start = time.monotonic()

        async def main() -> ReplayStats:
            aio_stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, aio_stop.set)
            replayer = Replayer(settings, city.registry, args.file, speed=speed, start_ns=start_ns, end_ns=end_ns,
                                devices=_devices(args.devices), progress=progress, frames=bool(frames), video=video)
            st = await replayer.run(aio_stop)
            if aio_stop.is_set():
                stop.set()
            return st

        st = asyncio.run(main())
        line.show(f"{_bar(1.0)} fed {st.messages:,} messages ({st.readings:,} readings"
                  + (f", {st.frames:,} frames" if st.frames else "") + f") in {st.wall_s:,.1f} s: "
                  f"{st.speedup:,.1f}x real time", final=True)
        done = None
        if worker is not None and not stop.is_set():
            def wprogress(n: int, total: int) -> None:
                line.show(f"{_bar(n / total if total else 1.0)} worker: {n:,}/{total:,} reading batches processed")

            done = asyncio.run(wait_processed(settings, st.end_offsets, args.timeout, wprogress))
            if done and st.frame_offsets:
                def fprogress(n: int, total: int) -> None:
                    line.show(f"{_bar(n / total if total else 1.0)} worker: {n:,}/{total:,} camera frames processed")

                done = asyncio.run(wait_processed(settings, st.frame_offsets, args.timeout, fprogress, "frames"))
            if done and "incidents" in (replay_agents(settings, bool(frames)) or "incidents").split(","):
                line.show("worker: waiting for the incident agent's event-time merge to drain")
                done = asyncio.run(wait_events_merged(settings, settings.worker.watermark_interval_s + 1.0,
                                                        args.timeout))
            line.show("worker: all readings processed" if done else "worker: timed out", final=True)
            if not done:
                code = 4
        events = asyncio.run(read_events(settings, ns)) if worker is not None or args.events_out else []
        if args.events_out:
            n = write_events(events, args.events_out)
            print(f"exported {n} event records to {args.events_out}")
        by = Counter((e.get("type"), e.get("level")) for e in events if e.get("phase") == "new")
        total_s = time.monotonic() - t_start
        print(f"\nsummary: namespace {ns}")
        print(f"  recorded span   {st.recorded_s:,.1f} s; replayed in {st.wall_s:,.1f} s feed / {total_s:,.1f} s "
              f"with processing ({st.recorded_s / total_s if total_s else 0:,.1f}x)")
        print(f"  messages        {st.messages:,} ({st.skipped_devices:,} left out by --devices)")
        if st.frames:
            print(f"  camera frames   {st.frames:,}")
        print(f"  readings        {st.readings:,}; dead letters {sum(st.dead_letters.values()):,} "
              f"{dict(st.dead_letters) if st.dead_letters else ''}")
        if worker is not None:
            print(f"  grid events     {len({e.get('id') for e in events}):,} "
                  f"({', '.join(f'{t}/{lv} {n}' for (t, lv), n in by.most_common()) or 'none'})")
        if st.problems:
            print("\nthe recording is damaged; what was intact was replayed:", file=sys.stderr)
            for p in st.problems:
                print(f"  - {p}", file=sys.stderr)
            code = code or 3
    finally:
        if worker is not None:
            worker.stop()
    return code

