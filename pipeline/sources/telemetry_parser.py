"""Parse and validate telemetry payloads from device and gateway MQTT topics.

Pure functions (no I/O) so they can be fuzzed. Topics follow ThingsBoard's device and gateway APIs,
with the device or gateway id in the topic instead of an access token:

    v1/devices/{device_id}/telemetry   {"ts": 1732350000000, "values": {...}}   (or a list of them)
    v1/gateway/{gateway_id}/telemetry  {"<device_id>": [{"ts": ..., "values": {...}}], ...}

A payload can hold good and bad readings; the good ones pass, each bad one is rejected with a reason.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gridwatch.pipeline.schemas.mqtt_topics import DEVICE, telemetry_source
from gridwatch.pipeline.schemas.readings import Reading

# What a JSON text can start with (RFC 8259: UTF-8, an optional BOM, whitespace, then a value). Anything
# else is junk: rejected without decoding it (json.loads on bytes would first guess an encoding and decode
# the whole payload, e.g. 256 KB of NUL-led junk as UTF-16), which keeps a flooding device's cost small.
_JSON_START = re.compile(rb'(?:\xef\xbb\xbf)?[ \t\r\n]*[{\["\-0-9tfn]')
MIN_TS_MS = 946_684_800_000  # 2000-01-01: anything earlier is a broken clock or seconds-not-ms

# Known telemetry fields: (type, min, max). Unknown numeric/bool fields pass through untouched.
FIELDS: dict[str, tuple[type, float, float]] = {
    "lamp_on": (bool, 0, 1),
    "current_a": (float, 0, 100),
    "voltage_v": (float, 0, 500),
    "lux": (float, 0, 200_000),
    "tilt_deg": (float, 0, 180),
    "cover_open": (bool, 0, 1),
    "displacement_cm": (float, 0, 1000),
    "water_level_cm": (float, -100, 5000),
    "battery_pct": (float, 0, 100),
    "online": (bool, 0, 1),
    "rssi_dbm": (float, -150, 0),
    "temperature_c": (float, -60, 120),
}


class DeviceLookup(Protocol):
    def get(self, device_id: str) -> Any: ...


@dataclass(slots=True)
class Rejection:
    reason: str  # malformed_json, bad_topic, bad_structure, unknown_device, bad_value, bad_ts, oversized
    # (and parser_error: the bridge's Router when the parser itself failed)
    detail: str
    device_id: str | None = None


@dataclass(slots=True)
class ParseResult:
    readings: list[Reading]
    rejections: list[Rejection]


_INT_MIN, _INT_END = -(2**63), 2**64  # what orjson, the workers' decoder, reads back as an int


def finite_number(value: Any) -> bool:
    """A number every consumer reads back as itself: a finite float, or an integer within 64 bits (the
    workers' decoder reads a larger one as a float, and ``math.isfinite`` raised OverflowError on one
    beyond a float's range: a device could stop the bridge with a 400-digit value). Every reading's
    values pass here, so the exact types JSON decodes to are tested first."""
    cls = value.__class__
    if cls is float:
        return value - value == 0.0  # 0.0 for every finite float, NaN for an infinity or NaN
    if isinstance(value, int):
        return _INT_MIN <= value < _INT_END
    return isinstance(value, float) and math.isfinite(value)


def check_values(values: Any, device_id: str) -> tuple[dict[str, float | int | bool] | None, str | None]:
    """Return (clean values, None) or (None, why not)."""
    if not isinstance(values, dict) or not values:
        return None, f"device {device_id}: 'values' must be a non-empty object of numbers/booleans"
    clean: dict[str, float | int | bool] = {}
    for name, value in values.items():
        spec = FIELDS.get(name)
        if spec is None and not name.isascii() and not _is_text(name):
            return None, f"device {device_id}: field name {ascii(name)} is not Unicode text (a lone surrogate escape)"
        if value.__class__ is bool:
            if spec is not None and spec[0] is not bool:
                return None, f"device {device_id}: {name} must be a number, got {value!r}"
            clean[name] = value
            continue
        if not finite_number(value):
            return None, f"device {device_id}: {name} must be a finite number or boolean, got {_short(value)}"
        if spec is not None:
            typ, lo, hi = spec
            if typ is bool:
                if value not in (0, 1):
                    return None, f"device {device_id}: {name} must be true/false, got {value!r}"
                clean[name] = bool(value)
                continue
            if not lo <= value <= hi:
                return None, f"device {device_id}: {name}={value} outside plausible range [{lo}, {hi}]"
        clean[name] = value
    return clean, None


def _decode(payload: bytes) -> Any:
    """orjson first (about 4x faster: the bridge decodes every message), stdlib json for what orjson refuses,
    so that what it reads is unchanged: NaN or Infinity in one reading rejects that reading, not the whole
    gateway message; a byte-order mark is read. One difference: an integer beyond 64 bits reads as a float."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def _is_text(s: str) -> bool:
    """Whether ``s`` can be written as UTF-8: JSON's ``\\ud800`` escape decodes to a lone surrogate, which
    no record can carry (encoding the readings batch raised, and stopped the bridge's flush)."""
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_ts(ts: Any, now_ms: int, max_future_ms: int, device_id: str) -> tuple[int | None, str | None]:
    if isinstance(ts, bool) or not finite_number(ts):
        return None, f"device {device_id}: 'ts' must be milliseconds since epoch, got {_short(ts)}"
    ts = int(ts)
    if ts < MIN_TS_MS:
        hint = " (looks like seconds; send milliseconds)" if ts > 946_684_800 else ""
        return None, f"device {device_id}: ts={ts} is before 2000-01-01{hint}"
    if ts > now_ms + max_future_ms:
        return None, f"device {device_id}: ts={ts} is {(ts - now_ms) / 1000:.0f}s in the future (clock skew?)"
    return ts, None


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: a rejection's reason must stay readable (and small)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _entries(obj: Any) -> list[Any]:
    return obj if isinstance(obj, list) else [obj]


def parse_message(
    topic: str,
    payload: bytes,
    lookup: DeviceLookup,
    now_ms: int,
    *,
    max_payload_bytes: int = 262_144,
    max_future_ms: int = 600_000,
    loads: Callable[[bytes], Any] | None = None,
) -> ParseResult:
    """Turn one MQTT message into readings and rejections; never raises on bad input."""
    readings: list[Reading] = []
    rejections: list[Rejection] = []
    if len(payload) > max_payload_bytes:
        return ParseResult([], [Rejection("oversized", f"payload of {len(payload)} bytes exceeds {max_payload_bytes}")])
    source = telemetry_source(topic)
    if source is None:
        return ParseResult([], [Rejection("bad_topic", f"topic {topic!r} is not v1/devices/ID/telemetry or v1/gateway/ID/telemetry")])
    if not _JSON_START.match(payload):
        return ParseResult([], [Rejection("malformed_json", f"payload is not UTF-8 JSON: starts with {payload[:16]!r}")])
    try:
        doc = (loads or _decode)(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        return ParseResult([], [Rejection("malformed_json", f"payload is not valid JSON: {str(e)[:200]}")])

    def add(device_id: str, entry: Any, gateway: str | None) -> None:
        dev = lookup.get(device_id)
        if dev is None:
            rejections.append(Rejection("unknown_device", f"device {device_id!r} is not in the registry", device_id))
            return
        if gateway is not None and getattr(dev, "gateway", None) != gateway:
            rejections.append(Rejection(
                "unknown_device", f"device {device_id!r} does not belong to gateway {gateway!r}", device_id))
            return
        if not isinstance(entry, dict):
            rejections.append(Rejection("bad_structure", f"device {device_id}: entry must be an object with ts and values", device_id))
            return
        ts, why = check_ts(entry.get("ts"), now_ms, max_future_ms, device_id)
        if why is None:
            values, why = check_values(entry.get("values"), device_id)
        if why is not None:
            rejections.append(Rejection("bad_ts" if ts is None else "bad_value", why, device_id))
            return
        readings.append(Reading(device_id, ts, values, topic, now_ms))  # type: ignore[arg-type]

    kind, ident = source
    if kind == DEVICE:
        entries = _entries(doc)
        if not entries:
            rejections.append(Rejection("bad_structure", "empty list of readings", ident))
        for entry in entries:
            add(ident, entry, None)
    else:
        if not isinstance(doc, dict) or not doc:
            return ParseResult([], [Rejection("bad_structure", "gateway payload must be an object {device_id: [readings]}")])
        for device_id, entries in doc.items():
            if entries == []:
                rejections.append(Rejection("bad_structure", f"device {device_id}: empty list of readings", device_id))
            for entry in _entries(entries):
                add(device_id, entry, ident)
    return ParseResult(readings, rejections)
