"""Incident records shaped exactly like the backend's (built with its schema classes), for the web tests
that run without the incident agents."""

from __future__ import annotations

import json
from typing import Any

from gridwatch.devices.registry import load_city
from gridwatch.pipeline.schemas.events import TierRef
from gridwatch.pipeline.schemas.incidents import (
    Incident,
    IncidentChange,
    IncidentSource,
    Transition,
    incident_id,
)

CITY = load_city()


def tiers(grid: str) -> list[TierRef]:
    return [TierRef(a.tier, a.code, a.name) for a in CITY.gridmap.chain(grid)]


def incident(grid: str, *, ts: int, level: str = "red", status: str = "reported", group: str = "manhole",
             report_ids: tuple[str, ...] = (), event: bool = True, version: int = 1, rating: int | None = None,
             resolved_ts: int | None = None, overdue: bool = False, image: str = "") -> Incident:
    """An incident in ``grid`` with a sensor event (and resident reports), as the fusion agent makes them."""
    lat, lon = CITY.gridmap.centroid(grid)
    sources = []
    if event:
        dev = next((d for d in CITY.registry.by_grid(grid) if d.kind == "manhole"), None)
        ev = [{"ts": ts, "device": dev.id if dev else "", "cover_open": True, "tilt_deg": 70.0}]
        if image:
            ev.append({"ts": ts, "snapshot": image})
        sources.append(IncidentSource("event", f"e{grid}{ts}", "manhole_open", ts, ts, dev.id if dev else "",
                                      "manhole", level, True, None, lat, lon, "cover_open is true", ev,
                                      origin="telemetry"))
    for rid in report_ids:
        sources.append(IncidentSource("report", rid, "manhole_cover", ts, ts, lat=lat, lon=lon,
                                      message="manhole cover missing", origin="open311"))
    first = sources[0]
    iid = incident_id(first.kind, first.id)
    hist = [Transition(ts, "created", "sensor:x", "", "", "reported", level, "community", "", first.id)]
    if status != "reported":
        hist.append(Transition(ts + 60_000, "dispatch", "ansha", "sent to the facilities team", "reported", status,
                               level, "community", "municipal_facilities", "a1"))
    return Incident(iid, group, f"Manhole cover: manhole_open{', 1 report' if report_ids else ''}", level, 30,
                    status, "community", grid[:12], "municipal_facilities" if status != "reported" else "", grid,
                    tiers(grid), lat, lon, ts, ts + 60_000 * (len(hist) - 1), ts + 7_200_000, sources,
                    overdue=overdue, history=hist, rating=rating, resolved_ts=resolved_ts, version=version)


def change(inc: Incident, kind: str = "created") -> dict[str, Any]:
    """The IncidentChange record as it travels on Kafka, decoded to a dict."""
    return json.loads(IncidentChange(inc, kind, inc.updated_ts, inc.history[-1], inc.sources[-1].id).encode())
