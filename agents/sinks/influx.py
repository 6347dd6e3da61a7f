"""InfluxDB sink (``type: influx``): readings, grid events and incident changes -> InfluxDB 2
(pipeline/outputs/influx.py). Its settings are gridwatch.yaml's ``influx:`` section.

Off unless ``influx.enabled``. Each agent takes what is buffered (up to a second's worth), writes it
(building the points of one record while the batches before it are written: ``InfluxSink.write_take``)
and waits for InfluxDB to confirm before the records count as done, so a crash re-writes points
instead of losing them, and a slow database makes the agent consume slower (back-pressure) instead of
buffering without bound. Run it as its own worker (``--agents influx_sink --app-id gridwatch-sink``) so a
slow database never holds back the rule and alert agents sharing a worker's consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gridwatch.core.settings import InfluxSettings
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.outputs.influx import InfluxSink, PointBuilder, Presence
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import GridEvent, is_control

from ..batch_take import take_batches
from ..runtime import AgentContext
from .base import Sink, register

log = logging.getLogger("gridwatch.influx")

TAKE = 500  # Kafka records per write round (a readings record holds up to 2,000 readings)
WITHIN_S = 1.0


@register("influx")
class Influx(Sink):
    config_class = InfluxSettings
    section = "influx"
    config: InfluxSettings

    def install(self, ctx: AgentContext) -> Any:
        return install(ctx, self.config)


def install(ctx: AgentContext, cfg: InfluxSettings) -> Any:
    app, settings = ctx.app, ctx.settings
    if not cfg.enabled:
        log.info("influx sink off (influx.enabled is false)")
        return None
    sink = InfluxSink(cfg)
    builder = PointBuilder(ctx.registry, ctx.gridmap, settings.kafka.topic_prefix, device_tag=cfg.device_tag)
    presence = Presence(ctx.registry, builder, settings.kafka.partitions, cfg.presence_interval_s * 1000,
                        partition_for)
    app.influx_sink = sink  # type: ignore[attr-defined]
    log.info("influx sink on: %s org %s bucket %s", cfg.url, cfg.org, cfg.bucket)

    @app.on_partitions_revoked.connect
    async def _forget(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        presence.forget()

    def reading_lines(event: Any) -> list[str]:
        try:
            _p, points, seen = builder.batch(event.value)
        except SchemaError:
            return []  # the telemetry agent dead-letters it
        return points + presence.observe(event.message.partition, seen)

    @app.agent(ctx.readings_topic, name="influx_readings")
    async def influx_readings(stream: Any) -> None:
        async for events in take_batches(stream, TAKE, within=WITHIN_S):
            await sink.write_take(events, reading_lines)  # returns once InfluxDB confirmed the take

    async def write_points(stream: Any, to_point: Callable[[bytes], str | None]) -> None:
        """One loop for every record family: a record that does not decode is skipped, not fatal."""

        def lines_of(event: Any) -> list[str]:
            try:
                p = to_point(event.value)
            except SchemaError:
                return []
            return [p] if p else []

        async for events in take_batches(stream, TAKE, within=WITHIN_S):
            await sink.write_take(events, lines_of)

    @app.agent(ctx.events_topic, name="influx_events")
    async def influx_events(stream: Any) -> None:
        await write_points(stream, lambda raw: None if is_control(raw) else builder.event(GridEvent.decode(raw)))

    try:
        from gridwatch.pipeline.schemas.incidents import IncidentChange
    except ImportError:  # no incident workflow in this build
        return influx_readings
    incidents_topic = app.topic(settings.topic("incidents"), key_serializer="raw", value_serializer="raw",
                                partitions=settings.kafka.partitions, internal=True)

    @app.agent(incidents_topic, name="influx_incidents")
    async def influx_incidents(stream: Any) -> None:
        await write_points(stream, lambda raw: builder.incident(IncidentChange.decode(raw)))

    return influx_readings
