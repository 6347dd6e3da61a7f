"""The transport floor of the incident path: the CPU that moving the agent's records costs with bare aiokafka.

Why: through the worker the incident agent costs more CPU per input than the same fusion in process (the
ratio of ``bench incidents``), while the fusion itself costs in the worker what it costs in process: the
rest is moving records. This loop moves the same records and does nothing else. It fetches the fusion
phase's inputs from their topics, and for each fetched batch it produces the worker's own outputs in the
same proportion (the change and changelog records the worker wrote, read back from its topics: same keys,
partitions and bytes), one Kafka batch per partition, waiting for the change records before the next fetch
as the agent does, through the agents' own ``send_partition`` (so the same record batches,
pipeline/record_batch.py). No Faust, no consumer thread, no fusion.

Its CPU per input is what any worker built on aiokafka pays at least; the worker's overhead above it is
what Faust adds per record (the consumer thread and its hand-over, the conductor, events, acks, sensors).
``bench incidents`` runs it in a process of its own, right after the fusion phase, and reports both.

    python -m gridwatch.bench.transport_floor --kafka HOST:PORT --inputs T1,T2 --outputs T3,T4 --inputs-counted N
                                              [--start '{"T1:0": OFFSET, ...}']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gridwatch.agents.batch_send import send_partition
from gridwatch.pipeline.group_progress import log_ends
from gridwatch.pipeline.kafka_io import topic_partitions

OutRecord = tuple[int, bytes | None, bytes | None]  # partition, key, value

SUFFIX = "-transport-floor"  # the floor writes beside the worker's topics, never into them


async def assign(kafka: str, c: AIOKafkaConsumer, topics: list[str], start: dict[str, int] | None,
                 ) -> dict[TopicPartition, int]:
    """Every partition of ``topics``, each at its offset in ``start`` (``"topic:partition"``; else 0)."""
    parts = await topic_partitions(kafka, topics, wait_s=30)
    tps = [TopicPartition(t, n) for t in topics for n in parts[t]]
    c.assign(tps)
    first = {tp: (start or {}).get(f"{tp.topic}:{tp.partition}", 0) for tp in tps}
    for tp, offset in first.items():
        c.seek(tp, offset)
    return first


async def read_to_end(kafka: str, c: AIOKafkaConsumer, tps: list[TopicPartition], timeout: float = 120.0,
                      ) -> list[OutRecord]:
    """The records from each partition's position to its end now."""
    ends = await log_ends(kafka, c, tps)
    out: list[OutRecord] = []
    left = {tp for tp in tps if await c.position(tp) < ends[tp]}
    deadline = time.monotonic() + timeout
    while left:
        if time.monotonic() > deadline:
            raise TimeoutError(f"transport floor: {', '.join(sorted({tp.topic for tp in left}))} not read to the end "
                               f"in {timeout} s")
        for tp, recs in (await c.getmany(*left, timeout_ms=200)).items():
            out += [(tp.partition, r.key, r.value) for r in recs if r.offset < ends[tp]]
            if recs and recs[-1].offset + 1 >= ends[tp]:
                left.discard(tp)
    return out


async def end_positions(kafka: str, topics: list[str]) -> dict[str, int]:
    """``{"topic:partition": offset}`` after the last record now: where ``measure`` starts, taken before the
    fusion phase."""
    c = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, group_id=None)
    await c.start()
    try:
        ends = await log_ends(kafka, c, await assign(kafka, c, topics, None))
        return {f"{tp.topic}:{tp.partition}": o for tp, o in ends.items()}
    finally:
        await c.stop()


async def read_all(kafka: str, topic: str) -> list[OutRecord]:
    c = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, group_id=None)
    await c.start()
    try:
        return await read_to_end(kafka, c, list(await assign(kafka, c, [topic], None)))
    finally:
        await c.stop()


async def ensure_topics(kafka: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        have = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in have]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def send_grouped(producer: AIOKafkaProducer, topic: str, records: list[OutRecord]) -> list[asyncio.Future]:
    """One batch per partition, by the agents' own ``send_partition``."""
    groups: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
    for partition, key, value in records:
        groups.setdefault(partition, []).append((key, value))
    return [f for partition, recs in groups.items() for f in await send_partition(producer, topic, partition, recs)]


