"""The store's tables (SQLAlchemy Core), the one description Alembic's migrations are checked against.

Documents are kept whole as JSON text (``doc``) next to the columns the queries filter and sort on,
so a new field in a record needs no migration, and every query has an index (see docs/store.md).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

from .counts import COUNTERS

metadata = MetaData()

# Every version of every incident (the change record as produced): the case file's timeline.
incident_versions = Table(
    "incident_versions", metadata,
    Column("id", String(80), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("ts", BigInteger, nullable=False),  # event time of the change (ms)
    Column("change", String(40), nullable=False),
    Column("doc", Text, nullable=False),  # the IncidentChange as JSON
)

# The latest version of each incident, with the columns lists, filters and statistics use.
incidents = Table(
    "incidents", metadata,
    Column("id", String(80), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("level", String(10), nullable=False),
    Column("category_group", String(60), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("grid_code", String(40), nullable=False),
    Column("created_ts", BigInteger, nullable=False),
    Column("created_month", String(7), nullable=False),  # YYYY-MM in the city's time zone
    Column("updated_ts", BigInteger, nullable=False),
    Column("closed_ts", BigInteger),
    Column("list_rank", Integer, nullable=False),  # console order: open before closed, red before blue
    Column("doc", Text, nullable=False),  # the newest IncidentChange as JSON (its "incident" is the case)
    # what the per-area counters sum (counts.columns): day of month created (city time), 0/1 flags,
    # handling time (ms; resolved, evaluated or closed cases with a resolved_ts), rating (1-5)
    Column("created_day", Integer, nullable=False, server_default="0"),
    Column("overdue", Integer, nullable=False, server_default="0"),
    Column("supervised", Integer, nullable=False, server_default="0"),
    Column("supervised_overdue", Integer, nullable=False, server_default="0"),
    Column("handled_ms", BigInteger),
    Column("rating", Integer),
    Index("ix_incidents_month", "created_month", "status"),
    Index("ix_incidents_updated", "updated_ts"),
    Index("ix_incidents_status_level", "status", "level", "category_group"),
)

# Area codes (city .. grid) of each incident: scope and area filters, by tier code.
FILTER_COPIES = ("category_group", "tier", "supervised", "supervised_overdue")  # incidents -> incident_areas
incident_areas = Table(
    "incident_areas", metadata,
    Column("code", String(40), primary_key=True),
    Column("incident_id", String(80), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("created_month", String(7), nullable=False),
    Column("updated_ts", BigInteger, nullable=False),
    Column("list_rank", Integer, nullable=False),
    # copies of the incident's columns the list filters on (FILTER_COPIES), so its filtered pages are
    # index walks too
    Column("category_group", String(60), nullable=False, server_default=""),
    Column("tier", String(20), nullable=False, server_default=""),
    Column("supervised", Integer, nullable=False, server_default="0"),
    Column("supervised_overdue", Integer, nullable=False, server_default="0"),
    Index("ix_areas_month", "code", "created_month"),
    Index("ix_areas_incident", "incident_id"),  # an incident's areas: the counters' swap, purge
)
# the console's pages by scope: open before closed, red first, newest first, then by id (an index walk;
# the id makes the order total, for keyset pages); the same order per category group, per tier, and
# of the supervised (and of the overdue supervised) incidents only: partial indexes, a few per cent of the rows
_ORDER = (incident_areas.c.list_rank, incident_areas.c.updated_ts.desc(), incident_areas.c.incident_id.desc())
Index("ix_areas_list", incident_areas.c.code, *_ORDER)
Index("ix_areas_category", incident_areas.c.code, incident_areas.c.category_group, *_ORDER)
Index("ix_areas_tier", incident_areas.c.code, incident_areas.c.tier, *_ORDER)
Index("ix_areas_supervised", incident_areas.c.code, *_ORDER, sqlite_where=incident_areas.c.supervised > 0,
      postgresql_where=incident_areas.c.supervised > 0)
Index("ix_areas_supervised_overdue", incident_areas.c.code, *_ORDER,
      sqlite_where=incident_areas.c.supervised_overdue > 0, postgresql_where=incident_areas.c.supervised_overdue > 0)

# Pictures (snapshot refs, residents' media URLs) each incident's newest version references: what
# /api/evidence checks an operator's scope against (through the incident's areas).
incident_evidence = Table(
    "incident_evidence", metadata,
    Column("ref", String(500), primary_key=True),
    Column("incident_id", String(80), primary_key=True),
    Index("ix_evidence_incident", "incident_id"),  # a new version's refs replace the old ones
)

reports = Table(
    "reports", metadata,
    Column("service_request_id", String(80), primary_key=True),
    Column("service_code", String(60), nullable=False),
    Column("requested_ms", BigInteger, nullable=False),
    Column("grid_code", String(40), nullable=False),
    Column("doc", Text, nullable=False),  # the ResidentReport as JSON
    Index("ix_reports_requested", "requested_ms", "service_code"),
)

# Which incident a report joined (latest incident version naming it wins).
report_incident = Table(
    "report_incident", metadata,
    Column("report_id", String(80), primary_key=True),
    Column("incident_id", String(80), nullable=False, index=True),
)

actions = Table(
    "actions", metadata,
    Column("id", String(80), primary_key=True),
    Column("incident_id", String(80), nullable=False),
    Column("action", String(30), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("doc", Text, nullable=False),
    Index("ix_actions_incident", "incident_id", "ts"),
)

grid_events = Table(
    "grid_events", metadata,
    Column("id", String(120), primary_key=True),
    Column("phase", String(20), primary_key=True),
    Column("ts", BigInteger, primary_key=True),
    Column("type", String(60), nullable=False),
    Column("grid_code", String(40), nullable=False),
    Column("doc", Text, nullable=False),
    Index("ix_events_grid_ts", "grid_code", "ts"),
)

# Where a consumer that writes here (the api's live feed) resumes; written with its rows.
consumer_offsets = Table(
    "consumer_offsets", metadata,
    Column("consumer", String(80), primary_key=True),
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)

# Per-area monthly counters (counts.py): what a month's statistics and the list's total read. One row
# per (area code, month, status, level, category group).
area_counts = Table(
    "area_counts", metadata,
    Column("code", String(40), primary_key=True),
    Column("month", String(7), primary_key=True),
    Column("status", String(20), primary_key=True),
    Column("level", String(10), primary_key=True),
    Column("category_group", String(60), primary_key=True),
    *[Column(c, BigInteger if c == "handled_ms" else Integer, nullable=False, server_default="0")
      for c in COUNTERS],
)

# The same counters per (area code, month), all statuses, levels and categories together: what the
# rankings (hundreds of areas), the months list and the list's total read, one row per area.
area_months = Table(
    "area_months", metadata,
    Column("code", String(40), primary_key=True),
    Column("month", String(7), primary_key=True),
    *[Column(c, BigInteger if c == "handled_ms" else Integer, nullable=False, server_default="0")
      for c in COUNTERS],
)

# Facts about the store itself; "counts": "ready" once area_counts holds every incident's contribution
# (after migration 0002 it is "stale" until the first open, which knows the city's time zone, fills it);
# "evidence": "ready" once incident_evidence holds every stored incident's refs (after 0003, the first open).
store_meta = Table(
    "store_meta", metadata,
    Column("key", String(40), primary_key=True),
    Column("value", String(200), nullable=False),
)
