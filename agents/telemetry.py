"""Telemetry rule agent: readings -> rules (event time, debounce, hysteresis) -> grid events.

One ``async for`` over raw batch records: decoding happens inside a try so a bad record goes to the
dead-letter topic instead of crashing the agent (Faust stops consuming on a ValueDecodeError).
Events are sent and confirmed before the state that says "raised" is written, so a crash in between
re-raises the same event (same deterministic id) rather than losing it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.readings import ReadingBatch

from .partition_state import TelemetryProcessor
from .rules.base import load_rules
from .rules.engine import RuleEngine
from .runtime import AgentContext
from .tables import put

log = logging.getLogger("gridwatch.telemetry")


class TableStore:
    """StateStore over a Faust table (JSON values)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: str) -> dict[str, Any] | None:
        return self.table.get(key)


def install(ctx: AgentContext) -> Any:
    app, settings = ctx.app, ctx.settings
    w = settings.worker
    engine = RuleEngine(load_rules(settings.rules_path()), ctx.registry, ctx.gridmap)
    table = app.Table("telemetry-state", partitions=settings.kafka.partitions, default=None)
    processor = TelemetryProcessor(
        engine, ctx.registry, TableStore(table),
        lateness_ms=int(w.allowed_lateness_s * 1000), scan_every_ms=int(w.offline_scan_s * 1000),
        checkpoint_every_ms=int(w.presence_checkpoint_s * 1000),
    )

    @app.on_partitions_revoked.connect
    async def _forget(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        processor.reset()

    events_topic = ctx.events_topic

    @app.agent(ctx.readings_topic, name="telemetry")
    async def telemetry(stream: Any) -> None:
        async for event in stream.events():
            partition = event.message.partition
            try:
                batch = ReadingBatch.decode(event.value)
            except SchemaError as e:
                await ctx.dead_letter("telemetry", "bad_batch", str(e), event.message.topic, event.value)
                continue
            try:
                result = processor.process(partition, batch.readings)
            except Exception as e:  # noqa: BLE001 - a rule bug must not stop the worker
                log.exception("rule processing failed on partition %d", partition)
                await ctx.dead_letter("telemetry", "rule_error", f"{type(e).__name__}: {e}", event.message.topic,
                                      event.value)
                continue
            for r in result.unknown:
                await ctx.dead_letter("telemetry", "unknown_device", f"device {r.device_id} left the registry",
                                      event.message.topic, b"", r.device_id)
            if result.events:
                futures = [await events_topic.send(key=ev.grid_code.encode(), value=ev.encode())
                           for ev in result.events]
                await asyncio.gather(*futures)
                ctx.stats["events"] += len(result.events)
            for key, value in result.writes.items():
                put(table, key, value, partition)
            ctx.stats["readings"] += len(batch.readings)

    return telemetry
