"""The store: engine from settings, migrations at open, idempotent batch writes, the api's queries.

One interface, two engines: SQLite (embedded, WAL) and PostgreSQL. Writes are upserts by id and
version (``ON CONFLICT``), so a redelivered record or a re-run rebuild leaves exactly one row per
id/version; the latest-incident row only moves forward in version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from gridwatch.core.settings import STATE_DIR, Settings

from . import tables as t
from .records import Batch

log = logging.getLogger("gridwatch.store")
MIGRATIONS = Path(__file__).parent / "migrations"


def store_url(settings: Settings) -> str:
    """``store.url``, or the embedded SQLite file of this topic prefix under the state folder."""
    if settings.store.url:
        return settings.store.url
    return f"sqlite:///{STATE_DIR / f'store-{settings.kafka.topic_prefix}.db'}"


def make_engine(url: str) -> Engine:
    if url in ("sqlite://", "sqlite:///:memory:"):  # one shared in-memory database (unit tests)
        from sqlalchemy.pool import StaticPool

        return create_engine("sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")  # the api's feed and the store agent share the file
            cur.close()
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8)


@contextlib.contextmanager
def _migration_lock(engine: Engine, conn: Any) -> Iterator[None]:
    """One migrator at a time (the api and a worker may start together on a new database)."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if not db or db == ":memory:":
            yield
            return
        with open(f"{db}.migrate.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(4711013)"))
        yield


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (Alembic, migrations/ in this package)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn, _migration_lock(engine, conn):
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_store(settings: Settings, tz: str | ZoneInfo = "UTC", *, url: str | None = None) -> Store:
    """The store of these settings, migrated."""
    store = Store(make_engine(url or store_url(settings)), tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz))
    migrate(store.engine)
    return store


def _doc(raw: str) -> dict[str, Any]:
    """The incident of a stored change record, with its area codes (``_codes``) for scope checks."""
    inc = json.loads(raw)["incident"]
    inc["_codes"] = [x["code"] for x in inc.get("tiers", [])]
    return inc


