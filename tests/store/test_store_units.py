"""The store on both engines: migrations, idempotent upserts by id and version, the api's queries."""

from __future__ import annotations

import copy

from sqlalchemy import inspect

from gridwatch.core.settings import Settings
from gridwatch.store import open_store
from gridwatch.store.tables import metadata

TIERS = [{"tier": "city", "code": "3301", "name": "c"}, {"tier": "district", "code": "330102", "name": "d"},
         {"tier": "grid", "code": "330102001001", "name": "g"}]


def change(iid: str, version: int, status: str, created: int, reports: tuple[str, ...] = ()) -> dict:
    inc = {"id": iid, "version": version, "status": status, "level": "red", "category_group": "manhole",
           "tier": "street", "tier_code": "330102", "grid_code": "330102001001", "tiers": TIERS,
           "created_ts": created, "updated_ts": created + version, "lat": 0.0, "lon": 0.0,
           "sources": [{"kind": "report", "id": r} for r in reports], "history": [{"action": f"v{version}"}]}
    return {"incident": inc, "change": "created" if version == 1 else "action", "ts": created + version}


def test_migrations_make_the_documented_tables(store_url: str) -> None:
    st = open_store(Settings(), "Asia/Shanghai", url=store_url)
    open_store(Settings(), "Asia/Shanghai", url=store_url).close()  # a second start is a no-op
    names = set(inspect(st.engine).get_table_names())
    assert set(metadata.tables) <= names and "alembic_version" in names
    st.close()


def test_redelivery_leaves_one_row_per_version_and_the_newest_wins(store_url: str) -> None:
    st = open_store(Settings(), "Asia/Shanghai", url=store_url)
    nov = 1_764_000_000_000  # 2025-11-24 (Shanghai)
    b = st.batch()
    for v, s in ((1, "new"), (3, "resolved"), (2, "dispatched")):  # out of order within the batch
        b.add_change(change("i1", v, s, nov, ("r1",)))
    b.add_report({"service_request_id": "r1", "service_code": "manhole_cover", "requested_ms": nov,
                  "grid_code": "330102001001"})
    st.write(b)
    st.write(b)  # a redelivered batch
    old = st.batch()
    old.add_change(change("i1", 2, "dispatched", nov))  # a late, older version never wins
    st.write(old)
    assert st.versions() == {("i1", 1), ("i1", 2), ("i1", 3)}
    assert st.incident("i1")["status"] == "resolved"
    assert [c["incident"]["version"] for c in st.timeline("i1")] == [1, 2, 3]
    assert [i["id"] for i in st.incidents("330102")] == ["i1"] and st.incidents("3302") == []
    assert st.incidents("3301", statuses=["new"]) == []
    assert st.months("3301") == ["2025-11"]
    assert [i["id"] for i in st.incidents("3301", month="2025-11")] == ["i1"]
    assert st.incident_of_report("r1")["version"] == 3
    assert [r["service_request_id"] for r in st.reports_between(nov - 1, nov + 1)] == ["r1"]
    assert st.count("incident_versions") == 3 and st.count("reports") == 1
    st.close()


def test_offsets_commit_with_the_rows(store_url: str) -> None:
    st = open_store(Settings(), "UTC", url=store_url)
    b = st.batch()
    b.add_change(copy.deepcopy(change("i2", 1, "new", 0)))
    st.write(b, [("api", "p.incidents", 0, 7)])
    st.write(st.batch(), [("api", "p.incidents", 0, 9)])
    assert st.offsets("api") == {("p.incidents", 0): 9}
    st.close()


def test_purge_keeps_open_cases_and_recent_ones(store_url: str) -> None:
    st = open_store(Settings(), "UTC", url=store_url)
    year = 365 * 86_400_000
    b = st.batch()
    old_closed = change("old", 1, "closed", 0)
    old_closed["incident"]["closed_ts"] = 1000
    b.add_change(old_closed)
    b.add_change(change("old-open", 1, "dispatched", 0))
    recent = change("recent", 1, "closed", 20 * year)
    recent["incident"]["closed_ts"] = 20 * year
    b.add_change(recent)
    st.write(b)
    assert st.purge(10, now_ms=21 * year) == 1
    assert st.incident("old") is None and st.timeline("old") == []
    assert st.incident("old-open") and st.incident("recent")
    st.close()


