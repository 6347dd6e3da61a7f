"""Alert fan-out: grid events -> MQTT, one topic per grid and event type.

Topic: <alert_prefix>/<city>/<district>/<street>/<community>/<grid>/<type>, so an operator subscribes
to a whole tier with a wildcard, e.g. ``gridwatch/alerts/330100/330102/330102001/#`` for one street.
A Faust table remembers which (event, phase) was published, so a re-delivered event (worker restart,
replayed reading) is not published twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gridwatch.pipeline.mqtt_publisher import AsyncMqttPublisher
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import GridEvent

from .runtime import AgentContext
from .tables import put

log = logging.getLogger("gridwatch.alerts")
TIER_ORDER = ("city", "district", "street", "community", "grid")


def tier_path(tier_code: Callable[[str], str | None], grid_code: str) -> list[str]:
    """Codes city -> district -> street -> community -> grid ("_" where unknown), for MQTT topics
    that operators subscribe to per tier with a wildcard (shared by grid alerts and incidents)."""
    codes = [tier_code(t) or "_" for t in TIER_ORDER]
    if codes[-1] == "_":
        codes[-1] = grid_code
    return codes


def alert_topic(prefix: str, event: GridEvent) -> str:
    return "/".join([prefix, *tier_path(event.tier_code, event.grid_code), event.type])


def install(ctx: AgentContext) -> Any:
    app, settings = ctx.app, ctx.settings
    published = app.Table("alerts-published", partitions=settings.kafka.partitions, default=None)
    publisher = AsyncMqttPublisher(settings, client_id="")

    @app.agent(ctx.events_topic, name="alerts")
    async def alerts(stream: Any) -> None:
        if publisher.client is None:
            await publisher.start()
        # Batches: an alert storm (a feeder fault takes a whole district offline) is published with
        # many PUBACKs in flight instead of one round trip per alert.
        async for batch in stream.take_events(500, within=0.005):
            todo = []
            for event in batch:
                try:
                    ev = GridEvent.decode(event.value)
                except SchemaError as e:
                    await ctx.dead_letter("alerts", "bad_event", str(e), event.message.topic, event.value)
                    continue
                marker = f"{ev.id}:{ev.phase}:{ev.ts}"
                if published.get(marker):
                    continue  # re-delivered (worker restart, replayed reading): already out
                todo.append((marker, event.message.partition,
                             publisher.publish(alert_topic(settings.mqtt.alert_prefix, ev), event.value, qos=1)))
            if not todo:
                continue
            await asyncio.gather(*(pub for _, _, pub in todo))
            for marker, partition, _ in todo:
                put(published, marker, 1, partition)
            ctx.stats["alerts"] += len(todo)

    return alerts
