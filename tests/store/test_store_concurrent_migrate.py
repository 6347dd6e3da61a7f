"""Several processes migrating one new SQLite store at once (the demo starts the api and two workers
together): each must find the schema whole, none may run a migration a second time."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from sqlalchemy import inspect

from gridwatch.store.db import make_engine, migrate


def _migrate(url: str, start: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    start.wait()
    migrate(make_engine(url))


def test_migrators_started_together_on_a_new_database_all_succeed(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    for round_ in range(4):  # the race needs the second migrator between the first one's DDL and its commit
        url = f"sqlite:///{tmp_path / f'store{round_}.db'}"
        start = ctx.Event()
        procs = [ctx.Process(target=_migrate, args=(url, start)) for _ in range(4)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"round {round_}: a migrator failed"
        assert "incident_versions" in inspect(make_engine(url)).get_table_names()
