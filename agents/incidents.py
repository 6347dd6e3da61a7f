"""Incident agent: grid events + resident reports + operator actions -> incidents (fusion, lifecycle,
supervision), every change on ``<prefix>.incidents``.

The three input topics are keyed by grid code with the same partition count, so Faust assigns the
same partitions of all three to one worker (co-partitioned) and one agent sees a grid's events,
reports and actions. Grid events of one grid come from several readings partitions, so they are merged
in event time (agents/event_order.py) by the order header and the watermark control records the
telemetry agent writes; reports and operator actions (HTTP, wall time) are applied on arrival (a report's
time moves the supervision clock only once the partition's grid events are caught up, see
``IncidentProcessor.advance``).
The state (every incident with its history, the watermarks, the merge buffer) lives in
the Faust table ``incidents`` whose changelog is written to the input's partition explicitly
(``tables.apply_writes``), so the worker that owns a partition after a crash or rebalance recovers it.

Order per batch: changes are produced and confirmed before the table is written, so a crash in
between re-processes the inputs and produces the same changes again (same versions, same ids);
the channels drop the copies by version.
"""

from __future__ import annotations

import logging
from time import thread_time_ns
from typing import Any

from faust.types import TP

from gridwatch.compat import unprocessed
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import GridEvent, Watermarks, is_control, order_of
from gridwatch.pipeline.schemas.incidents import OperatorAction
from gridwatch.pipeline.schemas.reports import ResidentReport

from .batch_send import send_all
from .batch_take import take_batches
from .fusion import IncidentProcessor, Outcome
from .routing import load_incident_config
from .runtime import AgentContext
from .tables import TableStore, apply_writes

log = logging.getLogger("gridwatch.incidents")
INPUTS = ("events", "reports", "actions")


def family_topic(ctx: AgentContext, *families: str) -> Any:
    """A raw-bytes Faust topic over ``<prefix>.<family>`` topics, created with the configured
    partition count if missing (internal=True makes Faust declare them, so a worker started before
    the bridge still gets co-partitioned topics)."""
    s = ctx.settings
    return ctx.app.topic(*(s.topic(f) for f in families), key_serializer="raw", value_serializer="raw",
                         partitions=s.kafka.partitions, internal=True)


def install(ctx: AgentContext) -> Any:
    app, settings = ctx.app, ctx.settings
    cfg = load_incident_config(settings=settings)
    # Raw values: the processor stores each incident as the JSON it already made for the change record.
    table = app.Table("incidents", partitions=settings.kafka.partitions, default=None, value_type=bytes)
    processor = IncidentProcessor(cfg, ctx.gridmap, TableStore(table))
    source = family_topic(ctx, *INPUTS)
    out_topic = family_topic(ctx, "incidents")
    out_name = settings.topic("incidents")
    names = {settings.topic(f): f for f in INPUTS}
    events_name = settings.topic("events")
    events_done: dict[int, int] = {}  # events partition -> offset of the last record processed

    def events_behind(p: int) -> bool:
        return unprocessed(app, TP(events_name, p), events_done.get(p))
    log.info("incidents: %d category groups from %s", len(cfg.groups), cfg.source)

    @app.on_partitions_revoked.connect
    async def _forget(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        processor.reset()
        events_done.clear()

    def apply(family: str, partition: int, raw: bytes, headers: Any, out: Outcome) -> None:
        if family == "events":
            if is_control(raw):
                processor.on_watermarks(partition, Watermarks.decode(raw), out)
            elif (order := order_of(headers)) is not None:
                processor.on_ordered_event(partition, order[0], order[1], raw, out)
            else:
                processor.on_event(partition, GridEvent.decode(raw), out)
        elif family == "reports":
            processor.on_report(partition, ResidentReport.decode(raw), out)
        else:
            processor.on_action(partition, OperatorAction.decode(raw), out)

    hold = cfg.fusion.report_hold_s
    wake = Watermarks({}).encode()  # a control record with no marks: it only makes the agent run a batch

    @app.timer(1.0)
    async def _wake_held_reports() -> None:
        """A report waits in the merge for the grid events before it (fusion.report_hold_s); the agent looks at
        it again only when an input arrives, and with the telemetry agent down none may. An empty control record
        on its events partition makes the agent run a batch, and that batch's end applies the report."""
        due = processor.reports_held_since(processor.wall_clock() - hold)
        if due:
            await send_all(app, [(events_name, p, b"~wake", wake) for p in due])

    @app.agent(source, name="incidents")
    async def incidents(stream: Any) -> None:
        await out_topic.maybe_declare()
        async for batch in take_batches(stream, 500, lane=True):
            started = thread_time_ns()
            out = Outcome()
            touched: set[int] = set()
            dead: list[tuple[str, str, str, bytes]] = []  # reason, detail, topic, value: dead-lettered after the fusion
            for rec in batch:  # the lane's records: topic, partition, offset, value (raw bytes), headers
                family = names.get(rec.topic, "")
                seen = len(out.rejected)
                try:
                    apply(family, rec.partition, rec.value, rec.headers, out)
                except SchemaError as e:
                    dead.append((f"bad_{family.rstrip('s') or 'record'}", str(e), rec.topic, rec.value))
                    continue
                except Exception as e:  # noqa: BLE001 - one bad input must not stop fusion
                    log.exception("incident processing failed on %s[%d]", rec.topic, rec.partition)
                    dead.append(("fusion_error", f"{type(e).__name__}: {e}", rec.topic, rec.value))
                    continue
                finally:
                    touched.add(rec.partition)
                    if family == "events":
                        events_done[rec.partition] = rec.offset
                for r in out.rejected[seen:]:
                    log.info("rejected %s from %s: %s", r.reason, rec.topic, r.detail)
                    dead.append((r.reason, r.detail, rec.topic, rec.value))
            for p in sorted(touched.union(processor.reports_waiting())):
                try:
                    processor.advance(p, out, events_behind(p))
                except Exception:  # noqa: BLE001
                    log.exception("supervision failed on partition %d", p)
            # The CPU the fusion took in this worker (decoding, fusion, supervision: what the in-process bench runs),
            # on this thread and with nothing awaited in between: bench incidents sets it beside the worker's CPU.
            ctx.stats["incident_fusion_cpu_us"] += (thread_time_ns() - started) // 1000
            for reason, detail, topic, value in dead:
                await ctx.dead_letter("incidents", reason, detail, topic, value)
            if out.changes:  # confirmed before the table moves on (see the module doc)
                await send_all(app, [(out_name, None, key.encode(), value) for key, value in out.changes])
                ctx.stats["incident_changes"] += len(out.changes)
            if out.writes:
                await send_all(app, apply_writes(table, out.writes), wait=False)
            ctx.stats["incident_inputs"] += len(batch)
            ctx.stats["incident_duplicates"] += out.duplicates
            ctx.stats["incident_late_events"] += out.late

    return incidents
