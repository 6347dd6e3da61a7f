"""Ctrl-C / SIGTERM ends a gridwatch process even when its work ignores the stop request or blocks the
event loop (main: `gridwatch bridge` with Kafka unreachable ignored SIGTERM for minutes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

STUCK = """
import asyncio, time
from gridwatch.core.procs import run_async

async def stuck(stop):
    print("running", flush=True)
    while True:          # ignores stop, and blocks the event loop between awaits
        time.sleep(0.5)
        await asyncio.sleep(0)

run_async(stuck, limit_s=1.0, what="stuck")
"""


def run_stuck() -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "running"
    return p


def test_a_stuck_process_ends_after_its_limit():
    p = run_stuck()
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(60)  # generous under load; without the watchdog it never ends
    finally:
        p.kill()
    assert rc == 3 and "still running 1s after SIGTERM" in p.stderr.read()


def test_a_second_signal_ends_it_at_once():
    p = run_stuck()
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        rc = p.wait(60)
    finally:
        p.kill()
    err = p.stderr.read()
    assert rc == 3 and ("second SIGINT" in err or "still running" in err)
