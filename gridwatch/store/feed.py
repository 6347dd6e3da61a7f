"""Kafka topics -> the store, outside Faust: ``gridwatch store rebuild`` (from the oldest record until
caught up) and the api's live feed (from where it left off, for ever).

The api's feed stores its positions in the store (``consumer_offsets``) in the same transaction as
the rows, so a restart resumes where it stopped instead of re-reading history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridwatch.pipeline.kafka_io import topic_partitions

from .db import Store

log = logging.getLogger("gridwatch.store")
BATCH_RECORDS = 2000  # records per stored batch (one transaction; handed to the live streams at once)
OnBatch = Callable[[list[tuple[str, dict[str, Any]]]], None]


async def follow(store: Store, bootstrap: str, topics: dict[str, str], stop: asyncio.Event, *,
                 consumer: str = "", on_batch: OnBatch | None = None, until_caught_up: bool = False,
                 on_caught_up: Callable[[], None] | None = None, max_records: int = BATCH_RECORDS,
                 fetch_max_wait_ms: int = 100) -> int:
    """Write ``topics`` (family -> topic name) into the store until ``stop`` (or until caught up).

    ``consumer``: the name positions are kept under (resume there); "" reads from the beginning and
    keeps none. ``on_batch`` gets each written batch's decoded records (family, record) in order.
    ``fetch_max_wait_ms``: how long the broker may hold a Fetch with nothing new. Apache Kafka answers
    as soon as a record arrives; Tansu sits it out, so the api passes a short one there (every new
    incident would wait up to this long before it reaches the console stream).
    Returns the number of records written.
    """
    kafka = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", fetch_max_wait_ms=fetch_max_wait_ms)
    await kafka.start()
    written = 0
    try:
        parts = await topic_partitions(bootstrap, list(topics.values()), wait_s=10.0)
        tps = [TopicPartition(name, p) for name, ps in parts.items() for p in ps]
        kafka.assign(tps)
        saved = await asyncio.to_thread(store.offsets, consumer) if consumer else {}
        for tp in tps:
            if (tp.topic, tp.partition) in saved:
                kafka.seek(tp, saved[(tp.topic, tp.partition)])
            else:
                await kafka.seek_to_beginning(tp)
        family = {v: k for k, v in topics.items()}
        caught_up = False
        empty_polls = 0
        while not stop.is_set():
            got = await kafka.getmany(timeout_ms=200, max_records=max_records)
            empty_polls = 0 if got else empty_polls + 1
            if got:
                batch = store.batch()
                recs: list[tuple[str, dict[str, Any]]] = []
                offsets = []
                for tp, records in got.items():
                    for r in records:
                        rec = batch.add_raw(family[tp.topic], r.value)
                        if rec is not None:
                            recs.append((family[tp.topic], rec))
                    if consumer and records:
                        offsets.append((consumer, tp.topic, tp.partition, records[-1].offset + 1))
                await asyncio.to_thread(store.write, batch, offsets)
                written += batch.records
                if on_batch:
                    on_batch(recs)
            if not caught_up and await _at_end(kafka, tps, empty_polls):
                caught_up = True
                if on_caught_up:
                    on_caught_up()
                if until_caught_up:
                    break
    finally:
        with contextlib.suppress(Exception):
            await kafka.stop()
    return written


async def _at_end(kafka: AIOKafkaConsumer, tps: list[TopicPartition], empty_polls: int) -> bool:
    """Every partition's position at its high watermark (as fetches report it); partitions whose
    watermark no fetch reported yet count as at their end after a few empty polls (empty topics)."""
    for tp in tps:
        mark = kafka.highwater(tp)
        if mark is None:
            if empty_polls < 3:
                return False
            continue
        if await kafka.position(tp) < mark:
            return False
    return True


async def rebuild(store: Store, bootstrap: str, topics: dict[str, str]) -> int:
    """Re-read every record Kafka still holds into the store (idempotent: run it any time)."""
    return await follow(store, bootstrap, topics, asyncio.Event(), until_caught_up=True)
