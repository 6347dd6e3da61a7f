"""Topic family ``deadletter``: anything that could not be processed, with the reason, never lost.

Version 2 (the bridge's letters) describes one whole MQTT message: the reasons of its bad entries as a
capped list plus a count per reason, and the payload once, capped, with its size and SHA-256 so the
original can be matched even when only its head is kept. Version 1 letters (one reason, one payload)
still decode: the new fields have defaults.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from typing import Any

from .codec import dumps, loads

VERSION = 2


@dataclass(slots=True)
class DeadLetter:
    stage: str  # where it failed: "bridge", "telemetry", "alerts", ...
    reason: str  # short machine-readable reason, e.g. "malformed_json", "unknown_device" (the first one)
    detail: str  # human-readable: what was wrong and what to fix
    source: str  # MQTT topic or Kafka topic it came from
    payload: str  # the original bytes (maybe only their head): UTF-8 text, or "base64:..." when not text
    received_ms: int
    device_id: str | None = None
    v: int = VERSION
    # v2: a whole message with several bad entries
    reasons: list[dict[str, Any]] = field(default_factory=list)  # [{reason, detail, device_id}], capped
    counts: dict[str, int] = field(default_factory=dict)  # every bad entry, per reason (never capped)
    entries_omitted: int = 0  # bad entries not listed in ``reasons``
    payload_bytes: int = 0  # size of the original payload
    payload_sha256: str = ""
    payload_truncated: bool = False

    @staticmethod
    def payload_text(raw: bytes, limit: int = 65536) -> str:
        cut = len(raw) > limit
        raw = raw[:limit]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if cut:  # the cut may have split a multi-byte character: drop its first bytes
                for n in range(1, 4):
                    try:
                        return raw[:-n].decode("utf-8")
                    except UnicodeDecodeError:
                        continue
            return "base64:" + base64.b64encode(raw).decode()

    def encode(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        d: dict[str, Any] = loads(raw)
        return cls(**d)
