"""Alert fan-out: grid events -> MQTT, one topic per grid and event type.

Topic: <alert_prefix>/<city>/<district>/<street>/<community>/<grid>/<type>, so an operator subscribes
to a whole tier with a wildcard, e.g. ``gridwatch/alerts/330100/330102/330102001/#`` for one street.
A Faust table remembers which (event, phase) was published, so a re-delivered event (worker restart,
replayed reading) is not published twice; a marker is forgotten once it is ``worker.alert_dedupe_retention_s``
older (event time) than the newest event of its partition, so the table does not grow forever.
The markers of a batch reach the changelog one Kafka round trip after the broker took its alerts; for a
worker that dies or freezes in that gap, the broker's publish ledger
(:mod:`gridwatch.pipeline.outputs.mqtt_ledger`) tells its successor what already went out.
Control records of the events topic (watermarks for the incident agent) are skipped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Iterable
from typing import Any

from gridwatch.pipeline.outputs.mqtt_ledger import PublishLedger
from gridwatch.pipeline.outputs.mqtt_publisher import AsyncMqttPublisher
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.events import GridEvent, is_control

from .runtime import AgentContext
from .tables import delete, put

log = logging.getLogger("gridwatch.alerts")
FLUSH_MARKERS_S = 5.0  # how long a batch waits for its published-markers to reach the changelog
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


def install(ctx: AgentContext) -> Any:
    app, settings = ctx.app, ctx.settings
    published = app.Table("alerts-published", partitions=settings.kafka.partitions, default=None)
    publisher = AsyncMqttPublisher(settings, client_id="")
    ledger = PublishLedger(publisher, settings.mqtt.alert_prefix, app.conf.id)
    retention = Retention(int(settings.worker.alert_dedupe_retention_s * 1000))

    @app.on_partitions_revoked.connect
    async def _forget(app_: Any, revoked: Any = None, **kwargs: Any) -> None:
        retention.forget()  # the table is the truth; re-indexed on the next event of each partition
        ledger.forget({tp.partition for tp in revoked or () if tp.topic == ctx.events_topic.get_topic_name()})

    @app.agent(ctx.events_topic, name="alerts")
    async def alerts(stream: Any) -> None:
        if publisher.client is None:
            await publisher.start()
            await ledger.start()
        # Batches: an alert storm (a feeder fault takes a whole district offline) is published with
        # many PUBACKs in flight instead of one round trip per alert.
        async for batch in stream.take_events(500, within=0.005):
            todo, already = [], []
            for event in batch:
                if is_control(event.value):
                    continue  # a watermark for the incident agent's merge, not an event
                try:
                    ev = GridEvent.decode(event.value)
                except SchemaError as e:
                    await ctx.dead_letter("alerts", "bad_event", str(e), event.message.topic, event.value)
                    continue
                partition, offset = event.message.partition, event.message.offset
                if not retention.known(partition):
                    retention.load(partition, list(published.data.items()))
                for old in retention.expired(partition, ev.ts):
                    delete(published, old, partition)
                marker = f"{ev.id}:{ev.phase}:{ev.ts}"
                if published.get(marker):
                    continue  # re-delivered (worker restart, replayed reading): already out
                if ledger.published(partition, offset, marker):
                    already.append((marker, partition, ev.ts))  # its previous owner got it out, then died
                    continue
                ledger.record(partition, offset, marker)
                todo.append((marker, partition, ev.ts,
                             publisher.queue(alert_topic(settings.mqtt.alert_prefix, ev), event.value, qos=1)))
            if not todo and not already:
                continue
            partitions = {partition for _, partition, *_ in todo}
            # the ledger leaves right behind the alerts, on the same connection: see mqtt_ledger
            await asyncio.gather(*(pub for *_, pub in todo), *ledger.write(partitions))
            for marker, partition, ts, *_ in todo + already:
                put(published, marker, {"p": partition}, partition)
                retention.add(partition, marker, ts)
            # The markers reach the changelog now, not at the next commit, so the ledger can let go of
            # them. Bounded: a worker woken from a freeze (SIGSTOP past its session) hung here for minutes
            # on the producer's flush; its ledger keeps the markers until a later flush confirms them.
            try:
                await asyncio.wait_for(app.producer.flush(), FLUSH_MARKERS_S)
                ledger.confirmed(partitions)
            except TimeoutError:
                log.warning("alert markers not confirmed by Kafka within %.0fs; the publish ledger keeps "
                            "%d of them", FLUSH_MARKERS_S, len(todo))
            ctx.stats["alerts"] += len(todo)
            if already:
                ctx.stats["alerts.published_by_previous_owner"] += len(already)
                log.info("%d alert(s) not published again: the publish ledger shows this partition's previous "
                         "owner got them to the MQTT broker before it stopped (%s)", len(already),
                         ", ".join(m for m, *_ in already[:5]))

    return alerts
