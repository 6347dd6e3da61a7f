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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from gridwatch.core.settings import Settings, embedded_store_path
from gridwatch.pipeline.schemas.incidents import LEVELS, STATUSES

from . import tables as t
from .counts import COUNTERS, FIGURES, KEY, MONTH_KEY, columns, counter_sums
from .evidence import evidence_keys
from .records import Batch, list_rank

log = logging.getLogger("gridwatch.store")
MIGRATIONS = Path(__file__).parent / "migrations"
CHUNK = 1000  # ids per IN list
COPY_MIN = 100  # rows from which a PostgreSQL upsert goes through COPY (Store._bulk)
WRITE_LOCK = 4711014  # PostgreSQL advisory lock of the incident writers (the counters' read-modify-write)


def store_url(settings: Settings) -> str:
    """``store.url``, or the embedded SQLite file of this topic prefix under the state folder."""
    if settings.store.url:
        return settings.store.url
    return f"sqlite:///{embedded_store_path(settings.kafka.topic_prefix)}"


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
def _migration_lock(engine: Engine) -> Iterator[Any]:
    """A transaction of one migrator at a time (the api and the workers may start together on a new database).

    The lock is held until the transaction has committed: released before (as it was), a second migrator read
    the version table before the first one's commit and ran the first migration again ("table already exists")."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(4711013)"))  # held until the commit
            yield conn
        return
    db = engine.url.database
    with contextlib.ExitStack() as stack:
        if db and db != ":memory:":
            f = stack.enter_context(open(f"{db}.migrate.lock", "w"))  # noqa: SIM115 - closed by the stack
            fcntl.flock(f, fcntl.LOCK_EX)
        yield stack.enter_context(engine.begin())


def migrate(engine: Engine, tz: ZoneInfo | None = None) -> None:
    """Bring the schema to the newest revision (Alembic, migrations/ in this package); with ``tz`` (the
    city's time zone) also fill the per-area counters if a migration left them stale, in the same
    transaction and under the same lock."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        meta = t.store_meta
        if tz is not None and conn.execute(select(meta.c.value).where(meta.c.key == "counts")).scalar() != "ready":
            n = recount(conn, tz)
            conn.execute(meta.update().where(meta.c.key == "counts").values(value="ready"))
            log.info("store: per-area counters filled from %d incidents", n)
        if conn.execute(select(meta.c.value).where(meta.c.key == "evidence")).scalar() == "stale":
            n = fill_evidence(conn)
            conn.execute(meta.update().where(meta.c.key == "evidence").values(value="ready"))
            log.info("store: evidence refs filed for %d incidents", n)


def copy_filters(conn: Any) -> None:
    """incident_areas' copies of the incident columns the list filters on (category group, tier,
    supervision), from the incidents (after a recount changed the counted columns)."""
    i, a = t.incidents, t.incident_areas
    conn.execute(a.update().where(a.c.incident_id == i.c.id).values(
        {c: i.c[c] for c in t.FILTER_COPIES}))


def fill_evidence(conn: Any, chunk: int = 5000) -> int:
    """incident_evidence from scratch, from the incidents' documents (migration 0003's fill; a repair)."""
    i, e = t.incidents, t.incident_evidence
    conn.execute(e.delete())
    last, n = "", 0
    while True:  # keyset chunks: bounded memory
        rows = conn.execute(select(i.c.id, i.c.doc).where(i.c.id > last).order_by(i.c.id).limit(chunk)).all()
        if not rows:
            break
        refs = [{"ref": k, "incident_id": r.id} for r in rows for k in evidence_keys(json.loads(r.doc)["incident"])]
        if refs:
            conn.execute(e.insert(), refs)
        last, n = rows[-1].id, n + len(rows)
    return n


def recount(conn: Any, tz: ZoneInfo, chunk: int = 5000) -> int:
    """The counters from scratch: the incidents' counted columns from their documents, then the
    counters summed in SQL (the migration's fill; a repair)."""
    if conn.dialect.name == "postgresql":  # no incident writer meanwhile
        conn.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
    i = t.incidents
    last, n = "", 0
    upd = i.update().where(i.c.id == bindparam("k")).values(
        {c: bindparam(c) for c in ("created_day", "overdue", "supervised", "supervised_overdue", "handled_ms",
                                   "rating")})
    while True:  # keyset chunks: bounded memory
        rows = conn.execute(select(i.c.id, i.c.doc).where(i.c.id > last).order_by(i.c.id).limit(chunk)).all()
        if not rows:
            break
        conn.execute(upd, [{"k": r.id, **columns(json.loads(r.doc)["incident"], tz)} for r in rows])
        last, n = rows[-1].id, n + len(rows)
    copy_filters(conn)
    sum_counts(conn)
    return n


def sum_counts(conn: Any) -> None:
    """area_counts and area_months from scratch, summed in SQL from the incidents' counted columns."""
    i, a = t.incidents, t.incident_areas
    by = [a.c.code, i.c.created_month, i.c.status, i.c.level, i.c.category_group]
    conn.execute(t.area_counts.delete())
    conn.execute(t.area_months.delete())
    conn.execute(insert(t.area_counts).from_select(
        list(KEY) + list(COUNTERS),
        select(*by, *counter_sums(i)).select_from(i.join(a, a.c.incident_id == i.c.id)).group_by(*by)))
    c = t.area_counts
    conn.execute(insert(t.area_months).from_select(
        list(MONTH_KEY) + list(COUNTERS),
        select(c.c.code, c.c.month, *(func.sum(c.c[k]) for k in COUNTERS)).group_by(c.c.code, c.c.month)))


def open_store(settings: Settings, tz: str | ZoneInfo = "UTC", *, url: str | None = None) -> Store:
    """The store of these settings, migrated."""
    store = Store(make_engine(url or store_url(settings)), tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz))
    migrate(store.engine, store.tz)
    return store


