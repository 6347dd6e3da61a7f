"""Await MQTT QoS 1 publishes from asyncio: a publish completes when the broker's PUBACK arrives.

Used by the alert channel so a Kafka event is acknowledged only after MQTT confirmed it.
``queue`` hands the message to paho at once (messages leave in the order they were queued) and returns
what to await; ``subscribe`` delivers messages on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import paho.mqtt.client as mqtt

from gridwatch.core.settings import Settings
from gridwatch.pipeline.mqtt_client import connect, make_client

log = logging.getLogger("gridwatch.mqtt")


class _Acks:
    """Futures waiting for the broker's acknowledgement of a packet id (PUBACK or SUBACK). paho's thread may
    deliver the acknowledgement before the event loop registered its future: it is kept until then.

    Never hold the lock while calling into paho: paho calls on_publish with its own message lock held, and
    on_publish takes this one (lock-order deadlock seen under alert storms)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()

    def expect(self, mid: int, fut: asyncio.Future[None]) -> None:
        """On the event loop, after paho took the packet: ``fut`` completes on its acknowledgement."""
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                fut.set_result(None)
            else:
                self._waiting[mid] = fut

    def acked(self, loop: asyncio.AbstractEventLoop, mid: int) -> None:
        """On paho's thread."""
        with self._lock:
            fut = self._waiting.pop(mid, None)
            if fut is None:
                self._early.add(mid)
                return
        loop.call_soon_threadsafe(_resolve, fut)


class AsyncMqttPublisher:
    def __init__(self, settings: Settings, client_id: str = "") -> None:
        self.settings = settings
        self.client_id = client_id
        self._pubacks = _Acks()
        self._subacks = _Acks()
        self.client: mqtt.Client | None = None
        self._subscriptions: dict[str, Callable[[str, bytes], None]] = {}

    async def start(self, connect_timeout: float = 30.0) -> None:
        """Connect (retrying up to ``connect_timeout`` s: a component may start before its broker)."""
        self._loop = asyncio.get_running_loop()
        client = make_client(self.settings, self.client_id)
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        self.client = client
        await asyncio.to_thread(connect, client, connect_timeout)
        client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        self._pubacks.acked(self._loop, mid)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        for topic in self._subscriptions:  # a clean session after a reconnect: subscribe again
            client.subscribe(topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        for pattern, handler in self._subscriptions.items():
            if mqtt.topic_matches_sub(pattern, msg.topic):
                self._loop.call_soon_threadsafe(handler, msg.topic, msg.payload)

    async def subscribe(self, topic: str, handler: Callable[[str, bytes], None], timeout: float = 30.0) -> None:
        """Call ``handler(topic, payload)`` on the event loop for each message matching ``topic``; returns
        once the broker acknowledged the subscription."""
        assert self.client is not None, "start() first"
        self._subscriptions[topic] = handler
        acked: asyncio.Future[None] = self._loop.create_future()
        rc, mid = self.client.subscribe(topic, qos=1)
        if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(f"MQTT subscribe to {topic} failed: {mqtt.error_string(rc)}")
        self._subacks.expect(mid, acked)
        await asyncio.wait_for(acked, timeout)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        self._subacks.acked(self._loop, mid)

    def queue(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
              timeout: float = 30.0) -> Coroutine[Any, Any, None]:
        """Hand the message to paho now; await the result for the broker's PUBACK."""
        assert self.client is not None, "start() first"
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos == 0:
            fut.set_result(None)
        else:
            self._pubacks.expect(info.mid, fut)
        # paho queues while disconnected and resends on reconnect, so waiting is enough.
        return asyncio.wait_for(fut, timeout)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 30.0) -> None:
        await self.queue(topic, payload, qos, retain, timeout)

    async def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