async def measure(kafka: str, inputs: list[str], outputs: list[str], counted: int,
                  start: dict[str, int] | None = None) -> dict[str, Any]:
    """Fetch the records of ``inputs`` from ``start`` (``end_positions``; default: the beginning) and produce the
    records of ``outputs`` (changes first, then changelog) pro rata to the records fetched; CPU per ``counted``
    input, comparable with the worker's figure."""
    changes, changelog = [await read_all(kafka, t) for t in outputs]
    targets = [t + SUFFIX for t in outputs]
    c = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False, group_id=None, max_poll_records=500)
    # as the worker's producer (gridwatch/app.py): acks from all replicas, 2 ms linger, 256 KB batches
    p = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=2, max_batch_size=256 * 1024)
    await c.start()
    await p.start()
    try:
        first = await assign(kafka, c, inputs, start)
        tps = list(first)
        await ensure_topics(kafka, targets, len({tp.partition for tp in tps}))
        ends = await log_ends(kafka, c, tps)
        await topic_partitions(kafka, targets, wait_s=30)  # created, on every broker
        for t in targets:
            await p.partitions_for(t)  # metadata before the clock starts
        span = sum(ends[tp] - first[tp] for tp in tps)

        async def one_pass(produce: bool) -> tuple[int, float, float]:
            for tp, offset in first.items():
                c.seek(tp, offset)
            left = {tp for tp in tps if ends[tp] > first[tp]}
            at = dict(first)
            fetched = sent_c = sent_w = 0
            c0, t0 = time.process_time(), time.perf_counter()
            while left:
                got = await c.getmany(*left, timeout_ms=500, max_records=500)
                for tp, recs in got.items():
                    fetched += sum(1 for r in recs if r.offset < ends[tp])
                    if recs:
                        at[tp] = min(ends[tp], recs[-1].offset + 1)
                        if at[tp] >= ends[tp]:
                            left.discard(tp)
                if not produce:
                    continue
                done = sum(at[tp] - first[tp] for tp in tps)
                upto_c, upto_w = len(changes) * done // span, len(changelog) * done // span
                futures = await send_grouped(p, targets[0], changes[sent_c:upto_c])
                await send_grouped(p, targets[1], changelog[sent_w:upto_w])  # not waited for, as the agent's
                sent_c, sent_w = upto_c, upto_w
                await asyncio.gather(*futures)
            await p.flush()
            return fetched, time.process_time() - c0, time.perf_counter() - t0

        _, fetch_cpu, _ = await one_pass(produce=False)
        fetched, cpu, wall = await one_pass(produce=True)
    finally:
        await c.stop()
        await p.stop()
    return {"records_fetched": fetched, "inputs": counted, "change_records": len(changes),
            "changelog_records": len(changelog), "cpu_seconds": round(cpu, 2), "seconds": round(wall, 2),
            "us_per_input": round(1e6 * cpu / counted, 1),
            # the same records fetched and nothing produced, in a pass of its own before
            "fetch_only_us_per_input": round(1e6 * fetch_cpu / counted, 1)}


def main(argv: list[str] | None = None) -> int:
    a = argparse.ArgumentParser(prog="gridwatch.bench.transport_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--kafka", required=True, help="bootstrap HOST:PORT")
    a.add_argument("--inputs", required=True, help="the agent's input topics, comma-separated")
    a.add_argument("--outputs", required=True, help="the worker's change topic and changelog topic, comma-separated")
    a.add_argument("--inputs-counted", type=int, required=True, help="inputs the per-input figure divides by")
    a.add_argument("--start", type=json.loads, default=None,
                   help='JSON {"topic:partition": offset} where reading starts (default: the beginning)')
    args = a.parse_args(argv)
    outputs = args.outputs.split(",")
    if len(outputs) != 2:
        a.error("--outputs: the change topic and the changelog topic")
    print(json.dumps(asyncio.run(measure(args.kafka, args.inputs.split(","), outputs, args.inputs_counted, args.start))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
