"""How far a consumer group has got, on the real broker, with records produced in batches: the embedded broker
answers ListOffsets with the last batch's base offset + 1, and a group one batch behind must not look caught up."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from gridwatch.bench.transport_floor import ensure_topics
from gridwatch.pipeline.group_progress import uncommitted, wait_caught_up
from gridwatch.stack import EmbeddedStack


async def _batched(kafka: str, topic: str, n: int) -> None:
    p = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=20, acks="all")
    await p.start()
    try:
        await asyncio.gather(*[await p.send(topic, b"v%d" % i, key=b"k", partition=0) for i in range(n)])
    finally:
        await p.stop()


async def _commit(kafka: str, group: str, topic: str, offset: int) -> None:
    c = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await c.stop()


async def _scenario(kafka: str, topic: str, group: str) -> list[int]:
    await ensure_topics(kafka, [topic], 1)
    await _batched(kafka, topic, 300)
    await _batched(kafka, topic, 200)  # two batches: ListOffsets would say 301 at most
    seen = [await uncommitted(kafka, group, [topic])]
    await _commit(kafka, group, topic, 301)
    seen.append(await uncommitted(kafka, group, [topic]))
    with pytest.raises(TimeoutError, match="199 records"):
        await wait_caught_up(kafka, group, [topic], timeout=1.0)
    await _commit(kafka, group, topic, 500)
    seen.append(await uncommitted(kafka, group, [topic]))
    await wait_caught_up(kafka, group, [topic], timeout=5.0)
    return seen


def test_a_group_a_batch_behind_is_not_caught_up(stack: EmbeddedStack) -> None:
    name = f"progress-{uuid.uuid4().hex[:8]}"
    assert asyncio.run(_scenario(stack.kafka_url.removeprefix("kafka://"), name, name)) == [500, 199, 0]
