"""Grid-event fan-out: ``<prefix>.events`` -> every configured event channel (one Faust agent per channel).

The default channel is MQTT (agents/channels/mqtt_alerts.py): one topic per grid and event type. Event
channels are entries of the ``channels:`` list in incidents.yaml whose type takes the ``events`` stream;
without any such entry the default ``alerts`` channel is added (``enabled: false`` on it turns alerts off).

Per channel, a Faust table remembers which (event, phase) was delivered, so a re-delivered event (worker
restart, replayed reading) is not delivered twice; a marker is forgotten once it is
``worker.alert_dedupe_retention_s`` older (event time) than the newest event of its partition, so the table
does not grow forever. The markers of a batch reach the changelog one Kafka round trip after the receiver
took its alerts; for a worker that dies or freezes in that gap, a channel whose receiver keeps a record
(MQTT: the broker's publish ledger) tells the successor what already went out.
Control records of the events topic (watermarks for the incident agent) are skipped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Iterable
from typing import Any

from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import GridEvent, is_control

from .batch_take import take_batches
from .channels.base import CHANNELS, Channel, ChannelConfigError, EventChannel, EventItem
from .routing import load_incident_config
from .runtime import AgentContext
from .tables import delete, put

log = logging.getLogger("gridwatch.alerts")
FLUSH_MARKERS_S = 5.0  # how long a batch waits for its delivered-markers to reach the changelog
DEFAULT_CHANNEL = {"name": "alerts", "type": "mqtt_alerts"}


class Retention:
    """Which published markers to forget, per partition, by event time (deterministic: the partition's
    newest event decides, never the wall clock). Markers are ``<event id>:<phase>:<ts>``; the table
    value ``{"p": partition}`` lets a restarted worker rebuild this index from the table."""

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.heaps: dict[int, list[tuple[int, str]]] = {}
        self.newest: dict[int, int] = {}

    def load(self, partition: int, items: Iterable[tuple[Any, Any]]) -> None:
        """Index the partition's markers from the table (first use after a start or a rebalance)."""
        heap = self.heaps.setdefault(partition, [])
        for marker, value in items:
            if isinstance(value, dict) and value.get("p") == partition and isinstance(marker, str):
                ts = int(marker.rsplit(":", 1)[1])
                heap.append((ts, marker))
                self.newest[partition] = max(self.newest.get(partition, 0), ts)
        heapq.heapify(heap)

    def known(self, partition: int) -> bool:
        return partition in self.heaps

    def add(self, partition: int, marker: str, ts: int) -> None:
        heapq.heappush(self.heaps.setdefault(partition, []), (ts, marker))

    def expired(self, partition: int, ts: int) -> list[str]:
        """An event of time ``ts`` was seen: the markers now past the retention."""
        newest = self.newest[partition] = max(self.newest.get(partition, 0), ts)
        heap, out = self.heaps.setdefault(partition, []), []
        while heap and heap[0][0] < newest - self.retention_ms:
            out.append(heapq.heappop(heap)[1])
        return out

    def forget(self) -> None:
        self.heaps.clear()
        self.newest.clear()


def event_channels(entries: list[dict[str, Any]], settings: Any = None) -> list[EventChannel]:
    """The enabled event channels of the ``channels:`` list, the default MQTT one where none is listed.
    A wrong entry is logged and left out: it must not silence the other channels' alerts."""
    out: list[EventChannel] = []
    listed = False
    for entry in entries:
        name = str(entry.get("name"))
        try:
            cls: type[Channel] = CHANNELS.get(entry.get("type"), entry.get("module"), f"channel {name!r}")
        except ChannelConfigError:
            continue  # the incident fan-out reports it (agents/channels/agent.py)
        if not issubclass(cls, EventChannel):
            continue
        listed = True
        if entry.get("enabled", True) is False:
            continue
        try:
            out.append(cls(name, entry, settings))
        except ChannelConfigError as e:
            log.error("alert channel left out: %s", e)
    if not listed:
        out.append(CHANNELS.get(DEFAULT_CHANNEL["type"], None, "channel 'alerts'")("alerts", {}, settings))
    return out


