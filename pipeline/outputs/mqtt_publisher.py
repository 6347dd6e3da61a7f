"""Await MQTT QoS 1 publishes from asyncio: a publish completes when the broker's PUBACK arrives.

Used by the alert channel so a Kafka event is acknowledged only after MQTT confirmed it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import paho.mqtt.client as mqtt

from gridwatch.core.settings import Settings
from gridwatch.pipeline.mqtt_client import connect, make_client

log = logging.getLogger("gridwatch.mqtt")


class AsyncMqttPublisher:
    def __init__(self, settings: Settings, client_id: str = "") -> None:
        self.settings = settings
        self.client_id = client_id
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._lock = threading.Lock()
        self._acked_early: set[int] = set()
        self.client: mqtt.Client | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        client = make_client(self.settings, self.client_id)
        client.on_publish = self._on_publish
        self.client = client
        await asyncio.to_thread(connect, client)
        client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any = None, props: Any = None) -> None:
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                self._acked_early.add(mid)
                return
        self._loop.call_soon_threadsafe(_resolve, fut)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                      timeout: float = 30.0) -> None:
        assert self.client is not None, "start() first"
        fut: asyncio.Future[None] = self._loop.create_future()
        # Never hold our lock while calling into paho: paho calls on_publish with its own message
        # lock held, and on_publish takes ours (lock-order deadlock seen under alert storms).
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ConnectionError(f"MQTT publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return
        with self._lock:
            if info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
                return
            self._pending[info.mid] = fut
        # paho queues while disconnected and resends on reconnect, so waiting is enough.
        await asyncio.wait_for(fut, timeout)

    async def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
