"""Per-area monthly counters (area_counts by status, level and category; area_months per area and
month) for the statistics and the list's total, the incident
columns they are summed from, store_meta; the console list's index gains the incident id (a stable
order for keyset pages).

The new incident columns and the counters are filled from the stored incidents right after this
migration, in the same transaction and under the same lock (gridwatch.store.db.migrate -> recount):
the day of month is in the city's time zone, which the migration itself does not know. Until then
store_meta says "stale".

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# frozen copy of the counter columns as of this revision (gridwatch.store.counts.COUNTERS)
COUNTERS = (("n", "work", "done", "work_overdue", "open_overdue", "supervised", "supervised_overdue", "handled_n", "handled_ms",
             "rated") + tuple(f"rating_{r}" for r in range(1, 6)) + tuple(f"d{d:02d}" for d in range(1, 32)))


def upgrade() -> None:
    S = sa.String
    op.create_table(
        "area_counts", sa.Column("code", S(40), primary_key=True), sa.Column("month", S(7), primary_key=True),
        sa.Column("status", S(20), primary_key=True), sa.Column("level", S(10), primary_key=True),
        sa.Column("category_group", S(60), primary_key=True),
        *[sa.Column(c, sa.BigInteger if c == "handled_ms" else sa.Integer, nullable=False, server_default="0")
          for c in COUNTERS])
    op.create_table(
        "area_months", sa.Column("code", S(40), primary_key=True), sa.Column("month", S(7), primary_key=True),
        *[sa.Column(c, sa.BigInteger if c == "handled_ms" else sa.Integer, nullable=False, server_default="0")
          for c in COUNTERS])
    for name in ("created_day", "overdue", "supervised", "supervised_overdue"):
        op.add_column("incidents", sa.Column(name, sa.Integer, nullable=False, server_default="0"))
    op.add_column("incidents", sa.Column("handled_ms", sa.BigInteger))
    op.add_column("incidents", sa.Column("rating", sa.Integer))
    meta = op.create_table("store_meta", sa.Column("key", S(40), primary_key=True),
                           sa.Column("value", S(200), nullable=False))
    op.bulk_insert(meta, [{"key": "counts", "value": "stale"}])
    op.drop_index("ix_areas_list", table_name="incident_areas")
    op.create_index("ix_areas_list", "incident_areas",
                    ["code", "list_rank", sa.text("updated_ts DESC"), sa.text("incident_id DESC")])
    op.create_index("ix_areas_incident", "incident_areas", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_areas_incident", table_name="incident_areas")
    op.drop_index("ix_areas_list", table_name="incident_areas")
    op.create_index("ix_areas_list", "incident_areas", ["code", "list_rank", sa.text("updated_ts DESC")])
    op.drop_table("store_meta")
    op.drop_table("area_counts")
    op.drop_table("area_months")
    with op.batch_alter_table("incidents") as b:
        for name in ("created_day", "overdue", "supervised", "supervised_overdue", "handled_ms", "rating"):
            b.drop_column(name)
