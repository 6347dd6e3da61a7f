"""Store figures (issue 13), each beside a ceiling or target measured in the same run:

* sink: incident changes/s through the store agent's write path (decode, validate, rows of every
  table, upserts in one transaction per 500 records) against a raw batched INSERT of the same
  records' version rows into a plain table of the same database (target >= 0.5x);
* reads with N incidents in PostgreSQL (default 1,000,000): console list (first page; unfiltered,
  open + red, a category group, supervised, supervised and overdue, a tier, a street's open cases of
  a category), detail, a picture's scope check (/api/evidence) and a month's statistics, p95 over HTTP (the api's real handlers, in-process aiohttp server) (target
  <= 100 ms), and api ready time (app built, store opened and migrated, first list answered).

`python -m gridwatch.bench store [--incidents N] [--runs 3] [--sink-records 20000] [--sink-only]`
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from typing import Any

from sqlalchemy import create_engine, insert, text

from gridwatch.bench.results_io import bench_parser, write_results
from gridwatch.core.settings import load_settings
from gridwatch.devices.registry import load_city
from gridwatch.store.db import Store, make_engine, migrate
from gridwatch.store.pg_local import start_local_postgres

STATUSES = ("reported", "dispatched", "in_progress", "resolved", "closed", "evaluated")
LEVELS = ("red", "yellow", "blue")
BATCH = 500


def make_changes(city: Any, n: int, seed: int = 1, months: int = 12) -> list[dict[str, Any]]:
    """``n`` incident changes (version 1) spread over ``months`` months, over every grid of the city."""
    rnd = random.Random(seed)
    grids = [a.code for a in city.gridmap.areas("grid")]
    chains = {g: [{"tier": a.tier, "code": a.code, "name": a.name} for a in city.gridmap.chain(g)] for g in grids}
    now = int(time.time() * 1000)
    out = []
    for k in range(n):
        g = grids[k % len(grids)]
        ts = now - rnd.randrange(months * 30 * 86_400_000)
        status = rnd.choice(STATUSES)
        done = status in ("resolved", "closed", "evaluated")
        inc = {"id": f"inc-{seed}-{k}", "category_group": rnd.choice(("manhole", "streetlight", "waterlogging")),
               "title": "Manhole cover: manhole_open", "level": rnd.choice(LEVELS), "priority": 30, "status": status,
               "tier": "street" if k % 20 == 1 else "community", "tier_code": g[:12], "department": "municipal_facilities", "grid_code": g,
               "tiers": chains[g], "lat": 30.2, "lon": 120.1, "created_ts": ts, "updated_ts": ts + 3_600_000,
               "sla_deadline_ts": ts + 7_200_000, "sources": [{"kind": "event", "id": f"e{k}", "type": "manhole_open",
                                                              "ts": ts, "last_ts": ts, "message": "cover_open"}],
               "overdue": rnd.random() < 0.1, "escalations": 0,
               "history": [{"ts": ts, "action": "created", "actor": "sensor:x", "to_status": "reported"}],
               "rating": rnd.choice((None, 3, 4, 5)) if done else None, "resolved_ts": ts + 3_600_000 if done else None,
               "closed_ts": ts + 7_200_000 if status in ("closed", "evaluated") else None, "version": 1, "v": 1}
        if k % 50 == 0:  # 2 % under a supervision notice, a quarter of those overdue (the supervised list)
            inc["supervision"] = {"deadline_ts": ts + 86_400_000, "overdue": k % 200 == 0}
        if k % 100 == 0:  # 1 % with a snapshot picture (5 % escalated to the street tier, above)
            inc["sources"][0]["evidence"] = [{"ts": ts, "snapshot": snapshot(inc["id"])}]
        out.append({"incident": inc, "change": "created", "ts": ts, "transition": inc["history"][0], "v": 1})
    return out


def snapshot(incident_id: str) -> str:
    return f"bench/{incident_id}.jpg"


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[-1] if len(xs) >= 20 else max(xs)


# ---------------------------------------------------------------------------------------- sink
def bench_sink(url: str, ceiling_url: str, raws: list[bytes], tz: Any) -> dict[str, float]:
    """Rows/s the sink writes (from Kafka record bytes: decode, check, rows of every table, upserts)
    against a plain batched INSERT of exactly those rows into the same tables of a fresh database on
    the same server (no decoding, no conflict handling): the database's own ceiling."""
    from gridwatch.store import tables as t

    engine = make_engine(url)
    migrate(engine, tz)
    store = Store(engine, tz)
    t0 = time.perf_counter()
    rows = 0
    for i in range(0, len(raws), BATCH):
        b = store.batch()
        for raw in raws[i:i + BATCH]:
            b.add_raw("incidents", raw)
        store.write(b)
        rows += len(b.versions) + len(b.latest) + len(b.areas) + len(b.joins)
    sink = rows / (time.perf_counter() - t0)
    engine.dispose()
    engine = make_engine(ceiling_url)
    migrate(engine, tz)
    batches = []
    for i in range(0, len(raws), BATCH):
        b = Store(engine, tz).batch()
        for raw in raws[i:i + BATCH]:
            b.add_raw("incidents", raw)
        batches.append(b)
    t0 = time.perf_counter()
    for b in batches:
        with engine.begin() as conn:
            for table, part in ((t.incident_versions, b.versions), (t.incidents, b.latest),
                                (t.incident_areas, b.areas), (t.report_incident, b.joins)):
                if part:
                    conn.execute(insert(table), list(part.values()))
    ceiling = rows / (time.perf_counter() - t0)
    engine.dispose()
    return {"sink_rows_per_s": round(sink), "raw_insert_rows_per_s": round(ceiling),
            "ratio": round(sink / ceiling, 3), "rows": rows, "records": len(raws)}


