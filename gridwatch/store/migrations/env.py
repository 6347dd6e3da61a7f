"""Alembic environment of the store: run by gridwatch.store.db.migrate on a connection it passes in
(``config.attributes["connection"]``), or by the ``alembic`` command with ``sqlalchemy.url`` set."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from gridwatch.store.tables import metadata

conn = context.config.attributes.get("connection")
if conn is None:
    with create_engine(context.config.get_main_option("sqlalchemy.url") or "").begin() as c:
        context.configure(connection=c, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
