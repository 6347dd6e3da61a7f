"""The per-area counters give the statistics a from-scratch count gives, on both engines: after new
versions replace older ones (within a batch and across batches), a late older version, a redelivered
batch, a purge and a recount; and the list's totals and keyset pages match the incidents."""

from __future__ import annotations

import copy
import random
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gridwatch.core.settings import Settings
from gridwatch.devices.registry import load_city
from gridwatch.store import db, open_store
from gridwatch.store.db import Store, recount
from gridwatch.store.records import CLOSED_STATUSES, list_rank
from gridwatch.web.statistics import RANKED, stats, stats_from_store
from gridwatch.web.views import month_of

STATUSES = ("reported", "dispatched", "in_progress", "resolved", "evaluated", "closed", "cancelled")
LEVELS = ("red", "yellow", "blue")
DAY = 86_400_000
START = 1_759_276_800_000  # 2025-10-01 00:00 UTC


@pytest.fixture(scope="module")
def city() -> Any:
    return load_city()


def incident(city: Any, rnd: random.Random, k: int, version: int, grid: str, created: int) -> dict[str, Any]:
    status = rnd.choice(STATUSES)
    done = status in ("resolved", "evaluated", "closed")
    sv = rnd.choice((None, None, {"by": "x", "overdue": False}, {"by": "x", "overdue": True}))
    return {"id": f"i{k}", "version": version, "status": status, "level": rnd.choice(LEVELS),
            "category_group": rnd.choice(("manhole", "streetlight", "waterlogging")), "tier": "community",
            "tier_code": grid[:12], "grid_code": grid, "created_ts": created,
            "updated_ts": created + version * 60_000 + rnd.randrange(3) * 1000,
            "tiers": [{"tier": a.tier, "code": a.code, "name": a.name} for a in city.gridmap.chain(grid)],
            "sources": [], "history": [], "overdue": rnd.random() < 0.3, "supervision": sv,
            "rating": rnd.choice((None, 1, 2, 3, 4, 5)) if done else None,
            "resolved_ts": created + rnd.randrange(1, 100) * 3_600_000 if done and rnd.random() < 0.9 else None,
            "closed_ts": created + 2 * DAY if status == "closed" else None}


def versions(city: Any, n: int = 240, seed: int = 7) -> list[dict[str, Any]]:
    """Changes of ``n`` incidents over three months (city time), 1-3 versions each; a later version may
    move the incident to another grid (its areas change) or another day."""
    rnd = random.Random(seed)
    grids = [a.code for a in city.gridmap.areas("grid")][:40]
    out = []
    for k in range(n):
        grid, created = rnd.choice(grids), START + rnd.randrange(92 * DAY)
        for v in range(1, rnd.randint(1, 3) + 1):
            if rnd.random() < 0.15:
                grid = rnd.choice(grids)
            if rnd.random() < 0.05:
                created += DAY
            inc = incident(city, rnd, k, v, grid, created)
            out.append({"incident": inc, "change": "created" if v == 1 else "action", "ts": created + v})
    return out


