"""A resident's report the api stores itself (so a GET right after the POST finds it) waits for SQLite's
write lock off the event loop: while the live feed holds the lock with a batch, the api's other requests
and streams go on."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from gridwatch.store.db import Store, make_engine, migrate
from gridwatch.web.views import IncidentView

REPORT = {"service_request_id": "R-1", "service_code": "manhole", "requested_ms": 1_700_000_000_000,
          "grid_code": "G1", "description": "井盖丢失"}


def test_a_report_waiting_for_the_write_lock_does_not_block_the_loop(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    migrate(engine, ZoneInfo("Asia/Shanghai"))
    view = IncidentView(Store(engine, ZoneInfo("Asia/Shanghai")))
    locked, release = threading.Event(), threading.Event()

    def feed_batch() -> None:  # stands in for the live feed's transaction: holds SQLite's write lock
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO store_meta (key, value) VALUES ('feed', 'busy')"))
            locked.set()
            release.wait(30)

    async def main() -> None:
        feed = threading.Thread(target=feed_batch)
        feed.start()
        await asyncio.to_thread(locked.wait, 30)
        post = asyncio.create_task(view.apply_report(REPORT))
        ticks = 0
        for _ in range(5):  # the loop serves others while the report waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
            assert not post.done()
        assert view.reports.get("R-1") is None  # not stored yet: the premise (it is waiting)
        release.set()
        await post
        feed.join()
        assert ticks == 5 and view.reports.get("R-1")["description"] == "井盖丢失"
    asyncio.run(main())
