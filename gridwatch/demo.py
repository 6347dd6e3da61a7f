"""`gridwatch demo`: the whole pipeline on an embedded stack with a live terminal view.

Starts Tansu + Mosquitto (unless --kafka/--mqtt point elsewhere), two Faust workers (`--role telemetry`
and `--role incidents`), the MQTT bridge and
the fleet simulator as child processes, then watches MQTT (alerts and stats topics) like an operator
tool would. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gridwatch.core.procs import die_with_parent
from gridwatch.core.settings import STACK_FILE, STATE_DIR, load_settings

log = logging.getLogger("gridwatch.demo")
LEVEL_STYLE = {"red": "bold red", "yellow": "yellow", "blue": "cyan"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gridwatch.stack import add_engine_argument

    add_engine_argument(p, durable=False)
    p.add_argument("--devices", type=int, default=0, help="simulate only the first N devices (default: the whole city)")
    p.add_argument("--speed", type=float, default=30.0,
                   help="simulated time speed-up (default 30: an evening passes in minutes)")
    p.add_argument("--start", type=float, default=0.0,
                   help="simulated start, epoch seconds (default: today 17:30 local, so dusk comes soon)")
    p.add_argument("--faults-per-hour", type=float, default=40.0, help="random faults per simulated hour")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many real seconds (0 = until Ctrl-C)")
    p.add_argument("--plain", action="store_true", help="plain log lines instead of the live table (default when not a TTY)")
    p.add_argument("--api-port", type=int, default=None,
                   help="port of the Open311 API + operator console (default web.port, 8080)")
    p.add_argument("--no-cameras", action="store_true",
                   help="leave out the cameras (RTSP footage -> capture -> vision agent)")


@dataclass
class DemoState:
    tz: Any = None  # the city's time zone: event times are shown as the city sees them
    started: float = field(default_factory=time.time)
    bridge: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, dict[str, int]] = field(default_factory=dict)  # worker topic -> its counters (totals)
    rate: float = 0.0
    _last: tuple[float, int] = (0.0, 0)
    by_type: Counter = field(default_factory=Counter)
    by_level: Counter = field(default_factory=Counter)
    active: dict[str, dict[str, Any]] = field(default_factory=dict)
    latest: deque = field(default_factory=lambda: deque(maxlen=12))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes, stats_prefix: str) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            return
        with self.lock:
            if topic.startswith(stats_prefix + "/bridge"):
                now = time.time()
                t0, n0 = self._last
                if t0:
                    self.rate = (body.get("readings", 0) - n0) / max(now - t0, 1e-6)
                self._last = (now, body.get("readings", 0))
                self.bridge = body
            elif topic.startswith(stats_prefix + "/simulator"):
                self.sim = body
            elif topic.startswith(stats_prefix + "/worker/") and isinstance(body, dict):
                self.workers[topic] = body.get("counts", {})
            elif isinstance(body, dict) and "phase" in body:
                if body["phase"] == "new":
                    self.by_type[body["type"]] += 1
                    self.by_level[body["level"]] += 1
                if body["phase"] == "end":
                    self.active.pop(body["id"], None)
                else:
                    self.active[body["id"]] = body
                self.latest.appendleft(body)


def worker_total(state: DemoState, prefix: str) -> int:
    """A counter summed over the workers (``dead_letters.`` sums every reason)."""
    return sum(n for counts in state.workers.values() for k, n in counts.items() if k.startswith(prefix))


def render(state: DemoState) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with state.lock:
        b = state.bridge
        head = Table.grid(padding=(0, 3))
        sim_ts = state.sim.get("sim_ts")
        head.add_row(
            Text(f"readings/s {state.rate:8.0f}", style="bold"),
            f"readings {b.get('readings', 0):,}",
            f"incident changes {worker_total(state, 'incident_changes'):,}",
            f"dead letters {b.get('dead_letters_total', 0) + worker_total(state, 'dead_letters.'):,}",
            f"active events {len(state.active)}",
            f"sim time {datetime.fromtimestamp(sim_ts, state.tz):%Y-%m-%d %H:%M}" if sim_ts else "",
        )
        types = Table(title="grid events raised", expand=False)
        types.add_column("type")
        types.add_column("count", justify="right")
        for t, n in state.by_type.most_common():
            types.add_row(t, str(n))
        levels = "  ".join(f"[{LEVEL_STYLE[lv]}]{lv} {state.by_level.get(lv, 0)}[/]" for lv in ("red", "yellow", "blue"))
        latest = Table(title="latest alerts", expand=True)
        for col in ("event time", "phase", "level", "type", "grid", "subject", "message"):
            latest.add_column(col, overflow="ellipsis", no_wrap=True)
        for ev in state.latest:
            latest.add_row(
                datetime.fromtimestamp(ev["ts"] / 1000, state.tz).strftime("%H:%M:%S"), ev["phase"],
                Text(ev["level"], style=LEVEL_STYLE.get(ev["level"], "")), ev["type"], ev["grid_code"],
                ev["subject"], ev.get("message", ""))
        return Group(head, Text.from_markup("levels raised: " + levels), types, latest)


def plain_line(state: DemoState) -> str:
    with state.lock:
        last = state.latest[0] if state.latest else None
        return (f"readings/s {state.rate:7.0f} | readings {state.bridge.get('readings', 0):,} | "
                f"dead letters {state.bridge.get('dead_letters_total', 0) + worker_total(state, 'dead_letters.')} | "
                f"incident changes {worker_total(state, 'incident_changes')} | events {sum(state.by_type.values())} "
                f"{dict(state.by_level)} | active {len(state.active)}"
                + (f" | latest: {last['phase']} {last['level']} {last['type']} grid {last['grid_code']}" if last else ""))


def default_start(city_path: str | None = None) -> float:
    """Today 17:30 in the city's own time zone, so the demo opens at dusk when the lamps switch on."""
    from zoneinfo import ZoneInfo

    from gridwatch.devices.registry import city_at

    tz = ZoneInfo(city_at(city_path).timezone)
    now = datetime.now(tz)
    return now.replace(hour=17, minute=30, second=0, microsecond=0).timestamp()