def latest(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ch in changes:
        inc = ch["incident"]
        if inc["id"] not in out or out[inc["id"]]["version"] < inc["version"]:
            out[inc["id"]] = inc
    return list(out.values())


def under(incs: list[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    return [i for i in incs if scope in [t["code"] for t in i["tiers"]]]


def scopes(city: Any) -> list[str]:
    gm = city.gridmap
    grid = gm.areas("grid")[0].code
    return [a.code for a in gm.chain(grid)]  # city, district, street, community, grid


def check_stats(st: Store, city: Any, incs: list[dict[str, Any]]) -> None:
    tz = ZoneInfo(city.timezone)
    for scope in scopes(city):
        mine = under(incs, scope)
        months = sorted({month_of(i["created_ts"], tz) for i in mine}, reverse=True)
        assert st.months(scope) == months
        for month in months:
            for statuses, levels in (((), ()), (["reported", "dispatched"], ["red"]), ((), ["blue", "yellow"])):
                want = [i for i in mine if (not statuses or i["status"] in statuses) and (not levels or i["level"] in levels)]
                expect = stats(want, city.gridmap, tz, month, months=months)
                got = stats_from_store(st, city.gridmap, scope, month, months, statuses=statuses, levels=levels)
                assert got == expect, (scope, month, statuses, levels)
    # the rankings have areas, and figures beyond zero (the comparison above compares real figures)
    months = st.months(scopes(city)[0])
    full = [stats_from_store(st, city.gridmap, scopes(city)[0], m, months) for m in months]
    assert all(f["ranking"][k] for f in full for k in RANKED)
    assert any(f["overall"]["ratings"] for f in full) and any(f["overall"]["supervised_overdue"] for f in full)
    assert any(f["overall"]["avg_handling_h"] is not None for f in full)


def check_pages(st: Store, city: Any, incs: list[dict[str, Any]]) -> None:
    for scope in scopes(city)[:3]:
        for statuses, levels, tier in (((), (), ""), (["dispatched", "resolved"], ["red", "blue"], ""),
                                       ((), (), "community")):
            want = [i for i in under(incs, scope) if (not statuses or i["status"] in statuses)
                    and (not levels or i["level"] in levels) and (not tier or i["tier"] == tier)]
            want.sort(key=lambda i: (list_rank(i["status"], i["level"]), -i["updated_ts"],
                                     tuple(-ord(c) for c in i["id"]) + (1,)))  # ties: larger id first
            got, after = [], None
            while True:
                page = st.page(scope, 17, statuses=statuses, levels=levels, tier=tier, after=after, cap=50)
                got += [i["id"] for i in page.incidents]
                assert page.exact == (not tier or len(want) <= 50)
                assert page.total == (len(want) if page.exact else 50)
                if page.next is None:
                    break
                after = page.next
            assert got == [i["id"] for i in want], (scope, statuses, levels, tier)


@pytest.mark.parametrize("copy_min", [db.COPY_MIN, 1], ids=["as-shipped", "copy-every-write"])
def test_counters_equal_a_count_from_scratch(store_url: str, city: Any, copy_min: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``copy-every-write``: every PostgreSQL upsert of the store goes through COPY (Store._bulk), the small
    ones included (a late version, a redelivery, the evidence and offset rows)."""
    if copy_min == 1 and store_url.startswith("sqlite"):
        pytest.skip("SQLite has no COPY: its writes are the driver's executemany either way")
    monkeypatch.setattr(db, "COPY_MIN", copy_min)
    st = open_store(Settings(), city.timezone, url=store_url)
    changes = versions(city)
    rnd = random.Random(3)
    shuffled = changes[:]
    rnd.shuffle(shuffled)  # versions arrive out of order, within and across batches
    batches = [shuffled[k:k + 50] for k in range(0, len(shuffled), 50)]
    for n, part in enumerate(batches):
        b = st.batch()
        for ch in part:
            b.add_change(copy.deepcopy(ch))
        st.write(b)
        if n % 3 == 0:
            st.write(b)  # a redelivered batch
    late = st.batch()  # a late, older version of everything changed twice
    for ch in changes:
        if ch["incident"]["version"] == 1:
            late.add_change(copy.deepcopy(ch))
    st.write(late)
    incs = latest(changes)
    assert any(i["version"] > 1 for i in incs) and {i["status"] for i in incs} >= set(STATUSES)
    check_stats(st, city, incs)
    check_pages(st, city, incs)

    before = {s: st.month_counts(s, m) for s in scopes(city) for m in st.months(s)}
    with st.engine.begin() as conn:  # a recount from the incidents gives the same counters
        recount(conn, ZoneInfo(city.timezone))
    after = {s: st.month_counts(s, m) for s in scopes(city) for m in st.months(s)}
    assert {k: sorted(v, key=str) for k, v in after.items()} == {k: sorted(v, key=str) for k, v in before.items()}

    cut = START + 40 * DAY  # the purge takes its case files out of the counters
    purged = st.purge(0, now_ms=cut)
    assert purged > 0
    kept = [i for i in incs if not (i.get("closed_ts") and i["closed_ts"] < cut)]
    check_stats(st, city, kept)
    assert st.estimate("incidents") == len(kept) and st.estimate("incidents", exact_up_to=10) >= 10
    st.close()


def test_open_statuses_match_the_list_rank() -> None:
    for s in STATUSES:
        assert (list_rank(s, "red") >= 3) == (s in CLOSED_STATUSES)


def test_migration_0002_fills_the_counters_of_incidents_stored_before_it(store_url: str, city: Any) -> None:
    from alembic import command
    from alembic.config import Config

    from gridwatch.store import tables as t
    from gridwatch.store.db import MIGRATIONS, make_engine, migrate
    from gridwatch.store.records import Batch

    engine = make_engine(store_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # a store as the first schema left it, with incidents in it
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    changes = versions(city, seed=11)
    b = Batch(ZoneInfo(city.timezone))
    for ch in changes:
        b.add_change(copy.deepcopy(ch))
    new_cols = {"created_day", "overdue", "supervised", "supervised_overdue", "handled_ms", "rating"}
    with engine.begin() as conn:
        conn.execute(t.incident_versions.insert(), list(b.versions.values()))
        conn.execute(t.incidents.insert(), [{k: v for k, v in r.items() if k not in new_cols} for r in b.latest.values()])
        copies = {"category_group", "tier", "supervised", "supervised_overdue"}  # columns of 0003
        conn.execute(t.incident_areas.insert(), [{k: v for k, v in r.items() if k not in copies}
                                                 for r in b.areas.values()])
    migrate(engine, ZoneInfo(city.timezone))  # 0002, then the fill (it needs the city's time zone)
    st = Store(engine, ZoneInfo(city.timezone))
    check_stats(st, city, latest(changes))
    st.close()
