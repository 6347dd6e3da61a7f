"""Monthly statistics as grid-governance offices count them, with their definitions.

Why definitions travel with the figures: offices compare these numbers with their own reports
(satisfaction as the share of satisfied residents, closure rate, supervised cases), so the console
shows each definition next to its chart, in the operator's language, from the same source as the
numbers. Every figure is over the incidents *created* in the month (city time zone); "no ratings" is
``None`` (shown as such), never a default value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gridwatch.store.counts import DAYS, RATINGS, Counts, add, contribution, total

from .views import month_of

# Ranked tiers: API key -> tier of the incident's tier chain.
RANKED = {"districts": "district", "towns": "street", "grids": "grid"}
# Index weights; without ratings satisfaction's weight is spread over the other three (see definitions).
WEIGHTS = {"closure": 0.4, "ontime": 0.3, "satisfaction": 0.2, "speed": 0.1}
SPEED_H = 72  # handling in this many hours or more scores 0 on speed


def definitions(satisfied_min: int, scale: int = 5) -> dict[str, dict[str, str]]:
    """What each figure means, in zh-CN and en (``GET /api/stats`` carries it as ``definitions``)."""
    w = WEIGHTS
    return {
        "scope": {
            "zh-CN": "统计口径：当月（按城市时区）新建的事件，限于您的管辖范围和所选筛选条件。",
            "en": "Scope: incidents created in the month (city time zone), within your area and the filters chosen."},
        "incidents": {"zh-CN": "事件数：当月新建的事件（传感器、视频、群众上报、12345 热线）总数。",
                      "en": "Incidents: all incidents created in the month (sensors, cameras, residents, 12345 hotline)."},
        "closure_rate": {
            "zh-CN": "办结率 = 已办结（已处置、已评价、已结案）÷（事件数 − 已撤销）。",
            "en": "Closure rate = resolved, evaluated or closed ÷ (incidents − cancelled)."},
        "overdue": {"zh-CN": "超时：按事件时间超过处置时限（红 2 小时、黄 24 小时、蓝 72 小时，可配置）至少一次的事件数。",
                    "en": "Overdue: incidents that passed their handling deadline (SLA by level, in event time) at least once."},
        "supervised": {"zh-CN": "督办件：收到督办通知（纪委督单）的事件数。",
                       "en": "Supervised: incidents that received a supervision notice (discipline commission)."},
        "supervised_overdue": {
            "zh-CN": "督办超期：督办期限已过（按事件时间判断，与处置时限相同）而事件仍未办结的督办件数。",
            "en": "Supervised overdue: supervised incidents still open when their notice's deadline passed "
                  "(judged in event time, like the SLA timers)."},
        "satisfaction": {
            "zh-CN": f"满意率 = 评价为满意（{scale} 分制 ≥ {satisfied_min} 分）的评价数 ÷ 评价总数；"
                     "无评价时显示“暂无评价”，不以默认值代替。",
            "en": f"Satisfaction = evaluations rated satisfied (≥ {satisfied_min} of {scale}) ÷ all evaluations; "
                  "with no evaluations it is shown as “no ratings”, never a default."},
        "avg_handling_h": {"zh-CN": "平均处置时长：从事件创建到办结的平均小时数（仅计已办结事件）。",
                           "en": "Average handling time: mean hours from creation to resolution (resolved incidents only)."},
        "index": {
            "zh-CN": f"网格治理指数 = 100 ×（{w['closure']} × 办结率 + {w['ontime']} × 按期率 + "
                     f"{w['satisfaction']} × 满意率 + {w['speed']} × 时效分）；按期率 = 1 − 超时占比，"
                     f"时效分 = 1 − 平均处置小时 ÷ {SPEED_H}（最低为 0）。无评价时不计满意率，其余三项按权重等比放大。"
                     "当月无事件的地区不参与排名。",
            "en": f"Grid-governance index = 100 × ({w['closure']} × closure rate + {w['ontime']} × on-time rate + "
                  f"{w['satisfaction']} × satisfaction + {w['speed']} × speed); on-time rate = 1 − overdue share, "
                  f"speed = max(0, 1 − mean handling hours ÷ {SPEED_H}). Without ratings satisfaction is left out "
                  "and the other three weights are scaled up in proportion. Areas without incidents that month "
                  "are not ranked."},
        "ranking": {"zh-CN": "排名：按网格治理指数从高到低，分区县、街道（乡镇）、网格三级，按月排名；指数相同按代码。",
                    "en": "Ranking: by grid-governance index, highest first, per month, for districts (counties), "
                          "towns (streets) and grids; ties by area code."},
    }


def figures_of(c: Mapping[str, int], satisfied_min: int) -> dict[str, Any]:
    """The figures of one set of incidents from its counters (gridwatch.store.counts)."""
    work, done, overdue, rated = c.get("work", 0), c.get("done", 0), c.get("work_overdue", 0), c.get("rated", 0)
    satisfied = sum(c.get(f"rating_{r}", 0) for r in RATINGS if r >= satisfied_min)
    closure = done / work if work else 0.0
    ontime = 1 - overdue / work if work else 1.0
    sat = satisfied / rated if rated else None
    avg_h = c["handled_ms"] / c["handled_n"] / 3_600_000 if c.get("handled_n") else None
    speed = max(0.0, 1 - avg_h / SPEED_H) if avg_h is not None else 0.0
    parts = {"closure": closure, "ontime": ontime, "satisfaction": sat, "speed": speed}
    weight = sum(WEIGHTS[k] for k, v in parts.items() if v is not None)
    index = 100 * sum(WEIGHTS[k] * v for k, v in parts.items() if v is not None) / weight
    return {"incidents": c.get("n", 0), "closed": done, "closure_rate": round(closure, 4),
            "avg_handling_h": round(avg_h, 2) if avg_h is not None else None, "overdue": overdue,
            "supervised": c.get("supervised", 0), "supervised_overdue": c.get("supervised_overdue", 0),
            "satisfaction": round(sat, 4) if sat is not None else None, "ratings": rated,
            "satisfied": satisfied, "index": round(index, 1)}


def _counts_of(incs: Iterable[dict[str, Any]], tz: ZoneInfo) -> Counts:
    out: Counts = {}
    for i in incs:
        add(out, contribution(i, tz)[4])
    return out


def figures(incs: list[dict[str, Any]], satisfied_min: int, tz: ZoneInfo | None = None) -> dict[str, Any]:
    """The figures of one set of incidents (a month, or one area's incidents of the month)."""
    return figures_of(_counts_of(incs, tz or ZoneInfo("UTC")), satisfied_min)


def ranked(areas: Mapping[str, Mapping[str, int]], gridmap: Any, satisfied_min: int) -> list[dict[str, Any]]:
    """Areas ranked by index (ties by code), each with its figures; areas without incidents left out."""
    rows = []
    for code, c in areas.items():
        if not c.get("n"):
            continue
        name = gridmap.area(code).name if code in gridmap else code
        rows.append({"code": code, "name": name, **figures_of(c, satisfied_min)})
    rows.sort(key=lambda r: (-r["index"], r["code"]))
    for n, r in enumerate(rows, 1):
        r["rank"] = n
    return rows


def ranking(in_month: list[dict[str, Any]], gridmap: Any, tier: str, satisfied_min: int,
            tz: ZoneInfo | None = None) -> list[dict[str, Any]]:
    """Areas of one tier ranked by index (ties by code), from the incidents themselves."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for i in in_month:
        code = next((t["code"] for t in i.get("tiers", []) if t["tier"] == tier), None)
        if code:
            groups.setdefault(code, []).append(i)
    return ranked({code: _counts_of(incs, tz or ZoneInfo("UTC")) for code, incs in groups.items()}, gridmap,
                  satisfied_min)


def stats(incidents: list[dict[str, Any]], gridmap: Any, tz: ZoneInfo, month: str | None, *,
          satisfied_min: int = 4, scale: int = 5, months: list[str] | None = None) -> dict[str, Any]:
    """The statistics of ``GET /api/stats`` computed from the incidents themselves (the export, the
    filters the counters do not have). ``months``: the months with incidents (the store knows them;
    else taken from ``incidents``)."""
    if months is None:
        months = sorted({month_of(i["created_ts"], tz) for i in incidents}, reverse=True)
    month = month or (months[0] if months else datetime.now(tz).strftime("%Y-%m"))
    in_month = [i for i in incidents if month_of(i["created_ts"], tz) == month]
    rows: dict[tuple[str, str, str], Counts] = {}
    for i in in_month:
        _, status, level, cat, c = contribution(i, tz)
        add(rows.setdefault((status, level, cat), {}), c)
    return stats_of([{"status": k[0], "level": k[1], "category_group": k[2], **c} for k, c in rows.items()],
                    {key: ranking(in_month, gridmap, tier, satisfied_min, tz) for key, tier in RANKED.items()},
                    month, months, satisfied_min=satisfied_min, scale=scale)


def stats_of(rows: list[Mapping[str, Any]], rankings: Mapping[str, list[dict[str, Any]]], month: str,
             months: list[str], *, satisfied_min: int = 4, scale: int = 5) -> dict[str, Any]:
    """``GET /api/stats`` from the month's counters: ``rows``, one per (status, level, category group)
    (Store.month_counts), and the rankings (``ranked``). Overall figures of the month, counts by level /
    status / category / day, the rankings of districts, towns and grids, and every figure's definition."""
    all_ = total(rows)
    overall = figures_of(all_, satisfied_min)
    overall["open_overdue"] = all_.get("open_overdue", 0)
    by_level = {lv: 0 for lv in ("red", "yellow", "blue")}
    by_status: dict[str, int] = {}
    by_category: dict[str, int] = {}
    for r in rows:
        for out, key in ((by_level, r["level"]), (by_status, r["status"]), (by_category, r["category_group"])):
            if out is not by_level or key in by_level:
                out[key] = out.get(key, 0) + r["n"]
    daily = {f"{month}-{d:02d}": all_[f"d{d:02d}"] for d in DAYS if all_.get(f"d{d:02d}")}
    return {"month": month, "months": months or [month], "overall": overall, "by_level": by_level,
            "by_status": {k: v for k, v in sorted(by_status.items()) if v},
            "by_category": {k: v for k, v in sorted(by_category.items()) if v}, "daily": daily,
            "ranking": dict(rankings), "satisfaction_threshold": {"min_rating": satisfied_min, "scale": scale},
            "definitions": definitions(satisfied_min, scale)}


def areas_under(gridmap: Any, scope: str, tier: str) -> list[str]:
    """Codes of the areas of ``tier`` at or below ``scope`` (the grid map's tree)."""
    out, todo = [], [gridmap.area(scope)]
    while todo:
        a = todo.pop()
        if a.tier == tier:
            out.append(a.code)
        else:
            todo.extend(gridmap.children(a.code))
    return sorted(out)


def stats_from_store(store: Any, gridmap: Any, scope: str, month: str, months: list[str], *,
                     statuses: Iterable[str] = (), levels: Iterable[str] = (), satisfied_min: int = 4,
                     scale: int = 5) -> dict[str, Any]:
    """``GET /api/stats`` of ``scope`` from the store's per-area counters (a few hundred rows, whatever
    the history); the same figures ``stats`` computes from the incidents. A ranked tier at or above the
    scope has one area: the scope's ancestor, with the scope's own incidents (as ``ranking`` groups them)."""
    statuses, levels = list(statuses), list(levels)
    rows = store.month_counts(scope, month, statuses=statuses, levels=levels)
    above = {a.tier: a.code for a in gridmap.chain(scope)}
    rankings = {}
    for key, tier in RANKED.items():
        if tier in above:
            areas = {above[tier]: total(rows)} if rows else {}
        else:
            areas = store.area_counts(areas_under(gridmap, scope, tier), month, statuses=statuses, levels=levels)
        rankings[key] = ranked(areas, gridmap, satisfied_min)
    return stats_of(rows, rankings, month, months, satisfied_min=satisfied_min, scale=scale)
