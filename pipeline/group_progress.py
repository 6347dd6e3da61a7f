"""How far a consumer group has got: its committed offsets against each partition's log end.

Why one module: the benchmarks and the tests asked this with ``end_offsets``, which the embedded broker answers
too low once producers batch (the base offset of the last batch + 1, see ``gridwatch.compat.true_highwaters``),
so a group looked caught up while a batch of records was still ahead of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridwatch.compat import true_highwaters
from gridwatch.pipeline.kafka_io import topic_partitions


async def log_ends(bootstrap: str, consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition],
                   ) -> dict[TopicPartition, int]:
    """The offset after each partition's last record: ListOffsets, raised to the fetch high watermark."""
    return await true_highwaters(bootstrap, await consumer.end_offsets(list(tps)))


async def _group_reader(bootstrap: str, group: str, topics: list[str]) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer of the group that does not join it (OffsetFetch: the admin client's calls are not all
    served by the embedded broker), and every partition of ``topics``."""
    parts = await topic_partitions(bootstrap, topics)
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    return c, [TopicPartition(t, p) for t in topics for p in parts[t]]


async def _behind(bootstrap: str, c: AIOKafkaConsumer, tps: list[TopicPartition]) -> int:
    ends = await log_ends(bootstrap, c, tps)
    committed = {tp: await c.committed(tp) or 0 for tp in tps}  # each call asks the coordinator afresh
    return sum(max(0, ends[tp] - committed[tp]) for tp in tps)


async def uncommitted(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` the group has not committed."""
    c, tps = await _group_reader(bootstrap, group, topics)
    try:
        return await _behind(bootstrap, c, tps)
    finally:
        await c.stop()


async def wait_caught_up(bootstrap: str, group: str, topics: list[str], timeout: float,
                         poll_s: float = 0.3) -> float:
    """Seconds until ``group`` has committed every record of ``topics`` there is now; TimeoutError if it
    has not within ``timeout``."""
    t0 = time.monotonic()
    c, tps = await _group_reader(bootstrap, group, topics)
    try:
        left = -1
        while time.monotonic() - t0 < timeout:
            left = await _behind(bootstrap, c, tps)
            if left == 0:
                return time.monotonic() - t0
            await asyncio.sleep(poll_s)
    finally:
        await c.stop()
    raise TimeoutError(f"consumer group {group}: {left} records of {', '.join(topics)} still uncommitted "
                       f"after {timeout:.0f} s")
