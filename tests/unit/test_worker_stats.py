"""A worker's figures line (agents/worker_stats.py): what moved, by how much, with the totals."""

from __future__ import annotations

from collections import Counter

from gridwatch.agents.worker_stats import figures_line, moved


def test_only_what_moved_is_told_with_its_change_and_total() -> None:
    before = Counter({"readings": 1000, "events": 7, "dead_letters.bad_json": 2})
    now = Counter({"readings": 2500, "events": 7, "dead_letters.bad_json": 3, "alerts": 4})
    assert moved(before, now) == {"alerts": 4, "dead_letters.bad_json": 1, "readings": 1500}
    assert figures_line(before, now, 30.2) == ("worker figures, last 30 s: alerts +4 (4), dead_letters.bad_json +1 (3), "
                                               "readings +1,500 (2,500)")


def test_an_idle_worker_says_nothing() -> None:
    same = {"readings": 5, "incident_changes": 2}
    assert figures_line(same, dict(same), 30) is None
    assert figures_line({}, {}, 30) is None