# ---------------------------------------------------------------------------------------- reads
def load(url: str, city: Any, n: int, tz: Any) -> float:
    engine = make_engine(url)
    migrate(engine, tz)
    store = Store(engine, tz)
    t0 = time.perf_counter()
    step = 5000
    for i in range(0, n, step):
        b = store.batch()
        for ch in make_changes(city, min(step, n - i), seed=10_000 + i // step):
            b.add_change(ch)
        store.write(b)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - t0


async def reads(url: str, city: Any, samples: int) -> dict[str, Any]:
    import tempfile
    from pathlib import Path

    from aiohttp.test_utils import TestClient, TestServer

    from gridwatch.web.server import create_app

    settings = load_settings()
    settings.store.url = url
    pictures = Path(tempfile.mkdtemp(prefix="gw-bench-evidence-"))  # the files of the first load batch's refs
    refs = [snapshot(f"inc-10000-{k}") for k in range(0, 5000, 100)]
    for ref in refs:
        (pictures / ref).parent.mkdir(parents=True, exist_ok=True)
        (pictures / ref).write_bytes(b"\xff\xd8")
    settings.web.evidence_dir = str(pictures)
    t0 = time.perf_counter()
    app = create_app(settings, city=city, kafka=False)
    async with TestClient(TestServer(app)) as client:
        r = await client.post("/api/login", json={"user": "city", "password": "city-demo"})
        token = (await r.json())["token"]
        h = {"Authorization": f"Bearer {token}"}
        r = await client.get("/api/incidents?limit=100", headers=h)
        first = await r.json()
        ready_s = time.perf_counter() - t0
        ids = [i["id"] for i in first["incidents"]]
        street = next(a.code for a in city.gridmap.areas("street"))
        months = (await (await client.get("/api/stats", headers=h)).json())["months"]
        month = months[1] if len(months) > 1 else months[0]
        timings: dict[str, list[float]] = {}

        async def timed(name: str, path: str) -> None:
            t = time.perf_counter()
            resp = await client.get(path, headers=h)
            await resp.read()
            assert resp.status == 200, (path, resp.status)
            timings.setdefault(name, []).append((time.perf_counter() - t) * 1000)

        for k in range(samples):
            await timed("list_city_first_page_ms", "/api/incidents?limit=100")
            await timed("list_open_red_ms", "/api/incidents?limit=100&status=open&level=red")
            await timed("list_category_ms", "/api/incidents?limit=100&category=streetlight")
            await timed("list_supervised_ms", "/api/incidents?limit=100&supervised=1")
            await timed("list_supervised_overdue_ms", "/api/incidents?limit=100&supervised=overdue")
            await timed("list_tier_ms", "/api/incidents?limit=100&tier=street")
            await timed("evidence_ms", f"/api/evidence/{refs[k % len(refs)]}")
            await timed("list_street_category_open_ms",
                        f"/api/incidents?limit=100&area={street}&category=manhole&status=open")
            await timed("detail_ms", f"/api/incidents/{ids[k % len(ids)]}")
            await timed("timeline_ms", f"/api/incidents/{ids[k % len(ids)]}/timeline")
            if k < max(5, samples // 10):  # a month of the whole city is the heavy one
                await timed("stats_month_city_ms", f"/api/stats?month={month}")
            await timed("stats_month_street_ms", f"/api/stats?month={month}&area={street}")
    return {"api_ready_s": round(ready_s, 3), "total": first["total"],
            **{k: round(p95(v), 1) for k, v in timings.items()},
            "samples": {k: len(v) for k, v in timings.items()}}


def main(argv: list[str]) -> None:
    p = bench_parser("store", __doc__)
    p.add_argument("--incidents", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--sink-records", type=int, default=20_000)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--sink-only", action="store_true", help="measure the sink row only (no load, no reads)")
    p.add_argument("--reads-url", default="", help="measure the reads on this already loaded PostgreSQL database "
                   "(loaded by this module's load(), e.g. once for several read runs) instead of loading one")
    args = p.parse_args(argv)
    import os
    from zoneinfo import ZoneInfo

    os.environ.setdefault("GRIDWATCH_DEMO_CREDENTIALS", "allow")  # the bench logs in with a demo account
    city = load_city()
    tz = ZoneInfo(city.timezone)
    raws = [json.dumps(c).encode() for c in make_changes(city, args.sink_records, seed=3)]
    pg = start_local_postgres()
    results: dict[str, Any] = {"incidents": 0 if args.sink_only else args.incidents, "sink_only": args.sink_only,
                               "sink_records": args.sink_records, "runs": []}
    try:
        admin = create_engine(pg.url, isolation_level="AUTOCOMMIT")
        for run in range(args.runs):
            with admin.connect() as c:
                c.execute(text(f"CREATE DATABASE sink{run}"))
                c.execute(text(f"CREATE DATABASE ceiling{run}"))
            base, folder = pg.url.rsplit("/", 1)[0], pg.datadir.parent
            r = {"sink_postgresql": bench_sink(f"{base}/sink{run}", f"{base}/ceiling{run}", raws, tz),
                 "sink_sqlite": bench_sink(f"sqlite:///{folder}/sink{run}.db", f"sqlite:///{folder}/ceiling{run}.db",
                                           raws, tz)}
            print(f"run {run + 1} sink: {r}", flush=True)
            results["runs"].append(r)
        if args.sink_only:
            pass
        elif args.reads_url:
            big = args.reads_url
            results["reads_url"] = "given (loaded before)"
        else:
            with admin.connect() as c:
                c.execute(text("CREATE DATABASE big"))
            big = pg.url.rsplit("/", 1)[0] + "/big"
            results["load_s"] = round(load(big, city, args.incidents, tz), 1)
            print(f"loaded {args.incidents} incidents in {results['load_s']} s", flush=True)
        for run in range(0 if args.sink_only else args.runs):
            r = asyncio.run(reads(big, city, args.samples))
            print(f"run {run + 1} reads: {r}", flush=True)
            results["runs"][run]["reads_postgresql"] = r
        admin.dispose()
    finally:
        pg.stop()
    write_results(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
