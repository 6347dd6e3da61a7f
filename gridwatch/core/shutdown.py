"""Bounded shutdown: Ctrl-C / SIGTERM asks a process to stop cleanly, and a watchdog makes sure it does.

Why: a process that waits on an unreachable broker while stopping (a producer flushing to a frozen
Kafka, a connect retry loop) would otherwise ignore SIGTERM for minutes and only SIGKILL would end it.
The clean path (e.g. the bridge's ``bridge.drain_s``) comes first; the watchdog ends the process
``limit_s`` after the first signal whatever it is doing, and a second signal ends it at once. Neither
acknowledges anything: what was not confirmed is redelivered to the next process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

log = logging.getLogger("gridwatch")

EXIT_WATCHDOG = 3


def hard_exit(what: str, reason: str) -> None:
    msg = f"{what}: {reason}; exiting without waiting any longer (nothing unconfirmed was acknowledged)"
    log.error(msg)
    print(msg, file=sys.stderr, flush=True)
    os._exit(EXIT_WATCHDOG)


def arm_watchdog(limit_s: float, what: str, signame: str) -> None:
    """End the process ``limit_s`` from now, whatever it is doing (a daemon thread: a blocked event loop
    or a broker that never answers cannot hold it)."""
    timer = threading.Timer(limit_s, hard_exit, args=(what, f"still running {limit_s:.0f}s after {signame}"))
    timer.daemon = True
    timer.start()


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, limit_s: float, what: str) -> None:
    """SIGINT/SIGTERM set ``stop``; ``limit_s`` later (or on a second signal) the process exits."""

    def on_signal(signum: int, frame: object) -> None:
        # A plain signal handler (not the loop's): it runs even while the event loop is blocked.
        name = signal.Signals(signum).name
        if stop.is_set():
            hard_exit(what, f"second {name}")
        log.info("%s: %s received, stopping (at most %.0fs)", what, name, limit_s)
        loop.call_soon_threadsafe(stop.set)
        arm_watchdog(limit_s, what, name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
