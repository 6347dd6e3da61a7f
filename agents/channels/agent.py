"""Fan-out agent: ``<prefix>.incidents`` -> every configured channel (one Faust agent per channel).

One agent per channel, so a webhook that is down and retrying with back-off does not hold back MQTT.
Within a channel, changes of one incident go out in order, different incidents concurrently. A table
remembers the highest version delivered per (channel, incident), so a re-delivered change (worker
restart, fusion re-producing after a crash) is not delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gridwatch.pipeline.schemas.codec import SchemaError

from ..batch_take import take_batches
from ..incidents import family_topic
from ..routing import load_incident_config
from ..runtime import AgentContext
from ..tables import put
from .base import ChangeInfo, Channel, ChannelConfigError, DeliveryError, build_channels

log = logging.getLogger("gridwatch.channels")
# A change carries the whole incident; parsing a batch of them holds the worker's event loop, which the rules
# and the alerts agent share.  Measured (telemetry bench, publish -> alert p99 at 2,000 readings/s while the
# incidents of the throughput phase were still fanned out): batches of 200 parsed at once gave 374-491 ms,
# the same worker without this agent 120 ms.
BATCH = 50
YIELD_EVERY = 10


def install(ctx: AgentContext) -> Any:
    app, settings = ctx.app, ctx.settings
    cfg = load_incident_config(settings=settings)
    try:
        channels = build_channels(cfg.channels, settings)
    except ChannelConfigError as e:
        # A wrong channel must not take the incident workflow down with it: say so loudly, run without.
        log.error("incident channels disabled: %s", e)
        return None
    topic = family_topic(ctx, "incidents")
    sent = app.Table("incident-channels-sent", partitions=settings.kafka.partitions, default=None)
    agents = [_install_one(ctx, ch, topic, sent) for ch in channels]
    log.info("incident channels: %s", ", ".join(f"{c.name} ({c.type})" for c in channels) or "none")
    return agents[0] if agents else None


def _install_one(ctx: AgentContext, channel: Channel, topic: Any, sent: Any) -> Any:
    app = ctx.app

    async def deliver_all(items: list[tuple[str, ChangeInfo, bytes, int]]) -> None:
        """Deliver one incident's changes in order; a failed change is dead-lettered, the rest go on."""
        for marker, change, body, partition in items:
            try:
                await channel.deliver(change, body)
            except DeliveryError as e:
                await ctx.dead_letter("channel", f"{channel.type}_failed", f"channel {channel.name}: {e}",
                                      ctx.settings.topic("incidents"), body)
            except Exception as e:  # noqa: BLE001 - a channel bug must not stop the fan-out
                log.exception("channel %s failed", channel.name)
                await ctx.dead_letter("channel", "channel_error", f"channel {channel.name}: {type(e).__name__}: {e}",
                                      ctx.settings.topic("incidents"), body)
            else:
                ctx.stats[f"channel.{channel.name}"] += 1
            put(sent, marker, change.version, partition)

    async def fan_out(stream: Any) -> None:
        await channel.start()
        try:
            async for batch in take_batches(stream, BATCH, within=0.005):
                per_incident: dict[str, list[tuple[str, ChangeInfo, bytes, int]]] = {}
                versions: dict[str, int] = {}
                for i, event in enumerate(batch):
                    if i and i % YIELD_EVERY == 0:
                        await asyncio.sleep(0)  # let the rules and the alerts agent in between
                    try:
                        change = ChangeInfo.parse(event.value)
                    except SchemaError as e:
                        await ctx.dead_letter("channel", "bad_incident_change", str(e), event.message.topic,
                                              event.value)
                        continue
                    marker = f"{channel.name}|{change.incident_id}"
                    done = max(versions.get(marker, 0), sent.get(marker) or 0)
                    if change.version <= done or not channel.accepts(change):
                        continue
                    versions[marker] = change.version
                    per_incident.setdefault(change.incident_id, []).append(
                        (marker, change, event.value, event.message.partition))
                if per_incident:
                    await asyncio.gather(*(deliver_all(items) for items in per_incident.values()))
        finally:
            await channel.stop()

    return app.agent(topic, name=f"incident-channel-{channel.name}")(fan_out)