def console_port(wanted: int) -> int:
    """``wanted`` if nothing listens there, else a free port (a second demo must not fail on 8080)."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_demo(args: argparse.Namespace) -> int:
    from gridwatch.stack import EmbeddedStack

    stack = None
    rtsp = None
    children: list[subprocess.Popen] = []
    logs = STATE_DIR / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    try:
        common: list[str] = ["--log-level", "info"]
        for flag in ("config", "prefix", "city"):
            if getattr(args, flag, None):
                common += [f"--{flag}", str(getattr(args, flag))]
        if args.kafka and args.mqtt:
            kafka, mqtt_url = args.kafka, args.mqtt
        else:
            print(f"starting the embedded stack ({args.engine} + Mosquitto) ...", flush=True)
            # A fresh folder each run, whatever the engine: the demo replays a new simulated evening, which a
            # log kept from an earlier run (its watermarks, open incidents) would only confuse.
            stack = EmbeddedStack(engine=args.engine,
                                  mqtt_settings=load_settings(getattr(args, "config", None)).mqtt).start()
            stack.write_state(STACK_FILE)
            kafka, mqtt_url = args.kafka or stack.kafka_url, args.mqtt or stack.mqtt_url
        common += ["--kafka", kafka, "--mqtt", mqtt_url]
        env = dict(os.environ)
        # The demo's simulated clock runs ahead of the wall clock on purpose (--speed), so the bridge
        # must not reject its readings as "from the future".
        env.setdefault("GRIDWATCH_BRIDGE_MAX_FUTURE_SKEW_S", str(30 * 86400))
        env["GRIDWATCH_DEMO_CREDENTIALS"] = "allow"  # the shipped demo logins (web/demo_guard.py)
        env.setdefault("GRIDWATCH_WORKER_STATS_INTERVAL_S", "2")  # the workers' figures on the dashboard
        sim_args = ["--speed", str(args.speed), "--start", str(args.start or default_start(args.city)),
                    "--faults-per-hour", str(args.faults_per_hour), "--allow-future"]
        if args.devices:
            sim_args += ["--devices", str(args.devices)]
        # The default topology (gridwatch/roles.py): the incident agent in a worker of its own.
        procs: list[tuple[str, list[str]]] = [("worker", ["worker", "--role", "telemetry"]),
                                              ("incidents", ["worker", "--role", "incidents"]),
                                              ("bridge", ["bridge"]), ("simulate", ["simulate", *sim_args])]
        if not args.no_cameras:
            rtsp, cameras_file = start_cameras(args)
            if cameras_file is not None:
                procs[0] = ("worker", ["worker", "--role", "telemetry", "--agents", "+vision",
                                       "--cameras", str(cameras_file)])
                procs.append(("cameras", ["cameras", "--cameras", str(cameras_file)]))
        api_port = console_port(args.api_port if args.api_port is not None else load_settings(args.config).web.port)
        procs.append(("api", ["api", "--port", str(api_port)]))
        for name, argv in procs:
            logf = open(logs / f"{name}.log", "wb")  # noqa: SIM115
            children.append(subprocess.Popen([sys.executable, "-m", "gridwatch", *argv, *common], stdout=logf,
                                             stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                             preexec_fn=die_with_parent))
            print(f"started {name} (log: {logs / (name + '.log')})", flush=True)
        print(f"operator console: http://127.0.0.1:{api_port}/console  (demo logins: city / city-demo, "
              f"ansha / ansha-demo; see gridwatch/config/operators.yaml)\n"
              f"Open311 API:      http://127.0.0.1:{api_port}/open311/v2/services.json", flush=True)
        settings = load_settings(args.config, {"mqtt.url": mqtt_url, "city.path": args.city})
        return watch(args, settings, children)
    finally:
        for p in reversed(children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(children):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if rtsp is not None:
            rtsp.stop()
        if stack is not None:
            stack.stop()
            with contextlib.suppress(OSError):
                STACK_FILE.unlink()
        print("demo stopped", flush=True)


DEMO_FOOTAGE = (("cam1", "vtest_avi", "a campus plaza (OpenCV's vtest.avi)"),
                ("cam2", "market_street_mp4", "Market Street, 1906 (public-domain film)"))


def start_cameras(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """Serve the real footage over RTSP and point the shipped cameras.yaml at it: (server, camera file).

    The shipped cameras.yaml places its cameras at sample-city camera points with sources
    rtsp://127.0.0.1:8554/cam1 and /cam2; the demo serves the footage on a free port instead and writes a
    copy with those URLs to var/demo-cameras.yaml. Without GStreamer or the footage the demo goes on
    without cameras (and says why)."""
    import yaml

    from gridwatch.models import footage
    from gridwatch.pipeline.sources.camera_service import camera_config_path
    from gridwatch.pipeline.sources.rtsp_server import check_available, serve
    from gridwatch.stack import free_port

    reason = check_available()
    if reason:
        print(f"no cameras in this demo: the GStreamer RTSP server is unavailable ({reason})", flush=True)
        return None, None
    files, names = [], []
    for mount, fn, _what in DEMO_FOOTAGE:
        try:
            files.append(getattr(footage, fn)())
            names.append(mount)
        except footage.FootageUnavailable as e:
            print(f"camera {mount} left out: {e}", flush=True)
    if not files:
        return None, None
    port = free_port()
    try:  # 10 fps keeps the H.264 encoding (server) and decoding (capture) cheap
        server = serve(files, port, names=names, fps=10)
    except (RuntimeError, OSError) as e:
        print(f"no cameras in this demo: the RTSP server did not start ({e})", flush=True)
        return None, None
    settings = load_settings(args.config, {"city.path": args.city})
    shipped = yaml.safe_load(camera_config_path(settings).read_text(encoding="utf-8")) or {}
    cams = shipped.get("cameras") or {}
    kept = {}
    for cam_id, body in cams.items():
        src = str((body or {}).get("source", ""))
        mount = src.rstrip("/").rsplit("/", 1)[-1]
        if mount in names:
            kept[str(cam_id)] = {**body, "source": server.url(mount)}
    if not kept:
        server.stop()
        print("no cameras in this demo: cameras.yaml has no camera on rtsp://.../cam1 or /cam2", flush=True)
        return None, None
    shipped["cameras"] = kept
    out = STATE_DIR / "demo-cameras.yaml"
    out.write_text("# written by `gridwatch demo` from the shipped cameras.yaml (sources: the demo's RTSP server)\n"
                   + yaml.safe_dump(shipped, sort_keys=False, allow_unicode=True), encoding="utf-8")
    for mount, _fn, what in DEMO_FOOTAGE:
        if mount in names:
            cam = next(c for c, b in kept.items() if b["source"].endswith("/" + mount))
            print(f"camera {cam}: {what} at {server.url(mount)}", flush=True)
    return server, out


def watch(args: argparse.Namespace, settings: Any, children: list[subprocess.Popen]) -> int:
    from zoneinfo import ZoneInfo

    from gridwatch.devices.registry import city_of
    from gridwatch.pipeline.mqtt_client import connect, make_client

    state = DemoState(tz=ZoneInfo(city_of(settings).timezone))
    client = make_client(settings)
    prefix = settings.mqtt.stats_prefix
    client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(
        [(settings.mqtt.alert_prefix + "/#", 0), (prefix + "/#", 0)])
    client.on_message = lambda c, u, m: state.on_message(m.topic, m.payload, prefix)
    connect(client)
    client.loop_start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: stop.set())  # terminal closed: stop cleanly too
    deadline = time.time() + args.duration if args.duration else float("inf")
    plain = args.plain or not sys.stdout.isatty()
    print("watching alerts; Ctrl-C stops the demo", flush=True)
    try:
        if plain:
            while not stop.is_set() and time.time() < deadline and all(p.poll() is None for p in children):
                stop.wait(2.0)
                print(plain_line(state), flush=True)
        else:
            from rich.live import Live

            with Live(render(state), refresh_per_second=2, screen=False) as live:
                while not stop.is_set() and time.time() < deadline and all(p.poll() is None for p in children):
                    stop.wait(0.5)
                    live.update(render(state))
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    dead = [p for p in children if p.poll() is not None]
    if dead and not stop.is_set() and time.time() < deadline:
        print(f"a child process exited early (see {STATE_DIR / 'demo-logs'})", flush=True)
        return 1
    print(plain_line(state), flush=True)
    return 0


__all__ = ["add_arguments", "run_demo", "Path"]
