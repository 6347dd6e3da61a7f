"""What the api process knows: incidents and reports from the store, plus the live fan-out.

Why the store: Kafka keeps days, case files are kept for years. The api reads incidents, timelines,
reports and statistics from the system of record (gridwatch/store, SQL with indexes), so its
start-up does not depend on the amount of history. Its live feed (gridwatch.store.feed) follows
``<prefix>.incidents`` and ``<prefix>.reports`` from where it left off, writes what it reads into the
store (idempotent upserts, so the store agent and the api may both write a record) and pushes each
change to the console streams whose scope covers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gridwatch.store import Store
from gridwatch.store.counts import CLOSED_STATUSES as CLOSED_STATUSES  # the web modules import it from here
from gridwatch.store.feed import BATCH_RECORDS

log = logging.getLogger("gridwatch.web.view")




# How far a console tab may fall behind before it counts as stalled and is dropped (it reconnects and
# reloads). The live feed hands over a whole stored batch at once (up to BATCH_RECORDS changes) before
# the stream task can send any of it, so the bound must hold several batches, or a storm drops every
# console however fast it reads. The queued messages are shared between the tabs, so a tab's backlog
# costs references, not copies.
STREAM_BACKLOG = 5 * BATCH_RECORDS


@dataclass(eq=False)
class Subscriber:
    """One live stream (a console tab): its scope and a bounded queue of changes to send."""

    scope: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=STREAM_BACKLOG))
    dropped: bool = False


STREAMED_MAX = 200_000


class IncidentLookup:
    """``view.incidents``: latest incident documents by id, from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, incident_id: str, default: Any = None) -> dict[str, Any] | None:
        return self.store.incident(incident_id) or default

    def __contains__(self, incident_id: object) -> bool:
        return isinstance(incident_id, str) and self.store.incident(incident_id) is not None

    def __len__(self) -> int:
        return self.store.estimate("incidents")  # exact up to 10,000, then an estimate (no full scan)


class ReportLookup:
    """``view.reports``: resident reports by id, from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, rid: str, default: Any = None) -> dict[str, Any] | None:
        return self.store.report(rid) or default

    def __getitem__(self, rid: str) -> dict[str, Any]:
        rep = self.store.report(rid)
        if rep is None:
            raise KeyError(rid)
        return rep

    def __contains__(self, rid: object) -> bool:
        return isinstance(rid, str) and self.store.report(rid) is not None

    def __len__(self) -> int:
        return self.store.estimate("reports")


class IncidentView:
    """Incidents and reports (the store) with the live subscribers of the console stream."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.incidents = IncidentLookup(store)
        self.reports = ReportLookup(store)
        self.subscribers: set[Subscriber] = set()
        self.changes_seen = 0
        # Highest version streamed per incident (bounded, oldest forgotten first): a late, older version
        # is stored (its row in the timeline) but never streamed over a newer one.
        self.streamed: OrderedDict[str, int] = OrderedDict()
        self.ready = asyncio.Event()  # the store is open (set at start: no history to replay)
        self.caught_up = asyncio.Event()  # the live feed reached the topics' ends once
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []

    # ------------------------------------------------------------------------------ applying records
    def apply_change(self, change: dict[str, Any]) -> bool:
        """Store one IncidentChange (as a dict) and push it to the streams (unit tests, tools)."""
        batch = self.store.batch()
        batch.add_change(change)
        self.store.write(batch)
        self.publish([("incidents", change)])
        return True

    async def apply_report(self, report: dict[str, Any]) -> None:
        """Store a report the api itself produced, so a GET right after the POST finds it. Off the event
        loop: on SQLite the write waits for the live feed's transaction (a whole feed batch), and every
        other request and stream of this api would wait with it."""
        batch = self.store.batch()
        batch.add_report(report)
        await asyncio.to_thread(self.store.write, batch)
        self._wake()

    def publish(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        """Records the live feed just stored: incident changes go to the streams covering them."""
        for family, change in records:
            if family != "incidents":
                continue
            inc = change["incident"]
            if self.streamed.get(inc["id"], -1) >= inc.get("version", 0):
                continue
            self.streamed[inc["id"]] = inc.get("version", 0)
            self.streamed.move_to_end(inc["id"])
            if len(self.streamed) > STREAMED_MAX:
                self.streamed.popitem(last=False)
            codes = [t["code"] for t in inc.get("tiers", [])]
            self.changes_seen += 1
            msg = {"change": change.get("change"), "ts": change.get("ts"), "transition": change.get("transition"),
                   "incident": public_incident(inc)}
            for sub in list(self.subscribers):
                if sub.scope in codes:
                    try:
                        sub.queue.put_nowait(msg)
                    except asyncio.QueueFull:  # a stalled client: drop it, it reconnects and reloads
                        sub.dropped = True
                        self.subscribers.discard(sub)
        self._wake()

    # ------------------------------------------------------------------------------ queries
    def visible(self, scope: str, **filters: Any) -> list[dict[str, Any]]:
        return self.store.incidents(scope, **filters)

    def incident_of_report(self, report_id: str) -> dict[str, Any] | None:
        return self.store.incident_of_report(report_id)

    def subscribe(self, scope: str) -> Subscriber:
        sub = Subscriber(scope)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def wait_until(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``pred()`` holds after some record was applied (for callers and tests)."""
        if pred():
            return True
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not fut]

    def _wake(self) -> None:
        for pred, fut in self._waiters:
            if not fut.done() and pred():
                fut.set_result(True)


def public_incident(inc: dict[str, Any]) -> dict[str, Any]:
    """The incident as the console API serves it (internal fields left out)."""
    out = {k: v for k, v in inc.items() if not k.startswith("_")}
    out["sources"] = [{k: v for k, v in s.items() if k != "seen"} for s in inc.get("sources", [])]
    return out


def summary(inc: dict[str, Any], reports: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A list row: enough for the list, the map and the filters, without history and evidence."""
    keys = ("id", "category_group", "title", "level", "priority", "status", "tier", "tier_code", "department",
            "grid_code", "lat", "lon", "created_ts", "updated_ts", "sla_deadline_ts", "overdue", "escalations",
            "acked", "pending_confirmation", "rating", "version", "supervision")
    out = {k: inc.get(k) for k in keys}
    out["assist"] = inc.get("assist", [])
    out["tiers"] = inc.get("tiers", [])
    out["source_count"] = len(inc.get("sources", []))
    out["source_kinds"] = sorted({s.get("kind", "") for s in inc.get("sources", [])})
    out["types"] = sorted({s.get("type", "") for s in inc.get("sources", [])})
    out["report_count"] = sum(1 for s in inc.get("sources", []) if s.get("kind") == "report")
    out["supervision"] = inc.get("supervision")  # the 督办 notice, when the workflow has issued one
    # what the console's search looks through besides id, title and place names
    out["texts"] = [s.get("message", "")[:200] for s in inc.get("sources", [])][:10]
    out["subjects"] = sorted({s.get("subject", "") for s in inc.get("sources", []) if s.get("subject")})
    out["addresses"] = sorted({r["address"] for s in inc.get("sources", []) if s.get("kind") == "report"
                               for r in [reports.get(s["id"]) or {}] if r.get("address")}) if reports else []
    return out


# ---------------------------------------------------------------------------------------- statistics
# (the figures themselves: statistics.py)
def month_of(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m")
