"""Produce many records at once: one Kafka record batch per topic partition, through the worker's own producer.

Why: Faust's ``Topic.send`` and ``Table.send_changelog`` build a FutureMessage, a task and a separate
aiokafka ``send`` for every record. The incident agent writes about two change records and one or two
changelog records per input, and in the profile of ``bench incidents`` that machinery cost about as much
as the fusion itself. Appending the same records (same topic, partition, key and value
bytes) to a batch per partition and handing each batch to the producer does the same writes for a
fraction of the cost. Order within a partition is kept: batches of one partition are queued in the
producer's accumulator in the order they are sent, and it has at most one in flight per partition.

Faust's consumer flushes the producer before it commits offsets, so records sent here without waiting
are, like Faust's own buffered changelog records, on the broker before their inputs count as done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from gridwatch.compat import worker_producer
from gridwatch.pipeline.record_batch import new_batch

log = logging.getLogger("gridwatch.agents")

Record = tuple[str, int | None, bytes | None, bytes | None]  # topic, partition (None: by key), key, value


class KeyPartitions:
    """The key's partition under the producer's partitioner, remembered per (topic, key, count).

    Why: the default partitioner hashes each key with murmur2 in Python (~2 % of the incident worker's
    CPU, one hash per change record), and the incident agent's keys are the city's grid codes, a few
    thousand. Bounded: past ``limit`` keys the memo starts again (a city's grid codes fit many times).
    Only for aiokafka's default partitioner (murmur2 of the key over all partitions) and bytes keys: a record
    without a key is spread at random, and another partitioner may not be a function of the key alone."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.memo: dict[tuple[str, bytes, int], int] = {}

    def __call__(self, app: Any, topic: str, key: bytes | None, count: int, *, memo: bool = True) -> int:
        if not memo or type(key) is not bytes:
            return app.producer.key_partition(topic, key).partition
        slot = (topic, key, count)
        partition = self.memo.get(slot)
        if partition is None:
            if len(self.memo) >= self.limit:
                self.memo.clear()
            partition = self.memo[slot] = app.producer.key_partition(topic, key).partition
        return partition


_key_partition = KeyPartitions()


def _log_failure(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("batched produce failed: %s", fut.exception())


async def send_partition(producer: Any, topic: str, partition: int,
                         records: Iterable[tuple[bytes | None, bytes | None]]) -> list[asyncio.Future]:
    """(key, value) records of one partition, in order, in as few Kafka batches as they fit: the futures of
    the batches' sends. The batches are built with the CPU's CRC-32C where it has one (pipeline/record_batch.py)."""
    futures = []
    records = list(records)
    mean = sum(len(v) for _, v in records if v) / (len(records) or 1)
    batch = new_batch(producer, mean)
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:  # full (a first record always fits)
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = new_batch(producer, mean)
            batch.append(key=key, value=value, timestamp=None)
    batch.close()
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def send_all(app: Any, records: Iterable[Record], *, wait: bool = True) -> int:
    """Produce ``records``; with ``wait`` return once the broker confirmed all of them (raises like
    a failed send), else once they are queued (a failure is logged; the commit-time flush waits for
    them). Partition None means the key's partition under the producer's partitioner (Faust's too)."""
    producer = worker_producer(app)
    records = list(records)
    # The key's partition needs the topic's partition count in the producer's metadata, which holds only
    # topics it was asked about: on Apache Kafka a first send to a topic found none and crashed the agent.
    memo = type(producer._partitioner) is DefaultPartitioner  # see KeyPartitions
    counts = {t: len(await producer.partitions_for(t)) for t in {t for t, partition, _, _ in records
                                                                  if partition is None}}
    groups: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = {}
    for topic, partition, key, value in records:
        if partition is None:  # the count in the slot: a topic given more partitions hashes its keys again
            partition = _key_partition(app, topic, key, counts[topic], memo=memo)
        groups.setdefault((topic, partition), []).append((key, value))
    futures = []
    for (topic, partition), recs in groups.items():
        futures += await send_partition(producer, topic, partition, recs)
    if wait:
        await asyncio.gather(*futures)
    else:
        for f in futures:
            f.add_done_callback(_log_failure)
    return sum(len(r) for r in groups.values())
