"""Serve video files as looping RTSP streams (GStreamer RTSP server) for demos and tests.

    from gridwatch.pipeline.sources.rtsp_server import serve
    with serve(["vtest.avi", "street.mp4"], port=8554) as srv:
        print(srv.urls)   # {"cam1": "rtsp://127.0.0.1:8554/cam1", "cam2": "rtsp://127.0.0.1:8554/cam2"}

GStreamer's Python bindings (Debian ``python3-gi gir1.2-gst-rtsp-server-1.0``) exist only for the system
interpreter, not in the project's virtualenv, so :func:`serve` runs **this same file** as a subprocess of
``/usr/bin/python3`` (the file imports nothing outside the standard library at module level).

Per mount point, inside the server process:

* a decoder pipeline ``filesrc ! decodebin ! videoconvert ! videoscale ! videorate ! appsink`` turns the file
  into raw I420 frames (any container/codec GStreamer can play: Debian's ``-plugins-good/-bad/-ugly`` and
  ``gstreamer1.0-libav``); at end of file it seeks back to the start — the loop;
* a feeder thread pushes the frames at the file's frame rate (or ``fps``) into the RTSP media's
  ``appsrc is-live=true do-timestamp=true``, so the timestamps run on across loops;
* the media re-encodes to H.264: ``x264enc tune=zerolatency speed-preset=ultrafast key-int-max=<1 s>``
  ``! rtph264pay``.  Media are shared between clients; a media with no clients left is torn down.

Killing the subprocess (``RtspServer.kill()``) is how tests simulate a camera going offline.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_PORT = 8554


@dataclass
class RtspServer:
    """Handle on a running server subprocess."""

    process: subprocess.Popen
    port: int
    host: str
    mounts: dict[str, str]  # mount name -> file
    options: dict[str, object] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        return {name: self.url(name) for name in self.mounts}

    def url(self, name: str) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"rtsp://{host}:{self.port}/{name}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: the abrupt death of a camera/server."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._close_pipes()

    def wait(self) -> int:
        return self.process.wait()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def check_available(python: str = SYSTEM_PYTHON) -> str | None:
    """``None`` when the GStreamer RTSP server can run, else the reason it cannot."""
    if not Path(python).exists():
        return f"{python} not found"
    code = ("import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); "
            "gi.require_version('GstApp','1.0'); from gi.repository import Gst, GstRtspServer, GstApp; "
            "Gst.init(None); missing=[e for e in ('x264enc','rtph264pay','decodebin','appsrc','appsink',"
            "'videoconvert','videoscale','videorate') if Gst.ElementFactory.find(e) is None]; "
            "print(','.join(missing))")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    if proc.stdout.strip():
        return f"GStreamer elements missing: {proc.stdout.strip()}"
    return None


def serve(files: Sequence[str | os.PathLike[str]], port: int = DEFAULT_PORT, *, names: Sequence[str] | None = None,
          host: str = "127.0.0.1", fps: float | None = None, width: int | None = None, bitrate_kbps: int = 1000,
          python: str = SYSTEM_PYTHON, ready_timeout: float = 20.0, block: bool = False,
          quiet: bool = True) -> RtspServer:
    """Start an RTSP server for ``files`` (mounted as ``cam1``, ``cam2``, ... or ``names``).

    Returns once the server listens (or raises ``RuntimeError``).  ``block=True`` (the CLI's
    ``gridwatch camera serve``) waits until the server exits and stops it on Ctrl-C.  ``fps`` / ``width``
    re-time / downscale the streams (default: as the file).
    """
    paths = [str(Path(f).resolve()) for f in files]
    if not paths:
        raise ValueError("no files to serve")
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(p)
    mount_names = list(names) if names else [f"cam{i + 1}" for i in range(len(paths))]
    if len(mount_names) != len(paths) or len(set(mount_names)) != len(mount_names):
        raise ValueError("names must be unique, one per file")
    cmd = [python, str(Path(__file__).resolve()), "--port", str(port), "--host", host,
           "--bitrate", str(bitrate_kbps)]
    if fps:
        cmd += ["--fps", str(fps)]
    if width:
        cmd += ["--width", str(width)]
    for name, path in zip(mount_names, paths, strict=True):
        cmd += ["--mount", f"{name}={path}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    from gridwatch.core.procs import die_with_parent  # here, not at the top: /usr/bin/python3 runs this file

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if not quiet else subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True, preexec_fn=die_with_parent)
    server = RtspServer(proc, port, host, dict(zip(mount_names, paths, strict=True)),
                        {"fps": fps, "width": width, "bitrate_kbps": bitrate_kbps})
    ready = threading.Event()
    first_line: list[str] = []

    def _reader() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if not ready.is_set():
                    first_line.append(line.strip())
                    ready.set()
                elif not quiet:
                    print(line, end="", file=sys.stderr)
        except (OSError, ValueError):
            pass
        ready.set()

    threading.Thread(target=_reader, name=f"rtsp-server-{port}", daemon=True).start()
    if not ready.wait(ready_timeout) or not first_line or '"ready": true' not in first_line[0]:
        server.kill()
        raise RuntimeError(f"RTSP server did not start (exit {proc.poll()}): {first_line[:1]}")
    if block:
        try:
            for name, url in server.urls.items():
                print(f"{name}: {url}  <- {server.mounts[name]}")
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return server


# ------------------------------------------------------------------------- runs under /usr/bin/python3


def _gst_main(argv: list[str]) -> int:  # pragma: no cover - exercised through serve() in a subprocess
    ap = argparse.ArgumentParser(description="GStreamer RTSP server looping video files")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--fps", type=float, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--bitrate", type=int, default=1000)
    ap.add_argument("--mount", action="append", default=[], help="NAME=FILE")
    args = ap.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    gi.require_version("GstApp", "1.0")
    from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: F401  (GstApp: AppSink/AppSrc methods)

    Gst.init(None)

    def q(path: str) -> str:
        return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'

    class Feeder:
        """Decodes one file to raw frames and pushes them, looping, into a media's appsrc."""

        def __init__(self, path: str, appsrc: Gst.Element):
            caps = "video/x-raw,format=I420"
            if args.width:
                caps += f",width={args.width},pixel-aspect-ratio=1/1"
            rate = ""
            if args.fps:  # one caps filter: two in a row ("! caps ! caps !") do not parse
                fr = Fraction(args.fps).limit_denominator(1001)
                rate = "videorate ! "
                caps += f",framerate={fr.numerator}/{fr.denominator}"
            scale = "videoscale ! " if args.width else ""
            self.pipeline = Gst.parse_launch(
                f"filesrc location={q(path)} ! decodebin ! videoconvert ! {scale}{rate}{caps} "
                "! appsink name=sink sync=false max-buffers=8 drop=false emit-signals=false")
            self.sink = self.pipeline.get_by_name("sink")
            self.appsrc = appsrc
            self.running = True
            self.pipeline.set_state(Gst.State.PLAYING)
            self.thread = threading.Thread(target=self.run, daemon=True)
            self.thread.start()

        def run(self) -> None:
            period = None
            t0 = time.monotonic()
            n = 0
            while self.running:
                sample = self.sink.try_pull_sample(Gst.SECOND)
                if sample is None:
                    if self.sink.is_eos():  # end of file: back to the start — the loop
                        self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
                    continue
                if period is None:
                    s = sample.get_caps().get_structure(0)
                    ok, num, den = s.get_fraction("framerate")
                    fr = num / den if ok and num > 0 and den > 0 else 25.0
                    period = 1.0 / fr
                    self.appsrc.set_property("caps", sample.get_caps())
                due = t0 + n * period
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -1.0:  # fell far behind (machine busy): do not burst to catch up
                    t0 = time.monotonic() - n * period
                buf = sample.get_buffer().copy()
                buf.pts = Gst.CLOCK_TIME_NONE
                buf.dts = Gst.CLOCK_TIME_NONE
                buf.duration = int(period * Gst.SECOND)
                ret = self.appsrc.push_buffer(buf)
                if ret != Gst.FlowReturn.OK:
                    break
                n += 1
            self.pipeline.set_state(Gst.State.NULL)

        def stop(self) -> None:
            self.running = False

    class LoopingFactory(GstRtspServer.RTSPMediaFactory):
        def __init__(self, path: str):
            super().__init__()
            self.path = path
            key_int = max(1, round(args.fps or 15))
            self.set_launch(
                "( appsrc name=src is-live=true format=time do-timestamp=true block=true max-bytes=4000000 "
                f"! queue max-size-buffers=4 ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast "
                f"bitrate={args.bitrate} key-int-max={key_int} threads=1 "
                "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )")
            self.set_shared(True)
            self.connect("media-configure", self.on_configure)

        def on_configure(self, _factory, media) -> None:
            appsrc = media.get_element().get_by_name("src")
            feeder = Feeder(self.path, appsrc)
            media.connect("unprepared", lambda *_: feeder.stop())

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.mount:
        name, _, path = spec.partition("=")
        mounts.add_factory(f"/{name}", LoopingFactory(path))
    if server.attach(None) == 0:
        print(json.dumps({"ready": False, "error": f"cannot listen on {args.host}:{args.port}"}), flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: (loop.quit(), False)[1])
    print(json.dumps({"ready": True, "port": args.port, "mounts": [m.partition("=")[0] for m in args.mount]}),
          flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(_gst_main(sys.argv[1:]))
