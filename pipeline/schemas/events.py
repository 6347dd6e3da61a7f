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


def tier_refs(gridmap: Any, grid_code: str) -> tuple[TierRef, ...]:
    """The tiers from the city down to a grid, as events and incidents carry them (one place for the
    grid -> community -> street -> district -> city chain); just the grid when the map does not know it."""
    try:
        return tuple(TierRef(a.tier, a.code, a.name) for a in gridmap.chain(grid_code))
    except (KeyError, ValueError, AttributeError):
        return (TierRef("grid", grid_code, grid_code),)


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


# -- control records and ordering headers (event-time merge in the incident agent) ------------------
# The telemetry agent also writes small WATERMARK control records into <prefix>.events (one per events
# partition, explicit partition), and tags each grid event with a header naming its upstream (the
# readings partition it came from) and its order timestamp. agents/event_order.py merges by them.
CONTROL_VERSION = 1
CONTROL_PREFIX = b'{"ctl":'  # what every control record starts with (dumps keeps the key order)
ORDER_HEADER = "gw-order"  # value: b"<upstream>@<order ts>", e.g. b"readings:3@1763647200000"


def is_control(value: bytes | None) -> bool:
    """Is this <prefix>.events record a control record rather than a grid event?

    The one check every consumer of the events topic makes first: control records are JSON too, so a
    reader that decodes every value would otherwise take a watermark for an event (or dead-letter it).
    A prefix test on the value, so readers that see only values (replay --compare, tail) can use it.
    """
    return value is not None and value[:len(CONTROL_PREFIX)] == CONTROL_PREFIX


@dataclass(slots=True)
class UpstreamMark:
    """How far one upstream partition got: no grid event it sends later has an order ts below ``wm``;
    ``idle``: it has no input at the moment, so it must not hold the merge back."""

    wm: int
    idle: bool = False


@dataclass(slots=True)
class Watermarks:
    """Control record: the marks of the sender's upstream partitions (only those that changed)."""

    marks: dict[str, UpstreamMark]

    def encode(self) -> bytes:
        return dumps({"ctl": "wm", "v": CONTROL_VERSION,
                      "marks": {u: [m.wm, int(m.idle)] for u, m in sorted(self.marks.items())}})

    @classmethod
    def decode(cls, raw: bytes) -> Watermarks:
        d = loads(raw)
        if not isinstance(d, dict) or d.get("ctl") != "wm" or d.get("v") != CONTROL_VERSION:
            raise SchemaError(f"control record: unsupported kind or version {str(d)[:80]!r}")
        marks = d.get("marks")
        if not isinstance(marks, dict):
            raise SchemaError("control record: field 'marks' must be an object")
        out: dict[str, UpstreamMark] = {}
        for name, m in marks.items():
            if (not isinstance(m, list) or len(m) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                  for x in m)):
                raise SchemaError(f"control record: mark of {name!r} must be [wm, idle]")
            out[name] = UpstreamMark(m[0], bool(m[1]))
        return cls(out)


def order_header(upstream: str, order_ts: int) -> list[tuple[str, bytes]]:
    """Kafka headers of a grid event that the incident agent merges in event time."""
    return [(ORDER_HEADER, f"{upstream}@{order_ts}".encode())]


def order_of(headers: Any) -> tuple[str, int] | None:
    """(upstream, order ts) from a record's headers (a list of pairs or a mapping), or None when the
    producer sends no watermarks (vision agent, camera service, tools): such events are not merged."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for name, value in items:
        if name == ORDER_HEADER and value:
            up, _, ts = bytes(value).decode("ascii", "replace").rpartition("@")
            try:
                return (up, int(ts)) if up else None
            except ValueError:
                return None
    return None
