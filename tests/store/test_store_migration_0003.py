"""Migration 0003 on a store that already holds incidents (from 0001 or 0002, both engines): the list
filters' copies on incident_areas and the evidence refs are filled, and the store's evidence lookup
answers by scope."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, update

from gridwatch.store import tables as t
from gridwatch.store.db import MIGRATIONS, Store, make_engine, migrate, sum_counts

TZ = ZoneInfo("Asia/Shanghai")
CITY = {"tier": "city", "code": "3301", "name": "c"}
AREAS = {"330102": [CITY, {"tier": "district", "code": "330102", "name": "d"}],
         "330105": [CITY, {"tier": "district", "code": "330105", "name": "e"}]}
COPIES = ("category_group", "tier", "supervised", "supervised_overdue")
COUNTED = ("created_day", "overdue", "supervised", "supervised_overdue", "handled_ms", "rating")


def changes(n: int = 40) -> list[dict]:
    rnd = random.Random(3)
    out = []
    for k in range(n):
        district = rnd.choice(sorted(AREAS))
        inc = {"id": f"m{k:02d}", "version": 1, "status": rnd.choice(("reported", "dispatched", "closed")),
               "level": rnd.choice(("red", "blue")), "category_group": rnd.choice(("manhole", "streetlight")),
               "tier": rnd.choice(("street", "grid")), "tier_code": district, "grid_code": district + "001001",
               "tiers": AREAS[district], "created_ts": 1_764_000_000_000 + k, "updated_ts": 1_764_000_000_000 + k,
               "sources": [{"kind": "event", "id": f"e{k}", "evidence": [{"snapshot": f"/cam-{k}/s.jpg"}]},
                           {"kind": "report", "id": f"r{k}", "media_url": f"media/{district}/{k}.png"}],
               "history": []}
        if k % 3 == 0:
            inc["supervision"] = {"deadline_ts": 1, "overdue": k % 2 == 0}
        out.append({"incident": inc, "change": "created", "ts": inc["created_ts"]})
    return out


@pytest.mark.parametrize("start", ["0001", "0002"])
def test_migration_0003_fills_the_copies_and_the_evidence_of_stored_incidents(store_url: str, start: str) -> None:
    engine = make_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # a store as that revision left it
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, start)
    st = Store(engine, TZ)
    b = st.batch()
    chs = changes()
    for ch in chs:
        b.add_change(ch)
    later = {"category_group", "tier", "supervised", "supervised_overdue"}  # 0003's columns on incident_areas
    with engine.begin() as conn:
        conn.execute(t.incident_versions.insert(), list(b.versions.values()))
        conn.execute(t.incidents.insert(), [{k: v for k, v in r.items() if start == "0002" or k not in COUNTED}
                                            for r in b.latest.values()])
        conn.execute(t.incident_areas.insert(), [{k: v for k, v in r.items() if k not in later}
                                                 for r in b.areas.values()])
        if start == "0002":  # a 0002 store with its counters ready
            sum_counts(conn)
            conn.execute(update(t.store_meta).where(t.store_meta.c.key == "counts").values(value="ready"))
    migrate(engine, TZ)

    a = t.incident_areas
    with engine.connect() as conn:
        rows = {(r.code, r.incident_id): tuple(r._mapping[c] for c in COPIES) for r in conn.execute(select(a))}
    want = {(code, ch["incident"]["id"]): (ch["incident"]["category_group"], ch["incident"]["tier"],
                                           int("supervision" in ch["incident"]),
                                           int(bool(ch["incident"].get("supervision", {}).get("overdue"))))
            for ch in chs for code in (x["code"] for x in ch["incident"]["tiers"])}
    assert rows == want
    assert st.count("incident_evidence") == 2 * len(chs)
    for ch in chs:
        inc = ch["incident"]
        k, district = int(inc["id"][1:]), inc["tier_code"]
        other = next(d for d in AREAS if d != district)
        assert st.evidence_in_scope(f"cam-{k}/s.jpg", district) and st.evidence_in_scope(f"cam-{k}/s.jpg", "3301")
        assert st.evidence_in_scope(f"media/{district}/{k}.png", district)
        assert not st.evidence_in_scope(f"cam-{k}/s.jpg", other)
    sv = [ch["incident"]["id"] for ch in chs if "supervision" in ch["incident"]]
    assert sorted(i["id"] for i in st.page("3301", 100, supervised="1").incidents) == sorted(sv)
    assert st.page("3301", 100, supervised="1").total == len(sv)
    st.close()


def test_a_newer_version_replaces_the_evidence_refs_and_purge_drops_them(store_url: str) -> None:
    from gridwatch.core.settings import Settings
    from gridwatch.store import open_store

    st = open_store(Settings(), TZ, url=store_url)
    ch = changes(1)[0]
    b = st.batch()
    b.add_change(ch)
    st.write(b)
    assert st.evidence_in_scope("cam-0/s.jpg", "3301")
    inc = dict(ch["incident"], version=2, status="closed", closed_ts=1000,
               sources=[{"kind": "event", "id": "e9", "evidence": ["cam-9/t.jpg"]}])
    b = st.batch()
    b.add_change({"incident": inc, "change": "action", "ts": 2})
    st.write(b)
    assert not st.evidence_in_scope("cam-0/s.jpg", "3301") and st.evidence_in_scope("cam-9/t.jpg", "3301")
    assert st.purge(1, now_ms=10 * 365 * 86_400_000) == 1
    assert st.count("incident_evidence") == 0
    st.close()
