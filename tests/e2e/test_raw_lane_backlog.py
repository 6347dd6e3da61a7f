"""The incident agent's raw lane under a backlog, on the real incident worker (`--role incidents`) and broker.

A stream buffer of 64 records (``worker.stream_buffer``) puts the lane under pressure from 51 queued records (80 %),
so each fetch of a burst (up to 500 records) pauses its partition until the agent has drained the buffer to 25
(40 %), over and over. Every input must still come out as part of an incident, and the worker's consumer group must
commit to the end of its inputs: a pause that is never lifted stalls the group, and a lane that hands Faust's
consumer the wrong partition type crashes the worker (both were caught this way).
"""

from __future__ import annotations

import asyncio

from gridwatch.bench.incidents import (
    DAY,
    PARTS,
    feed_records,
    input_ts,
    markers,
    produce_all,
    source_id,
    workload,
)
from gridwatch.core.procs import Proc
from gridwatch.devices.registry import load_city
from gridwatch.pipeline.group_progress import wait_caught_up
from tests.harness import ARTIFACTS, Pipeline, read_topic


def test_a_backlog_through_a_small_stream_buffer_is_fused_completely(stack) -> None:
    city = load_city()
    inputs = workload(city, 1)
    last = max(input_ts(x) for x in inputs)
    recs = feed_records([*inputs, *markers(city, last + 3 * DAY)])
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url)  # for its prefix and arguments: the incident worker alone
    env = {**pipe.env, "GRIDWATCH_WORKER_STREAM_BUFFER": "64"}
    worker = Proc(f"{pipe.prefix}-incidents", ["worker", "--role", "incidents", *pipe.common], ARTIFACTS, env).start()
    kafka = stack.kafka_url.removeprefix("kafka://")
    try:
        worker.wait_log("worker ready", 90)
        asyncio.run(produce_all(kafka, pipe, recs[:PARTS]))  # the upstreams announced first, as in bench incidents
        asyncio.run(produce_all(kafka, pipe, recs[PARTS:]))  # then the burst: ~3,000 records at once
        group = f"gridwatch-incidents-{pipe.prefix}"
        asyncio.run(wait_caught_up(kafka, group, [pipe.topic("events"), pipe.topic("reports")], 120))
        log = worker.log()
        assert "raw lane: " in log and "Traceback" not in log, log[-3000:]
        assert worker.proc.poll() is None  # alive
        changes = read_topic(stack.kafka_url, pipe.topic("incidents"), 5.0)
    finally:
        worker.stop()
    fused = {c["source_id"] for c in changes}
    missing = {source_id(x) for x in inputs} - fused
    assert not missing, f"{len(missing)} of the inputs never reached an incident: {sorted(missing)[:5]}"
