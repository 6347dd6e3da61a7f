"""Topic family ``readings``: validated telemetry, batched per Kafka partition by the MQTT bridge.

Why batches: a Faust event costs ~0.1 ms, a reading's rules cost a few microseconds. One record per
partition per bridge flush carries many readings, so Faust overhead is paid per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codec import SchemaError, dumps, loads, require

VERSION = 1
Value = float | int | bool


@dataclass(slots=True)
class Reading:
    device_id: str
    ts: int  # event time, ms since epoch (the device's timestamp)
    values: dict[str, Value]
    source: str = ""  # the MQTT topic it came in on
    recv_ms: int = 0  # wall time the bridge received it (latency measurement only, never for rules)

    def to_dict(self) -> dict[str, Any]:
        return {"d": self.device_id, "ts": self.ts, "v": self.values, "s": self.source, "r": self.recv_ms}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reading:
        # The worker reads every reading here: the exact types JSON gives are taken at once, anything
        # else goes through the checks that name the bad field.
        if type(d) is dict:
            device_id, ts, values = d.get("d"), d.get("ts"), d.get("v")
            if type(device_id) is str and type(ts) is int and type(values) is dict:
                return cls(device_id, ts, values, d.get("s", ""), d.get("r", 0))
        if not isinstance(d, dict):
            raise SchemaError("reading: not an object")
        return cls(
            device_id=require(d, "d", str, "reading"),
            ts=require(d, "ts", int, "reading"),
            values=require(d, "v", dict, "reading"),
            source=d.get("s", ""),
            recv_ms=d.get("r", 0),
        )


@dataclass(slots=True)
class ReadingBatch:
    partition: int
    readings: list[Reading] = field(default_factory=list)
    v: int = VERSION

    def encode(self) -> bytes:
        return dumps({"v": self.v, "p": self.partition, "readings": [r.to_dict() for r in self.readings]})

    @classmethod
    def decode(cls, raw: bytes) -> ReadingBatch:
        d = loads(raw)
        if not isinstance(d, dict):
            raise SchemaError("reading batch: not an object")
        v = require(d, "v", int, "reading batch")
        if v != VERSION:
            raise SchemaError(f"reading batch: unsupported schema version {v} (this worker reads {VERSION})")
        items = require(d, "readings", list, "reading batch")
        return cls(partition=require(d, "p", int, "reading batch"), readings=[Reading.from_dict(x) for x in items])


# A producer that knows its input has ended (``gridwatch replay`` after the last recorded message) sends
# an empty batch with this header to every readings partition: the worker announces that partition idle
# at once instead of after ``worker.upstream_idle_s`` of silence, so a replay's event-time merge never
# depends on a pause of the machine (see agents/watermarks.py).
END_OF_INPUT_HEADER = "gw-end-of-input"


def end_of_input(partition: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) of the end-of-input marker for a readings partition."""
    return ReadingBatch(partition).encode(), [(END_OF_INPUT_HEADER, b"1")]


def is_end_of_input(headers: Any) -> bool:
    """Whether a readings record's headers (pairs or a mapping) mark the end of its producer's input."""
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    return any(name == END_OF_INPUT_HEADER for name, _ in items)
