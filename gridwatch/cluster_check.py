"""Input and checker of a cluster run (tests/cluster, bench): a fixed stream of manhole readings published
over MQTT, and what must hold at the end — every reading Mosquitto acknowledged is in Kafka, no grid
event id+phase went out twice on MQTT, and the incidents equal those of a run without faults.

The input is deterministic (same devices, timestamps, values, order), so two runs must give the same
incidents; only its pacing is wall-clock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from aiokafka import AIOKafkaConsumer, TopicPartition

from gridwatch.devices.registry import load_city
from gridwatch.pipeline.kafka_io import assign_from_start
from gridwatch.pipeline.schemas.events import is_control
from gridwatch.pipeline.schemas.readings import ReadingBatch

NIGHT = 1_763_647_200_000  # 2025-11-20 22:00 Asia/Shanghai
STEP_MS = 5_000


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[-1].rsplit(":", 1)
    return host, int(port)


def manholes(n: int) -> list[Any]:
    return [d for d in load_city().registry if d.kind == "manhole" and not d.gateway][:n]


def script(devices: int = 24, steps: int = 40) -> list[tuple[str, dict[str, Any]]]:
    """(MQTT topic, payload) in publish order: every device reports every 5 s (event time); every third
    device's cover is open from step 10 to 24 (one manhole_open event, new then end, one incident each)."""
    out = []
    devs = manholes(devices)
    for k in range(steps):
        for j, d in enumerate(devs):
            opened = j % 3 == 0 and 10 <= k < 25
            out.append((f"v1/devices/{d.id}/telemetry",
                        {"ts": NIGHT + k * STEP_MS + j * 10,
                         "values": {"cover_open": opened, "tilt_deg": 70.0 if opened else 1.0, "battery_pct": 80.0}}))
    return out


