"""What a worker published on MQTT, recorded in the MQTT broker itself, so that whoever takes its
partitions over does not publish it again.

Why the broker: a worker that dies (or freezes past its Kafka session) after the broker took an alert
but before its "published" marker reached the Kafka changelog leaves a successor that cannot tell from
Kafka whether the alert went out. The broker can: after a batch's alerts, the worker publishes one
*retained* ledger message per Kafka partition, on the same connection, listing the (offset, marker) of
each alert not yet confirmed in the changelog. MQTT keeps a connection's messages in order, so a ledger
the broker holds proves that every alert listed in it reached the broker before it. Every worker
subscribes to the ledgers of its group and skips an event whose (offset, marker) is listed.

What is left: a worker stopped after paho took a batch's alerts and before its network thread wrote them
and the ledger to the socket, one send after the other in the same pass (microseconds, not a Kafka round
trip); a frozen worker sends them when it wakes, perhaps after its successor published the same alerts.

Topic: ``gridwatch/ledger/<alert prefix>/<app id>/<partition>``. A ledger is honoured for ``ttl_s`` after
it was written (long enough for a takeover: session timeout plus rebalance), and only where the same
marker sits at the same offset, so a ledger left by another run or a recreated topic matches nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable

from gridwatch.pipeline.schemas.mqtt_topics import LEDGER_PREFIX

from .mqtt_publisher import AsyncMqttPublisher

log = logging.getLogger("gridwatch.ledger")
MAX_ENTRIES = 5_000  # per partition: a Kafka outage that holds back the changelog longer drops the oldest


def ledger_root(alert_prefix: str, app_id: str) -> str:
    return f"{LEDGER_PREFIX}/{alert_prefix}/{app_id}"


class PublishLedger:
    def __init__(self, publisher: AsyncMqttPublisher, alert_prefix: str, app_id: str, ttl_s: float = 300.0) -> None:
        self.publisher = publisher
        self.root = ledger_root(alert_prefix, app_id)
        self.writer = uuid.uuid4().hex[:12]
        self.ttl_s = ttl_s
        # partition -> writer -> (written at, {offset: marker}); what the group's workers told the broker
        self._seen: dict[int, dict[str, tuple[float, dict[int, str]]]] = {}
        # partition -> {offset: marker}: ours, published but not yet confirmed in the changelog
        self._pending: dict[int, dict[int, str]] = {}
        self._sync = f"sync-{self.writer}"
        self._synced = asyncio.Event()

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe to the group's ledgers and wait until the broker delivered the retained ones
        (a message of our own, sent after the subscription, arrives after them)."""
        await self.publisher.subscribe(f"{self.root}/+", self._on_message)
        await self.publisher.publish(f"{self.root}/{self._sync}", b"", qos=1)
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            log.warning("publish ledger %s: the broker's retained ledgers did not arrive within %.0fs; "
                        "an alert its previous owner published just before a crash may go out twice",
                        self.root, timeout)

    def _on_message(self, topic: str, payload: bytes) -> None:
        """Runs on the event loop (the publisher hands messages over)."""
        last = topic.rsplit("/", 1)[-1]
        if last == self._sync:
            self._synced.set()
            return
        if not last.isdigit() or not payload:
            return
        try:
            doc = json.loads(payload)
            writer, at = str(doc["writer"]), float(doc["at"])
            entries = {int(o): str(m) for o, m in doc["entries"]}
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignoring a malformed publish ledger on %s: %s", topic, e)
            return
        if writer != self.writer and time.time() - at <= self.ttl_s:
            self._seen.setdefault(int(last), {})[writer] = (at, entries)

    def published(self, partition: int, offset: int, marker: str) -> bool:
        """Did any worker of the group (recently) get this event's alert to the broker?"""
        now = time.time()
        for at, entries in self._seen.get(partition, {}).values():
            if now - at <= self.ttl_s and entries.get(offset) == marker:
                return True
        return self._pending.get(partition, {}).get(offset) == marker

    def record(self, partition: int, offset: int, marker: str) -> None:
        pending = self._pending.setdefault(partition, {})
        pending[offset] = marker
        if len(pending) > MAX_ENTRIES:
            del pending[min(pending)]

    def write(self, partitions: set[int]) -> list[Awaitable[None]]:
        """The ledger messages of these partitions; call right after the alerts' publishes were queued,
        so they leave on the same connection behind them."""
        at = time.time()
        return [self.publisher.publish(
            f"{self.root}/{p}",
            json.dumps({"writer": self.writer, "at": at, "entries": sorted(self._pending.get(p, {}).items())},
                       separators=(",", ":")).encode(),
            qos=1, retain=True) for p in sorted(partitions)]

    def confirmed(self, partitions: set[int]) -> None:
        """The changelog has the markers of these partitions: the ledger need not list them again."""
        for p in partitions:
            self._pending.pop(p, None)

    def forget(self, partitions: set[int]) -> None:
        """Partitions left us (a rebalance): their pending entries are in the broker's ledger already."""
        for p in partitions:
            self._pending.pop(p, None)
