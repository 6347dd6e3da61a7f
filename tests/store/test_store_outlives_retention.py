"""Done means (issue 13): incidents whose records Kafka's retention has deleted are still served by a
restarted api, with their timeline, last month's statistics and the Open311 look-up, on SQLite and on
PostgreSQL. Apache Kafka (Tansu keeps everything in memory, regardless of retention) with a retention
check every half second; topics with a 3-second retention."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gridwatch.kafka_server import single_node
from gridwatch.pipeline.schemas.reports import ResidentReport
from gridwatch.stack import free_port
from tests.harness import wait_for
from tests.web.conftest import start_api
from tests.web.samples import CITY, change, incident

PARTITIONS = 4
RETENTION = {"retention.ms": "3000", "segment.ms": "1000"}


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = single_node(tmp_path_factory.mktemp("kafka"), free_port(), free_port(),
                       extra={"log.retention.check.interval.ms": 500, "num.partitions": PARTITIONS})
    node.start(timeout=120)
    yield f"kafka://{node.bootstrap}"
    node.stop()


async def _admin(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"{prefix}.{f}", PARTITIONS, 1, topic_configs=RETENTION)
                                   for f in ("incidents", "reports", "actions", "audit")])
    finally:
        await admin.close()


async def _produce(bootstrap: str, records: list[tuple[str, str, bytes | None]], partition: int | None = None) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for topic, key, value in records:
            await p.send_and_wait(topic, value, key=key.encode(), partition=partition)
    finally:
        await p.stop()


async def _live_records(bootstrap: str, topics: list[str]) -> int:
    """Records (with a value) Kafka still holds in ``topics``."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        n = 0
        while [tp for tp in tps if await c.position(tp) < ends[tp]]:
            got = await c.getmany(timeout_ms=500)
            n += sum(1 for rs in got.values() for r in rs if r.value is not None)
            if not got:
                break
        return n
    finally:
        await c.stop()


def _wait_for_retention(bootstrap: str, topics: list[str]) -> None:
    """Roll every partition's segment (an empty-valued record after segment.ms) until retention has
    deleted every real record."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        time.sleep(1.2)
        for p in range(PARTITIONS):
            asyncio.run(_produce(bootstrap, [(t, "roll", None) for t in topics], partition=p))
        if asyncio.run(_live_records(bootstrap, topics)) == 0:
            return
    raise AssertionError("retention did not delete the records in 90 s")


def test_a_restarted_api_serves_incidents_kafka_no_longer_holds(kafka: str, store_url: str, tmp_path: Path) -> None:
    bootstrap = kafka.removeprefix("kafka://")
    prefix = f"r{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(bootstrap, prefix))
    tz = ZoneInfo(CITY.timezone)
    first = datetime.now(tz).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    last_month = (first - timedelta(days=1)).replace(day=3)
    ts0 = int(last_month.timestamp() * 1000)
    grids = CITY.gridmap.grids_under("330102001")[:6]
    made, records = [], []
    for n, grid in enumerate(grids):
        rid = f"rep-{prefix}-{n}"
        inc = incident(grid, ts=ts0 + n * 60_000, report_ids=(rid,))
        records.append((f"{prefix}.reports", grid, ResidentReport(rid, "manhole_cover", "cover gone", inc.lat, inc.lon,
                                                                  inc.created_ts, grid).encode()))
        records.append((f"{prefix}.incidents", grid, _encode(change(inc))))
        inc = incident(grid, ts=ts0 + n * 60_000, report_ids=(rid,), status="dispatched", version=2)
        records.append((f"{prefix}.incidents", grid, _encode(change(inc, "action"))))
        made.append((inc, rid))
    env = {"GRIDWATCH_STORE_URL": store_url, "GRIDWATCH_KAFKA_TANSU_QUIRKS": "off",
           "GRIDWATCH_WEB_RATE_PER_MIN": "1000000", "GRIDWATCH_WEB_RATE_BURST": "100000"}
    api = start_api(kafka, prefix, env)
    try:
        asyncio.run(_produce(bootstrap, records))
        token = api.login("city")
        wait_for(lambda: all(api.get(f"/api/incidents/{i.id}", token=token).json().get("version") == 2
                             for i, _ in made), 30, "every incident's version 2 in the store")
    finally:
        api.proc.stop()

    topics = [f"{prefix}.incidents", f"{prefix}.reports"]
    _wait_for_retention(bootstrap, topics)
    assert asyncio.run(_live_records(bootstrap, topics)) == 0  # Kafka no longer has any of it

    api = start_api(kafka, prefix, env, name="api2")
    try:
        token = api.login("city")
        month = last_month.strftime("%Y-%m")
        listed = api.get("/api/incidents?status=", token=token).json()
        assert {i.id for i, _ in made} <= {r["id"] for r in listed["incidents"]}
        for inc, rid in made:
            body = api.get(f"/api/incidents/{inc.id}", token=token).json()
            assert body["status"] == "dispatched" and [h["action"] for h in body["history"]] == ["created", "dispatch"]
            tl = api.get(f"/api/incidents/{inc.id}/timeline", token=token).json()
            assert [v["version"] for v in tl["versions"]] == [1, 2]
            row = api.get(f"/open311/v2/requests/{rid}.json").json()[0]
            assert row["service_request_id"] == rid and row["status"] == "open"
        stats = api.get(f"/api/stats?month={month}", token=token).json()
        assert stats["month"] == month and stats["overall"]["incidents"] == len(made)
        assert month in stats["months"]
        start = urllib.parse.quote((last_month - timedelta(days=2)).isoformat())
        rows = api.get(f"/open311/v2/requests.json?start_date={start}").json()
        assert isinstance(rows, list), rows
        assert {rid for _, rid in made} <= {r["service_request_id"] for r in rows}
    finally:
        api.proc.stop()


def _encode(d: dict) -> bytes:
    import json

    return json.dumps(d).encode()
