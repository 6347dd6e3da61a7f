"""Topic families ``incidents`` and ``actions``: incidents people work, and what operators do to them.

An incident fuses grid events (sensors, cameras) and resident reports of one category group in one
place into one piece of work, and carries it through the "five tickets" workflow:

    reported -> dispatched -> accepted -> in_progress -> resolved -> evaluated
    (any open status -> cancelled; resolved -> closed when nobody evaluates it in time)

Records on ``<prefix>.incidents`` (key: grid code) are :class:`IncidentChange`: the full incident
snapshot after a change plus the change itself, so a consumer (console, channels, sinks) needs no
state of its own beyond "latest snapshot per incident id" (compare ``incident.version``).
Records on ``<prefix>.actions`` (key: grid code) are :class:`OperatorAction`: the console's commands.

Everything is event time (ms since the epoch) and every id is deterministic, so a replay or a
re-delivered input produces the same incidents.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from .codec import SchemaError, dumps, dumps_record, loads
from .events import LEVELS, TierRef, level_rank

# 2: supervision notices (督办: action "supervise", ``Incident.supervision``), joint handling (吹哨报到:
# ``Incident.assist``, ``OperatorAction.assist``), ``Transition.assist`` / ``deadline``. Version 1 records
# (written before) still read: every field added in 2 has a default.
VERSION = 2
READABLE_VERSIONS = (1, 2)

# Workflow statuses, in order. ``closed``/``cancelled`` are side exits.
STATUSES = ("reported", "dispatched", "accepted", "in_progress", "resolved", "evaluated", "closed", "cancelled")
OPEN_STATUSES = ("reported", "dispatched", "accepted", "in_progress")  # work still to do (SLA runs)
TERMINAL_STATUSES = ("evaluated", "closed", "cancelled")
# Work-order tiers, bottom up (village -> town -> county -> city). The grid itself is not a work tier.
WORK_TIERS = ("community", "street", "district", "city")
ACTIONS = ("ack", "dispatch", "accept", "start", "resolve", "escalate", "comment", "evaluate", "confirm",
           "reopen", "cancel", "supervise")
SOURCE_KINDS = ("event", "report")
# IncidentChange.change values.
CHANGES = ("created", "source_added", "source_updated", "action", "escalated", "auto_resolved", "reopened",
           "closed", "supervised", "supervision_overdue")

__all__ = ["ACTIONS", "CHANGES", "LEVELS", "OPEN_STATUSES", "READABLE_VERSIONS", "STATUSES", "TERMINAL_STATUSES",
           "VERSION", "WORK_TIERS", "Incident", "IncidentChange", "IncidentSource", "OperatorAction", "Supervision",
           "TierRef", "Transition",
           "action_id", "incident_id", "level_rank", "plain"]


def plain(obj: Any) -> dict[str, Any]:
    """A slots dataclass as a dict, lists copied one level (what asdict gives for our records, ~20x faster:
    every incident change serialises the whole incident)."""
    return {k: (list(v) if isinstance(v, list) else v) for k in obj.__slots__ for v in (getattr(obj, k),)}


def incident_id(source_kind: str, source_id: str) -> str:
    """Deterministic incident id from its first source: a replay or re-delivery gives the same id."""
    return "i" + hashlib.sha1(f"incident|{source_kind}|{source_id}".encode()).hexdigest()[:15]


def action_id(incident: str, action: str, actor: str, ts: int, note: str = "") -> str:
    """Deterministic action id: a console retrying a POST, or a re-delivered record, applies once."""
    return "a" + hashlib.sha1(f"{incident}|{action}|{actor}|{ts}|{note}".encode()).hexdigest()[:15]


@dataclass(slots=True)
class IncidentSource:
    """One grid event or resident report fused into the incident."""

    kind: str  # "event" | "report"
    id: str  # GridEvent.id or ResidentReport.service_request_id
    type: str  # event type (e.g. manhole_open) or Open311 service_code (e.g. manhole_cover)
    ts: int  # event time it started: GridEvent.start_ts / ResidentReport.requested_ms
    last_ts: int  # event time of its latest phase (== ts for reports)
    subject: str = ""  # device id (events; the device a report names, if any)
    device_kind: str = ""  # manhole, streetlight, camera, ... ("" for reports without a device)
    level: str = ""  # the event's own level ("" for reports)
    active: bool = True  # events: False once their phase "end" arrived; reports: always True
    end_ts: int | None = None  # events: when the condition cleared
    lat: float = 0.0
    lon: float = 0.0
    message: str = ""  # event message or report description
    evidence: list[dict[str, Any]] = field(default_factory=list)  # readings / snapshot refs that raised it
    media_url: str = ""  # report photo (Open311 media_url)
    origin: str = ""  # "telemetry" | "vision" | "open311" | "chat" | "hotline"
    external_id: str = ""  # hotline: the 12345 work-order id the report came with (status callbacks name it)
    seen: list[str] = field(default_factory=list)  # internal: "<phase>@<ts>" already applied (dedupe)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IncidentSource:
        return cls(**d)


@dataclass(slots=True)
class Transition:
    """One entry of the incident's history: who did what, when, and what it changed."""

    ts: int  # event time of the change (the input's ts; for supervision the watermark)
    action: str  # an ACTIONS value, or created / merged / source_end / auto_resolve / overdue / auto_close
    actor: str  # operator account, "resident:<report id>", "sensor:<device>", "system", "supervision"
    note: str = ""
    from_status: str = ""
    to_status: str = ""
    level: str = ""  # level after the change
    tier: str = ""  # work-order tier after the change
    department: str = ""  # department after the change
    ref: str = ""  # id of what caused it (action id, source id): dedupes re-delivered inputs
    assist: list[str] = field(default_factory=list)  # assisting departments after the change (吹哨报到)
    deadline: int | None = None  # supervise: the deadline the notice set (event time, ms)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transition:
        return cls(**d)


