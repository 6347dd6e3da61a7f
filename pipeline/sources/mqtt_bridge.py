"""MQTT -> Kafka bridge with at-least-once delivery.

A QoS 1 message is acknowledged to the MQTT broker only after Kafka confirmed the produce of every
reading in it (paho's manual_ack), so a bridge crash loses nothing: the broker redelivers whatever was
not acknowledged to the persistent session. Readings are grouped per Kafka partition (the partition
of the device's shard: its lamp circuit, or itself) so a device's readings stay in order and Faust
pays its per-record cost per batch. Bad input becomes a dead letter with the reason; the bridge never
stops on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from gridwatch.core.settings import Settings
from gridwatch.pipeline.kafka_io import ensure_topics, start_producer
from gridwatch.pipeline.mqtt_client import connect, make_client
from gridwatch.pipeline.schemas.mqtt_topics import TELEMETRY_PATTERNS
from gridwatch.pipeline.sources.ingest import Routed, Router, kafka_records

log = logging.getLogger("gridwatch.bridge")

SUBSCRIPTIONS = TELEMETRY_PATTERNS


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    recv_ms: int
    generation: int


@dataclass
class BridgeStats:
    messages: int = 0
    readings: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    flushes: int = 0
    kafka_retries: int = 0
    acked: int = 0
    last_flush_ms: float = 0.0
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages": self.messages, "readings": self.readings, "dead_letters": dict(self.dead_letters),
            "dead_letters_total": sum(self.dead_letters.values()), "flushes": self.flushes,
            "kafka_retries": self.kafka_retries, "acked": self.acked,
            "last_flush_ms": round(self.last_flush_ms, 2), "uptime_s": round(time.time() - self.started, 1),
        }


class MqttBridge:
    def __init__(self, settings: Settings, registry: Any) -> None:
        self.settings = settings
        self.registry = registry
        self.stats = BridgeStats()
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self._generation = 0
        self._connected = asyncio.Event()
        self.client: mqtt.Client | None = None

    # -- MQTT side (paho network thread) -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("MQTT broker refused the bridge: %s. Check mqtt.username and GRIDWATCH_MQTT_PASSWORD "
                      "(see `gridwatch mqtt-credentials`).", rc)
            return
        self._generation += 1
        group = self.settings.bridge.share_group
        subs = [(f"$share/{group}/{t}" if group else t, 1) for t in SUBSCRIPTIONS]
        client.subscribe(subs)
        log.info("MQTT connected (session present: %s); subscribed to %s", flags.session_present,
                 ", ".join(s for s, _ in subs))
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc != 0:
            log.warning("MQTT connection lost (%s); reconnecting", rc)
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        item = Incoming(msg.topic, msg.payload, msg.mid, msg.qos, int(time.time() * 1000), self._generation)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    # -- Kafka side (asyncio) -------------------------------------------------------------------
    async def _take(self) -> list[Incoming]:
        first = await self._queue.get()
        batch = [first]
        cap = self.settings.bridge.max_batch_messages
        deadline = self._loop.time() + self.settings.bridge.linger_ms / 1000
        while len(batch) < cap:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _route(self, batch: list[Incoming]) -> Routed:
        routed = self.router.route((item.topic, item.payload, item.recv_ms) for item in batch)
        self.stats.dead_letters.update(routed.reasons)
        self.stats.readings += routed.readings
        self.stats.messages += len(batch)
        return routed

    async def _produce(self, routed: Routed) -> None:
        """Send everything and wait for Kafka's confirmation, retrying until it succeeds."""
        records = kafka_records(self.settings, routed)
        delay = 0.2
        while True:
            try:
                futures = [await self.producer.send(topic, value, key=key, partition=partition)
                           for topic, key, value, partition in records]
                await asyncio.gather(*futures)
                return
            except Exception as e:  # noqa: BLE001 - any Kafka failure: hold the acks, back off, retry
                self.stats.kafka_retries += 1
                log.warning("Kafka produce failed (%s: %s); holding %d readings un-acknowledged, retry in %.1fs",
                            type(e).__name__, e, routed.readings, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _ack(self, batch: list[Incoming]) -> None:
        assert self.client is not None
        for item in batch:
            # A message from an earlier connection will be redelivered; its mid means nothing now.
            if item.qos > 0 and item.generation == self._generation:
                self.client.ack(item.mid, item.qos)
                self.stats.acked += 1

    async def _publish_stats(self, stop: asyncio.Event) -> None:
        topic = f"{self.settings.mqtt.stats_prefix}/bridge/{self.settings.bridge.client_id}"
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.bridge.stats_interval_s)
            if self.client is not None:
                self.client.publish(topic, json.dumps(self.stats.snapshot()), qos=0)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        await ensure_topics(self.settings)
        self.producer = await start_producer(self.settings)
        self._partitions = len(await self.producer.partitions_for(self.settings.topic("readings")))
        self.router = Router(self.registry, self._partitions, self.settings.bridge)
        client = make_client(self.settings, self.settings.bridge.client_id, clean_session=False, manual_ack=True,
                             max_inflight=2000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        await asyncio.to_thread(connect, client)
        client.loop_start()
        stats_task = asyncio.create_task(self._publish_stats(stop))
        log.info("bridge running: MQTT %s:%d -> Kafka %s (%d partitions, topic %s)",
                 *client._gridwatch_endpoint, self.settings.kafka_bootstrap(), self._partitions,  # type: ignore[attr-defined]
                 self.settings.topic("readings"))
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                taker = asyncio.create_task(self._take())
                done, _ = await asyncio.wait({taker, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if taker not in done:
                    taker.cancel()
                    break
                batch = taker.result()
                t0 = time.perf_counter()
                await self._produce(self._route(batch))
                self._ack(batch)
                self.stats.flushes += 1
                self.stats.last_flush_ms = (time.perf_counter() - t0) * 1000
        finally:
            stop.set()
            stats_task.cancel()
            stopper.cancel()
            client.disconnect()
            client.loop_stop()
            await self.producer.stop()
            log.info("bridge stopped: %s", self.stats.snapshot())
