"""Topic family ``events``: grid events raised by rule agents (telemetry now, vision later).

An event has one deterministic id for its whole life (new -> update -> end), derived from what
raised it and its event time, so a re-delivered reading or a replay produces the same id.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .codec import SchemaError, dumps, loads

VERSION = 1
LEVELS = ("blue", "yellow", "red")  # ascending severity
Phase = Literal["new", "update", "end"]


def level_rank(level: str) -> int:
    return LEVELS.index(level)


def event_id(event_type: str, subject: str, start_ts: int) -> str:
    """Deterministic id: the same condition of the same subject starting at the same time."""
    return hashlib.sha1(f"{event_type}|{subject}|{start_ts}".encode()).hexdigest()[:20]


@dataclass(slots=True)
class TierRef:
    tier: str
    code: str
    name: str


@dataclass(slots=True)
class GridEvent:
    id: str
    type: str  # e.g. manhole_open, lamp_out_night, circuit_dark, device_offline
    phase: Phase
    level: str  # red / yellow / blue
    subject: str  # device id, or circuit id for circuit-wide events
    device_kind: str
    grid_code: str
    tiers: list[TierRef]
    lat: float
    lon: float
    start_ts: int  # event time the condition was confirmed (ms)
    ts: int  # event time of this phase
    end_ts: int | None = None
    message: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)
    source: str = "telemetry"
    rule: str = ""
    v: int = VERSION

    @property
    def active(self) -> bool:
        return self.phase != "end"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def encode(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridEvent:
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise SchemaError(f"grid event: unsupported or missing schema version {d.get('v') if isinstance(d, dict) else d!r}")
        try:
            d = dict(d)
            d["tiers"] = [TierRef(**t) for t in d.get("tiers", [])]
            return cls(**d)
        except TypeError as e:
            raise SchemaError(f"grid event: {e}") from None

    @classmethod
    def decode(cls, raw: bytes) -> GridEvent:
        return cls.from_dict(loads(raw))

    def tier_code(self, tier: str) -> str | None:
        return next((t.code for t in self.tiers if t.tier == tier), None)
