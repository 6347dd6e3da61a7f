"""Fault injection on the telemetry path with real processes: nothing the MQTT broker accepted is lost.

Each test has its own embedded stack (so it may kill or freeze brokers), publishes readings at QoS 1
with unique (device, ts) pairs, injects a fault mid-stream and then checks that every reading reached
the Kafka readings topic (duplicates are allowed: at-least-once) and prints how long recovery took.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer

from gridwatch.devices.registry import load_city
from gridwatch.pipeline.schemas.readings import ReadingBatch
from gridwatch.stack import EmbeddedStack
from tests.harness import MqttPublisher, Pipeline, wait_for

DEVICES = [d for d in load_city().registry if d.kind == "manhole" and not d.gateway][:50]
BASE = 1_763_600_000_000


def readings_in_kafka(kafka_url: str, topic: str) -> set[tuple[str, int]]:
    async def main() -> set[tuple[str, int]]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=kafka_url.removeprefix("kafka://"),
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        seen: set[tuple[str, int]] = set()
        try:
            idle = 0
            while idle < 3:
                got = await c.getmany(timeout_ms=300)
                idle = 0 if got else idle + 1
                for recs in got.values():
                    for r in recs:
                        seen.update((x.device_id, x.ts) for x in ReadingBatch.decode(r.value).readings)
        finally:
            await c.stop()
        return seen

    return asyncio.run(main())


class Feeder:
    """Publishes readings steadily in a thread (QoS 1, paho retries across broker restarts)."""

    def __init__(self, mqtt_url: str) -> None:
        self.pub = MqttPublisher(mqtt_url, client_id=f"feeder-{os.getpid()}-{time.time_ns()}")
        self.pub.client.reconnect_delay_set(0.1, 1)
        self.sent: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            d = DEVICES[k % len(DEVICES)]
            ts = BASE + k * 1000
            info = self.pub.client.publish(f"v1/devices/{d.id}/telemetry",
                                           f'{{"ts": {ts}, "values": {{"tilt_deg": 1.0}}}}', qos=1)
            if info.rc == 0 or info.rc == 4:  # 4 = not connected: paho queues it and sends on reconnect
                self.sent.append((d.id, ts))
            k += 1
            time.sleep(0.01)

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        wait_for(lambda: not self.pub.client._out_messages, 60, "publisher to flush its in-flight messages")
        self.pub.close()


@pytest.fixture
def own_stack(kafka_engine: str) -> Iterator[EmbeddedStack]:
    with EmbeddedStack(engine=kafka_engine) as s:
        yield s


def assert_nothing_lost(pipe: Pipeline, sent: list[tuple[str, int]], what: str) -> None:
    def complete() -> set | None:
        seen = readings_in_kafka(pipe.kafka_url, pipe.topic("readings"))
        return seen if set(sent) <= seen else None

    seen = wait_for(complete, 90, f"every reading after {what}", interval=1.0)
    lost = set(sent) - seen
    print(f"{what}: sent {len(sent)}, in Kafka {len(seen & set(sent))}, lost {len(lost)}")
    assert not lost


@pytest.fixture
def feeding(own_stack) -> Iterator[tuple[EmbeddedStack, Pipeline, Feeder]]:
    """A running bridge (no worker: the readings topic is what counts) and a steady QoS 1 feeder."""
    pipe = Pipeline(own_stack.kafka_url, own_stack.mqtt_url)
    pipe.bridge.start()
    pipe.bridge.wait_log("bridge running")
    feeder = Feeder(own_stack.mqtt_url).start()
    time.sleep(2)
    try:
        yield own_stack, pipe, feeder
    finally:
        own_stack.procs["kafka"].proc.send_signal(signal.SIGCONT)
        pipe.bridge.stop()


def test_bridge_killed_mid_stream_loses_nothing(feeding):
    _, pipe, feeder = feeding
    pipe.bridge.kill()  # SIGKILL between receive and produce/ack for whatever is in flight
    time.sleep(2)  # messages keep arriving at Mosquitto for the bridge's persistent session
    t0 = time.monotonic()
    pipe.bridge.start()
    pipe.bridge.wait_log("session present: True")
    print(f"bridge recovery (restart to reconnected with its session): {time.monotonic() - t0:.1f}s")
    time.sleep(1)
    feeder.stop()
    assert_nothing_lost(pipe, feeder.sent, "bridge SIGKILL")


def test_mosquitto_restart_loses_nothing(feeding):
    stack, pipe, feeder = feeding
    t0 = time.monotonic()
    stack.restart_mqtt()  # SIGTERM (Mosquitto saves its persistence file), start on the same port
    wait_for(lambda: pipe.bridge.log().count("MQTT connected") >= 2, 60, "bridge to reconnect")
    print(f"Mosquitto restart to bridge reconnected: {time.monotonic() - t0:.1f}s")
    time.sleep(2)
    feeder.stop()
    assert_nothing_lost(pipe, feeder.sent, "Mosquitto restart")


def test_kafka_unavailable_for_a_while_bridge_holds_and_delivers(feeding):
    stack, pipe, feeder = feeding
    kafka = stack.procs["kafka"].proc
    kafka.send_signal(signal.SIGSTOP)  # the broker hangs: produce requests time out
    time.sleep(20)
    kafka.send_signal(signal.SIGCONT)
    t0 = time.monotonic()
    time.sleep(2)
    feeder.stop()
    assert_nothing_lost(pipe, feeder.sent, "Kafka frozen 20 s")
    print(f"Kafka back to every held reading delivered: {time.monotonic() - t0:.1f}s")
    assert pipe.bridge.proc.poll() is None
