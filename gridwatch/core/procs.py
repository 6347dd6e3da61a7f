"""Child processes of the pipeline (`python -m gridwatch <command>`), for the demo, benchmarks and tests.

One place that starts a component the way an operator would, captures its log to a file, waits for
a log line, and stops it with SIGTERM (or kills it, to test crash recovery); and the one way a
long-running command runs its coroutine until Ctrl-C / SIGTERM (:func:`run_async`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL or a closed terminal.

    Children run in their own session (so Ctrl-C reaches only the parent, which stops them in
    order); without this an abruptly killed parent would leave brokers and workers running.
    """
    import ctypes

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system, all threads) a process has used, from /proc; ``children``: with its
    children that were waited for. On a shared, loaded machine the CPU cost per input is steadier than
    wall-clock rates, so the benchmarks carry both."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB, from /proc."""
    cur = peak = 0.0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


class Proc:
    """A gridwatch sub-command in its own process group, logging to ``log_dir/<name>.log``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.argv = [sys.executable, "-m", "gridwatch", *argv]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n==== start {' '.join(self.argv)}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True, preexec_fn=die_with_parent)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def wait_log(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.log() or self.dead(), timeout, f"{self.name} to log {text!r}")
        if text not in self.log():
            code = self.proc.returncode if self.proc else None
            raise RuntimeError(f"{self.name} exited ({code}) before {text!r}:\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crash or an OOM kill would do."""
        self.stop(signal.SIGKILL)


def late_events(log_text: str) -> int:
    """Grid events the incident worker's event-time merge applied late (it logs a warning for each)."""
    return log_text.count(": late grid event ")


def remove_embedded_store(prefix: str, env: dict[str, str]) -> list[Path]:
    """Delete the embedded SQLite store files of topic prefix ``prefix`` (and of its replays, ``<prefix>-*``)
    under the state folder the pipeline's processes use; nothing when they write to a configured store URL.
    Returns what was deleted."""
    if env.get("GRIDWATCH_STORE_URL"):
        return []
    from gridwatch.core.settings import STATE_DIR, embedded_store_path

    state = Path(env["GRIDWATCH_STATE_DIR"]) if env.get("GRIDWATCH_STATE_DIR") else STATE_DIR
    store = embedded_store_path(prefix, state)  # store-<prefix>.db: its -wal/-shm/.migrate.lock files and replays'
    gone = [p for pattern in (f"{store.name}*", f"{store.stem}-*{store.suffix}*") for p in state.glob(pattern)]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


class Pipeline:
    """Bridge + worker for one isolated namespace (topic prefix, app id, MQTT session). ``split``: the
    default topology, two workers (`--role telemetry` as ``worker``, `--role incidents` as ``incidents``);
    otherwise one worker runs every agent (quicker to start: most tests need no second worker).

    A pipeline that made up its own prefix deletes that prefix's embedded store when it is collected (or the
    process exits): no one can read that namespace afterwards, and each run of ``bench incidents`` left a
    190 MB SQLite file behind in the state folder (hundreds of runs filled the disk)."""

    def __init__(self, kafka_url: str, mqtt_url: str, log_dir: Path, *, prefix: str | None = None,
                 extra: list[str] | None = None, env: dict[str, str] | None = None, split: bool = False) -> None:
        self.prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
        self.kafka_url = kafka_url
        self.mqtt_url = mqtt_url
        self.common = ["--kafka", kafka_url, "--mqtt", mqtt_url, "--prefix", self.prefix, *(extra or [])]
        self.env = dict(env or {})  # Tansu's work-arounds: the worker detects that broker itself
        if prefix is None:
            weakref.finalize(self, remove_embedded_store, self.prefix, dict(self.env))
        self.bridge = Proc(f"{self.prefix}-bridge", ["bridge", *self.common, "--client-id", f"br-{self.prefix}"],
                           log_dir, self.env)
        role = ["--role", "telemetry"] if split else []
        self.worker = Proc(f"{self.prefix}-worker", ["worker", *role, *self.common], log_dir, self.env)
        self.incidents = (Proc(f"{self.prefix}-incidents", ["worker", "--role", "incidents", *self.common], log_dir,
                               self.env) if split else None)

    @property
    def incident_worker(self) -> Proc:
        """The process running the incident agent (and holding the incidents table)."""
        return self.incidents or self.worker

    @property
    def workers(self) -> list[Proc]:
        return [self.worker, *([self.incidents] if self.incidents else [])]

    def start(self, timeout: float = 90) -> Pipeline:
        for w in self.workers:
            w.start()
        self.bridge.start()
        self.bridge.wait_log("bridge running", timeout)
        for w in self.workers:
            w.wait_log("worker ready", timeout)
        return self

    def stop(self) -> None:
        self.bridge.stop()
        for w in self.workers:
            w.stop()

    def topic(self, family: str) -> str:
        return f"{self.prefix}.{family}"


def run_async(main: Callable[[asyncio.Event], Any], limit_s: float = 10.0, what: str = "gridwatch") -> None:
    """Run a coroutine until it finishes or Ctrl-C / SIGTERM asks it to stop cleanly (bounded: ``limit_s``
    after the signal the process exits anyway, see gridwatch/core/shutdown.py)."""
    from gridwatch.core.shutdown import install_stop_signals

    async def runner() -> None:
        stop = asyncio.Event()
        install_stop_signals(asyncio.get_running_loop(), stop, limit_s, what)
        await main(stop)

    asyncio.run(runner())