class Store:
    """Writes batches, answers the api's queries. Thread-safe (the engine's pool); call from a thread
    (``asyncio.to_thread``) where a query may be slow."""

    def __init__(self, engine: Engine, tz: ZoneInfo) -> None:
        self.engine = engine
        self.tz = tz
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert

    def batch(self) -> Batch:
        return Batch(self.tz)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------ writes
    def write(self, batch: Batch, offsets: Iterable[tuple[str, str, int, int]] = ()) -> None:
        """One transaction: every row of ``batch``, then (consumer, topic, partition, next offset)."""
        offs = [{"consumer": c, "topic": tp, "partition": p, "next_offset": o} for c, tp, p, o in offsets]
        if batch.empty() and not offs:
            return
        with self.engine.begin() as conn:
            self._upsert(conn, t.incident_versions, batch.versions, ("id", "version"))
            self._upsert(conn, t.incidents, batch.latest, ("id",), newer="version")
            self._upsert(conn, t.incident_areas, batch.areas, ("code", "incident_id"), newer="version")
            self._upsert(conn, t.report_incident, batch.joins, ("report_id",), update=("incident_id",))
            self._upsert(conn, t.reports, batch.reports, ("service_request_id",))
            self._upsert(conn, t.actions, batch.actions, ("id",))
            self._upsert(conn, t.grid_events, batch.events, ("id", "phase", "ts"))
            self._upsert(conn, t.consumer_offsets, offs, ("consumer", "topic", "partition"),
                         update=("next_offset",))

    def _upsert(self, conn: Any, table: Any, rows: Any, keys: tuple[str, ...], *, newer: str = "",
                update: tuple[str, ...] = ()) -> None:
        rows = list(rows.values()) if isinstance(rows, dict) else rows
        if not rows:
            return
        ins = self._insert(table)
        if newer:  # replace the row only with a newer one
            cols = [c.name for c in table.columns if c.name not in keys]
            stmt = ins.on_conflict_do_update(index_elements=list(keys), set_={c: ins.excluded[c] for c in cols},
                                             where=table.c[newer] < ins.excluded[newer])
        elif update:
            stmt = ins.on_conflict_do_update(index_elements=list(keys), set_={c: ins.excluded[c] for c in update})
        else:
            stmt = ins.on_conflict_do_nothing(index_elements=list(keys))
        conn.execute(stmt, rows)

    def offsets(self, consumer: str) -> dict[tuple[str, int], int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.consumer_offsets).where(t.consumer_offsets.c.consumer == consumer))
            return {(r.topic, r.partition): r.next_offset for r in rows}

    # ------------------------------------------------------------------------------ incidents
    def incident(self, incident_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            raw = conn.execute(select(t.incidents.c.doc).where(t.incidents.c.id == incident_id)).scalar()
        return _doc(raw) if raw else None

    def incidents(self, scope: str, *, statuses: Iterable[str] = (), levels: Iterable[str] = (),
                  tier: str = "", month: str = "", categories: Iterable[str] = ()) -> list[dict[str, Any]]:
        """Incidents under area ``scope`` (any tier code), filtered in SQL, as documents."""
        i, a = t.incidents, t.incident_areas
        q = select(i.c.doc).join(a, a.c.incident_id == i.c.id).where(a.c.code == scope)
        if month:
            q = q.where(a.c.created_month == month)
        for col, vals in ((i.c.status, statuses), (i.c.level, levels), (i.c.category_group, categories)):
            vals = list(vals)
            if vals:
                q = q.where(col.in_(vals))
        if tier:
            q = q.where(i.c.tier == tier)
        with self.engine.connect() as conn:
            return [_doc(raw) for raw in conn.execute(q).scalars()]

    def page(self, scope: str, limit: int, *, statuses: Iterable[str] = (), levels: Iterable[str] = (),
             tier: str = "") -> tuple[int, list[dict[str, Any]]]:
        """(total, the first ``limit``) of the console's list under ``scope``: open before closed, red
        first, newest first, walking the (code, list_rank, updated_ts) index."""
        i, a = t.incidents, t.incident_areas
        cond = [a.c.code == scope]
        statuses, levels = list(statuses), list(levels)
        joined = bool(statuses or levels or tier)
        if statuses:
            cond.append(i.c.status.in_(statuses))
        if levels:
            cond.append(i.c.level.in_(levels))
        if tier:
            cond.append(i.c.tier == tier)
        rows = (select(i.c.doc).join(a, a.c.incident_id == i.c.id).where(*cond)
                .order_by(a.c.list_rank, a.c.updated_ts.desc()).limit(limit))
        count = select(func.count()).select_from(a.join(i, a.c.incident_id == i.c.id) if joined else a).where(*cond)
        with self.engine.connect() as conn:
            return conn.execute(count).scalar() or 0, [_doc(raw) for raw in conn.execute(rows).scalars()]

    def months(self, scope: str) -> list[str]:
        """Months (YYYY-MM, city time) with incidents under ``scope``, newest first."""
        a = t.incident_areas
        q = select(a.c.created_month).where(a.c.code == scope).distinct().order_by(a.c.created_month.desc())
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def timeline(self, incident_id: str) -> list[dict[str, Any]]:
        """Every stored version of an incident, oldest first (the change records)."""
        v = t.incident_versions
        q = select(v.c.doc).where(v.c.id == incident_id).order_by(v.c.version)
        with self.engine.connect() as conn:
            return [json.loads(raw) for raw in conn.execute(q).scalars()]

    def versions(self) -> set[tuple[str, int]]:
        """Every (incident id, version) stored (tests and checks)."""
        v = t.incident_versions
        with self.engine.connect() as conn:
            return {(r.id, r.version) for r in conn.execute(select(v.c.id, v.c.version))}

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.metadata.tables[table])).scalar() or 0

    # ------------------------------------------------------------------------------ reports
    def report(self, rid: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            raw = conn.execute(select(t.reports.c.doc).where(t.reports.c.service_request_id == rid)).scalar()
        return json.loads(raw) if raw else None

    def reports_by_id(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        ids = list(set(ids))
        if not ids:
            return {}
        r = t.reports
        with self.engine.connect() as conn:
            rows = conn.execute(select(r.c.doc).where(r.c.service_request_id.in_(ids))).scalars()
            return {d["service_request_id"]: d for d in map(json.loads, rows)}

    def reports_between(self, lo: int, hi: int, codes: Iterable[str] = (), limit: int | None = None
                        ) -> list[dict[str, Any]]:
        """Reports requested in [lo, hi] ms, newest first (ties by id)."""
        r = t.reports
        q = select(r.c.doc).where(r.c.requested_ms.between(lo, hi))
        codes = list(codes)
        if codes:
            q = q.where(r.c.service_code.in_(codes))
        q = q.order_by(r.c.requested_ms.desc(), r.c.service_request_id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [json.loads(raw) for raw in conn.execute(q).scalars()]

    def incident_of_report(self, rid: str) -> dict[str, Any] | None:
        j, i = t.report_incident, t.incidents
        q = select(i.c.doc).join(j, j.c.incident_id == i.c.id).where(j.c.report_id == rid)
        with self.engine.connect() as conn:
            raw = conn.execute(q).scalar()
        return _doc(raw) if raw else None

    # ------------------------------------------------------------------------------ retention
    def purge(self, years: int, now_ms: int | None = None) -> int:
        """Delete case files closed more than ``years`` ago (incident, versions, areas, report joins),
        and reports, actions and grid events older than that. Open cases are kept whatever their age."""
        import time

        cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(years * 365.25 * 86_400_000)
        i = t.incidents
        with self.engine.begin() as conn:
            old = select(i.c.id).where(i.c.closed_ts.is_not(None), i.c.closed_ts < cutoff)
            for table, col in ((t.incident_versions, "id"), (t.incident_areas, "incident_id"),
                               (t.report_incident, "incident_id"), (t.actions, "incident_id")):
                conn.execute(table.delete().where(table.c[col].in_(old)))
            n = conn.execute(i.delete().where(i.c.id.in_(old.scalar_subquery()))).rowcount
            conn.execute(t.reports.delete().where(t.reports.c.requested_ms < cutoff))
            conn.execute(t.grid_events.delete().where(t.grid_events.c.ts < cutoff))
        return n or 0
