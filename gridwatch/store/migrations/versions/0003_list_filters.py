"""The console list's filters as index walks: incident_areas gains copies of the incident's
category group, tier and supervision flags, with an index per filter (per category group, per tier,
and partial ones of the supervised and of the overdue supervised incidents); incident_evidence (the pictures each incident
references, for /api/evidence's scope check).

The copies are filled here from the incidents' columns (SQL). A store whose counted columns are still
stale (0002 just ran) gets them again from the recount at the first open (gridwatch.store.db.migrate),
which copies them after it has computed them. incident_evidence is filled from the stored documents at
the first open as well (store_meta "evidence": "stale" until then).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COPIED = ("category_group", "tier", "supervised", "supervised_overdue")
ORDER = ["list_rank", sa.text("updated_ts DESC"), sa.text("incident_id DESC")]


def upgrade() -> None:
    S = sa.String
    with op.batch_alter_table("incident_areas") as b:
        b.add_column(sa.Column("category_group", S(60), nullable=False, server_default=""))
        b.add_column(sa.Column("tier", S(20), nullable=False, server_default=""))
        b.add_column(sa.Column("supervised", sa.Integer, nullable=False, server_default="0"))
        b.add_column(sa.Column("supervised_overdue", sa.Integer, nullable=False, server_default="0"))
    bind = op.get_bind()
    fill_copies(bind)
    op.create_index("ix_areas_category", "incident_areas", ["code", "category_group", *ORDER])
    op.create_index("ix_areas_tier", "incident_areas", ["code", "tier", *ORDER])
    op.create_index("ix_areas_supervised", "incident_areas", ["code", *ORDER],
                    sqlite_where=sa.text("supervised > 0"), postgresql_where=sa.text("supervised > 0"))
    op.create_index("ix_areas_supervised_overdue", "incident_areas", ["code", *ORDER],
                    sqlite_where=sa.text("supervised_overdue > 0"), postgresql_where=sa.text("supervised_overdue > 0"))
    op.create_table("incident_evidence", sa.Column("ref", S(500), primary_key=True),
                    sa.Column("incident_id", S(80), primary_key=True))
    op.create_index("ix_evidence_incident", "incident_evidence", ["incident_id"])
    meta = sa.table("store_meta", sa.column("key", S), sa.column("value", S))
    op.bulk_insert(meta, [{"key": "evidence", "value": "stale"}])


def fill_copies(bind: sa.engine.Connection) -> None:
    """incident_areas' copies from the incidents' columns (an UPDATE .. FROM on both engines)."""
    cols = ", ".join(f"{c} = incidents.{c}" for c in COPIED)
    bind.execute(sa.text(f"UPDATE incident_areas SET {cols} FROM incidents "
                         "WHERE incidents.id = incident_areas.incident_id"))


def downgrade() -> None:
    op.execute("DELETE FROM store_meta WHERE key = 'evidence'")
    op.drop_index("ix_evidence_incident", table_name="incident_evidence")
    op.drop_table("incident_evidence")
    for name in ("ix_areas_supervised_overdue", "ix_areas_supervised", "ix_areas_tier", "ix_areas_category"):
        op.drop_index(name, table_name="incident_areas")
    with op.batch_alter_table("incident_areas") as b:
        for c in COPIED:
            b.drop_column(c)
