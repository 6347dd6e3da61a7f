"""Kafka plumbing shared by the bridge, agents, tests and benchmarks: topics, producer, partitioning."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from gridwatch.settings import Settings

log = logging.getLogger("gridwatch.kafka")

# Topic families and whether they are partitioned like readings (by device shard).
TOPICS = ("readings", "events", "deadletter", "reports", "actions", "incidents", "frames")
# Topic configs per family at creation (Apache Kafka; Tansu keeps everything in memory regardless).
# Kafka is the spine, not the archive: the database holds case files for months. Camera frames are bulky
# (~50 KB each) and only useful live: an hour. Readings: three days to replay or re-run rules on.
# Grid events, incidents, resident reports and operator actions are small and what a restarted or new
# consumer (sink, database filler, a replay comparison) must still find: 30 days. Dead letters: 14 days
# for an operator to inspect. segment.ms lets Kafka delete by age in steps smaller than the retention.
_HOUR_MS = 3600 * 1000
_DAY_MS = 24 * _HOUR_MS


def _retain(ms: int, **more: str) -> dict[str, str]:
    return {"retention.ms": str(ms), "segment.ms": str(min(ms // 6, _DAY_MS)), **more}


TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "frames": _retain(_HOUR_MS, **{"max.message.bytes": "4194304"}),
    "readings": _retain(3 * _DAY_MS),
    "deadletter": _retain(14 * _DAY_MS),
    "events": _retain(30 * _DAY_MS),
    "incidents": _retain(30 * _DAY_MS),
    "reports": _retain(30 * _DAY_MS),
    "actions": _retain(30 * _DAY_MS),
}


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
    embedded broker's ListOffsets answer is not trusted, see kafka_compat). Polls one record at a
    time, so the positions move: seek afterwards if they matter. 0 for a partition that never said."""
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
    opts.update(kwargs)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap(), **opts)
    await _retry(producer.start, f"Kafka at {settings.kafka_bootstrap()}", timeout)
    return producer


_seek_fix_installed = False


def install_faust_seek_fix() -> None:
    """Make Faust lose no stream record when it resumes partitions after a rebalance. Idempotent.

    Once table recovery is done, Faust (``Recovery.on_recovery_completed``, or ``_resume_streams``
    without tables) resumes the stream partitions, seeks them to their committed offsets, then resumes
    flow control, which clears every stream buffer. The consumer's flow is already active then (it
    was resumed to read the changelogs), so the fetcher hands records to the streams throughout:

    * records handed over *before* the seek are cleared, and read again only if the seek moves the
      partition back: aiokafka's ``seek_to_committed`` leaves a partition without a committed offset
      (never consumed, e.g. operator actions produced while every worker was down) where the fetch
      left it, past them. Fix 1: seek such partitions to the beginning (``auto_offset_reset=earliest``).
    * records handed over *after* the seek and still queued when the buffers are cleared are lost on
      every partition: the position is already past them. Seen as a survivor of a two-worker fail-over
      that never handles 1-4 records of the dead worker's partitions, and as an operator action sent
      during a restart that is never applied (logged: ``perform_seek end`` then ``clear drops 3:
      readings[6]@1, readings[4]@1, readings[5]@1``, none of them fetched again). Fix 2: stop the
      consumer's flow for the whole resume, so nothing is handed over until the seek and the clear are
      done; the original resumes the flow at its end.

    Downstream dedupes what is read twice. Checked on the versions in gridwatch.patch_versions (on
    Tansu and on Apache Kafka); refuses others.
    """
    global _seek_fix_installed
    if _seek_fix_installed:
        return
    from gridwatch.patch_versions import require_checked

    require_checked("seek after a rebalance (pipeline.kafka_io.install_faust_seek_fix)")
    from faust.tables.recovery import Recovery
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self):  # type: ignore[no-untyped-def]
        committed = await original(self)
        fresh = [tp for tp, offset in committed.items()
                 if not offset and not tp.topic.endswith("-changelog") and "__assignor" not in tp.topic]
        if fresh:
            await self.call_thread(self._ensure_consumer().seek_to_beginning, *fresh)
        return committed

    driver.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    Recovery.on_recovery_completed = _flow_held(Recovery.on_recovery_completed)
    Recovery._resume_streams = _flow_held(Recovery._resume_streams)
    _seek_fix_installed = True


def _flow_held(resume: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap a Faust ``Recovery`` resume step so that the consumer hands no record over while it runs.

    ``stop_flow`` (as Faust's own revoke does) also cancels a hand-over in progress, so no stale read
    offset lands after the seek; the seek rewinds whatever was handed over before.
    """

    async def held(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        consumer.stop_flow()
        try:
            await resume(self, generation_id)
        finally:
            # The original resumes the flow unless a newer rebalance overtook it; that one's recovery
            # resumes it then. On an error in this generation, leave the flow as the original would.
            if not consumer.flow_active and self.app.consumer_generation_id == generation_id:
                consumer.resume_flow()

    return held


_event_path_fix_installed = False


def install_faust_event_path_fix() -> None:
    """Keep Faust's livelock check from crashing the worker on a partition that has no position yet.

    faust-streaming 0.15.3's commit-time check (``AIOKafkaConsumerThread.verify_event_path``) reads
    aiokafka's ``TopicPartitionState.position`` and tests it for None; aiokafka 0.14 asserts a position
    instead. When the check runs in the moment after a rebalance before a new partition's position is
    reset, the worker crashes ("Crashed reason=AssertionError", then "We experienced a crash"). Seen on
    Apache Kafka: the survivor of a two-worker fail-over died that way. Such a partition has nothing to
    verify yet, so the check skips it. Idempotent; checked on the versions in gridwatch.patch_versions.
    """
    global _event_path_fix_installed
    if _event_path_fix_installed:
        return
    from gridwatch.patch_versions import require_checked

    require_checked("livelock check without a position (pipeline.kafka_io.install_faust_event_path_fix)")
    from aiokafka import TopicPartition
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread.verify_event_path

    def verify_event_path(self, now, tp):  # type: ignore[no-untyped-def]
        subscription = self._ensure_consumer()._fetcher._subscriptions.subscription
        assignment = subscription.assignment if subscription is not None else None
        state = assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment is not None else None
        if state is None or not state.has_valid_position:
            return None
        return original(self, now, tp)

    driver.AIOKafkaConsumerThread.verify_event_path = verify_event_path
    _event_path_fix_installed = True
