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
