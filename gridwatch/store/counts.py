"""Per-area monthly counters: what the month's statistics need, kept beside the incidents.

Why: computing a month's statistics from the case files reads every incident of the month (tens of
thousands of JSON documents for a city); the counters answer from a few hundred rows. An incident
adds one row's worth of counters to each area of its tier chain (city .. grid), keyed by (area code,
month, status, level, category group); the store's write replaces an incident's old contribution
with its new one in the same transaction as the incident row (subtract old, add new), so a newer
version, a late older one and a redelivery all leave the counters equal to a count from scratch.

The same ``contribution`` feeds the from-scratch statistics (gridwatch.web.statistics), so both ways
give identical figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

CLOSED_STATUSES = ("resolved", "evaluated", "closed", "cancelled")  # as the api shows them (web/views.py)
DONE_STATUSES = ("resolved", "evaluated", "closed")  # "closed" for the closure rate (cancelled is not work done)
RATINGS = (1, 2, 3, 4, 5)  # the evaluation scale (a rating outside it counts at its nearest end)
DAYS = tuple(range(1, 32))
# counters of one (area, month, status, level, category group); names are the table's columns
FLAGS = ("n", "work", "done", "work_overdue", "open_overdue", "supervised", "supervised_overdue", "handled_n", "handled_ms",
         "rated")
FIGURES = FLAGS + tuple(f"rating_{r}" for r in RATINGS)  # what a ranked area's figures need
COUNTERS = FIGURES + tuple(f"d{d:02d}" for d in DAYS)
KEY = ("code", "month", "status", "level", "category_group")

Key = tuple[str, str, str, str, str]  # code, month, status, level, category group
Counts = dict[str, int]


def contribution(inc: Mapping[str, Any], tz: ZoneInfo) -> tuple[str, str, str, str, Counts]:
    """(month, status, level, category group, counters) one incident adds to each of its areas."""
    created = datetime.fromtimestamp(inc["created_ts"] / 1000, tz)
    status = inc["status"]
    c: Counts = {"n": 1, f"d{created.day:02d}": 1}
    if status != "cancelled":
        c["work"] = 1
    if status in DONE_STATUSES:
        c["done"] = 1
    if inc.get("overdue"):
        if status != "cancelled":
            c["work_overdue"] = 1
        if status not in CLOSED_STATUSES:
            c["open_overdue"] = 1
    sv = inc.get("supervision")
    if sv:
        c["supervised"] = 1
        if sv.get("overdue"):
            c["supervised_overdue"] = 1
    if status in DONE_STATUSES and inc.get("resolved_ts"):
        c["handled_n"] = 1
        c["handled_ms"] = int(inc["resolved_ts"]) - int(inc["created_ts"])
    rating = inc.get("rating")
    if isinstance(rating, int) and not isinstance(rating, bool):
        c["rated"] = 1
        c[f"rating_{min(max(rating, RATINGS[0]), RATINGS[-1])}"] = 1
    return created.strftime("%Y-%m"), status, inc["level"], inc["category_group"], c


def areas(inc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(tier, code) of every area the incident counts in."""
    return [(t["tier"], t["code"]) for t in inc.get("tiers", [])]


def add(total: Counts, part: Mapping[str, int], sign: int = 1) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + sign * v


class Deltas:
    """Counter changes of one write, per (area, month, status, level, category); zero rows dropped."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.rows: dict[Key, Counts] = {}
        self.tiers: dict[str, str] = {}

    def incident(self, inc: Mapping[str, Any], sign: int = 1) -> None:
        month, status, level, cat, c = contribution(inc, self.tz)
        for tier, code in areas(inc):
            self.tiers[code] = tier
            add(self.rows.setdefault((code, month, status, level, cat), {}), c, sign)

    def table_rows(self) -> list[dict[str, Any]]:
        """Rows for the counters table (every counter present: one executemany)."""
        out = []
        for key, c in self.rows.items():
            if not any(c.values()):
                continue
            row: dict[str, Any] = dict(zip(KEY, key, strict=True))
            row["tier"] = self.tiers[key[0]]
            row.update({k: c.get(k, 0) for k in COUNTERS})
            out.append(row)
        return out


def total(rows: Iterable[Mapping[str, int]]) -> Counts:
    out: Counts = {}
    for r in rows:
        add(out, {k: r.get(k) or 0 for k in COUNTERS})
    return out