@dataclass(slots=True)
class Supervision:
    """The current supervision notice (督办) on an incident: who issued it, why, and by when.

    ``overdue`` is set by supervision when the partition's watermark (event time, like the SLA timers)
    passes ``deadline`` while the incident is still open; a later notice replaces this one (the
    history keeps every notice).
    """

    by: str  # the issuing account (e.g. the discipline commission's)
    note: str  # the notice (督办意见)
    deadline: int  # event time (ms) by which the incident must be resolved
    ts: int  # event time it was issued
    by_scope: str = ""  # area code the issuer is scoped to
    overdue: bool = False
    notices: int = 1  # how many notices this incident got so far

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Supervision:
        return cls(**d)


@dataclass(slots=True)
class Incident:
    id: str  # incident_id(first source kind, first source id)
    category_group: str  # fusion group from incidents.yaml, e.g. "manhole", "streetlight", "waterlogging"
    title: str  # human-readable summary, e.g. "Manhole cover: manhole_open, 1 report"
    level: str  # red / yellow / blue (LEVELS ascending)
    priority: int  # higher = more urgent; grows with sources and sensor-confirmed reports
    status: str  # STATUSES
    tier: str  # work-order tier: community / street / district / city (WORK_TIERS)
    tier_code: str  # code of the area at that tier (e.g. the street 330102001): who owns the work order
    department: str  # handling department: the routing table's choice from creation; "dispatch" may change it
    grid_code: str  # grid of the first source (Kafka key of every record about the incident)
    tiers: list[TierRef]  # city -> district -> street -> community -> grid of grid_code
    lat: float
    lon: float
    created_ts: int  # event time of the first source
    updated_ts: int  # event time of the latest change
    sla_deadline_ts: int | None  # event time by which the current tier must close it (None: not open)
    sources: list[IncidentSource] = field(default_factory=list)
    overdue: bool = False  # supervision: the watermark passed an SLA deadline at least once
    escalations: int = 0  # how many times it moved up (SLA breach or operator "escalate")
    history: list[Transition] = field(default_factory=list)
    rating: int | None = None  # the reporter's evaluation, 1-5
    pending_confirmation: bool = False  # sensor auto-resolved; an operator should "confirm" (or "reopen")
    acked: bool = False  # an operator acknowledged it ("ack")
    resolved_ts: int | None = None  # event time it was (last) resolved
    closed_ts: int | None = None  # event time it reached evaluated / closed / cancelled
    supervision: Supervision | None = None  # the current supervision notice (督办), if any
    assist: list[str] = field(default_factory=list)  # assisting departments beside ``department`` (吹哨报到)
    version: int = 0  # +1 per change; consumers keep the highest
    v: int = VERSION

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES

    def tier_code_of(self, tier: str) -> str | None:
        return next((t.code for t in self.tiers if t.tier == tier), None)

    def to_dict(self) -> dict[str, Any]:
        d = plain(self)
        d["tiers"] = [plain(t) for t in self.tiers]
        d["sources"] = [plain(s) for s in self.sources]
        d["history"] = [plain(h) for h in self.history]
        d["supervision"] = plain(self.supervision) if self.supervision else None
        return d

    def encode(self) -> bytes:
        """Every float in an incident came from a grid event or a report, checked when it entered
        (agents/fusion.py), so orjson may write the dataclass directly (codec.dumps_record)."""
        return dumps_record(self, self.to_dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        if not isinstance(d, dict) or d.get("v") not in READABLE_VERSIONS:
            raise SchemaError(f"incident: unsupported or missing schema version "
                              f"{d.get('v') if isinstance(d, dict) else d!r}")
        try:
            d = dict(d)
            d["tiers"] = [TierRef(**t) for t in d.get("tiers", [])]
            d["sources"] = [IncidentSource.from_dict(s) for s in d.get("sources", [])]
            d["history"] = [Transition.from_dict(h) for h in d.get("history", [])]
            sv = d.get("supervision")
            d["supervision"] = Supervision.from_dict(sv) if sv else None
            d["v"] = VERSION  # an older record read now is this version (its new fields at their defaults)
            return cls(**d)
        except TypeError as e:
            raise SchemaError(f"incident: {e}") from None

    @classmethod
    def decode(cls, raw: bytes) -> Incident:
        return cls.from_dict(loads(raw))


@dataclass(slots=True)
class IncidentChange:
    """A record on ``<prefix>.incidents``: the incident after a change, and the change."""

    incident: Incident
    change: str  # CHANGES: created / source_added / source_updated / action / escalated / auto_resolved / ...
    ts: int  # event time of the change
    transition: Transition | None = None  # the history entry this change added (None for silent updates)
    source_id: str = ""  # the source that caused it (event id / report id / action id)
    v: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"incident": self.incident.to_dict(), "change": self.change, "ts": self.ts,
                "transition": plain(self.transition) if self.transition else None, "source_id": self.source_id,
                "v": self.v}

    def encode(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def decode(cls, raw: bytes) -> IncidentChange:
        d: Any = loads(raw)
        if not isinstance(d, dict) or d.get("v") not in READABLE_VERSIONS:
            raise SchemaError("incident change: unsupported or missing schema version")
        try:
            d = dict(d)
            d["incident"] = Incident.from_dict(d.get("incident"))
            t = d.get("transition")
            d["transition"] = Transition.from_dict(t) if t else None
            d["v"] = VERSION
            return cls(**d)
        except TypeError as e:
            raise SchemaError(f"incident change: {e}") from None


@dataclass(slots=True)
class OperatorAction:
    """A record on ``<prefix>.actions``: an operator's (or resident's) command on one incident.

    ``grid_code`` must be the incident's grid code (the Kafka key), so the action lands on the
    partition that owns the incident. ``id`` defaults to :func:`action_id` of the other fields.
    """

    incident_id: str
    grid_code: str
    action: str  # ACTIONS: ack / dispatch / accept / start / resolve / escalate / comment / evaluate / confirm / reopen / cancel
    actor: str  # operator account (or "resident:<report id>" for evaluate)
    ts: int  # event time of the action (ms)
    actor_tier_code: str = ""  # the area the actor is scoped to (city/district/street/community code)
    note: str = ""
    department: str = ""  # dispatch: override the routing table
    rating: int | None = None  # evaluate: 1-5
    level: str = ""  # dispatch / escalate: set this level (must not lower it on escalate)
    assist: list[str] | None = None  # dispatch: assisting departments (吹哨报到); None = keep, [] = none
    deadline: int | None = None  # supervise: event time (ms) by which the incident must be resolved
    id: str = ""
    v: int = VERSION

    def __post_init__(self) -> None:
        if not self.id:
            self.id = action_id(self.incident_id, self.action, self.actor, self.ts, self.note)

    def validate(self) -> None:
        """Shape checks that need no incident state (the console can call this before producing)."""
        where = "operator action"
        if self.action not in ACTIONS:
            raise SchemaError(f"{where}: unknown action {self.action!r} (one of {', '.join(ACTIONS)})")
        if not self.incident_id or not isinstance(self.incident_id, str):
            raise SchemaError(f"{where}: missing incident_id")
        if not self.actor or not isinstance(self.actor, str):
            raise SchemaError(f"{where}: missing actor")
        if isinstance(self.ts, bool) or not isinstance(self.ts, int) or self.ts <= 0:
            raise SchemaError(f"{where}: ts must be event time in ms")
        if self.action == "evaluate" and (isinstance(self.rating, bool) or not isinstance(self.rating, int)
                                          or not 1 <= self.rating <= 5):
            raise SchemaError(f"{where}: evaluate needs a rating 1-5")
        if self.level and self.level not in LEVELS:
            raise SchemaError(f"{where}: unknown level {self.level!r}")
        if self.assist is not None and (not isinstance(self.assist, list) or len(self.assist) > 20 or not all(
                isinstance(x, str) and x.strip() and len(x) <= 100 for x in self.assist)):
            raise SchemaError(f"{where}: assist must be a list of up to 20 department names")
        if self.assist and self.action != "dispatch":
            raise SchemaError(f"{where}: assist is for dispatch only")
        if self.action == "supervise":
            if isinstance(self.deadline, bool) or not isinstance(self.deadline, int) or self.deadline <= self.ts:
                raise SchemaError(f"{where}: supervise needs a deadline (event time in ms) after the action's ts")
            if not self.note.strip():
                raise SchemaError(f"{where}: supervise needs a note (the supervision notice)")

    def encode(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> OperatorAction:
        d: Any = loads(raw)
        if not isinstance(d, dict) or d.get("v") not in READABLE_VERSIONS:
            raise SchemaError("operator action: unsupported or missing schema version")
        try:
            a = cls(**{**d, "v": VERSION})
        except TypeError as e:
            raise SchemaError(f"operator action: {e}") from None
        a.validate()
        return a
