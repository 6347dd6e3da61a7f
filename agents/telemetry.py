"""Telemetry rule agent: readings -> rules (event time, debounce, hysteresis) -> grid events.

One ``async for`` over raw batch records: decoding happens inside a try so a bad record goes to the
dead-letter topic instead of crashing the agent (Faust stops consuming on a ValueDecodeError).
Events are sent and confirmed before the state that says "raised" is written, so a crash in between
re-raises the same event (same deterministic id) rather than losing it.

Event-time merge downstream (agents/event_order.py): each event carries a header with its readings
partition and that partition's high mark when it was raised, and once a batch's events are confirmed
the partition's high mark is announced to every events partition in a watermark control record
(throttled, idle partitions announced idle; see agents/watermarks.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.types import TP

from gridwatch.compat import unprocessed
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import order_header
from gridwatch.pipeline.schemas.readings import ReadingBatch, is_end_of_input

from .partition_state import TelemetryProcessor
from .rules.base import load_rules
from .rules.engine import RuleEngine
from .runtime import AgentContext
from .tables import TableStore, put
from .watermarks import WatermarkSender

log = logging.getLogger("gridwatch.telemetry")


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

    marks = WatermarkSender("readings", idle_s=w.upstream_idle_s, advance_slack_s=w.wall_clock_advance_slack_s,
                            min_slack_s=w.wall_clock_advance_slack_min_s)

    @app.on_partitions_revoked.connect
    async def _forget(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        processor.reset()
        marks.forget()
        processed.clear()

    @app.on_partitions_assigned.connect
    async def _own(app_: Any, assigned: Any = None, **kwargs: Any) -> None:
        now = time.monotonic()
        for tp in assigned or ():
            if tp.topic == settings.topic("readings"):
                marks.assigned(tp.partition, now)

    events_topic = ctx.events_topic

    sending = asyncio.Lock()  # one control record at a time: an idle marker never overtakes a newer mark

    processed: dict[int, int] = {}  # readings partition -> offset of the last batch processed

    def backlog(name: str) -> bool:
        """Input of this readings partition in Kafka or fetched that the agent has not processed yet."""
        partition = int(name.rpartition(":")[2])
        return unprocessed(app, TP(settings.topic("readings"), partition), processed.get(partition))

    async def announce() -> None:
        """Send the marks that are due as one control record to every events partition."""
        async with sending:
            rec = marks.due(time.monotonic(), backlog)
            if rec is None:
                return
            value = rec.encode()
            futures = [await events_topic.send(key=b"~watermark", value=value, partition=p)
                       for p in range(settings.kafka.partitions)]
            await asyncio.gather(*futures)
            ctx.stats["watermarks"] += 1

    @app.timer(w.watermark_interval_s)
    async def _watermarks() -> None:
        await announce()

    extra: list[asyncio.TimerHandle] = []  # at most one announce between ticks (bounded cost under load)
    # ... and at most one per interval: with a slack of a few ms a busy worker would announce after
    # nearly every batch, 8 control records each, which every events consumer reads (the alert path's p99)
    extra_gap_s = w.watermark_interval_s
    extra_fired = [float("-inf")]

    def announce_when_passed(partition: int, order_ts: int) -> None:
        """Announce the marks right when the other upstreams' marks pass these events (a sparse city's
        incident waits ~slack for them, not slack + up to one tick); one pending at a time."""
        at = marks.passes_at(partition, order_ts)
        if at is None or (extra and not extra[0].cancelled()):
            return
        at = max(at, extra_fired[0] + extra_gap_s)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            extra.clear()
            extra_fired[0] = time.monotonic()
            task = loop.create_task(announce())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # errors: the tick retries

        extra[:] = [loop.call_at(loop.time() + max(0.0, at - time.monotonic()), fire)]

    @app.agent(ctx.readings_topic, name="telemetry")
    async def telemetry(stream: Any) -> None:
        async for event in stream.events():
            partition = event.message.partition
            processed[partition] = event.message.offset  # set before the work: an error path is processed too
            if is_end_of_input(event.message.headers):
                marks.ended(partition)
                await announce()
                continue
            try:
                batch = ReadingBatch.decode(event.value)
            except SchemaError as e:
                await ctx.dead_letter("telemetry", "bad_batch", str(e), event.message.topic, event.value)
                continue
            if marks.begin(partition, time.monotonic()):
                await announce()  # woken up / first input: marks go out before this batch's events
            try:
                result = processor.process(partition, batch.readings)
            except Exception as e:  # noqa: BLE001 - a rule bug must not stop the worker
                log.exception("rule processing failed on partition %d", partition)
                await ctx.dead_letter("telemetry", "rule_error", f"{type(e).__name__}: {e}", event.message.topic,
                                      event.value)
                marks.confirmed(partition, 0, time.monotonic())
                continue
            for r in result.unknown:
                await ctx.dead_letter("telemetry", "unknown_device", f"device {r.device_id} left the registry",
                                      event.message.topic, b"", r.device_id)
            if result.events:
                upstream = marks.name(partition)
                futures = [await events_topic.send(key=ev.grid_code.encode(), value=ev.encode(),
                                                   headers=order_header(upstream, t))
                           for ev, t in zip(result.events, result.order_ts, strict=True)]
                await asyncio.gather(*futures)
                ctx.stats["events"] += len(result.events)
            marks.confirmed(partition, processor.high_mark(partition), time.monotonic(),
                            min((r.ts for r in batch.readings), default=None))
            if result.events:
                announce_when_passed(partition, max(result.order_ts))
            for key, value in result.writes.items():
                put(table, key, value, partition)
            ctx.stats["readings"] += len(batch.readings)

    return telemetry