TOTAL_CAP = 10_000  # a list total counted row by row stops here ("10,000+")
Cursor = tuple[int, int, str]  # (list_rank, updated_ts, incident id) of a page's last row


@dataclass
class Page:
    """A page of the console's list: total (``exact`` False: at least that many), the incidents, and
    the cursor of the next page (None: this was the last)."""

    total: int
    exact: bool
    incidents: list[dict[str, Any]]
    next: Cursor | None


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
        self._sqls: dict[tuple[Any, ...], str] = {}

    def batch(self) -> Batch:
        return Batch(self.tz)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------------------ writes
    def write(self, batch: Batch, offsets: Iterable[tuple[str, str, int, int]] = ()) -> None:
        """One transaction: every row of ``batch``, then (consumer, topic, partition, next offset)."""
        offs = {(c, tp, p): {"consumer": c, "topic": tp, "partition": p, "next_offset": o} for c, tp, p, o in offsets}
        if batch.empty() and not offs:
            return
        with self.engine.begin() as conn:
            if batch.latest and self.engine.dialect.name == "postgresql":
                # one incident writer at a time (the store agent, the api's feed): the counters' old
                # contributions read below must be the ones the upsert replaces
                conn.execute(text(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
            # SQLite: this first write takes the database's write lock, so the reads below are current
            self._upsert(conn, t.incident_versions, batch.versions, ("id", "version"))
            stale = self._count(conn, batch) if batch.latest else set()
            self._upsert(conn, t.incidents, batch.latest, ("id",), newer="version")
            self._upsert(conn, t.incident_areas, [r for r in batch.areas.values() if r["incident_id"] not in stale],
                         ("code", "incident_id"), newer="version")
            added = [iid for iid in batch.latest if iid not in stale]  # the new versions join the counters
            self._file_evidence(conn, batch, added)
            if added:  # summed here, from the documents in hand (cheaper than summing the rows just written in SQL)
                self._add_rows(conn, batch.counter_rows(stale))
            self._upsert(conn, t.report_incident, batch.joins, ("report_id",), update=("incident_id",))
            self._upsert(conn, t.reports, batch.reports, ("service_request_id",))
            self._upsert(conn, t.actions, batch.actions, ("id",))
            self._upsert(conn, t.grid_events, batch.events, ("id", "phase", "ts"))
            self._upsert(conn, t.consumer_offsets, offs, ("consumer", "topic", "partition"),
                         update=("next_offset",))

    def _count(self, conn: Any, batch: Batch) -> set[str]:
        """Before the incidents are upserted: the incidents the batch replaces leave the per-area counters
        (their stored version's sums, subtracted in SQL) and their areas (the new version may have moved).
        Returns the ids whose stored version is as new or newer: the batch changes nothing of those."""
        i = t.incidents
        ids = list(batch.latest)
        stored: dict[str, int] = {}
        for k in range(0, len(ids), CHUNK):
            stored.update((r.id, r.version) for r in conn.execute(select(i.c.id, i.c.version).where(i.c.id.in_(ids[k:k + CHUNK]))))
        stale = {iid for iid, v in stored.items() if v >= batch.latest[iid]["version"]}
        replaced = [iid for iid in stored if iid not in stale]
        for k in range(0, len(replaced), CHUNK):
            part = replaced[k:k + CHUNK]
            self._add_counts(conn, part, -1)
            conn.execute(t.incident_areas.delete().where(t.incident_areas.c.incident_id.in_(part)))
        return stale

    def _add_counts(self, conn: Any, ids: Any, sign: int = 1) -> None:
        """area_counts and area_months += ``sign`` x the sums of the stored incidents ``ids`` (a list or
        a select of ids), per area (SQL). On PostgreSQL one statement: the sums once, each table
        upserted from them (a data-modifying WITH)."""
        i, a = t.incidents, t.incident_areas
        by = [a.c.code, i.c.created_month, i.c.status, i.c.level, i.c.category_group]
        # the ids on both sides: each table's index, whatever the planner knows of their sizes
        sums = (select(*by, *counter_sums(i, sign)).select_from(i.join(a, a.c.incident_id == i.c.id))
                .where(i.c.id.in_(ids), a.c.incident_id.in_(ids))  # a WHERE: SQLite's INSERT .. SELECT .. ON CONFLICT
                .group_by(*by))

        def upsert(table: Any, keys: tuple[str, ...], rows: Any) -> Any:
            ins = self._insert(table).from_select(list(keys) + list(COUNTERS), rows)
            return ins.on_conflict_do_update(index_elements=list(keys),
                                             set_={k: table.c[k] + ins.excluded[k] for k in COUNTERS})

        if self.engine.dialect.name == "postgresql":
            d = sums.cte("d")
            months = (select(d.c.code, d.c.created_month, *(func.sum(d.c[k]) for k in COUNTERS))
                      .group_by(d.c.code, d.c.created_month))
            first = upsert(t.area_counts, KEY, select(d)).cte("up")
            conn.execute(upsert(t.area_months, MONTH_KEY, months).add_cte(first))
            return
        conn.execute(upsert(t.area_counts, KEY, sums))
        by = by[:len(MONTH_KEY)]
        conn.execute(upsert(t.area_months, MONTH_KEY,
                            select(*by, *counter_sums(i, sign)).select_from(i.join(a, a.c.incident_id == i.c.id))
                            .where(i.c.id.in_(ids), a.c.incident_id.in_(ids)).group_by(*by)))

    def _file_evidence(self, conn: Any, batch: Batch, ids: list[str]) -> None:
        """incident_evidence: the refs of the incidents ``ids`` (their new versions) replace their old ones."""
        e = t.incident_evidence
        for k in range(0, len(ids), CHUNK):
            conn.execute(e.delete().where(e.c.incident_id.in_(ids[k:k + CHUNK])))
        self._upsert(conn, e, [{"ref": ref, "incident_id": iid} for iid in ids for ref in batch.evidence[iid]],
                     ("ref", "incident_id"))

    def _add_rows(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        """area_counts and area_months += rows of (key..., counters...) (Batch.counter_rows), merged per
        (area, month) for area_months here."""
        if not rows:
            return
        months: dict[tuple[Any, Any], list[int]] = {}
        for r in rows:
            vec = months.get((r[0], r[1]))
            if vec is None:
                months[(r[0], r[1])] = list(r[len(KEY):])
            else:
                for n, v in enumerate(r[len(KEY):]):
                    vec[n] += v
        for table, keys, part in ((t.area_counts, KEY, rows),
                                  (t.area_months, MONTH_KEY, [(*k, *v) for k, v in months.items()])):
            self._bulk(conn, table, keys + COUNTERS, keys, part, add=COUNTERS)

    def _upsert(self, conn: Any, table: Any, rows: Any, keys: tuple[str, ...], *, newer: str = "",
                update: tuple[str, ...] = ()) -> None:
        """INSERT .. ON CONFLICT of ``rows`` (dicts of one shape). ``newer``: replace a stored row only
        with a higher value of that column; ``update``: these columns on conflict; else keep the stored
        row."""
        rows = list(rows.values()) if isinstance(rows, dict) else rows
        if not rows:
            return
        cols = tuple(rows[0])
        if newer:
            update = tuple(c for c in cols if c not in keys)
        self._bulk(conn, table, cols, keys, [tuple(r[c] for c in cols) for r in rows], update=update, newer=newer)

    def _bulk(self, conn: Any, table: Any, cols: tuple[str, ...], keys: tuple[str, ...], rows: list[tuple[Any, ...]],
              *, update: tuple[str, ...] = (), add: tuple[str, ...] = (), newer: str = "") -> None:
        """INSERT .. ON CONFLICT of ``rows`` (tuples of ``cols``): the driver's executemany (SQLAlchemy's
        per-row parameter handling cost more than the database's own work), or on PostgreSQL, for many
        rows with distinct keys, COPY into a temporary table and one INSERT .. SELECT .. ON CONFLICT from
        it (measured: the executemany's per-row round of the protocol cost more than the rows' writes).
        No two rows may share a key (one INSERT .. SELECT .. ON CONFLICT may not touch a row twice): the
        batch's rows are dicts keyed by their table's key."""
        if self.engine.dialect.name != "postgresql" or len(rows) < COPY_MIN:
            conn.exec_driver_sql(self._sql(table, cols, keys, update=update, add=add, newer=newer), rows)
            return
        q = self.engine.dialect.identifier_preparer.quote
        tmp = q(f"gw_bulk_{table.name}")
        with conn.connection.driver_connection.cursor() as cur:  # the same connection, so the same transaction
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {tmp} (LIKE {q(table.name)} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS")
            with cur.copy(f"COPY {tmp} ({', '.join(map(q, cols))}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        conn.exec_driver_sql(self._sql(table, cols, keys, update=update, add=add, newer=newer, source=tmp))

    def _sql(self, table: Any, cols: tuple[str, ...], keys: tuple[str, ...], *, update: tuple[str, ...] = (),
             add: tuple[str, ...] = (), newer: str = "", source: str = "") -> str:
        """The driver's INSERT .. ON CONFLICT text for these columns (cached: one per shape), of one row of
        parameters or, with ``source``, of every row of that table."""
        key = (table.name, cols, keys, update, add, newer, source)
        sql = self._sqls.get(key)
        if sql is None:
            mark = "?" if self.engine.dialect.name == "sqlite" else "%s"
            q = self.engine.dialect.identifier_preparer.quote  # "partition" is a keyword
            tb, names = q(table.name), ", ".join(map(q, cols))
            sets = [f"{q(c)} = excluded.{q(c)}" for c in update] + [f"{q(c)} = {tb}.{q(c)} + excluded.{q(c)}" for c in add]
            action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
            if newer:
                action += f" WHERE {tb}.{q(newer)} < excluded.{q(newer)}"
            rows = f"SELECT {names} FROM {source}" if source else f"VALUES ({', '.join([mark] * len(cols))})"
            sql = self._sqls[key] = f"INSERT INTO {tb} ({names}) {rows} ON CONFLICT ({', '.join(map(q, keys))}) {action}"
        return sql

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
             tier: str = "", categories: Iterable[str] = (), supervised: str = "", after: Cursor | None = None,
             cap: int = TOTAL_CAP) -> Page:
        """One page of the console's list under ``scope``: open before closed, red first, newest first
        (ties by id), walking the (code, list_rank, updated_ts, incident_id) index from ``after`` (the
        previous page's ``next``). ``categories``: category groups; ``supervised``: "1", "0" or
        "overdue"; ``tier``: the incident's handling tier. These filter on incident_areas' copies of the
        incident's columns, so a category group or a tier walks its own index (code, category_group |
        tier, list_rank, ...) and the supervised (overdue) ones a partial index of those rows only. The total comes
        from the per-area counters (exact) or, with a tier filter, from a count that stops at ``cap``
        (``exact`` False: "at least")."""
        i, a = t.incidents, t.incident_areas
        statuses, levels, categories = list(statuses), list(levels), list(categories)
        if "-" in statuses and len(statuses) == 1:  # the api's "matches nothing"
            return Page(0, True, [], None)
        cond = [a.c.code == scope]
        joined = bool(statuses or levels)
        if categories:
            cond.append(a.c.category_group.in_(categories))
        if supervised == "0":
            cond.append(a.c.supervised == 0)
        elif supervised == "overdue":  # the partial indexes' own predicates, as they are written there
            cond.append(a.c.supervised_overdue > literal_column("0"))
        elif supervised:
            cond.append(a.c.supervised > literal_column("0"))
        if statuses or levels:  # the list ranks these filters can have: a narrower index range
            ranks = [list_rank(s, lv) for s in statuses or STATUSES for lv in levels or LEVELS]
            cond.append(a.c.list_rank.between(min(ranks), max(ranks)))
        if statuses:
            cond.append(i.c.status.in_(statuses))
        if levels:
            cond.append(i.c.level.in_(levels))
        if tier:
            cond.append(a.c.tier == tier)

        def walk(*more: Any) -> Any:
            return (select(i.c.doc, a.c.list_rank, a.c.updated_ts, a.c.incident_id)
                    .join(a, a.c.incident_id == i.c.id).where(*cond, *more))

        order = (a.c.updated_ts.desc(), a.c.incident_id.desc())
        with self.engine.connect() as conn:
            rows: list[Any] = []
            if after is not None:  # the rest of the cursor's rank, then the ranks after it
                rank, upd, iid = after
                rows = conn.execute(walk(a.c.list_rank == rank, tuple_(a.c.updated_ts, a.c.incident_id) < (upd, iid))
                                    .order_by(*order).limit(limit)).all()
                if len(rows) < limit:
                    rows += conn.execute(walk(a.c.list_rank > rank).order_by(a.c.list_rank, *order)
                                         .limit(limit - len(rows))).all()
            else:
                rows = conn.execute(walk().order_by(a.c.list_rank, *order).limit(limit)).all()
            if not tier:
                total, exact = self._counted(conn, scope, statuses, levels, categories, supervised), True
            else:
                hits = select(literal(1)).select_from(a.join(i, a.c.incident_id == i.c.id) if joined else a)
                hits = hits.where(*cond).limit(cap + 1).subquery()
                total = conn.execute(select(func.count()).select_from(hits)).scalar() or 0
                total, exact = min(total, cap), total <= cap
        nxt = (rows[-1].list_rank, rows[-1].updated_ts, rows[-1].incident_id) if len(rows) == limit else None
        return Page(total, exact, [_doc(r.doc) for r in rows], nxt)

    def _counted(self, conn: Any, scope: str, statuses: list[str], levels: list[str],
                 categories: Iterable[str] = (), supervised: str = "") -> int:
        """Incidents under ``scope`` (any month) with these statuses, levels, category groups and
        supervision, from the counters (their n, supervised and supervised_overdue)."""
        categories = list(categories)
        c = t.area_counts if statuses or levels or categories else t.area_months
        what = {"overdue": c.c.supervised_overdue, "0": c.c.n - c.c.supervised, "": c.c.n}.get(supervised,
                                                                                             c.c.supervised)
        more = [c.c.category_group.in_(categories)] if categories else []
        q = select(func.coalesce(func.sum(what), 0)).where(c.c.code == scope, *self._count_filters(statuses, levels),
                                                            *more)
        return int(conn.execute(q).scalar() or 0)

    @staticmethod
    def _count_filters(statuses: Iterable[str], levels: Iterable[str]) -> list[Any]:
        c = t.area_counts
        statuses, levels = list(statuses), list(levels)
        return ([c.c.status.in_(statuses)] if statuses else []) + ([c.c.level.in_(levels)] if levels else [])

    def months(self, scope: str) -> list[str]:
        """Months (YYYY-MM, city time) with incidents under ``scope``, newest first (the counters)."""
        c = t.area_months
        q = select(c.c.month).where(c.c.code == scope, c.c.n > 0).order_by(c.c.month.desc())
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def month_counts(self, scope: str, month: str, *, statuses: Iterable[str] = (), levels: Iterable[str] = ()
                     ) -> list[dict[str, Any]]:
        """The counters of ``scope``'s incidents created in ``month``: one row per (status, level,
        category group) with incidents."""
        c = t.area_counts
        q = select(c.c.status, c.c.level, c.c.category_group, *(c.c[k] for k in COUNTERS)).where(
            c.c.code == scope, c.c.month == month, c.c.n > 0, *self._count_filters(statuses, levels))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def area_counts(self, codes: Iterable[str], month: str, *, statuses: Iterable[str] = (),
                    levels: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """Counters (days left out) of each of ``codes`` with incidents created in ``month`` (the rankings)."""
        statuses, levels = list(statuses), list(levels)
        c = t.area_counts if statuses or levels else t.area_months  # one row per area unless filtered
        codes = list(codes)
        if not codes:
            return {}
        q = (select(c.c.code, *(func.sum(c.c[k]).label(k) for k in FIGURES))
             .where(c.c.month == month, c.c.code.in_(codes), *self._count_filters(statuses, levels))
             .group_by(c.c.code).having(func.sum(c.c.n) > 0))
        with self.engine.connect() as conn:
            return {r.code: {k: int(getattr(r, k) or 0) for k in FIGURES} for r in conn.execute(q)}

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
        """Exact rows of ``table`` (a full count: tests and tools, not the api)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.metadata.tables[table])).scalar() or 0

    def estimate(self, table: str, exact_up_to: int = TOTAL_CAP) -> int:
        """Rows of ``table``: exact up to ``exact_up_to``, else the database's cheap estimate (PostgreSQL's
        planner statistics; SQLite's largest rowid). For ``/api/health``, which must not scan."""
        tb = t.metadata.tables[table]
        with self.engine.connect() as conn:
            few = select(literal(1)).select_from(tb).limit(exact_up_to + 1).subquery()
            n = int(conn.execute(select(func.count()).select_from(few)).scalar() or 0)
            if n <= exact_up_to:
                return n
            if self.engine.dialect.name == "postgresql":
                est = conn.execute(text("SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                   {"t": table}).scalar()
            else:
                est = conn.execute(text(f"SELECT max(rowid) FROM {table}")).scalar()
            return max(n, int(est or 0))

    def evidence_in_scope(self, ref: str, scope: str) -> bool:
        """Whether an incident under area ``scope`` references picture ``ref`` (its key as
        evidence.evidence_keys makes it): incident_evidence's key, then the incident's area row."""
        e, a = t.incident_evidence, t.incident_areas
        q = (select(literal(1)).select_from(e.join(a, a.c.incident_id == e.c.incident_id))
             .where(e.c.ref == ref, a.c.code == scope).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

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
            self._add_counts(conn, old, -1)  # they leave the counters too
            for table, col in ((t.incident_versions, "id"), (t.incident_areas, "incident_id"),
                               (t.report_incident, "incident_id"), (t.actions, "incident_id"),
                               (t.incident_evidence, "incident_id")):
                conn.execute(table.delete().where(table.c[col].in_(old)))
            n = conn.execute(i.delete().where(i.c.id.in_(old.scalar_subquery()))).rowcount
            conn.execute(t.reports.delete().where(t.reports.c.requested_ms < cutoff))
            conn.execute(t.grid_events.delete().where(t.grid_events.c.ts < cutoff))
        return n or 0
