"""A whole lamp circuit dark at once: cable theft or a feeder fault, not a single broken lamp.

A group rule: all lamps of one circuit share one state (they share a Kafka partition, because the
bridge partitions streetlights by circuit). The event's subject is the circuit.
"""

from __future__ import annotations

from typing import Any

from .base import Rule, RuleContext, Verdict, register
from .lamp import lamp_lit, sun


@register("circuit_dark")
class CircuitDark(Rule):
    group_by = "circuit"

    def validate(self) -> None:
        self.ratio = float(self.param("dark_ratio", 0.6))  # share of the circuit's lamps dark ...
        self.min_lamps = int(self.param("min_lamps", 3))  # ... and at least this many ...
        self.window_ms = int(float(self.param("window_s", 300)) * 1000)  # ... going dark within this span
        self.clear_ratio = float(self.param("clear_ratio", 0.3))
        self.night_below = float(self.param("night_below_deg", -6.0))
        self.min_current = float(self.param("min_current_a", 0.1))

    def check(self, values: dict[str, Any], device: Any, active: bool, ctx: RuleContext) -> Verdict | None:
        group = ctx.group if ctx.group is not None else {}
        dark: dict[str, int] = group.setdefault("dark", {})
        lit = lamp_lit(values, self.min_current)
        if lit is None or sun(device, ctx.ts) >= self.night_below:
            return None
        if lit:
            dark.pop(device.id, None)
        else:
            dark.setdefault(device.id, ctx.ts)
        size = max(ctx.group_size, 1)
        if active:
            fault = len(dark) > self.clear_ratio * size
        else:
            recent = [t for t in dark.values() if ctx.ts - t <= self.window_ms]
            fault = len(recent) >= max(self.min_lamps, self.ratio * size)
        return Verdict(fault, message=f"{len(dark)} of {size} lamps on circuit {device.circuit} dark")
