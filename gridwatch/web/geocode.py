"""Offline geocoding of a report's ``address_string`` / a chat record's ``place`` against the city's own tables.

Why: the machine (and many city networks) cannot reach an online geocoder, yet residents and grid
workers name places, not coordinates. The city already knows every device by code and name, every
road its devices stand on, and every area by name, which covers how places are written in practice:
"manhole 3301020101000003", "Nanning Road #35", "Nanning Road", "Yunping Community", "30.25,120.06".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import median
from typing import Any

ROAD_RE = re.compile(r"([A-Z][a-z]+(?: [A-Z][a-z]+)? (?:Road|Avenue|Lane|Street|Boulevard))")
CODE_RE = re.compile(r"(?<!\d)(\d{20}|\d{16})(?!\d)")
LATLON_RE = re.compile(r"(-?\d{1,2}\.\d+)\s*[,，\s]\s*(-?\d{1,3}\.\d+)")
LAMP_NO_RE = re.compile(r"(?:#|No\.?\s*|号?)(\d{1,4})\s*号?")


@dataclass(frozen=True, slots=True)
class Place:
    lat: float
    lon: float
    device_id: str = ""  # set when the place names one device
    how: str = ""  # what matched: device, lamp, road, area, coordinates


class Geocoder:
    """Look places up in the registry and grid map; nothing leaves the process."""

    def __init__(self, registry: Any, gridmap: Any) -> None:
        self.registry = registry
        self.gridmap = gridmap
        self._by_name: dict[str, Any] = {}
        self._lamps: dict[tuple[str, str], Any] = {}
        roads: dict[str, list[Any]] = {}
        for d in registry:
            self._by_name.setdefault(d.name.lower(), d)
            for road in ROAD_RE.findall(d.name):
                roads.setdefault(road.lower(), []).append(d)
            m = re.match(r"Streetlight (.+?) #(\d+)$", d.name)
            if m:
                self._lamps[(m.group(1).lower(), m.group(2))] = d
        self._roads = {r: (median(d.lat for d in ds), median(d.lon for d in ds)) for r, ds in roads.items()}
        # longest names first so "Yunping Community" wins over a shorter name it contains
        self._areas = sorted(((a.name.lower(), a.code) for a in gridmap.areas() if a.tier != "city"),
                             key=lambda t: -len(t[0]))

    def lookup(self, text: str) -> Place | None:
        """The place a free-text address names, or None when nothing in the city matches."""
        if not text or not text.strip():
            return None
        for code in CODE_RE.findall(text):
            d = self.registry.get(code)
            if d is not None:
                return Place(d.lat, d.lon, d.id, "device")
        low = " ".join(text.lower().split())
        d = self._by_name.get(low)
        if d is not None:
            return Place(d.lat, d.lon, d.id, "device")
        for road, (lat, lon) in sorted(self._roads.items(), key=lambda t: -len(t[0])):
            if road in low:
                rest = low.replace(road, " ")
                m = LAMP_NO_RE.search(rest)
                lamp = self._lamps.get((road, m.group(1))) if m else None
                if lamp is not None:
                    return Place(lamp.lat, lamp.lon, lamp.id, "lamp")
                return Place(lat, lon, "", "road")
        for name, code in self._areas:
            if name in low:
                lat, lon = self.gridmap.centroid(code)
                return Place(lat, lon, "", "area")
        m = LATLON_RE.search(text)
        if m:
            lat, lon = float(m.group(1)), float(m.group(2))
            if -90 <= lat <= 90 and -180 <= lon <= 180:
                return Place(lat, lon, "", "coordinates")
        return None
