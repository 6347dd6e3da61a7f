"""What the api process knows: incidents and reports, materialised from Kafka, plus the live fan-out.

Why a view of its own: the backend owns incident state (Faust tables), the api only reads it. Every
api process consumes ``<prefix>.incidents`` and ``<prefix>.reports`` from the beginning with no
consumer group (all partitions assigned), keeps the latest snapshot per incident (highest
``version``), and pushes each change to the console streams whose scope covers it. A restart
rebuilds the same view from the topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridwatch.pipeline.kafka_io import topic_partitions
from gridwatch.pipeline.schemas.codec import SchemaError, loads
from gridwatch.pipeline.schemas.incidents import IncidentChange
from gridwatch.pipeline.schemas.reports import ResidentReport

log = logging.getLogger("gridwatch.web.view")

# Open311 status of a report from the status of the incident it joined.
CLOSED_STATUSES = ("resolved", "evaluated", "closed", "cancelled")
DONE_STATUSES = ("resolved", "evaluated", "closed")  # "closed" for the closure rate (cancelled is not work done)


@dataclass(eq=False)
class Subscriber:
    """One live stream (a console tab): its scope and a bounded queue of changes to send."""

    scope: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=1000))
    dropped: bool = False


class IncidentView:
    """Latest incident snapshots, reports and the report -> incident join, with subscribers."""

    def __init__(self) -> None:
        self.incidents: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.report_incident: dict[str, str] = {}
        self.subscribers: set[Subscriber] = set()
        self.changes_seen = 0
        self.ready = asyncio.Event()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future]] = []

    # ------------------------------------------------------------------------------ applying records
    def apply_change(self, change: dict[str, Any]) -> bool:
        """Apply one IncidentChange (as a dict); False when it is older than what we have."""
        inc = change["incident"]
        cur = self.incidents.get(inc["id"])
        if cur is not None and cur.get("version", 0) >= inc.get("version", 0):
            return False
        inc["_codes"] = [t["code"] for t in inc.get("tiers", [])]
        self.incidents[inc["id"]] = inc
        for s in inc.get("sources", []):
            if s.get("kind") == "report":
                self.report_incident[s["id"]] = inc["id"]
        self.changes_seen += 1
        msg = {"change": change.get("change"), "ts": change.get("ts"), "transition": change.get("transition"),
               "incident": public_incident(inc)}
        for sub in list(self.subscribers):
            if sub.scope in inc["_codes"]:
                try:
                    sub.queue.put_nowait(msg)
                except asyncio.QueueFull:  # a stalled client: drop it, it reconnects and reloads
                    sub.dropped = True
                    self.subscribers.discard(sub)
        self._wake()
        return True

    def apply_report(self, report: dict[str, Any]) -> None:
        self.reports.setdefault(report["service_request_id"], report)
        self._wake()

    # ------------------------------------------------------------------------------ queries
    def visible(self, scope: str) -> list[dict[str, Any]]:
        return [i for i in self.incidents.values() if scope in i["_codes"]]

    def incident_of_report(self, report_id: str) -> dict[str, Any] | None:
        iid = self.report_incident.get(report_id)
        return self.incidents.get(iid) if iid else None

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


# ---------------------------------------------------------------------------------------- consumer
async def consume(view: IncidentView, bootstrap: str, topics: dict[str, str], stop: asyncio.Event) -> None:
    """Feed the view from Kafka until ``stop``; bad records are logged and skipped, never fatal.

    ``topics`` maps "incidents" / "reports" to full topic names.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = await topic_partitions(bootstrap, list(topics.values()), wait_s=10.0)
        tps = [TopicPartition(name, p) for name, ps in parts.items() for p in ps]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        kinds = {v: k for k, v in topics.items()}
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, records in batch.items():
                for r in records:
                    _apply(view, kinds[tp.topic], r.value)
            if not batch and not view.ready.is_set():
                view.ready.set()  # caught up once: lists are complete from here on
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def _apply(view: IncidentView, kind: str, raw: bytes | None) -> None:
    if raw is None:
        return
    try:
        if kind == "incidents":
            IncidentChange.decode(raw)  # validates the shape; the view keeps plain dicts
            view.apply_change(loads(raw))
        else:
            view.apply_report(_report_dict(ResidentReport.decode(raw)))
    except (SchemaError, KeyError, TypeError) as e:
        log.warning("skipping a bad %s record: %s", kind, e)


def _report_dict(r: ResidentReport) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(r)


# ---------------------------------------------------------------------------------------- statistics
# (the figures themselves: statistics.py)
def month_of(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m")
