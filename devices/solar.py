"""Solar elevation, so simulated lamps and light sensors follow the real day at a device's place.

Why not a fixed 18:00-06:00 schedule: replays at different dates and cities must keep dusk and dawn
where they really are, and the lamp rules (lit in daytime, dark at night) need the same notion of
night as the simulator. The formula is NOAA's low-precision one (error well under 1 degree), enough
to tell day from night; it needs no time zone because it works on UTC epoch seconds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NIGHT_ELEVATION_DEG", "solar_elevation_deg", "solar_elevation_many", "is_night", "ambient_lux"]

NIGHT_ELEVATION_DEG = -6.0
"""Night = sun below civil twilight (-6 deg). Lamps switch on when the sun sinks below it (dusk)
and off when it rises above it (dawn). Rules should allow a margin of a few minutes around it."""

_J2000_UNIX = 946_728_000.0  # 2000-01-01T12:00:00Z


def _sun(ts: float | np.ndarray) -> tuple:
    """Declination (rad) and equation of time (minutes) at epoch seconds ``ts``."""
    d = (np.asarray(ts, dtype=float) - _J2000_UNIX) / 86400.0  # days since J2000
    g = np.radians((357.529 + 0.98560028 * d) % 360.0)  # mean anomaly
    q = (280.459 + 0.98564736 * d) % 360.0  # mean longitude
    lam = np.radians(q + 1.915 * np.sin(g) + 0.020 * np.sin(2 * g))  # ecliptic longitude
    eps = np.radians(23.439 - 0.00000036 * d)  # obliquity
    decl = np.arcsin(np.sin(eps) * np.sin(lam))
    ra = np.degrees(np.arctan2(np.cos(eps) * np.sin(lam), np.cos(lam))) % 360.0
    eot_min = 4.0 * (((q - ra) + 180.0) % 360.0 - 180.0)  # minutes
    return decl, eot_min


def solar_elevation_many(lat: np.ndarray | float, lon: np.ndarray | float, ts: np.ndarray | float) -> np.ndarray:
    """Vectorised :func:`solar_elevation_deg` (broadcasts lat, lon, ts)."""
    decl, eot = _sun(ts)
    utc_min = (np.asarray(ts, dtype=float) % 86400.0) / 60.0
    true_solar_min = utc_min + eot + 4.0 * np.asarray(lon, dtype=float)
    hour_angle = np.radians(true_solar_min / 4.0 - 180.0)
    phi = np.radians(np.asarray(lat, dtype=float))
    sin_el = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(hour_angle)
    return np.degrees(np.arcsin(np.clip(sin_el, -1.0, 1.0)))


def solar_elevation_deg(lat: float, lon: float, ts: float) -> float:
    """Sun elevation above the horizon in degrees at (lat, lon) and UTC epoch seconds ``ts``."""
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        raise ValueError(f"lat/lon out of range: ({lat}, {lon})")
    return float(solar_elevation_many(lat, lon, ts))


def is_night(lat: float, lon: float, ts: float) -> bool:
    """True when the sun is below :data:`NIGHT_ELEVATION_DEG`."""
    return solar_elevation_deg(lat, lon, ts) < NIGHT_ELEVATION_DEG


def ambient_lux(elevation_deg: np.ndarray | float) -> np.ndarray:
    """Clear-sky ambient illuminance (lux) for a sun elevation: ~100k at noon, ~400 at sunset, ~3 at dusk."""
    el = np.asarray(elevation_deg, dtype=float)
    day = np.minimum(100_000.0, 400.0 + 110_000.0 * np.sin(np.radians(np.clip(el, 0.0, 90.0))) ** 1.15)
    twilight = 400.0 * 10.0 ** (0.354 * el)  # 400 lx at 0 deg -> ~3 lx at -6 deg
    night = np.maximum(0.05, 3.0 * 10.0 ** (0.3 * (el + 6.0)))  # fades to starlight
    return np.where(el >= 0.0, day, np.where(el >= -6.0, twilight, night))