def test_monthly_export_writes_csv_and_xlsx(tmp_path) -> None:
    from openpyxl import load_workbook

    from gridwatch.store.export import export_month
    from tests.web.samples import CITY, incident
    from tests.web.samples import change as sample_change

    st = open_store(Settings(), CITY.timezone, url=f"sqlite:///{tmp_path / 's.db'}")
    grids = CITY.gridmap.grids_under("330102001")[:3]
    b = st.batch()
    nov = 1_764_000_000_000
    for g in grids:
        b.add_change(sample_change(incident(g, ts=nov, status="dispatched", version=2)))
    st.write(b)
    paths = export_month(st, CITY, "2025-11", CITY.code, str(tmp_path / "out"))
    names = sorted(p.name for p in paths)
    assert names == [f"bulletin-{CITY.code}-2025-11.xlsx", f"cases-{CITY.code}-2025-11.csv",
                     f"index-{CITY.code}-2025-11.csv"]
    cases = (tmp_path / "out" / f"cases-{CITY.code}-2025-11.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(cases) == 1 + len(grids)
    wb = load_workbook(tmp_path / "out" / f"bulletin-{CITY.code}-2025-11.xlsx")
    assert wb.sheetnames == ["index", "cases"] and wb["cases"].max_row == 1 + len(grids)
    assert any(r[0].value == "grids" for r in wb["index"].iter_rows(min_row=2))
    st.close()


def test_list_filters_in_sql_equal_the_documents_filtered_in_python(store_url: str) -> None:
    """Category, supervision and tier filters of the console's list (SQL on incident_areas' copies of the
    incident columns, walking their indexes; totals from the counters, or counted for a tier) give the
    pages and totals that filtering the documents gives, page by page."""
    import random

    from gridwatch.store.records import list_rank

    st = open_store(Settings(), "UTC", url=store_url)
    rnd = random.Random(7)
    other = [{"tier": "city", "code": "3301", "name": "c"}, {"tier": "district", "code": "330105", "name": "e"}]
    b = st.batch()
    for k in range(60):
        ch = change(f"i{k:02d}", 1 + k % 2, rnd.choice(("reported", "dispatched", "resolved", "closed")),
                    1_764_000_000_000 + rnd.randrange(10**9))
        inc = ch["incident"]
        inc.update(level=rnd.choice(("red", "yellow", "blue")), category_group=rnd.choice(("manhole", "streetlight")),
                   tiers=TIERS if k % 3 else other, tier=rnd.choice(("street", "grid", "district")))
        if k % 4 == 0:
            inc["supervision"] = {"deadline_ts": 1, "overdue": k % 8 == 0}
        b.add_change(ch)
    st.write(b)
    b = st.batch()  # newer versions change the filtered columns: the copies follow
    for k in range(0, 60, 5):
        ch = {k: v for k, v in st.incident(f"i{k:02d}").items() if k != "_codes"}
        ch.update(version=3, category_group="streetlight", tier="grid", updated_ts=ch["updated_ts"] + 1)
        if k % 10 == 0:
            ch["supervision"] = {"deadline_ts": 1, "overdue": True}
        else:
            ch.pop("supervision", None)
        b.add_change({"incident": ch, "change": "action", "ts": ch["updated_ts"]})
    st.write(b)

    def want(inc: dict, cats: list[str], sv: str, tier: str) -> bool:
        s = inc.get("supervision")
        return ((not cats or inc["category_group"] in cats) and (not tier or inc["tier"] == tier)
                and (not sv or (bool(s and s.get("overdue")) if sv == "overdue" else (s is not None) == (sv == "1"))))

    for scope in ("3301", "330102", "330105"):
        for cats, sv, statuses, tier in (
                (["manhole"], "", [], ""), ([], "1", [], ""), ([], "0", ["resolved", "closed"], ""),
                ([], "overdue", [], ""), (["streetlight", "manhole"], "1", ["reported"], ""), ([], "", [], "grid"),
                ([], "", ["reported", "dispatched"], "street"), (["manhole"], "1", [], "district"),
                ([], "overdue", [], "grid"), ([], "", [], "community")):
            ref = sorted((i for i in st.incidents(scope, statuses=statuses) if want(i, cats, sv, tier)),
                         key=lambda i: (list_rank(i["status"], i["level"]), -i["updated_ts"],
                                        tuple(-ord(ch) for ch in i["id"])))
            got, after = [], None
            while True:
                p = st.page(scope, 7, statuses=statuses, categories=cats, supervised=sv, tier=tier, after=after)
                assert (p.total, p.exact) == (len(ref), True), (scope, cats, sv, tier)
                got += [i["id"] for i in p.incidents]
                if p.next is None:
                    break
                after = p.next
            assert got == [i["id"] for i in ref], (scope, cats, sv, statuses, tier)
    st.close()
