"""Per-area monthly counters: what the month's statistics need, kept beside the incidents.

Why: computing a month's statistics from the case files reads every incident of the month (tens of
thousands of JSON documents for a city); the counters answer from a few hundred rows. An incident
counts in each area of its tier chain (city .. grid), in the row keyed by (area code, month, status,
level, category group). The store's write swaps an incident's old contribution for its new one in
SQL, in the same transaction as the incident row: it subtracts the stored version's sums (the
incident's row and areas, ``counter_sums``) before replacing it and adds the new version's after, so
a newer version, a late older one and a redelivery all leave the counters equal to a count from
scratch. The incident row carries the few columns the sums need (``columns``).

``contribution`` computes the same counters from a document (the from-scratch statistics in
gridwatch.web.statistics, for filters the counters do not have); tests/store/test_store_counts.py
holds the two to the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Integer, and_, case, cast, func, literal

CLOSED_STATUSES = ("resolved", "evaluated", "closed", "cancelled")  # as the api shows them (web/views.py)
DONE_STATUSES = ("resolved", "evaluated", "closed")  # "closed" for the closure rate (cancelled is not work done)
RATINGS = (1, 2, 3, 4, 5)  # the evaluation scale (a rating outside it counts at its nearest end)
DAYS = tuple(range(1, 32))
# counters of one (area, month, status, level, category group); names are the table's columns
FLAGS = ("n", "work", "done", "work_overdue", "open_overdue", "supervised", "supervised_overdue", "handled_n", "handled_ms",
         "rated")
FIGURES = FLAGS + tuple(f"rating_{r}" for r in RATINGS)  # what a ranked area's figures need
COUNTERS = FIGURES + tuple(f"d{d:02d}" for d in DAYS)
COUNTER_INDEX = {k: n for n, k in enumerate(COUNTERS)}
KEY = ("code", "month", "status", "level", "category_group")  # area_counts
MONTH_KEY = ("code", "month")  # area_months
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
    return created.strftime("%Y-%m"), status, inc.get("level", ""), inc.get("category_group", ""), c


def areas(inc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(tier, code) of every area the incident counts in."""
    return [(t["tier"], t["code"]) for t in inc.get("tiers", [])]


def columns(inc: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """The incident row's columns its counters are summed from (``counter_sums``), as ``contribution``
    reads them from the document."""
    sv = inc.get("supervision")
    rating = inc.get("rating")
    rated = isinstance(rating, int) and not isinstance(rating, bool)
    return {"created_day": datetime.fromtimestamp(inc["created_ts"] / 1000, tz).day,
            "overdue": 1 if inc.get("overdue") else 0, "supervised": 1 if sv else 0,
            "supervised_overdue": 1 if sv and sv.get("overdue") else 0,
            "handled_ms": int(inc["resolved_ts"]) - int(inc["created_ts"])
            if inc["status"] in DONE_STATUSES and inc.get("resolved_ts") else None,
            "rating": min(max(rating, RATINGS[0]), RATINGS[-1]) if rated else None}


def counter_sums(i: Any, sign: int = 1) -> list[Any]:
    """SQL: every counter as ``sign`` x SUM over the rows of incidents table ``i`` (grouped by area), cast
    back to the counter's column type: PostgreSQL's SUM of an integer is a bigint, and a SUM over those
    (area_months from the per-batch sums) would be a numeric, several times slower to add up."""
    def one(cond: Any) -> Any:
        return case((cond, 1), else_=0)

    status = i.c.status
    exprs: dict[str, Any] = {
        "n": literal(1), "work": one(status != "cancelled"), "done": one(status.in_(DONE_STATUSES)),
        "work_overdue": one(and_(i.c.overdue == 1, status != "cancelled")),
        "open_overdue": one(and_(i.c.overdue == 1, status.not_in(CLOSED_STATUSES))),
        "supervised": i.c.supervised, "supervised_overdue": i.c.supervised_overdue,
        "handled_n": one(i.c.handled_ms.is_not(None)), "handled_ms": func.coalesce(i.c.handled_ms, 0),
        "rated": one(i.c.rating.is_not(None)),
        **{f"rating_{r}": one(i.c.rating == r) for r in RATINGS},
        **{f"d{d:02d}": one(i.c.created_day == d) for d in DAYS}}
    return [cast(sign * func.sum(exprs[k]), BigInteger if k == "handled_ms" else Integer).label(k) for k in COUNTERS]


def add(total: Counts, part: Mapping[str, int], sign: int = 1) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + sign * v


def total(rows: Iterable[Mapping[str, int]]) -> Counts:
    out: Counts = {}
    for r in rows:
        add(out, {k: r.get(k) or 0 for k in COUNTERS})
    return out
