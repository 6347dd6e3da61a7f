"""Test harness: real processes (bridge, worker) against the real embedded broker and Mosquitto.

Nothing here fakes a component; it starts `python -m gridwatch ...` exactly as an operator would and
talks to it over MQTT and Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Proc:
    """A gridwatch sub-command in its own process, logging to test-artifacts/."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self.argv = [sys.executable, "-m", "gridwatch", *argv]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        logf = open(self.log_path, "ab")  # noqa: SIM115
        logf.write(f"\n==== start {' '.join(self.argv)}\n".encode())
        logf.flush()
        self.proc = subprocess.Popen(self.argv, stdout=logf, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                     start_new_session=True)
        logf.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout: float = 60) -> None:
        wait_for(lambda: text in self.log() or self._dead(), timeout, f"{self.name} to log {text!r}")
        if self._dead() and text not in self.log():
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Pipeline:
    """One isolated pipeline (own topic prefix, app id and MQTT session) on the shared stack."""

    def __init__(self, kafka_url: str, mqtt_url: str, name: str | None = None, extra: list[str] | None = None) -> None:
        self.prefix = name or f"t{uuid.uuid4().hex[:8]}"
        self.kafka_url = kafka_url
        self.mqtt_url = mqtt_url
        self.common = ["--kafka", kafka_url, "--mqtt", mqtt_url, "--prefix", self.prefix, *(extra or [])]
        self.env = {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on"}
        self.bridge = Proc(f"{self.prefix}-bridge", ["bridge", *self.common, "--client-id", f"br-{self.prefix}"], self.env)
        self.worker = Proc(f"{self.prefix}-worker", ["worker", *self.common], self.env)

    def start(self) -> Pipeline:
        self.worker.start()
        self.bridge.start()
        self.bridge.wait_log("bridge running", 60)
        self.wait_worker_ready()
        return self

    def wait_worker_ready(self, timeout: float = 90) -> None:
        self.worker.wait_log("worker ready", timeout)

    def stop(self) -> None:
        self.bridge.stop()
        self.worker.stop()

    def topic(self, family: str) -> str:
        return f"{self.prefix}.{family}"


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
                    out.extend(json.loads(r.value) for r in recs)
        finally:
            await c.stop()
        return out

    return asyncio.run(main())
