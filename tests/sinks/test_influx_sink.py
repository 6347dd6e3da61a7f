"""InfluxDB sink against a real server speaking the InfluxDB v2 write API (VictoriaMetrics): points
written by the sink are read back with the right tags, values and timestamps; retries with back-off on
5xx / network errors, drops what the server rejects, and blocks producers when its queue is full."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from dataclasses import replace

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from gridwatch.core import gc_policy
from gridwatch.core.settings import InfluxSettings
from gridwatch.devices.registry import load_city
from gridwatch.pipeline.kafka_io import partition_for
from gridwatch.pipeline.outputs.influx import InfluxSink, PointBuilder, Presence, WriteRejected, line
from gridwatch.pipeline.schemas.events import GridEvent, TierRef, event_id
from gridwatch.pipeline.schemas.incidents import Incident, IncidentChange, incident_id
from gridwatch.pipeline.schemas.readings import Reading

CITY = load_city()
NOW_MS = (int(time.time()) - 600) * 1000  # ten minutes ago: inside any retention


def dev(kind: str, i: int = 0):
    return [d for d in CITY.registry if d.kind == kind][i]


def chain(grid: str) -> dict[str, str]:
    return {a.tier: a.code for a in CITY.gridmap.chain(grid)}


def cfg(url: str = "http://127.0.0.1:1", **kw) -> InfluxSettings:
    return replace(InfluxSettings(enabled=True, url=url, batch_size=100, flush_interval_ms=100), **kw)


def test_line_protocol_escapes_tags_and_types_fields():
    ln = line("m", {"a b": "x,y=z", "empty": ""}, {"f": 1.5, "n": 3, "ok": True, "s": 'say "hi"'}, 1000)
    assert ln == 'm,a\\ b=x\\,y\\=z f=1.5,n=3i,ok=true,s="say \\"hi\\"" 1000'
    assert line("m", {}, {"none": None}, 1) is None


def test_points_written_by_the_sink_are_read_back_with_tags_and_values(vm):
    ns = f"t{uuid.uuid4().hex[:8]}"
    b = PointBuilder(CITY.registry, CITY.gridmap, ns)
    mh, lamp = dev("manhole"), dev("streetlight")
    readings = [
        Reading(mh.id, NOW_MS, {"tilt_deg": 72.5, "cover_open": True, "battery_pct": 81}),
        Reading(mh.id, NOW_MS + 60_000, {"tilt_deg": 1.0, "cover_open": False, "battery_pct": 80}),
        Reading(lamp.id, NOW_MS, {"lamp_on": True, "current_a": 0.71}),
    ]
    tiers = [TierRef(a.tier, a.code, a.name) for a in CITY.gridmap.chain(mh.grid_code)]
    ev = GridEvent(event_id("manhole_open", mh.id, NOW_MS), "manhole_open", "end", "red", mh.id, "manhole",
                   mh.grid_code, tiers, mh.lat, mh.lon, NOW_MS, NOW_MS + 120_000, NOW_MS + 120_000, "closed again")
    inc = Incident(incident_id("event", ev.id), "manhole", "Manhole cover", "red", 3, "reported", "community",
                   tiers[3].code, "", mh.grid_code, tiers, mh.lat, mh.lon, NOW_MS, NOW_MS, None, version=1)
    change = IncidentChange(inc, "created", NOW_MS, None, ev.id)

    async def main() -> InfluxSink:
        sink = InfluxSink(cfg(vm.url))
        await sink.put(b.readings(readings) + [b.event(ev), b.incident(change)])
        await sink.flush()
        await sink.stop()
        return sink

    sink = asyncio.run(main())
    assert sink.stats.points == 5 and sink.stats.dropped_points == 0
    tiers_of = chain(mh.grid_code)
    series = vm.wait_export(f'{{__name__=~"reading_.*",ns="{ns}"}}', lambda s: len(s) >= 5)
    by_name = {(s["metric"]["__name__"], s["metric"]["device"]): s for s in series}
    tilt = by_name[("reading_tilt_deg", mh.id)]
    assert tilt["values"] == [72.5, 1.0] and tilt["timestamps"] == [NOW_MS, NOW_MS + 60_000]
    labels = tilt["metric"]
    assert labels["kind"] == "manhole" and labels["grid"] == mh.grid_code
    assert (labels["district"], labels["street"], labels["community"]) == (
        tiers_of["district"], tiers_of["street"], tiers_of["community"])
    assert by_name[("reading_cover_open", mh.id)]["values"] == [1, 0]  # booleans as 1 / 0
    assert by_name[("reading_battery_pct", mh.id)]["values"] == [81, 80]
    assert by_name[("reading_current_a", lamp.id)]["metric"]["kind"] == "streetlight"

    [count] = vm.wait_export(f'grid_event_count{{ns="{ns}"}}', lambda s: len(s) == 1)
    m = count["metric"]
    assert (m["type"], m["level"], m["phase"], m["kind"], m["subject"], m["grid"]) == (
        "manhole_open", "red", "end", "manhole", mh.id, mh.grid_code)
    assert m["district"] == tiers_of["district"] and count["timestamps"] == [NOW_MS + 120_000]
    [dur] = vm.export(f'grid_event_duration_s{{ns="{ns}"}}')
    assert dur["values"] == [120.0]

    [opened] = vm.wait_export(f'incident_opened{{ns="{ns}"}}', lambda s: len(s) == 1)
    assert opened["values"] == [1] and opened["metric"]["status"] == "reported"
    assert opened["metric"]["category"] == "manhole" and opened["metric"]["incident"] == inc.id


def test_presence_counts_online_devices_per_kind_and_district_by_event_time():
    b = PointBuilder(CITY.registry, CITY.gridmap, "ns")
    parts = 8
    pres = Presence(CITY.registry, b, parts, 60_000, partition_for)
    gauges = [d for d in CITY.registry if d.kind == "water_gauge"]
    p = partition_for(gauges[0].shard_key, parts)
    mine = [d for d in gauges if partition_for(d.shard_key, parts) == p]
    t = (NOW_MS // 60_000) * 60_000
    assert pres.observe(p, [(mine[0].id, t + 1000)]) == []
    out = pres.observe(p, [(mine[0].id, t + 61_000)])
    district = b.grid_tags(mine[0].grid_code)["district"]
    [pt] = [x for x in out if x.startswith("device_presence") and "kind=water_gauge" in x
            and f"district={district}" in x]
    total = sum(1 for d in mine if b.grid_tags(d.grid_code)["district"] == district)
    assert f"online=1i,total={total}i" in pt and pt.endswith(f" {t + 60_000}")
    # partitions revoked: what was seen is forgotten, so the device seen before counts offline after
    pres.forget()
    assert pres.observe(p, [(mine[1].id, t + 61_500)]) == []
    out = pres.observe(p, [(mine[1].id, t + 120_500)])  # mine[0], seen at t + 61 s, is within its allowance
    [pt] = [x for x in out if "kind=water_gauge" in x and f"district={district}" in x]
    same = b.grid_tags(mine[1].grid_code)["district"] == district
    assert f"online={int(same)}i,total={total}i" in pt and pt.endswith(f" {t + 120_000}")


def test_retries_with_back_off_then_writes():
    calls: list[str] = []

    async def flaky(body: str) -> None:
        calls.append(body)
        if len(calls) <= 3:
            raise ConnectionError("connection refused")

    async def main() -> InfluxSink:
        sink = InfluxSink(cfg(retry_base_s=0.01, retry_max_s=0.05), write_fn=flaky)
        await sink.put([f"m v={i}i {i}" for i in range(10)])
        await sink.flush()
        await sink.stop()
        return sink

    sink = asyncio.run(main())
    assert len(calls) == 4 and sink.stats.retries == 3 and sink.stats.points == 10
    assert sink.stats.errors["ConnectionError"] == 3


def test_rejected_batch_is_dropped_not_retried():
    async def reject(body: str) -> None:
        raise WriteRejected("HTTP 400: bad line")

    async def main() -> InfluxSink:
        sink = InfluxSink(cfg(), write_fn=reject)
        await sink.put(["m v=1i 1", "m v=2i 2"])
        await sink.flush()
        await sink.stop()
        return sink

    sink = asyncio.run(main())
    assert sink.stats.retries == 0 and sink.stats.dropped_points == 2 and sink.stats.points == 0


def test_full_queue_blocks_the_producer_until_the_server_catches_up():
    gate = asyncio.Event()

    async def slow(body: str) -> None:
        await gate.wait()

    async def main() -> tuple[bool, InfluxSink]:
        sink = InfluxSink(cfg(batch_size=10, max_pending_points=20, writers=1), write_fn=slow)
        await sink.start()
        lines = [f"m v={i}i {i}" for i in range(100)]
        blocked = False
        try:
            await asyncio.wait_for(asyncio.shield(put := asyncio.ensure_future(sink.put(lines))), 0.3)
        except TimeoutError:
            blocked = True
        assert sink._queue.qsize() <= 2  # bounded: one batch in the writer, two queued
        gate.set()
        await put
        await sink.flush()
        await sink.stop()
        return blocked, sink

    blocked, sink = asyncio.run(main())
    assert blocked and sink.stats.points == 100 and sink.stats.waited_s > 0.2


def test_http_5xx_from_the_server_is_retried_through_influxdb_client():
    """The real influxdb-client path: a 503 twice, then the server takes the batch."""
    hits: list[int] = []
    bodies: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(1)
        if len(hits) <= 2:
            return web.Response(status=503, text="overloaded")
        assert request.query["precision"] == "ms" and request.query["bucket"] == "gridwatch"
        bodies.append(await request.text())
        return web.Response(status=204)

    async def main() -> InfluxSink:
        app = web.Application()
        app.router.add_post("/api/v2/write", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        sink = InfluxSink(cfg(f"http://127.0.0.1:{port}", retry_base_s=0.01, retry_max_s=0.05))
        try:
            await sink.put(["m v=1i 1", "m v=2i 2"])
            await sink.flush()
        finally:
            await sink.stop()
            await runner.cleanup()
        return sink

    sink = asyncio.run(main())
    assert len(hits) == 3 and sink.stats.retries == 2 and sink.stats.points == 2
    assert bodies == ["m v=1i 1\nm v=2i 2"]


@pytest.mark.slow
def test_worker_agent_writes_readings_and_events_of_its_namespace(stack, vm):
    """Real bridge + worker with the sink on: MQTT in -> InfluxDB points out, tagged with the namespace."""
    from tests.harness import MqttPublisher, Pipeline

    env = {"GRIDWATCH_INFLUX_ENABLED": "true", "GRIDWATCH_INFLUX_URL": vm.url,
           "GRIDWATCH_INFLUX_FLUSH_INTERVAL_MS": "200"}
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url, env=env).start()
    pub = MqttPublisher(stack.mqtt_url)
    mh = [d for d in CITY.registry if d.kind == "manhole" and not d.gateway][3]
    try:
        for k in range(3):
            pub.publish(f"v1/devices/{mh.id}/telemetry",
                        {"ts": NOW_MS + k * 60_000, "values": {"cover_open": True, "tilt_deg": 70.0 + k}})
        ns = pipe.prefix
        tilt = vm.wait_export(f'reading_tilt_deg{{ns="{ns}",device="{mh.id}"}}',
                              lambda s: s and len(s[0]["values"]) == 3, timeout=60)
        assert tilt[0]["values"] == [70.0, 71.0, 72.0]
        assert tilt[0]["metric"]["grid"] == mh.grid_code
        [ev] = vm.wait_export(f'grid_event_count{{ns="{ns}",type="manhole_open"}}', lambda s: len(s) == 1,
                              timeout=60)
        assert ev["metric"]["level"] == "red" and ev["metric"]["subject"] == mh.id
        assert ev["timestamps"] == [NOW_MS]
        assert "influx sink on" in pipe.worker.log()
    finally:
        pub.close()
        pipe.stop()


def test_fast_path_over_a_raw_record_matches_the_reading_objects():
    from gridwatch.pipeline.schemas.codec import SchemaError
    from gridwatch.pipeline.schemas.readings import ReadingBatch

    b = PointBuilder(CITY.registry, CITY.gridmap, "ns")
    rs = [Reading(dev("manhole", i).id, NOW_MS + i, {"tilt_deg": 1.5 + i, "cover_open": i % 2 == 0, "battery_pct": 80,
                                                     "odd key": 2.0}) for i in range(5)]
    rs.append(Reading("NOT-IN-REGISTRY", NOW_MS, {"x": 1.0}))
    part, lines, seen = b.batch(ReadingBatch(3, rs).encode())
    assert part == 3 and lines == b.readings(rs) and len(lines) == 5
    assert seen == [(r.device_id, r.ts) for r in rs[:5]]
    assert "odd\\ key=2.0" in lines[0] and "cover_open=true" in lines[0] and "battery_pct=80i" in lines[0]
    with pytest.raises(SchemaError):
        b.batch(b'{"p": 1}')
    with pytest.raises(SchemaError):
        b.batch(b'{"p": 1, "readings": [{"d": "x", "ts": 1}]}')


_PLAIN_VALUES = st.one_of(st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
                          st.sampled_from([1e-05, -3e-07, 9.999999999999999e-05, 1e16, 1.5e22, -0.0, 0.0001, 2.5]))
_PLAIN = st.tuples(st.integers(0, 6), st.integers(0, 2**62),  # known devices, numbers and flags, plain names
                   st.dictionaries(st.sampled_from(["tilt_deg", "lamp_on", "battery_pct", "温度"]), _PLAIN_VALUES,
                                   min_size=1, max_size=4))
_ANY = st.tuples(st.integers(0, 7), st.integers(0, 2**62),  # 7: a device not in the registry
                 st.dictionaries(st.sampled_from(["tilt_deg", "odd key", "a,b", "k=v", "x:y", 'q"t', "{b}", "e-m"]),
                                 st.one_of(_PLAIN_VALUES, st.none(), st.text(max_size=3)), max_size=4))


@given(st.one_of(st.lists(_PLAIN, max_size=6), st.lists(st.one_of(_PLAIN, _ANY), max_size=6)))
def test_a_raw_record_gives_the_same_lines_as_the_reading_objects(rows):
    """PointBuilder.batch formats a whole record with one orjson call where it can, the reading objects
    go value by value: same bytes, the same readings seen, whatever the names, values and devices."""
    from gridwatch.pipeline.schemas.readings import ReadingBatch

    ids = [d.id for d in list(CITY.registry)[:7]] + ["NOT-IN-REGISTRY"]
    rs = [Reading(ids[d], ts, v) for d, ts, v in rows]
    _part, lines, seen = PointBuilder(CITY.registry, CITY.gridmap, "ns").batch(ReadingBatch(3, rs).encode())
    assert lines == PointBuilder(CITY.registry, CITY.gridmap, "ns").readings(rs)
    assert len(seen) == len(lines)  # a (device, ts) for each reading that gave a point, in order
    assert all(ln.endswith(f" {ts}") and f",device={d}," in ln for ln, (d, ts) in zip(lines, seen, strict=True))


def test_a_take_is_written_while_it_is_built_and_done_only_once_confirmed():
    """write_take (what the agent does per take): the first full batch is on its way before the take's
    last record is built, and the call returns, so the records count as done, only after every write
    of the take is confirmed."""
    built: list[int] = []
    started_after: list[int] = []  # records built when each write started
    confirm = asyncio.Event()

    async def write(body: str) -> None:
        started_after.append(len(built))
        await confirm.wait()

    def lines_of(i: int) -> list[str]:
        built.append(i)
        return [f"m v={i}i {i}", f"m w={i}i {i}"]

    async def main() -> tuple[int, InfluxSink]:
        sink = InfluxSink(cfg(batch_size=2, writers=1, max_pending_points=100), write_fn=write)
        take = asyncio.create_task(sink.write_take(range(5), lines_of))
        while len(built) < 5:
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert not take.done() and sink.stats.points == 0  # built, not confirmed: not done
        confirm.set()
        n = await take
        await sink.stop()
        return n, sink

    n, sink = asyncio.run(main())
    assert started_after[0] < 5  # the first write began before the whole take was built
    assert n == 10 and sink.stats.points == 10 and sink.stats.batches == 5


def test_points_are_built_without_cyclic_gc_which_is_back_on_afterwards():
    """write_take builds each record's points with the cyclic collector off (they make no cycles) and
    turns it back on, also when building raises; a collector the caller turned off stays off."""
    during: list[bool] = []

    def lines_of(i: int) -> list[str]:
        during.append(gc.isenabled())
        if i == 2:
            raise ValueError("bad record")
        return [f"m v={i}i {i}"]

    async def write(body: str) -> None:
        pass

    async def main() -> int:
        sink = InfluxSink(cfg(batch_size=10, writers=1, max_pending_points=100), write_fn=write)
        n = await sink.write_take(range(2), lines_of)
        with pytest.raises(ValueError):
            await sink.write_take(range(3), lines_of)
        await sink.stop()
        return n

    assert gc.isenabled()
    assert asyncio.run(main()) == 2
    assert during == [False] * 5 and gc.isenabled()
    gc.disable()
    try:
        with gc_policy.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
