"""MQTT telemetry message -> Kafka records: the one code path shared by the bridge and ``gridwatch replay``.

Why shared: a replay must turn a recorded MQTT message into exactly the readings, partitions and dead
letters the live bridge made of it, or the agents downstream would not see the same input and could not
produce the same grid events. Validation is judged against the message's receive time (the recorded
one, in a replay), so a reading a few minutes "in the future" is rejected in the replay exactly when it
was rejected live.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gridwatch.core.settings import BridgeSettings, Settings
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.schemas.deadletter import DeadLetter
from gridwatch.pipeline.schemas.readings import Reading, ReadingBatch
from gridwatch.pipeline.sources.telemetry_parser import parse_message

MAX_READINGS_PER_RECORD = 2000


@dataclass
class Routed:
    """Readings grouped per Kafka partition, and the dead letters, of a batch of MQTT messages."""

    by_partition: dict[int, list[Reading]] = field(default_factory=lambda: defaultdict(list))
    dead: list[DeadLetter] = field(default_factory=list)
    messages: int = 0
    readings: int = 0
    reasons: Counter = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.by_partition or self.dead)


class Router:
    """Parse, validate and partition MQTT telemetry messages (no I/O)."""

    def __init__(self, registry: Any, partitions: int, bridge: BridgeSettings) -> None:
        self.registry = registry
        self.partitions = partitions
        self.max_payload_bytes = bridge.max_payload_bytes
        self.max_future_ms = bridge.max_future_skew_s * 1000

    def add(self, out: Routed, topic: str, payload: bytes, recv_ms: int) -> None:
        """Route one message into ``out``; ``recv_ms`` is when it was received (live or recorded)."""
        res = parse_message(topic, payload, self.registry, recv_ms, max_payload_bytes=self.max_payload_bytes,
                            max_future_ms=self.max_future_ms)
        for r in res.readings:
            r.recv_ms = recv_ms
            shard = self.registry.get(r.device_id).shard_key
            out.by_partition[partition_for(shard, self.partitions)].append(r)
        for rej in res.rejections:
            out.reasons[rej.reason] += 1
            out.dead.append(DeadLetter("bridge", rej.reason, rej.detail, topic, DeadLetter.payload_text(payload),
                                       recv_ms, rej.device_id))
        out.readings += len(res.readings)
        out.messages += 1

    def route(self, items: Iterable[tuple[str, bytes, int]]) -> Routed:
        """Route (topic, payload, recv_ms) messages, keeping each partition's arrival order."""
        out = Routed()
        for topic, payload, recv_ms in items:
            self.add(out, topic, payload, recv_ms)
        return out


def kafka_records(settings: Settings, routed: Routed) -> list[tuple[str, bytes, bytes, int | None]]:
    """(topic, key, value, partition) of every Kafka record a routed batch becomes."""
    readings_topic = settings.topic("readings")
    dlq_topic = settings.topic("deadletter")
    recs: list[tuple[str, bytes, bytes, int | None]] = []
    for p, readings in routed.by_partition.items():
        for i in range(0, len(readings), MAX_READINGS_PER_RECORD):
            value = ReadingBatch(p, readings[i:i + MAX_READINGS_PER_RECORD]).encode()
            recs.append((readings_topic, str(p).encode(), value, p))
    for d in routed.dead:
        recs.append((dlq_topic, d.source.encode(), d.encode(), None))
    return recs
