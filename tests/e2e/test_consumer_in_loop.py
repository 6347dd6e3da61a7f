"""Faust's Kafka consumer in the worker's own event loop (``worker.consumer_in_loop``), on the real broker.

The in-loop consumer must do what Faust's consumer thread does (start, fetch, commit, stop) without a thread, and
its stop must leave the worker's other tasks alone: Faust's thread sweeps every task of its loop when it stops,
which in the worker's loop would be the agents'. ``false`` must still give Faust's thread.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.types import TP

from gridwatch.bench.transport_floor import ensure_topics
from gridwatch.compat import consumer_in_loop, install_faust_consumer_in_loop


async def fetch_commit_stop(kafka_url: str, in_loop: bool) -> dict:
    name = f"inloop-{uuid.uuid4().hex[:8]}"
    app = faust.App(name, broker=kafka_url, web_enabled=False, logging_config=None)
    consumer_in_loop(app, in_loop)
    install_faust_consumer_in_loop()
    topic = f"{name}-in"
    bootstrap = kafka_url.removeprefix("kafka://")
    await ensure_topics(bootstrap, [topic], 1)  # Apache Kafka here does not create topics on first use
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topic, f"r{i}".encode(), partition=0)
    finally:
        await producer.stop()

    bystander = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="an agent's task")
    threads = {t.ident for t in threading.enumerate()}
    consumer = app.consumer._thread
    await consumer.start()
    started_threads = {t.ident for t in threading.enumerate()} - threads
    tp = TP(topic, 0)
    kafka_consumer = consumer._ensure_consumer()

    def assign() -> None:  # in the consumer's own loop, whichever that is
        kafka_consumer.assign([tp])
        kafka_consumer.seek(tp, 0)
    await consumer.call_thread(assign)
    values: list[bytes] = []
    ran_on: set[int] = set()

    def where() -> int:  # a plain function through the thread's call, as Faust passes some
        return threading.get_ident()

    async def fetch() -> None:
        while len(values) < 20:
            got = await consumer.getmany({tp}, timeout=1.0)
            values.extend(r.value for r in got.get(tp, []))
    await asyncio.wait_for(fetch(), 30)
    ran_on.add(await consumer.call_thread(where))
    committed = await consumer.commit({tp: 20})
    position = await consumer.position(tp)
    await consumer.stop()
    stopped = bystander.done()  # cancelled counts as done
    bystander.cancel()
    return {"values": values, "ran_on": ran_on, "committed": committed, "position": position,
            "bystander_stopped": stopped, "new_threads": started_threads, "loop_same": consumer.thread_loop is
            asyncio.get_running_loop()}


@pytest.mark.parametrize("in_loop", [True, False], ids=["in-loop", "thread"])
def test_the_consumer_fetches_commits_and_stops_in_the_worker_loop_or_in_fausts_thread(stack, in_loop) -> None:
    got = asyncio.run(fetch_commit_stop(stack.kafka_url, in_loop))
    assert got["values"] == [f"r{i}".encode() for i in range(20)]
    assert got["committed"] is True and got["position"] == 20
    assert not got["bystander_stopped"], "stopping the consumer cancelled a task of the worker's loop"
    if in_loop:
        assert got["loop_same"] and not got["new_threads"]
        assert got["ran_on"] == {threading.get_ident()}
    else:
        assert not got["loop_same"] and got["new_threads"]
        assert got["ran_on"] and got["ran_on"] != {threading.get_ident()}
