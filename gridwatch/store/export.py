"""The monthly bulletin export: governance index ranking (districts, towns, grids) and the case list
of one month, as CSV (UTF-8 with BOM, so Excel shows Chinese) and XLSX, from the store."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .db import Store

RANK_COLS = ("tier", "rank", "code", "name", "index", "incidents", "closed", "closure_rate", "overdue",
             "supervised", "satisfaction", "ratings", "avg_handling_h")
CASE_COLS = ("id", "created", "category_group", "title", "level", "status", "tier", "tier_code", "department",
             "grid_code", "overdue", "escalations", "rating", "resolved", "closed", "version")


def rows_of_month(store: Store, city: Any, month: str, scope: str, satisfied_min: int
                  ) -> tuple[list[list[Any]], list[list[Any]]]:
    from gridwatch.web.statistics import stats

    tz = ZoneInfo(city.timezone)
    incs = store.incidents(scope, month=month)
    st = stats(incs, city.gridmap, tz, month, satisfied_min=satisfied_min, months=[month])
    ranking = [[key] + [r.get(c) for c in RANK_COLS[1:]] for key, rows in st["ranking"].items() for r in rows]

    def when(ms: int | None) -> str:
        return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M") if ms else ""

    cases = [[i["id"], when(i["created_ts"]), i["category_group"], i["title"], i["level"], i["status"], i["tier"],
              i["tier_code"], i["department"], i["grid_code"], i.get("overdue"), i.get("escalations"),
              i.get("rating"), when(i.get("resolved_ts")), when(i.get("closed_ts")), i["version"]]
             for i in sorted(incs, key=lambda i: (i["created_ts"], i["id"]))]
    return ranking, cases


def export_month(store: Store, city: Any, month: str, scope: str, out: str, satisfied_min: int = 4) -> list[Path]:
    from openpyxl import Workbook

    ranking, cases = rows_of_month(store, city, month, scope, satisfied_min)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    wb = Workbook()
    sheets = (("index", RANK_COLS, ranking), ("cases", CASE_COLS, cases))
    for n, (name, cols, rows) in enumerate(sheets):
        path = folder / f"{name}-{scope}-{month}.csv"
        with path.open("w", newline="", encoding="utf-8-sig") as f:
            w = csv.writer(f)
            w.writerow(cols)
            w.writerows(rows)
        paths.append(path)
        ws = wb.active if n == 0 else wb.create_sheet()
        ws.title = name
        ws.append(list(cols))
        for r in rows:
            ws.append(r)
    xlsx = folder / f"bulletin-{scope}-{month}.xlsx"
    wb.save(xlsx)
    paths.append(xlsx)
    return paths
