"""The alerts agent forgets published markers by event time (agents/alerts.py Retention), pure logic."""

from __future__ import annotations

from gridwatch.agents.alerts import Retention

DAY = 86_400_000


def test_markers_older_than_the_retention_behind_the_newest_event_are_forgotten_per_partition():
    r = Retention(7 * DAY)
    r.add(0, "a:new:1000", 1000)
    r.add(0, "b:new:2000", 2000)
    r.add(1, "c:new:1500", 1500)
    assert r.expired(0, 1000 + 7 * DAY) == []  # exactly the retention: kept
    assert r.expired(0, 500 + 7 * DAY) == []  # an older event does not move the partition back
    assert r.expired(0, 2001 + 7 * DAY) == ["a:new:1000", "b:new:2000"]
    assert r.expired(1, 1000) == []  # the other partition keeps its own clock


def test_a_restarted_worker_rebuilds_the_index_from_the_table():
    table = {"a:new:1000": {"p": 0}, "b:end:5000": {"p": 0}, "c:new:1500": {"p": 1}, "legacy:new:1": 1}
    r = Retention(DAY)
    assert not r.known(0)
    r.load(0, table.items())
    assert r.known(0) and not r.known(1)
    assert r.expired(0, 1000 + DAY + 1) == ["a:new:1000"]
    assert r.expired(0, 5001 + DAY) == ["b:end:5000"]
