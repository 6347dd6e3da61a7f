"""The publish ledger lets go of what the changelog confirmed, and only of that: a flush confirms the
markers put before it started, while the next batch's alerts (recorded during that flush) stay listed."""

from __future__ import annotations

from typing import Any

from gridwatch.pipeline.outputs.mqtt_ledger import PublishLedger


def test_confirmed_drops_entries_up_to_the_flushed_offset_only() -> None:
    publisher: Any = None  # confirmed() and published() never touch the connection
    ledger = PublishLedger(publisher, "gridwatch/alerts", "gw")
    ledger.record(0, 10, "a:new:1")
    ledger.record(0, 11, "b:new:2")
    ledger.record(1, 7, "c:new:3")
    ledger.record(0, 12, "d:new:4")  # recorded while the flush covering offsets <= 11 was under way
    ledger.confirmed({0: 11, 2: 99})  # partition 2 has nothing pending: nothing to do
    assert not ledger.published(0, 10, "a:new:1")
    assert not ledger.published(0, 11, "b:new:2")
    assert ledger.published(0, 12, "d:new:4")
    assert ledger.published(1, 7, "c:new:3")  # another partition's entries are not touched
    ledger.confirmed({0: 12, 1: 7})
    assert not ledger.published(0, 12, "d:new:4") and not ledger.published(1, 7, "c:new:3")
