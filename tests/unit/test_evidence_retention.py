"""The evidence folder is bounded: old snapshots go, then the oldest beyond the size limit (main kept all)."""

from __future__ import annotations

import os
import time

from gridwatch.pipeline.outputs.evidence import FileEvidenceStore


def test_old_and_excess_snapshots_are_removed(tmp_path):
    store = FileEvidenceStore(tmp_path, max_age_s=3600, max_bytes=10_000, prune_every=1000)
    now = time.time()
    refs = []
    for i in range(30):  # 30 x 1 KB, 200 s apart: the first 12 older than an hour
        ref = store.put("cam1", f"ev{i}", b"x" * 1000)
        os.utime(tmp_path / ref, (now - (30 - i) * 200, now - (30 - i) * 200))
        refs.append(ref)
    removed = store.prune(now)
    left = [r for r in refs if store.exists(r)]
    assert removed == 20 and left == refs[20:]  # the old ones, then the oldest down to 10 KB


def test_puts_prune_on_their_own(tmp_path):
    store = FileEvidenceStore(tmp_path, max_bytes=5_000, prune_every=10)
    for i in range(100):
        store.put("cam1", f"ev{i}", b"x" * 1000)
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*")) <= 5_000 + 9 * 1000
    assert store.exists(store.put("cam2", "last", b"y"))  # the newest always stays
