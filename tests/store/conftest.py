"""Store fixtures: a real PostgreSQL server once per session (initdb + pg_ctl, Debian's binaries that
``./run setup`` installs), and a fresh database per test on each engine (``store_url``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from gridwatch.store.pg_local import LocalPostgres, start_local_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    pg = start_local_postgres()
    yield pg
    pg.stop()


def fresh_pg_database(pg: LocalPostgres) -> str:
    name = f"t{uuid.uuid4().hex[:12]}"
    eng = create_engine(pg.url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return pg.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new empty database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return fresh_pg_database(request.getfixturevalue("postgres"))
