"""MQTT telemetry message -> Kafka records: the one code path shared by the bridge and ``gridwatch replay``.

Why shared: a replay must turn a recorded MQTT message into exactly the readings, partitions and dead
letters the live bridge made of it, or the agents downstream would not see the same input and could not
produce the same grid events. Validation is judged against the message's receive time (the recorded
one, in a replay), so a reading a few minutes "in the future" is rejected in the replay exactly when it
was rejected live.

Records are cut by bytes, not by reading count: one record stays below the broker's limit however large
the readings (a reading too large for any record becomes a dead letter), and a bad message gives at
most one dead letter, within a quota (pipeline/deadletters.py).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gridwatch.core.settings import BridgeSettings, Settings
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.schemas.codec import dumps
from gridwatch.pipeline.schemas.deadletter import DeadLetter
from gridwatch.pipeline.schemas.readings import Reading, ReadingBatch
from gridwatch.pipeline.sources.deadletters import LetterGate, message_letter, sender_of
from gridwatch.pipeline.sources.kafka_limits import DEFAULT_RECORD_LIMIT, RECORD_OVERHEAD
from gridwatch.pipeline.sources.telemetry_parser import ParseResult, Rejection, parse_message

log = logging.getLogger("gridwatch.bridge")

MAX_READINGS_PER_RECORD = 2000
DEFAULT_RECORD_BYTES = DEFAULT_RECORD_LIMIT - RECORD_OVERHEAD


@dataclass
class Routed:
    """Readings grouped per Kafka partition, and the dead letters, of a batch of MQTT messages."""

    by_partition: dict[int, list[Reading]] = field(default_factory=lambda: defaultdict(list))
    dead: list[DeadLetter] = field(default_factory=list)
    messages: int = 0
    readings: int = 0
    reasons: Counter = field(default_factory=Counter)  # bad entries per reason
    bad_messages: int = 0  # messages with at least one bad entry
    input_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.by_partition or self.dead)


class Router:
    """Parse, validate and partition MQTT telemetry messages (no I/O)."""

    def __init__(self, registry: Any, partitions: int, bridge: BridgeSettings) -> None:
        self.registry = registry
        self.partitions = partitions
        self.max_payload_bytes = bridge.max_payload_bytes
        self.max_future_ms = bridge.max_future_skew_s * 1000
        self.gate = LetterGate(bridge.deadletter_rate_per_s, bridge.deadletter_burst,
                               bridge.deadletter_total_rate_per_s, bridge.deadletter_total_burst,
                               keep_payload_bytes=bridge.deadletter_payload_bytes)

    def add(self, out: Routed, topic: str, payload: bytes, recv_ms: int) -> None:
        """Route one message into ``out``; ``recv_ms`` is when it was received (live or recorded)."""
        try:
            res = parse_message(topic, payload, self.registry, recv_ms, max_payload_bytes=self.max_payload_bytes,
                                max_future_ms=self.max_future_ms)
        except Exception as e:  # noqa: BLE001 - a parser bug must cost this message, not the bridge (the broker
            # would redeliver it to every restart); it is dead-lettered with the error, to be reported
            log.exception("the telemetry parser failed on a message from %s; it is dead-lettered", topic)
            res = ParseResult([], [Rejection("parser_error", f"{type(e).__name__}: {str(e)[:200]}")])
        for r in res.readings:
            r.recv_ms = recv_ms
            shard = self.registry.get(r.device_id).shard_key
            out.by_partition[partition_for(shard, self.partitions)].append(r)
        # Summaries fall due on receive time at every message, so the live bridge and a replay of its
        # recording cut them at the same messages.
        out.dead.extend(self.gate.due(recv_ms))
        if res.rejections:
            out.reasons.update(rej.reason for rej in res.rejections)
            out.bad_messages += 1
            out.dead.extend(self.gate.letters(sender_of(topic), topic, payload, recv_ms, res.rejections))
        out.readings += len(res.readings)
        out.messages += 1
        out.input_bytes += len(payload)

    def summaries(self, out: Routed, now_ms: int, force: bool = False) -> None:
        """Add the summaries of suppressed dead letters that are due (all of them: ``force``)."""
        out.dead.extend(self.gate.due(now_ms, force))

    def route(self, items: Iterable[tuple[str, bytes, int]]) -> Routed:
        """Route (topic, payload, recv_ms) messages, keeping each partition's arrival order."""
        out = Routed()
        for topic, payload, recv_ms in items:
            self.add(out, topic, payload, recv_ms)
        return out


