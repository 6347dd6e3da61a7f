"""Generate deploy/grafana/dashboards/*.json (dashboards as code): `python deploy/grafana/build_dashboards.py`.

Why a generator: the Flux queries are the part worth reviewing; the JSON around them is boilerplate.
Measurements, tags and fields are the InfluxDB sink's (pipeline/outputs/influx.py); tests/deploy checks
the generated files are up to date and only name measurements the sink writes.
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "influxdb", "uid": "gridwatch-influxdb"}
BUCKET = "gridwatch"
OUT = Path(__file__).resolve().parent / "dashboards"

BASE = f'from(bucket: "{BUCKET}")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
NS = 'r.ns == "${ns}" and r.district =~ /^${district}$/'

QUERIES = {
    "readings_per_kind": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "reading" and {NS})\n'
        '  // one field every reading of a kind carries: counts readings, not values\n'
        '  |> filter(fn: (r) => (r.kind == "streetlight" and r._field == "current_a") or\n'
        '                       (r.kind == "manhole" and r._field == "tilt_deg") or\n'
        '                       (r.kind == "water_gauge" and r._field == "water_level_cm") or\n'
        '                       (r.kind == "camera" and r._field == "online"))\n'
        '  |> group(columns: ["kind"])\n'
        '  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)\n'
        '  |> map(fn: (r) => ({r with _value: float(v: r._value) / (float(v: uint(v: v.windowPeriod)) / 1000000000.0)}))\n'
    ),
    "online_rate": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "device_presence" and {NS})\n'
        '  |> filter(fn: (r) => r._field == "online" or r._field == "total")\n'
        '  // sum over partitions and districts, then online / total per kind\n'
        '  |> group(columns: ["kind", "_field", "_time"])\n'
        '  |> sum()\n'
        '  |> group(columns: ["kind"])\n'
        '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        '  |> map(fn: (r) => ({_time: r._time, kind: r.kind,\n'
        '                      _value: if r.total > 0 then float(v: r.online) / float(v: r.total) else 0.0}))\n'
    ),
    "events_by_level": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "grid_event" and {NS})\n'
        '  |> filter(fn: (r) => r._field == "count" and r.phase == "new")\n'
        '  |> group(columns: ["level"])\n'
        '  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)\n'
    ),
    "events_by_type": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "grid_event" and {NS})\n'
        '  |> filter(fn: (r) => r._field == "count" and r.phase == "new")\n'
        '  |> group(columns: ["type"])\n'
        '  |> sum()\n'
        '  |> group()\n'
        '  |> sort(columns: ["_value"], desc: true)\n'
    ),
    "incidents_opened_closed": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "incident" and {NS})\n'
        '  |> filter(fn: (r) => r._field == "opened" or r._field == "closed")\n'
        '  |> group(columns: ["_field"])\n'
        '  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)\n'
    ),
    "incident_closure_rate": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "incident" and {NS})\n'
        '  |> filter(fn: (r) => r._field == "opened" or r._field == "closed")\n'
        '  |> group()\n'
        '  |> reduce(identity: {opened: 0, closed: 0}, fn: (r, accumulator) => ({\n'
        '       opened: accumulator.opened + (if r._field == "opened" then r._value else 0),\n'
        '       closed: accumulator.closed + (if r._field == "closed" then r._value else 0)}))\n'
        '  |> map(fn: (r) => ({_value: if r.opened > 0 then float(v: r.closed) / float(v: r.opened) else 0.0}))\n'
    ),
    "overdue_open_by_tier": BASE + (
        f'  |> filter(fn: (r) => r._measurement == "incident" and {NS})\n'
        '  |> filter(fn: (r) => r._field == "open" or r._field == "overdue")\n'
        '  // the latest change of every incident says whether it is still open / overdue\n'
        '  |> group(columns: ["incident", "_field"])\n'
        '  |> last()\n'
        '  |> group(columns: ["tier", "_field"])\n'
        '  |> sum()\n'
    ),
}

LEVEL_COLORS = {"red": "red", "yellow": "yellow", "blue": "blue"}


def target(q: str, ref: str = "A") -> dict:
    return {"datasource": DS, "refId": ref, "query": q}


def panel(pid: int, title: str, kind: str, q: str, grid: tuple[int, int, int, int], **extra: object) -> dict:
    x, y, w, h = grid
    p = {"id": pid, "type": kind, "title": title, "datasource": DS, "targets": [target(q)],
         "gridPos": {"x": x, "y": y, "w": w, "h": h}, "options": {}, "fieldConfig": {"defaults": {}, "overrides": []}}
    p.update(extra)  # type: ignore[arg-type]
    return p


def city_overview() -> dict:
    level_overrides = [
        {"matcher": {"id": "byName", "options": lv},
         "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]}
        for lv, c in LEVEL_COLORS.items()
    ]
    panels = [
        panel(1, "Readings per second, by device kind", "timeseries", QUERIES["readings_per_kind"], (0, 0, 12, 8),
              fieldConfig={"defaults": {"unit": "reqps", "custom": {"fillOpacity": 10}}, "overrides": []}),
        panel(2, "Device online rate, by kind (event time)", "timeseries", QUERIES["online_rate"], (12, 0, 12, 8),
              fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1}, "overrides": []}),
        panel(3, "Grid events raised, by level", "timeseries", QUERIES["events_by_level"], (0, 8, 12, 8),
              fieldConfig={"defaults": {"custom": {"drawStyle": "bars", "stacking": {"mode": "normal"},
                                                   "fillOpacity": 80}}, "overrides": level_overrides}),
        panel(4, "Grid events raised, by type", "bargauge", QUERIES["events_by_type"], (12, 8, 12, 8),
              options={"orientation": "horizontal", "displayMode": "basic",
                       "reduceOptions": {"calcs": ["lastNotNull"], "values": True}}),
        panel(5, "Incidents opened and closed", "timeseries", QUERIES["incidents_opened_closed"], (0, 16, 12, 8),
              fieldConfig={"defaults": {"custom": {"drawStyle": "bars", "fillOpacity": 60}}, "overrides": []}),
        panel(6, "Incident closure rate (closed / opened in range)", "stat", QUERIES["incident_closure_rate"],
              (12, 16, 6, 8), fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1,
                                                        "thresholds": {"mode": "absolute", "steps": [
                                                            {"color": "red", "value": None},
                                                            {"color": "yellow", "value": 0.9},
                                                            {"color": "green", "value": 0.98}]}},
                                           "overrides": []}),
        panel(7, "Open and overdue incidents, by work tier", "bargauge", QUERIES["overdue_open_by_tier"],
              (18, 16, 6, 8), options={"orientation": "horizontal", "reduceOptions": {"calcs": ["lastNotNull"]}}),
    ]
    return {
        "uid": "gridwatch-city", "title": "gridwatch — city overview", "schemaVersion": 39, "version": 1,
        "editable": False, "tags": ["gridwatch"], "timezone": "browser", "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "ns", "label": "namespace", "type": "textbox", "query": "gw",
             "current": {"text": "gw", "value": "gw"},
             "description": "Kafka topic prefix: gw = live; a replay's namespace to look at a replay"},
            {"name": "district", "label": "district code (regex)", "type": "textbox", "query": ".*",
             "current": {"text": ".*", "value": ".*"}},
        ]},
        "panels": panels,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "city-overview.json").write_text(json.dumps(city_overview(), indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
