"""A pipeline with a made-up topic prefix deletes that prefix's embedded store once it is gone; a pipeline given a
prefix (a namespace someone may read again) leaves its store alone."""

from __future__ import annotations

import gc
from pathlib import Path

from gridwatch.core.procs import Pipeline


def store_files(state: Path, prefix: str) -> list[Path]:
    names = [f"store-{prefix}.db", f"store-{prefix}.db-wal", f"store-{prefix}.db.migrate.lock",
             f"store-{prefix}-r1x.db"]
    for n in names:
        (state / n).write_bytes(b"x")
    return [state / n for n in names]


def test_a_made_up_prefix_takes_its_store_with_it(tmp_path: Path) -> None:
    env = {"GRIDWATCH_STATE_DIR": str(tmp_path)}
    pipe = Pipeline("kafka://127.0.0.1:1", "mqtt://127.0.0.1:1", tmp_path, env=env)
    files = store_files(tmp_path, pipe.prefix)
    other = tmp_path / "store-gw.db"
    other.write_bytes(b"live")
    assert all(f.exists() for f in files)  # the premise: the pipeline alive keeps them
    del pipe
    gc.collect()
    assert [f.name for f in files if f.exists()] == []
    assert other.read_bytes() == b"live"  # another namespace's store is not touched


def test_a_given_prefix_keeps_its_store(tmp_path: Path) -> None:
    env = {"GRIDWATCH_STATE_DIR": str(tmp_path)}
    pipe = Pipeline("kafka://127.0.0.1:1", "mqtt://127.0.0.1:1", tmp_path, prefix="kept1", env=env)
    files = store_files(tmp_path, "kept1")
    del pipe
    gc.collect()
    assert all(f.exists() for f in files)


def test_a_configured_store_url_means_no_file_is_deleted(tmp_path: Path) -> None:
    env = {"GRIDWATCH_STATE_DIR": str(tmp_path), "GRIDWATCH_STORE_URL": "postgresql://db/gw"}
    pipe = Pipeline("kafka://127.0.0.1:1", "mqtt://127.0.0.1:1", tmp_path, env=env)
    files = store_files(tmp_path, pipe.prefix)  # not the pipeline's store: its processes write to the URL
    del pipe
    gc.collect()
    assert all(f.exists() for f in files)