@dataclass(slots=True)
class OutRecord:
    """One Kafka record of a routed batch, with what it carries (to split or dead-letter it if refused)."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None
    readings: list[Reading] | None = None  # a readings batch
    letter: DeadLetter | None = None  # a dead letter

    def as_tuple(self) -> tuple[str, bytes, bytes, int | None]:
        return self.topic, self.key, self.value, self.partition


def cut_readings(partition: int, readings: list[Reading], max_bytes: int) -> tuple[list[tuple[bytes, list[Reading]]],
                                                                                  list[Reading]]:
    """Encode readings as batch records of at most ``max_bytes`` each; the second list holds readings too
    large for any record. Cheap when everything fits (one encode per MAX_READINGS_PER_RECORD)."""
    out: list[tuple[bytes, list[Reading]]] = []
    too_large: list[Reading] = []
    for i in range(0, len(readings), MAX_READINGS_PER_RECORD):
        chunk = readings[i:i + MAX_READINGS_PER_RECORD]
        value = ReadingBatch(partition, chunk).encode()
        if len(value) <= max_bytes:
            out.append((value, chunk))
            continue
        envelope = len(ReadingBatch(partition, []).encode())
        group: list[Reading] = []
        size = envelope
        for r in chunk:
            n = len(dumps(r.to_dict())) + 1
            if envelope + n > max_bytes:
                too_large.append(r)
                continue
            if size + n > max_bytes:
                out.append((ReadingBatch(partition, group).encode(), group))
                group, size = [], envelope
            group.append(r)
            size += n
        if group:
            out.append((ReadingBatch(partition, group).encode(), group))
    return out, too_large


def too_large_letter(r: Reading, max_bytes: int, keep_payload_bytes: int = 65536) -> DeadLetter:
    """The dead letter of a reading that no record below the broker's limit can carry."""
    raw = dumps(r.to_dict())
    why = Rejection("record_too_large", f"device {r.device_id}: one reading of {len(raw)} bytes does not fit a "
                    f"Kafka record of at most {max_bytes} bytes (the broker's max.message.bytes); send fewer or "
                    f"smaller values per reading", r.device_id)
    return message_letter("bridge", r.source, raw, r.recv_ms, [why], keep_payload_bytes=keep_payload_bytes)


def out_records(settings: Settings, routed: Routed, max_record_bytes: int = DEFAULT_RECORD_BYTES) -> list[OutRecord]:
    """Every Kafka record a routed batch becomes, each value at most ``max_record_bytes``. Readings too
    large for any record become dead letters (added to ``routed.dead`` and its reasons)."""
    readings_topic = settings.topic("readings")
    recs: list[OutRecord] = []
    for p, readings in routed.by_partition.items():
        batches, too_large = cut_readings(p, readings, max_record_bytes)
        recs.extend(OutRecord(readings_topic, str(p).encode(), value, p, readings=rs) for value, rs in batches)
        for r in too_large:
            routed.reasons["record_too_large"] += 1
            routed.readings -= 1
            routed.dead.append(too_large_letter(r, max_record_bytes, settings.bridge.deadletter_payload_bytes))
    recs.extend(letter_record(settings, d) for d in routed.dead)
    return recs


def letter_record(settings: Settings, d: DeadLetter) -> OutRecord:
    return OutRecord(settings.topic("deadletter"), d.source.encode(), d.encode(), None, letter=d)


def kafka_records(settings: Settings, routed: Routed,
                  max_record_bytes: int = DEFAULT_RECORD_BYTES) -> list[tuple[str, bytes, bytes, int | None]]:
    """(topic, key, value, partition) of every Kafka record a routed batch becomes."""
    return [r.as_tuple() for r in out_records(settings, routed, max_record_bytes)]
