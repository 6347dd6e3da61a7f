"""The first schema: incidents and their versions, areas, reports, actions, grid events, offsets.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

S, B, N, T = sa.String, sa.BigInteger, sa.Integer, sa.Text


def upgrade() -> None:
    op.create_table("incident_versions", sa.Column("id", S(80), primary_key=True),
                    sa.Column("version", N, primary_key=True), sa.Column("ts", B, nullable=False),
                    sa.Column("change", S(40), nullable=False), sa.Column("doc", T, nullable=False))
    op.create_table("incidents", sa.Column("id", S(80), primary_key=True), sa.Column("version", N, nullable=False),
                    sa.Column("status", S(20), nullable=False), sa.Column("level", S(10), nullable=False),
                    sa.Column("category_group", S(60), nullable=False), sa.Column("tier", S(20), nullable=False),
                    sa.Column("grid_code", S(40), nullable=False), sa.Column("created_ts", B, nullable=False),
                    sa.Column("created_month", S(7), nullable=False), sa.Column("updated_ts", B, nullable=False),
                    sa.Column("closed_ts", B), sa.Column("list_rank", N, nullable=False),
                    sa.Column("doc", T, nullable=False))
    op.create_index("ix_incidents_month", "incidents", ["created_month", "status"])
    op.create_index("ix_incidents_updated", "incidents", ["updated_ts"])
    op.create_index("ix_incidents_status_level", "incidents", ["status", "level", "category_group"])
    op.create_table("incident_areas", sa.Column("code", S(40), primary_key=True),
                    sa.Column("incident_id", S(80), primary_key=True), sa.Column("version", N, nullable=False),
                    sa.Column("created_month", S(7), nullable=False), sa.Column("updated_ts", B, nullable=False),
                    sa.Column("list_rank", N, nullable=False))
    op.create_index("ix_areas_month", "incident_areas", ["code", "created_month"])
    op.create_index("ix_areas_list", "incident_areas", ["code", "list_rank", sa.text("updated_ts DESC")])
    op.create_table("reports", sa.Column("service_request_id", S(80), primary_key=True),
                    sa.Column("service_code", S(60), nullable=False), sa.Column("requested_ms", B, nullable=False),
                    sa.Column("grid_code", S(40), nullable=False), sa.Column("doc", T, nullable=False))
    op.create_index("ix_reports_requested", "reports", ["requested_ms", "service_code"])
    op.create_table("report_incident", sa.Column("report_id", S(80), primary_key=True),
                    sa.Column("incident_id", S(80), nullable=False))
    op.create_index("ix_report_incident_incident_id", "report_incident", ["incident_id"])
    op.create_table("actions", sa.Column("id", S(80), primary_key=True), sa.Column("incident_id", S(80), nullable=False),
                    sa.Column("action", S(30), nullable=False), sa.Column("ts", B, nullable=False),
                    sa.Column("doc", T, nullable=False))
    op.create_index("ix_actions_incident", "actions", ["incident_id", "ts"])
    op.create_table("grid_events", sa.Column("id", S(120), primary_key=True), sa.Column("phase", S(20), primary_key=True),
                    sa.Column("ts", B, primary_key=True), sa.Column("type", S(60), nullable=False),
                    sa.Column("grid_code", S(40), nullable=False), sa.Column("doc", T, nullable=False))
    op.create_index("ix_events_grid_ts", "grid_events", ["grid_code", "ts"])
    op.create_table("consumer_offsets", sa.Column("consumer", S(80), primary_key=True),
                    sa.Column("topic", S(200), primary_key=True), sa.Column("partition", N, primary_key=True),
                    sa.Column("next_offset", B, nullable=False))


def downgrade() -> None:
    for t in ("consumer_offsets", "grid_events", "actions", "report_incident", "reports", "incident_areas",
              "incidents", "incident_versions"):
        op.drop_table(t)
