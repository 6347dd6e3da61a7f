"""A resident report waits in the event-time merge for the grid events before it, but a dead telemetry agent
cannot hold it back for longer than ``fusion.report_hold_s``: the real incident worker (`--role incidents`)
alone, no telemetry agent, one readings partition it has heard of and that then fell silent.

Without the worker's wake-up record nothing would ever make it look at the report again (no input arrives),
and the report would never become an incident.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaProducer

from gridwatch.core.procs import Proc
from gridwatch.pipeline.group_progress import wait_caught_up
from gridwatch.pipeline.schemas.events import UpstreamMark, Watermarks
from tests.e2e.test_incidents_e2e import resident_report
from tests.harness import ARTIFACTS, Pipeline, read_topic, wait_for
from tests.unit.test_incident_fusion import MANHOLES


@pytest.fixture()
def incidents_worker(stack) -> Iterator[tuple[Pipeline, Proc]]:
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url)  # only for its prefix and arguments: nothing else runs
    worker = Proc(f"{pipe.prefix}-incidents", ["worker", "--role", "incidents", *pipe.common], ARTIFACTS,
                  pipe.env).start()
    try:
        worker.wait_log("worker ready", 90)
        yield pipe, worker
    finally:
        worker.stop()


def produce_all(kafka_url: str, topic: str, records: list[tuple[bytes, bytes, bool]]) -> None:
    """(key, value, to every partition?) records, in order."""

    async def main() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_url.removeprefix("kafka://"), acks="all")
        await p.start()
        try:
            for key, value, everywhere in records:
                parts = sorted(await p.partitions_for(topic)) if everywhere else [None]
                for part in parts:
                    await p.send_and_wait(topic, value, key=key, partition=part)
        finally:
            await p.stop()

    asyncio.run(main())


def test_a_report_waiting_for_a_silent_telemetry_agent_becomes_an_incident_after_the_hold(incidents_worker):
    pipe, worker = incidents_worker
    t0 = int(time.time() * 1000) - 60_000
    dev = MANHOLES[0]
    # a readings partition announces itself (as the telemetry agent does), then goes silent, never idle
    produce_all(pipe.kafka_url, pipe.topic("events"),
                [(b"~watermark", Watermarks({"readings:0": UpstreamMark(t0)}).encode(), True)])
    # the worker applied the announcement before the report comes
    asyncio.run(wait_caught_up(pipe.kafka_url.removeprefix("kafka://"), f"gridwatch-incidents-{pipe.prefix}",
                               [pipe.topic("events")], 60))
    rep = resident_report(dev.lat, dev.lon, t0 + 30_000, dev.grid_code)
    produce_all(pipe.kafka_url, pipe.topic("reports"), [(dev.grid_code.encode(), rep.encode(), False)])

    def created() -> dict | None:
        return next((c for c in read_topic(pipe.kafka_url, pipe.topic("incidents"), 1.0)
                     if c["source_id"] == rep.service_request_id and c["change"] == "created"), None)

    change = wait_for(created, 60, "the report's incident after the hold")
    # the premise: the report waited for the silent partition and the hold released it, as the worker says
    assert f"report {rep.service_request_id} applied after waiting" in worker.log(), worker.log()[-2000:]
    assert change["incident"]["sources"][0]["id"] == rep.service_request_id
    assert not worker.dead(), worker.log()[-2000:]
