"""Test harness: real processes (bridge, worker) against the real embedded broker and Mosquitto.

Nothing here fakes a component; it starts `python -m gridwatch ...` exactly as an operator would and
talks to it over MQTT and Kafka.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer

from gridwatch.core.procs import Pipeline as _Pipeline
from gridwatch.core.procs import wait_for as _wait_for
from gridwatch.pipeline.group_progress import uncommitted as group_uncommitted
from gridwatch.pipeline.schemas.events import is_control

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    try:
        return _wait_for(pred, timeout, what, interval)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


class Pipeline(_Pipeline):
    def __init__(self, kafka_url: str, mqtt_url: str, **kwargs: Any) -> None:
        super().__init__(kafka_url, mqtt_url, ARTIFACTS, **kwargs)


class MqttWatcher:
    """Subscribes to topics and keeps every message received, for assertions."""

    def __init__(self, mqtt_url: str, topics: list[str]) -> None:
        host, port = mqtt_url.removeprefix("mqtt://").split(":")
        self.messages: list[tuple[str, Any, float]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="")
        self._subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert self._subscribed.wait(10), "MQTT subscribe timed out"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = msg.payload
        with self._lock:
            self.messages.append((msg.topic, body, time.time()))

    def matching(self, pred: Callable[[str, Any], bool]) -> list[tuple[str, Any]]:
        with self._lock:
            return [(t, b) for t, b, _ in self.messages if pred(t, b)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MqttPublisher:
    def __init__(self, mqtt_url: str, client_id: str = "") -> None:
        host, port = mqtt_url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def publish(self, topic: str, payload: Any, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=qos)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def read_topic(kafka_url: str, topic: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Every record of a topic, from the beginning (JSON-decoded values)."""

    async def main() -> list[dict[str, Any]]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=kafka_url.removeprefix("kafka://"),
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        out: list[dict[str, Any]] = []
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                got = await c.getmany(timeout_ms=300)
                for recs in got.values():
                    out.extend(json.loads(r.value) for r in recs if not is_control(r.value))
        finally:
            await c.stop()
        return out

    return asyncio.run(main())


class LocalHttpServer:
    """A real HTTP server (aiohttp) on a free local port, in a thread of its own: what a test stands up in
    place of a receiving system (a webhook endpoint, a group robot, the hotline). Subclasses add routes."""

    def __init__(self) -> None:
        from gridwatch.stack import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def routes(self, app: Any) -> None:
        """Add the server's routes to the aiohttp application."""
        raise NotImplementedError

    def _run(self) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def uncommitted(kafka_url: str, group: str, topic: str) -> int:
    """Records of ``topic`` the consumer group has not committed."""
    return asyncio.run(group_uncommitted(kafka_url.removeprefix("kafka://"), group, [topic]))
