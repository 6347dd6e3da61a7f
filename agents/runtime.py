"""What every agent gets from the app factory: settings, the city, topics and shared helpers.

Agents talk to each other only through topics; this context holds no agent's state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gridwatch.core.settings import Settings
from gridwatch.pipeline.schemas.deadletter import DeadLetter

log = logging.getLogger("gridwatch.agents")


@dataclass
class AgentContext:
    app: Any  # faust.App
    settings: Settings
    registry: Any
    gridmap: Any
    readings_topic: Any
    events_topic: Any
    deadletter_topic: Any
    stats: Counter = field(default_factory=Counter)
    timezone: str = "UTC"  # the city's (local time of scene rules)

    async def dead_letter(self, stage: str, reason: str, detail: str, source: str, payload: bytes,
                          device_id: str | None = None) -> None:
        """Park what could not be processed, with the reason; the agent goes on with the next one."""
        self.stats[f"dead_letters.{reason}"] += 1
        log.warning("dead letter from %s (%s): %s", stage, reason, detail[:300])
        rec = DeadLetter(stage, reason, detail, source, DeadLetter.payload_text(payload),
                         int(time.time() * 1000), device_id)
        await self.deadletter_topic.send(key=source.encode(), value=rec.encode())
