"""Kafka plumbing shared by the bridge, agents, tests and benchmarks: topics, producer, partitioning."""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from gridwatch.core.settings import Settings
from gridwatch.pipeline.schemas.topics import TOPIC_CONFIGS, TOPICS

log = logging.getLogger("gridwatch.kafka")

async def topic_partitions(bootstrap: str, topics: list[str], wait_s: float = 0.0) -> dict[str, list[int]]:
    """Partition numbers of each topic (``[]`` for one that does not exist), from the admin client's
    DescribeTopics; with ``wait_s``, waits that long for missing topics to appear.

    Why not ``consumer.partitions_for_topic``: on Apache Kafka it stays None for a consumer without a
    subscription, even after ``consumer.topics()`` (Tansu's metadata answer hid this).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    try:
        while True:
            found: dict[str, list[int]] = {}
            for t in await admin.describe_topics(topics):
                if t.get("error_code", 0) == 0:  # else: unknown topic (or not ready yet)
                    found[t["topic"]] = sorted(p["partition"] for p in t.get("partitions") or [])
            result = {t: found.get(t, []) for t in topics}
            if all(result.values()) or loop.time() >= deadline:
                return result
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def assign_from_start(consumer: Any, topic: str) -> list[Any]:
    """Assign every partition of ``topic`` to a group-less consumer, positioned at the beginning
    (none when the topic does not exist)."""
    from aiokafka import TopicPartition

    parts = (await topic_partitions(consumer._client._bootstrap_servers, [topic]))[topic]
    tps = [TopicPartition(topic, p) for p in parts]
    if tps:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
    return tps


async def fetch_highwaters(consumer: Any, tps: list[Any], timeout: float) -> dict[Any, int]:
    """Each assigned partition's high watermark as fetch responses report it (right on every broker; the
    embedded broker's ListOffsets answer is not trusted, see :func:`gridwatch.compat.true_highwaters`).
    Polls one record at a time, so the positions move: seek afterwards if they matter. 0 for a
    partition that never said."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and any(consumer.highwater(tp) is None for tp in tps):
        await consumer.getmany(timeout_ms=200, max_records=1)
    return {tp: consumer.highwater(tp) or 0 for tp in tps}


def partition_for(shard_key: str, partitions: int) -> int:
    """Stable partition of a device shard (a lamp circuit, or the device itself)."""
    return zlib.crc32(shard_key.encode()) % partitions


async def ensure_topics(settings: Settings, names: tuple[str, ...] = TOPICS, timeout: float = 30.0) -> None:
    """Create the project's topics with the configured partition count if they are missing.

    Both the bridge and the workers call this, so whichever starts first gets the partitioning right
    instead of the broker's auto-create default.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap(), request_timeout_ms=10000)
    await _retry(admin.start, f"Kafka at {settings.kafka_bootstrap()}", timeout)
    try:
        existing = set(await admin.list_topics())
        missing = [settings.topic(n) for n in names if settings.topic(n) not in existing]
        if missing:
            family = {settings.topic(n): n for n in names}
            new = [NewTopic(t, settings.kafka.partitions, settings.kafka.replication_factor,
                            topic_configs=TOPIC_CONFIGS.get(family.get(t, ""), {})) for t in missing]
            try:
                await admin.create_topics(new)
                log.info("created topics %s with %d partitions", ", ".join(missing), settings.kafka.partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def _retry(start, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.2
    while True:
        try:
            await start()
            return
        except KafkaConnectionError as e:
            if loop.time() > deadline:
                raise ConnectionError(f"cannot reach {what}: {e}. Is the broker running? (--kafka URL)") from None
            log.warning("waiting for %s (%s)", what, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


async def start_producer(settings: Settings, timeout: float = 30.0, **kwargs: object) -> AIOKafkaProducer:
    opts: dict[str, object] = {"linger_ms": 5, "acks": "all", "max_batch_size": 1 << 20,
                               "max_request_size": 4 << 20, "request_timeout_ms": 15000}
    if settings.kafka.idempotent:
        opts["enable_idempotence"] = True
    opts.update(kwargs)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap(), **opts)
    await _retry(producer.start, f"Kafka at {settings.kafka_bootstrap()}", timeout)
    return producer
