"""Device offline: no reading for N report intervals, judged by the partition watermark.

Event time, not the wall clock: a device is offline when the watermark (the newest event time seen
in its partition, minus the allowed lateness) passes its last reading plus N of its intervals. The
event starts at that deadline, so its id is the same in a live run and in a replay at any speed.
"""

from __future__ import annotations

from typing import Any

from .base import Rule, RuleContext, Verdict, register


@register("offline")
class Offline(Rule):
    watermark_driven = True

    def validate(self) -> None:
        self.intervals = float(self.param("intervals", 3))
        self.min_silence_ms = int(float(self.param("min_silence_s", 60)) * 1000)

    def deadline(self, device: Any, last_seen_ms: int) -> int:
        silence = max(int(self.intervals * device.report_interval_s * 1000), self.min_silence_ms)
        return last_seen_ms + silence

    def check(self, values: dict[str, Any], device: Any, active: bool, ctx: RuleContext) -> Verdict | None:
        # Any reading proves the device is back.
        return Verdict(False) if active else None
