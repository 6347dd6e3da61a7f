"""Work-arounds for the embedded Kafka-protocol broker (Tansu 0.6, memory storage).

Tansu answers ListOffsets(latest) with "base offset of the last record batch + 1" instead of the
log end offset once producers batch records. Faust reads table changelogs up to that value during
recovery, so a restarted worker would lose table updates. A Fetch response carries the true high
watermark, so we fetch the last batch once and read it from there. Real Apache Kafka does not need
this; it is installed only when settings.kafka.quirks_enabled().

Tansu also does not answer a waiting Fetch when new records arrive: the consumer sits out the whole
``fetch_max_wait_ms`` (Faust hard-codes 1500 ms), which measured as +0.2..0.6 s per hop. A short
wait (100 ms) brings a hop back to a few ms at the cost of more idle fetches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("gridwatch.kafka_compat")
_installed = False
FETCH_MAX_WAIT_MS = 20
# What Tansu answers in DescribeCluster unless started with another --cluster-id.
TANSU_CLUSTER_ID = "tansu_cluster"


async def detect_tansu(bootstrap: str) -> bool:
    """Whether the broker at ``bootstrap`` is Tansu (its default cluster id); False if it cannot tell.

    A Tansu started with another cluster id is not recognised: set kafka.tansu_quirks: on for it.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        await admin.start()
        return (await admin.describe_cluster()).get("cluster_id") == TANSU_CLUSTER_ID
    except Exception as e:  # noqa: BLE001 - an unreachable broker is reported by the worker itself
        log.warning("could not ask %s which broker it is (%s): Tansu work-arounds stay off", bootstrap, e)
        return False
    finally:
        await admin.close()


async def fetch_highwaters(bootstrap: str | list[str], ends: Mapping[TopicPartition, int]) -> dict:
    """True high watermarks for partitions, given the (possibly low) ListOffsets answer."""
    result = dict(ends)
    todo = [tp for tp, end in ends.items() if end > 0]
    if not todo:
        return result
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    try:
        c.assign(todo)
        for tp in todo:
            c.seek(tp, max(ends[tp] - 1, 0))
        pending = set(todo)
        for _ in range(40):
            await c.getmany(*pending, timeout_ms=100, max_records=1)
            for tp in list(pending):
                hw = c.highwater(tp)
                if hw is not None:
                    result[tp] = max(hw, ends[tp])
                    pending.discard(tp)
            if not pending:
                break
        if pending:
            log.warning("could not read high watermark of %s; using ListOffsets", sorted(map(str, pending)))
    finally:
        await c.stop()
    return result


def install_tansu_shims() -> None:
    """Patch Faust's aiokafka driver to use fetch high watermarks (idempotent). Checked on the versions
    in gridwatch.patch_versions; refuses others."""
    global _installed
    if _installed:
        return
    from gridwatch.patch_versions import require_checked

    require_checked("Tansu high watermark and fetch wait (gridwatch.kafka_compat)")
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
        if self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        ends = await consumer.end_offsets(partitions)
        return await fetch_highwaters(consumer._client._bootstrap_servers, ends)

    driver.AIOKafkaConsumerThread._highwaters = _highwaters

    create = driver.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    _installed = True
    log.debug("Tansu high-watermark shim installed")
