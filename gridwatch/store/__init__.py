"""The system of record: incidents with every version (their timeline), resident reports, operator
actions and grid events in a SQL database (SQLite embedded, PostgreSQL for deployments).

Kafka is the spine, not the archive: topics keep days, case files (一案一档) are kept for years. The
store sink (agents/sinks/store.py) and the api's live feed write here with idempotent upserts; the
api reads here. Schema: tables.py (documented in docs/store.md); migrations: migrations/ (Alembic).
"""

from .db import Store, open_store, store_url

__all__ = ["Store", "open_store", "store_url"]
