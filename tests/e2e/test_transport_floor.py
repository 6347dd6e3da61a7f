"""The incident benchmark's transport floor on the real embedded broker: it reads exactly the inputs after its start
positions (the broker's ``end_offsets`` is wrong, so where inputs end comes from fetch high watermarks) and
writes every output record, same partition, key and bytes, beside the worker's topics."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from gridwatch.bench.transport_floor import SUFFIX, end_positions, ensure_topics, measure, read_all
from gridwatch.stack import EmbeddedStack

PARTS = 3


async def _produce(kafka: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5, acks="all")  # batches of many records
    await p.start()
    try:
        await asyncio.gather(*[await p.send(topic, v, key=k, partition=part) for part, k, v in records])
    finally:
        await p.stop()


async def _scenario(kafka: str, prefix: str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    ins = [f"{prefix}.events", f"{prefix}.reports"]
    outs = [f"{prefix}.incidents", f"{prefix}.changelog"]
    before = [(i % PARTS, b"k%d" % i, b"before-%d" % i) for i in range(40)]
    await ensure_topics(kafka, ins + outs, PARTS)
    for t in ins + outs:  # records before the measured phase
        await _produce(kafka, t, [(part, b"x", b"x") for part in range(PARTS)])
    await _produce(kafka, ins[0], before)
    start = await end_positions(kafka, ins)
    await _produce(kafka, ins[0], [(i % PARTS, b"e%d" % i, b"event-%d" % i) for i in range(700)])
    await _produce(kafka, ins[1], [(i % PARTS, b"r%d" % i, b"report-%d" % i) for i in range(150)])
    await _produce(kafka, outs[0], [(i % PARTS, b"g%d" % i, b"change-%d" % i * 50) for i in range(1200)])
    await _produce(kafka, outs[1], [(i % PARTS, b"inc:%d" % i, b"snapshot-%d" % i) for i in range(500)])
    expected = {t: await read_all(kafka, t) for t in outs}
    result = await measure(kafka, ins, outs, counted=850, start=start)
    written = {t: await read_all(kafka, t + SUFFIX) for t in outs}
    return result, {"expected": [expected[t] for t in outs], "written": [written[t] for t in outs]}


def _by_partition(records: list[tuple[int, bytes | None, bytes | None]]) -> dict[int, list[Any]]:
    return {p: [(k, v) for q, k, v in records if q == p] for p in range(PARTS)}


def test_floor_moves_exactly_the_phase_inputs_and_every_output(stack: EmbeddedStack) -> None:
    kafka = stack.kafka_url.removeprefix("kafka://")
    result, seen = asyncio.run(_scenario(kafka, f"floor-{uuid.uuid4().hex[:8]}"))
    # 700 events and 150 reports after the start positions; not the 40 events and the PARTS records before them
    assert result["records_fetched"] == 850 and result["inputs"] == 850
    for expected, written in zip(seen["expected"], seen["written"], strict=True):
        assert _by_partition(written) == _by_partition(expected)  # same partition, key, bytes and order
    assert result["change_records"] == 1200 + PARTS and result["changelog_records"] == 500 + PARTS
    assert result["us_per_input"] > 0 and result["fetch_only_us_per_input"] > 0

