"""The live stream's backlog: a whole stored batch fits a console tab's queue; only a tab that stops
reading is dropped (it reconnects and reloads)."""

from __future__ import annotations

import asyncio
from typing import Any
from zoneinfo import ZoneInfo

from gridwatch.store.db import Store, make_engine, migrate
from gridwatch.store.feed import BATCH_RECORDS
from gridwatch.web.views import STREAM_BACKLOG, IncidentView


def _change(n: int) -> tuple[str, dict[str, Any]]:
    inc = {"id": f"INC-{n}", "version": 1, "status": "reported", "level": "blue", "category_group": "manhole",
           "created_ts": 1_700_000_000_000, "updated_ts": 1_700_000_000_000, "sources": [],
           "tiers": [{"tier": "city", "code": "C1"}, {"tier": "grid", "code": f"G{n % 7}"}]}
    return "incidents", {"change": "created", "ts": inc["created_ts"], "incident": inc}


def _view(tmp_path: Any) -> IncidentView:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    migrate(engine, ZoneInfo("Asia/Shanghai"))
    view = IncidentView(Store(engine, ZoneInfo("Asia/Shanghai")))
    return view


def test_a_full_feed_batch_does_not_drop_a_reading_tab(tmp_path: Any) -> None:
    async def main() -> None:
        view = _view(tmp_path)
        sub = view.subscribe("C1")
        view.publish([_change(n) for n in range(BATCH_RECORDS)])  # one stored batch, before any send
        assert sub in view.subscribers and not sub.dropped
        got = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]
        assert [m["incident"]["id"] for m in got] == [f"INC-{n}" for n in range(BATCH_RECORDS)]
    asyncio.run(main())


def test_a_tab_that_stops_reading_is_dropped_once_its_backlog_is_full(tmp_path: Any) -> None:
    async def main() -> None:
        view = _view(tmp_path)
        stalled, other = view.subscribe("C1"), view.subscribe("G1")
        view.publish([_change(n) for n in range(STREAM_BACKLOG)])
        assert not stalled.dropped
        view.publish([_change(STREAM_BACKLOG + 7)])  # grid G0: the city tab's queue is full
        assert stalled.dropped and stalled not in view.subscribers
        assert other in view.subscribers and not other.dropped  # another scope's tab is untouched
    asyncio.run(main())
