"""Done means (issue 13): a worker killed (SIGKILL) during a burst, while the store agent has work in
flight, and restarted: the database holds exactly the incident versions Kafka holds, one row each."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from gridwatch.core.procs import Proc
from gridwatch.core.settings import Settings
from gridwatch.pipeline.schemas.reports import ResidentReport
from gridwatch.store import open_store
from gridwatch.store.feed import rebuild
from tests.harness import ARTIFACTS, read_topic, wait_for
from tests.web.samples import CITY

BURST = 600


def _burst(kafka_url: str, prefix: str, done: threading.Event) -> None:
    """Resident reports, one per grid (no two fuse), in small sends so the burst lasts a while."""
    grids = CITY.gridmap.areas("grid")
    now = int(time.time() * 1000)

    async def main() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_url.removeprefix("kafka://"), linger_ms=5)
        await p.start()
        try:
            for n in range(BURST):
                g = grids[n % len(grids)].code
                lat, lon = CITY.gridmap.centroid(g)
                r = ResidentReport(f"k{prefix}-{n}", "manhole_cover", "cover missing", lat, lon,
                                   now + n * 1000, g)
                await p.send(f"{prefix}.reports", r.encode(), key=g.encode())
                if n % 20 == 19:
                    await p.flush()
                    await asyncio.sleep(0.05)
            await p.flush()
        finally:
            await p.stop()
            done.set()

    asyncio.run(main())


def test_killed_store_worker_leaves_exactly_the_versions_kafka_has(stack, tmp_path: Path) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {"GRIDWATCH_STORE_URL": url, "GRIDWATCH_STORE_BATCH_SIZE": "50", "GRIDWATCH_STORE_WITHIN_S": "0.2"}
    worker = Proc(f"{prefix}-worker", ["worker", "--kafka", stack.kafka_url, "--mqtt", stack.mqtt_url,
                                       "--prefix", prefix, "--agents", "incidents,store_sink"], ARTIFACTS, env)
    store = open_store(Settings(), CITY.timezone, url=url)
    try:
        worker.start()
        worker.wait_log("worker ready", 90)
        done = threading.Event()
        producer = threading.Thread(target=_burst, args=(stack.kafka_url, prefix, done), daemon=True)
        producer.start()
        wait_for(lambda: store.count("incident_versions") >= 50, 90, "the store agent writing")
        worker.kill()
        at_kill = store.count("incident_versions")
        assert not done.is_set() and at_kill < BURST, "the kill must land during the burst, with work in flight"
        producer.join(120)
        worker.start()  # resumes from the committed offsets: what was in flight is delivered again

        def kafka_versions() -> set[tuple[str, int]]:
            return {(c["incident"]["id"], c["incident"]["version"])
                    for c in read_topic(stack.kafka_url, f"{prefix}.incidents", 3.0)}

        wait_for(lambda: len(kafka_versions()) >= BURST, 180, "every report's incident on Kafka")
        wait_for(lambda: store.versions() == kafka_versions(), 120, "the store to hold what Kafka holds")
        time.sleep(2)  # nothing more arrives late, nothing doubles
        final = kafka_versions()
        assert store.versions() == final and store.count("incident_versions") == len(final)
        assert at_kill < len(final)  # work was still to do when the worker died
        print(f"store versions at the kill: {at_kill}; after the restart: {len(final)} (= Kafka's)")

        # `gridwatch store rebuild` into an empty database gives the same versions, twice over
        rebuilt = open_store(Settings(), CITY.timezone, url=f"sqlite:///{tmp_path / 'rebuilt.db'}")
        families = {f: f"{prefix}.{f}" for f in ("incidents", "reports", "actions", "events")}
        bootstrap = stack.kafka_url.removeprefix("kafka://")
        for _ in range(2):
            asyncio.run(rebuild(rebuilt, bootstrap, families))
            assert rebuilt.versions() == final and rebuilt.count("reports") == BURST
        rebuilt.close()
    finally:
        worker.kill()
        store.close()
