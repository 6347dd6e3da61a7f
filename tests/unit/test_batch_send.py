"""agents/batch_send.py's memo of key partitions: the partition the producer's own partitioner gives, hashed
once per (topic, key, partition count); keyless records spread by the partitioner, never pinned."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP

from gridwatch.agents.batch_send import KeyPartitions


class Producer:
    """The producer's ``key_partition`` as Faust's driver computes it (aiokafka's default partitioner over
    ``count`` partitions), counting its calls."""

    def __init__(self, count: int) -> None:
        self.count, self.calls, self.part = count, 0, DefaultPartitioner()

    def key_partition(self, topic: str, key: bytes | None) -> TP:
        self.calls += 1
        every = list(range(self.count))
        return TP(topic, self.part(key, every, every))


def app_with(count: int) -> Any:
    return SimpleNamespace(producer=Producer(count))


def test_a_keys_partition_is_the_partitioners_and_is_hashed_once():
    app, memo = app_with(8), KeyPartitions()
    keys = [f"33010800400300{i}".encode() for i in range(20)]
    first = [memo(app, "p.incidents", k, 8) for k in keys]
    again = [memo(app, "p.incidents", k, 8) for k in keys]
    every = list(range(8))
    assert first == again == [DefaultPartitioner()(k, every, every) for k in keys]
    assert len(set(first)) > 1  # the keys spread: a memo that returned one partition would fail here
    assert app.producer.calls == len(keys)


def test_a_topic_with_another_partition_count_is_hashed_again():
    memo = KeyPartitions()
    key = b"330108004003006"
    assert memo(app_with(8), "p.incidents", key, 8) == DefaultPartitioner()(key, list(range(8)), list(range(8)))
    other = app_with(3)
    assert memo(other, "p.incidents", key, 3) == DefaultPartitioner()(key, [0, 1, 2], [0, 1, 2])
    assert other.producer.calls == 1


def test_records_without_a_key_are_not_remembered():
    app, memo = app_with(8), KeyPartitions()
    for _ in range(50):
        memo(app, "p.incidents", None, 8)
    assert app.producer.calls == 50 and not memo.memo


def test_the_memo_starts_again_past_its_limit():
    app, memo = app_with(8), KeyPartitions(limit=4)
    for i in range(10):
        memo(app, "p.incidents", str(i).encode(), 8)
    assert 1 <= len(memo.memo) <= 4 and app.producer.calls == 10


def test_without_the_default_partitioner_every_key_is_asked_for():
    app, memo = app_with(8), KeyPartitions()
    for _ in range(3):
        memo(app, "p.incidents", b"330108004003006", 8, memo=False)
    assert app.producer.calls == 3 and not memo.memo
