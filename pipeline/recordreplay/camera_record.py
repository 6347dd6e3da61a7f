"""Record RTSP cameras into segment files without re-encoding, for ``gridwatch record --camera``.

Why GStreamer and not OpenCV: OpenCV decodes (and would have to re-encode) every frame; a recorder
should keep the camera's own H.264 bit stream. Per camera this runs
``rtspsrc protocols=tcp ! rtph264depay ! h264parse ! splitmuxsink muxer=mp4mux max-size-time=<segment>``
which cuts the stream at key frames into MP4 segments, copying the bytes. GStreamer's Python bindings
exist only for the system interpreter (Debian ``python3-gi``), so, like ``rtsp_server.py``, this file
runs **itself** under ``/usr/bin/python3`` (standard library only at module level) and reports each
finished segment as a JSON line on stdout: ``{"camera", "file", "start_ns", "end_ns", "bytes", "codec"}``.
Wall-clock times are taken when splitmuxsink opens and closes a fragment.

Segments go to ``<recording>.video/<camera>/seg-00000.mp4`` ...; the recording indexes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SYSTEM_PYTHON = "/usr/bin/python3"


def video_dir(recording: str | Path) -> Path:
    p = Path(recording)
    return p.with_name(p.name + ".video")


class CameraRecorder:
    """One subprocess per camera; :meth:`poll` returns finished segments, :meth:`stop` the last ones."""

    def __init__(self, cameras: dict[str, str], recording: str | Path, *, segment_s: float = 10.0,
                 python: str = SYSTEM_PYTHON) -> None:
        self.cameras = cameras
        self.root = video_dir(recording)
        self.segment_s = segment_s
        self.python = python
        self._procs: dict[str, subprocess.Popen] = {}
        self._done: list[tuple[str, dict[str, Any]]] = []
        self._state: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        for name, url in self.cameras.items():
            out = self.root / name
            out.mkdir(parents=True, exist_ok=True)
            cmd = [self.python, str(Path(__file__).resolve()), "--name", name, "--url", url, "--dir", str(out),
                   "--segment-s", str(self.segment_s)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
            self._procs[name] = proc
            self._state[name] = "starting"
            threading.Thread(target=self._read, args=(name, proc), daemon=True, name=f"camrec-{name}").start()

    def _read(self, name: str, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                if "file" in doc:
                    doc["file"] = str(Path(doc["file"]).relative_to(self.root.parent))
                    self._done.append((name, doc))
                if "state" in doc:
                    self._state[name] = doc["state"]

    def poll(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            done, self._done = self._done, []
            for name, p in self._procs.items():
                if p.poll() is not None and self._state.get(name) != "stopped":
                    err = (p.stderr.read() if p.stderr else "")[-300:].strip()
                    self._state[name] = f"failed: {err or p.returncode}"
        return done

    def states(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state)

    def stop(self, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        """Ask every camera to close its current segment (EOS), then collect what finished."""
        for p in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in self._procs.values():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        time.sleep(0.1)  # let the reader threads take the last lines
        return self.poll()


# ------------------------------------------------------------------------- runs under /usr/bin/python3
def _gst_main(argv: list[str]) -> int:  # pragma: no cover - exercised through CameraRecorder in a subprocess
    import argparse

    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import GLib, Gst

    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--url", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--segment-s", type=float, default=10.0)
    a = ap.parse_args(argv)
    Gst.init(None)
    pattern = os.path.join(a.dir, "seg-%05d.mp4")
    desc = (f'rtspsrc location="{a.url}" protocols=tcp latency=200 ! rtph264depay ! h264parse ! '
            f'splitmuxsink name=mux muxer=mp4mux location="{pattern}" '
            f'max-size-time={int(a.segment_s * 1e9)} send-keyframe-requests=true')
    pipe = Gst.parse_launch(desc)
    loop = GLib.MainLoop()
    opened: dict[str, int] = {}
    offset = [0]  # wall clock (ns) at running time 0 of the pipeline

    def wall_of(s: Any) -> int:
        """Wall clock of a fragment message's running time (bus messages arrive late, in bursts)."""
        ok, running = s.get_clock_time("running-time")
        if not ok or not offset[0]:
            return time.time_ns()
        return offset[0] + int(running)

    def emit(doc: dict) -> None:
        print(json.dumps(doc), flush=True)

    def on_message(_bus: Any, msg: Any) -> None:
        t = msg.type
        if t == Gst.MessageType.ELEMENT:
            s = msg.get_structure()
            name = s.get_name() if s else ""
            if name == "splitmuxsink-fragment-opened":
                opened[s.get_string("location")] = wall_of(s)
                emit({"state": "recording"})
            elif name == "splitmuxsink-fragment-closed":
                loc = s.get_string("location")
                size = os.path.getsize(loc) if os.path.exists(loc) else 0
                end = wall_of(s)
                emit({"camera": a.name, "url": a.url, "file": loc, "start_ns": opened.pop(loc, end),
                      "end_ns": end, "bytes": size, "codec": "h264"})
        elif t == Gst.MessageType.EOS:
            loop.quit()
        elif t == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"camera {a.name}: {err.message} ({dbg})", file=sys.stderr, flush=True)
            emit({"state": f"error: {err.message}"})
            loop.quit()

    bus = pipe.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)

    def on_sigint() -> bool:
        pipe.send_event(Gst.Event.new_eos())  # splitmuxsink finalises the open segment on EOS
        GLib.timeout_add_seconds(5, lambda: (loop.quit(), False)[1])
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, on_sigint)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, on_sigint)
    pipe.set_state(Gst.State.PLAYING)

    def take_offset() -> bool:
        clock = pipe.get_clock()
        if clock is None:
            return True  # not PLAYING yet: ask again
        offset[0] = time.time_ns() - (clock.get_time() - pipe.get_base_time())
        return False

    GLib.timeout_add(50, take_offset)
    try:
        loop.run()
    finally:
        pipe.set_state(Gst.State.NULL)
        emit({"state": "stopped"})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_gst_main(sys.argv[1:]))