class Feeder:
    """Publishes the script at QoS 1 in a thread, ``rate`` messages/s; remembers which were PUBACKed."""

    def __init__(self, mqtt_url: str, messages: list[tuple[str, dict[str, Any]]], rate: float = 48.0) -> None:
        self.messages = messages
        self.rate = rate
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"feeder-{time.time_ns()}")
        self.client.max_inflight_messages_set(1000)
        self.client.connect(*_hostport(mqtt_url))
        self.client.loop_start()
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.sent = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        for i, (topic, body) in enumerate(self.messages):
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.infos.append(self.client.publish(topic, json.dumps(body), qos=1))
            self.sent = i + 1
        self.done.set()

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def progress(self) -> float:
        return self.sent / len(self.messages)

    def wait_progress(self, share: float, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.progress() < share and time.monotonic() < deadline:
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> set[tuple[str, int]]:
        """Wait for the last PUBACK; returns the (device, ts) of every reading Mosquitto acknowledged."""
        self.done.wait(timeout)
        deadline = time.monotonic() + timeout
        while not all(i.is_published() for i in self.infos) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.client.disconnect()
        self.client.loop_stop()
        return {(topic.split("/")[2], body["ts"]) for (topic, body), info in zip(self.messages, self.infos, strict=False)
                if info.is_published()}


class Watcher:
    """Keeps every MQTT message of some topics (the run's alerts, the bridges' stats)."""

    def __init__(self, mqtt_url: str, topics: list[str]) -> None:
        self.messages: list[tuple[float, str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{time.time_ns()}")
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(*_hostport(mqtt_url))
        self.client.loop_start()
        if not subscribed.wait(15):
            raise RuntimeError("MQTT subscribe timed out")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            body = None
        with self._lock:
            self.messages.append((time.monotonic(), msg.topic, body))

    def bodies(self) -> list[Any]:
        with self._lock:
            return [b for _, _, b in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _group_lag(bootstrap: str, group: str, topics: list[str]) -> int | None:
    """Records of ``topics`` the consumer group has not committed yet (None: it has committed nothing)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10000)
    await admin.start()
    await c.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = [TopicPartition(d["topic"], part["partition"])
               for d in await admin.describe_topics(topics) for part in d.get("partitions", ())]
        if not committed or not tps:
            return None
        ends = await c.end_offsets(tps)
        return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in tps)
    finally:
        await c.stop()
        await admin.close()


def group_lag(bootstrap: str, group: str, topics: list[str]) -> int | None:
    try:
        return asyncio.run(_group_lag(bootstrap, group, topics))
    except Exception:  # noqa: BLE001 - a cluster still recovering: ask again
        return None


async def _read_all(bootstrap: str, topic: str, idle_polls: int = 4) -> list[bytes]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=20000)
    await c.start()
    out: list[bytes] = []
    try:
        if not await assign_from_start(c, topic):
            return out
        idle = 0
        while idle < idle_polls:
            got = await c.getmany(timeout_ms=400)
            idle = 0 if got else idle + 1
            out.extend(r.value for recs in got.values() for r in recs if r.value is not None and not is_control(r.value))
    finally:
        await c.stop()
    return out


def readings_in_kafka(bootstrap: str, topic: str) -> Counter:
    """How many times each (device, ts) reading is in the readings topic."""
    seen: Counter = Counter()
    for raw in asyncio.run(_read_all(bootstrap, topic)):
        seen.update((r.device_id, r.ts) for r in ReadingBatch.decode(raw).readings)
    return seen


def incidents_in_kafka(bootstrap: str, topic: str) -> set[tuple[str, int, str, str]]:
    """Every (id, version, status, level) the incidents topic holds (a re-sent version counts once)."""
    out = set()
    for raw in asyncio.run(_read_all(bootstrap, topic)):
        d = json.loads(raw)
        d = d.get("incident") if isinstance(d, dict) else None  # an IncidentChange: the incident after it
        if isinstance(d, dict) and "id" in d:
            out.add((d["id"], d.get("version", 0), d.get("status", ""), d.get("level", "")))
    return out


@dataclass
class Verdict:
    acked: int = 0
    lost: int = 0
    duplicated: int = 0  # readings in Kafka more than once (de-duplicated downstream: see incidents)
    events: int = 0
    events_twice: list[tuple[str, str]] = field(default_factory=list)
    incidents: set = field(default_factory=set)
    incidents_equal: bool = False
    baseline: set | None = None

    def line(self) -> str:
        return (f"acked {self.acked}, lost {self.lost}, duplicated {self.duplicated}, grid events {self.events} "
                f"(id+phase twice: {len(self.events_twice)}), incident versions {len(self.incidents)} "
                f"({'the baseline' if self.baseline is None else 'equal to' if self.incidents_equal else 'DIFFERENT from'} "
                "the no-fault run)")


def check(bootstrap: str, prefix: str, acked: set[tuple[str, int]], alerts: Watcher,
          baseline: set | None, timeout: float = 180, group: str | None = None) -> Verdict:
    """Wait (bounded) until every acknowledged reading is in Kafka and the incidents settle, then say what
    holds. Settled: equal to the baseline, or unchanged for 8 s once the workers' consumer group
    (``group``, default ``gridwatch-<prefix>``) has committed every readings record. A group
    still rejoining after a fault (its fetches waiting on a stale leader) commits nothing for a while: 8 s
    without a new incident is not the end of its input then (seen after a coordinator's link was cut)."""
    v = Verdict(acked=len(acked), baseline=baseline)
    deadline = time.monotonic() + timeout
    group = group or f"gridwatch-{prefix}"
    seen: Counter = Counter()
    while time.monotonic() < deadline:
        seen = readings_in_kafka(bootstrap, f"{prefix}.readings")
        if acked <= set(seen):
            break
        time.sleep(1)
    v.lost = len(acked - set(seen))
    v.duplicated = sum(n - 1 for n in seen.values() if n > 1)
    last: set = set()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        now = incidents_in_kafka(bootstrap, f"{prefix}.incidents")
        if baseline is not None and now == baseline:
            last = now
            break
        if now != last:
            last, stable_since = now, time.monotonic()
        elif now and time.monotonic() - stable_since >= 8 and \
                group_lag(bootstrap, group, [f"{prefix}.readings"]) == 0:
            break
        time.sleep(1)
    time.sleep(2)  # a second copy of an alert would come right after the first
    v.incidents = last
    v.incidents_equal = baseline is not None and last == baseline
    pairs = Counter((b["id"], b["phase"]) for b in alerts.bodies() if isinstance(b, dict) and "id" in b and "phase" in b)
    v.events = len(pairs)
    v.events_twice = [k for k, n in pairs.items() if n > 1]
    return v
