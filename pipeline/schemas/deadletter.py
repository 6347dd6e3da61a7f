"""Topic family ``deadletter``: anything that could not be processed, with the reason, never lost."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any

from .codec import dumps, loads

VERSION = 1


@dataclass(slots=True)
class DeadLetter:
    stage: str  # where it failed: "bridge", "telemetry", "alerts", ...
    reason: str  # short machine-readable reason, e.g. "malformed_json", "unknown_device"
    detail: str  # human-readable: what was wrong and what to fix
    source: str  # MQTT topic or Kafka topic it came from
    payload: str  # the original bytes: UTF-8 text, or "base64:..." when not text
    received_ms: int
    device_id: str | None = None
    v: int = VERSION

    @staticmethod
    def payload_text(raw: bytes, limit: int = 65536) -> str:
        raw = raw[:limit]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode()

    def encode(self) -> bytes:
        return dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        d: dict[str, Any] = loads(raw)
        return cls(**d)
