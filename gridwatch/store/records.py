"""Kafka records -> store rows, deduplicated within a batch (one row per key, newest version wins).

Why dedupe here: PostgreSQL refuses an ``ON CONFLICT DO UPDATE`` that touches one row twice in a
statement, and a batch often holds several versions of one incident.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gridwatch.pipeline.schemas.codec import SchemaError, loads
from gridwatch.pipeline.schemas.events import is_control
from gridwatch.pipeline.schemas.incidents import LEVELS
from gridwatch.pipeline.schemas.reports import ResidentReport

from .counts import CLOSED_STATUSES, COUNTER_INDEX, COUNTERS, areas, columns, contribution
from .evidence import evidence_keys
from .tables import FILTER_COPIES

log = logging.getLogger("gridwatch.store")
KINDS = ("incidents", "reports", "actions", "events")
VALIDATE = {"reports": ResidentReport.decode}
# Incident changes are checked field by field below (the fields the store files and the api serves):
# the full schema decode cost more than the database writes.
INCIDENT_FIELDS = {"id": str, "version": int, "status": str, "level": str, "category_group": str, "tier": str,
                   "grid_code": str, "created_ts": int, "updated_ts": int, "tiers": list, "sources": list,
                   "history": list}


def list_rank(status: str, level: str) -> int:
    """The console's order as one number (smaller first): open before closed, then red, yellow, blue."""
    lv = LEVELS.index(level) if level in LEVELS else 0
    return (3 if status in CLOSED_STATUSES else 0) + (len(LEVELS) - 1 - lv)


def _json(d: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in d.items() if not k.startswith("_")}, ensure_ascii=False,
                      separators=(",", ":"))


class Batch:
    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self.versions: dict[tuple[str, int], dict[str, Any]] = {}
        self.latest: dict[str, dict[str, Any]] = {}
        self.incs: dict[str, dict[str, Any]] = {}  # the incident of each ``latest`` row (the counters)
        self.areas: dict[tuple[str, str], dict[str, Any]] = {}
        self.evidence: dict[str, set[str]] = {}  # the refs of each ``latest`` incident (incident_evidence)
        self.joins: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.actions: dict[str, dict[str, Any]] = {}
        self.events: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.records = 0
        self.skipped = 0

    def empty(self) -> bool:
        return not self.records

    def month(self, ts_ms: int) -> str:
        return datetime.fromtimestamp(ts_ms / 1000, self.tz).strftime("%Y-%m")

    def add_raw(self, kind: str, raw: bytes | None) -> dict[str, Any] | None:
        """Decode and add one record; a record that does not decode is logged and skipped."""
        if raw is None:
            return None
        if kind == "events" and is_control(raw):
            return None
        try:
            rec = loads(raw)
            if kind == "incidents":  # the record's own JSON is the stored document: no re-encoding
                self.add_change(rec, raw.decode())
            else:
                if kind in VALIDATE:  # the shape the api relies on
                    VALIDATE[kind](raw)
                {"reports": self.add_report, "actions": self.add_action, "events": self.add_event}[kind](rec)
            return rec
        except (SchemaError, KeyError, TypeError, ValueError, AttributeError) as e:
            self.skipped += 1
            log.warning("store: skipping a bad %s record: %s", kind, e)
            return None

    def add_change(self, change: dict[str, Any], doc: str = "") -> None:
        """One IncidentChange; ``doc``: its JSON as produced (else encoded here), stored for the version
        and, when it is the newest, for the incident (readers take its ``incident``)."""
        inc = change["incident"]
        for key, kind in INCIDENT_FIELDS.items():
            if not isinstance(inc[key], kind) or isinstance(inc[key], bool):
                raise SchemaError(f"incident field {key!r} has type {type(inc[key]).__name__}")
        if not isinstance(change["change"], str) or not isinstance(change["ts"], int):
            raise SchemaError("change or ts of the wrong type")
        iid, ver = inc["id"], inc["version"]
        doc = doc or _json(change)
        self.records += 1
        self.versions[(iid, ver)] = {"id": iid, "version": ver, "ts": change["ts"], "change": change["change"],
                                     "doc": doc}
        cur = self.latest.get(iid)
        if cur is not None and cur["version"] >= ver:
            return
        if cur is not None:  # the areas of the version this one replaces (it may have moved)
            for tier in self.incs[iid].get("tiers", []):
                self.areas.pop((tier["code"], iid), None)
        month = self.month(inc["created_ts"])
        rank = list_rank(inc["status"], inc["level"])
        self.incs[iid] = inc
        self.latest[iid] = row = {"id": iid, "version": ver, "status": inc["status"], "level": inc["level"],
                            "category_group": inc["category_group"], "tier": inc["tier"],
                            "grid_code": inc["grid_code"], "created_ts": inc["created_ts"], "created_month": month,
                            "updated_ts": inc["updated_ts"], "closed_ts": inc.get("closed_ts"), "list_rank": rank,
                            "doc": doc, **columns(inc, self.tz)}
        for tier in inc.get("tiers", []):  # with the incident's columns the list filters on (their indexes)
            self.areas[(tier["code"], iid)] = {"code": tier["code"], "incident_id": iid, "version": ver,
                                               "created_month": month, "updated_ts": inc["updated_ts"],
                                               "list_rank": rank, **{c: row[c] for c in FILTER_COPIES}}
        self.evidence[iid] = evidence_keys(inc)
        for s in inc.get("sources", []):
            if s.get("kind") == "report":
                self.joins[s["id"]] = {"report_id": s["id"], "incident_id": iid}

    def counter_rows(self, skip: set[str]) -> list[tuple[Any, ...]]:
        """The per-area counters the newest versions add (those not in ``skip``), merged per (area,
        month, status, level, category group): rows of KEY + COUNTERS values (Store._add_rows)."""
        acc: dict[tuple[str, ...], list[int]] = {}
        width = len(COUNTERS)
        for iid, inc in self.incs.items():
            if iid in skip:
                continue
            month, status, level, cat, c = contribution(inc, self.tz)
            items = [(COUNTER_INDEX[k], v) for k, v in c.items()]
            for _, code in areas(inc):
                vec = acc.get((code, month, status, level, cat))
                if vec is None:
                    vec = acc[(code, month, status, level, cat)] = [0] * width
                for n, v in items:
                    vec[n] += v
        return [(*key, *vec) for key, vec in acc.items()]

    def add_report(self, r: dict[str, Any]) -> None:
        self.records += 1
        self.reports[r["service_request_id"]] = {
            "service_request_id": r["service_request_id"], "service_code": r["service_code"],
            "requested_ms": int(r["requested_ms"]), "grid_code": r.get("grid_code", ""), "doc": _json(r)}

    def add_action(self, a: dict[str, Any]) -> None:
        self.records += 1
        self.actions[a["id"]] = {"id": a["id"], "incident_id": a["incident_id"], "action": a["action"],
                                 "ts": int(a["ts"]), "doc": _json(a)}

    def add_event(self, e: dict[str, Any]) -> None:
        if "id" not in e or "phase" not in e:  # control records (watermarks) share the events topic
            return
        self.records += 1
        self.events[(e["id"], e["phase"], int(e["ts"]))] = {
            "id": e["id"], "phase": e["phase"], "ts": int(e["ts"]), "type": e["type"],
            "grid_code": e["grid_code"], "doc": _json(e)}
