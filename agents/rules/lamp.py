"""Streetlight rules judged against the sun: dark at night, lit in daytime.

Night and day come from the solar elevation at the lamp's position and the reading's event time
(not the wall clock), so a replay at any speed judges the same way.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from gridwatch.devices.solar import solar_elevation_deg

from .base import Rule, RuleContext, Verdict, register


def lamp_lit(values: dict[str, Any], min_current_a: float) -> bool | None:
    if "lamp_on" in values and not values["lamp_on"]:
        return False
    if "current_a" in values:
        return values["current_a"] >= min_current_a
    if "lamp_on" in values:
        return True
    return None


@lru_cache(maxsize=16384)
def _sun_at(lat2: float, lon2: float, minute: int) -> float:
    return solar_elevation_deg(lat2, lon2, minute * 60.0 + 30.0)


# device id -> (the Device it was computed for, lat and lon rounded to ~1 km). Rounding twice per lamp
# reading was 8.5 % of the telemetry agent's time; keyed by the Device object itself, so a registry
# reload (new Device objects) that moves a lamp is seen at its next reading.
_CELLS: dict[str, tuple[Any, float, float]] = {}


def sun(device: Any, ts_ms: int) -> float:
    """Solar elevation at the device, per ~1 km and per minute (the sun moves 0.25 deg a minute)."""
    cell = _CELLS.get(device.id)
    if cell is None or cell[0] is not device:
        cell = _CELLS[device.id] = (device, round(device.lat, 2), round(device.lon, 2))
    return _sun_at(cell[1], cell[2], ts_ms // 60_000)


@register("lamp_night_out")
class LampNightOut(Rule):
    """A lamp that should be lit (sun below `night_below_deg`) but is dark or draws no current."""

    def validate(self) -> None:
        self.night_below = float(self.param("night_below_deg", -6.0))
        self.min_current = float(self.param("min_current_a", 0.1))

    def check(self, values: dict[str, Any], device: Any, active: bool, ctx: RuleContext) -> Verdict | None:
        lit = lamp_lit(values, self.min_current)
        if lit is None or sun(device, ctx.ts) >= self.night_below:
            return None  # daytime says nothing about a lamp's night-time fault
        return Verdict(not lit, message="lamp dark at night" if not lit else "")


@register("lamp_day_burn")
class LampDayBurn(Rule):
    """A lamp burning in full daylight (sun above `day_above_deg`): a stuck contactor or timer."""

    def validate(self) -> None:
        self.day_above = float(self.param("day_above_deg", 6.0))
        self.min_current = float(self.param("min_current_a", 0.1))

    def check(self, values: dict[str, Any], device: Any, active: bool, ctx: RuleContext) -> Verdict | None:
        lit = lamp_lit(values, self.min_current)
        if lit is None or sun(device, ctx.ts) <= self.day_above:
            return None
        return Verdict(lit, message="lamp lit in daylight" if lit else "")