def install(ctx: AgentContext) -> Any:
    channels = event_channels(load_incident_config(settings=ctx.settings).channels, ctx.settings)
    log.info("alert channels: %s", ", ".join(f"{c.name} ({c.type})" for c in channels) or "none")
    agents = [_install_one(ctx, ch) for ch in channels]
    return agents[0] if agents else None


def _install_one(ctx: AgentContext, channel: EventChannel) -> Any:
    app, settings = ctx.app, ctx.settings
    suffix = "" if channel.name == "alerts" else f"-{channel.name}"
    published = app.Table(f"alerts-published{suffix}", partitions=settings.kafka.partitions, default=None)
    retention = Retention(int(settings.worker.alert_dedupe_retention_s * 1000))
    channel.group = app.conf.id
    events_topic = ctx.events_topic.get_topic_name()

    @app.on_partitions_revoked.connect
    async def _forget(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        retention.forget()  # the table is the truth; re-indexed on the next event of each partition
        channel.revoked({tp.partition for tp in revoked or () if tp.topic == events_topic})

    async def fan_out(stream: Any) -> None:
        await channel.start()
        try:
            # Batches: an alert storm (a feeder fault takes a whole district offline) goes out with many
            # acknowledgements in flight instead of one round trip per alert.
            async for batch in take_batches(stream, 500, within=0.005):
                await deliver_batch(batch)
        finally:
            await channel.stop()

    async def deliver_batch(batch: list[Any]) -> None:
        todo: list[tuple[EventItem, Any]] = []
        already: list[EventItem] = []
        for event in batch:
            if is_control(event.value):
                continue  # a watermark for the incident agent's merge, not an event
            try:
                ev = GridEvent.decode(event.value)
            except SchemaError as e:
                await ctx.dead_letter("alerts", "bad_event", str(e), event.message.topic, event.value)
                continue
            partition = event.message.partition
            if not retention.known(partition):
                retention.load(partition, list(published.data.items()))
            for old in retention.expired(partition, ev.ts):
                delete(published, old, partition)
            item = EventItem(ev, event.value, partition, event.message.offset, f"{ev.id}:{ev.phase}:{ev.ts}")
            if published.get(item.marker) or not channel.accepts_event(ev):
                continue  # re-delivered (worker restart, replayed reading): already out; or filtered
            if channel.delivered_before(item):
                already.append(item)  # its partition's previous owner got it out, then stopped
                continue
            todo.append((item, channel.queue(item)))
        if not todo and not already:
            return
        partitions = {item.partition for item, _ in todo}
        await asyncio.gather(*(pending for _, pending in todo), *channel.batch_queued(partitions))
        for item in [i for i, _ in todo] + already:
            put(published, item.marker, {"p": item.partition}, item.partition)
            retention.add(item.partition, item.marker, item.event.ts)
        # The markers reach the changelog now, not at the next commit, so the channel's own record can
        # let go of them. Bounded: a worker woken from a freeze (SIGSTOP past its session) hung here for
        # minutes on the producer's flush; the channel's record keeps the markers until a later flush.
        try:
            await asyncio.wait_for(app.producer.flush(), FLUSH_MARKERS_S)
            channel.remembered(partitions)
        except TimeoutError:
            log.warning("alert markers not confirmed by Kafka within %.0fs; channel %s keeps its own record "
                        "of %d of them", FLUSH_MARKERS_S, channel.name, len(todo))
        ctx.stats["alerts"] += len(todo)
        if already:
            ctx.stats["alerts.delivered_by_previous_owner"] += len(already)
            log.info("%d alert(s) not sent again on channel %s: its receiver's record shows this partition's "
                     "previous owner got them out before it stopped (%s)", len(already), channel.name,
                     ", ".join(i.marker for i in already[:5]))

    return app.agent(ctx.events_topic, name="alerts" + suffix)(fan_out)
