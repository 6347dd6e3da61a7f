"""The main job, `gridwatch demo`, runs its own stack, moves readings end to end and stops cleanly."""

from __future__ import annotations

import re
import subprocess
import sys

from gridwatch.core.procs import wait_for


def test_demo_runs_end_to_end_and_stops_cleanly():
    out = subprocess.run([sys.executable, "-m", "gridwatch", "demo", "--duration", "40", "--plain",
                          "--speed", "60", "--faults-per-hour", "200"],
                         capture_output=True, text=True, timeout=180)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    readings = [int(n.replace(",", "")) for n in re.findall(r"\| readings ([\d,]+) \|", text)]
    assert readings and readings[-1] > 1000, text[-2000:]
    assert re.search(r"events [1-9]\d*", text), "no grid event raised in the demo:\n" + text[-2000:]
    assert "demo stopped" in text
    # the default topology: the incident agent in a worker of its own beside the telemetry worker
    assert "started worker" in text and "started incidents" in text, text[-2000:]
    # no child process left behind
    leftover = subprocess.run(["pgrep", "-f", "gridwatch (worker|bridge|simulate)"], capture_output=True, text=True)
    wait_for(lambda: subprocess.run(["pgrep", "-f", "-a", "python -m gridwatch (worker|bridge|simulate) .*--log-level info"],
                                    capture_output=True).returncode == 1, 20, f"demo children to exit: {leftover.stdout}")
