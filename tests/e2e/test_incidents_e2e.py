"""Incidents end to end: real Mosquitto, the real bridge, the real embedded broker, real Faust workers in
the default topology (`--role telemetry` and `--role incidents`).

Sensor readings go in over MQTT (-> bridge -> readings -> telemetry rules -> events), resident reports
and operator actions are produced to <prefix>.reports / <prefix>.actions with aiokafka (the HTTP API
in front of them is tested on its own); incidents come out on MQTT per grid, on <prefix>.incidents and
at a real local webhook receiver (aiohttp) that checks the HMAC signature.
One pipeline for the whole module; the tests run in file order (the restart test is last).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from gridwatch.agents.channels.webhook import verify
from gridwatch.agents.fusion import distance_m
from gridwatch.agents.routing import DEFAULT_PATH
from gridwatch.pipeline.schemas.incidents import OperatorAction
from gridwatch.pipeline.schemas.reports import ResidentReport, report_id
from tests.e2e.test_telemetry_e2e import NIGHT, REG, send
from tests.harness import (
    ARTIFACTS,
    LocalHttpServer,
    MqttPublisher,
    MqttWatcher,
    Pipeline,
    read_topic,
    wait_for,
)

SECRET = "e2e-webhook-secret"
MIN = 60_000


class WebhookReceiver(LocalHttpServer):
    """A real HTTP server in a thread: /ok answers 204 after checking the signature, /down answers 503."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.down_attempts: dict[str, int] = {}
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/ok", self._ok)
        app.router.add_post("/down", self._down)

    async def _ok(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            if not verify(SECRET.encode(), request.headers.get("X-Gridwatch-Signature", ""), body):
                self.bad_signatures += 1
                return web.Response(status=401)
            self.received.append({"headers": dict(request.headers), "body": json.loads(body)})
        return web.Response(status=204)

    async def _down(self, request: web.Request) -> web.Response:
        await request.read()
        with self._lock:
            key = request.headers.get("X-Gridwatch-Delivery", "")
            self.down_attempts[key] = self.down_attempts.get(key, 0) + 1
        return web.Response(status=503)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.received]

def produce(kafka_url: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Produce keyed records the way the web API does (key = grid code, default partitioner)."""

    async def main() -> None:
        p = AIOKafkaProducer(bootstrap_servers=kafka_url.removeprefix("kafka://"), acks="all")
        await p.start()
        try:
            for key, value in records:
                await p.send_and_wait(topic, value, key=key.encode())
        finally:
            await p.stop()

    asyncio.run(main())


def resident_report(lat: float, lon: float, ts: int, grid: str, code: str = "manhole_cover",
                    text: str = "the cover is gone") -> ResidentReport:
    return ResidentReport(report_id(code, lat, lon, ts, text), code, text, lat, lon, ts, grid)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def stats(stack) -> Iterator[MqttWatcher]:
    """Every worker's figures, from before the workers start."""
    w = MqttWatcher(stack.mqtt_url, ["gridwatch/stats/worker/#"])
    yield w
    w.close()


@pytest.fixture(scope="module")
def pipe(stack, receiver, stats) -> Iterator[Pipeline]:
    cfg = yaml.safe_load(DEFAULT_PATH.read_text())
    cfg["lifecycle"]["sla_s"] = {"red": 300, "yellow": 600, "blue": 3600}  # short SLAs: tests drive event time
    cfg["channels"] = [
        {"name": "mqtt", "type": "mqtt", "topic_prefix": "gridwatch/incidents"},
        {"name": "ok-hook", "type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/ok",
         "secret_env": "E2E_WEBHOOK_SECRET", "max_attempts": 3, "backoff_s": 0.1},
        {"name": "down-hook", "type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/down",
         "secret_env": "E2E_WEBHOOK_SECRET", "max_attempts": 3, "backoff_s": 0.1, "changes": ["created"]},
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"incidents-e2e-{int(time.time())}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    # the default topology: the incident agent in its own worker (gridwatch/roles.py)
    p = Pipeline(stack.kafka_url, stack.mqtt_url, split=True,
                 env={"GRIDWATCH_INCIDENTS_CONFIG": str(path), "E2E_WEBHOOK_SECRET": SECRET,
                      "GRIDWATCH_WORKER_STATS_INTERVAL_S": "1"}).start()
    yield p
    p.stop()
    Path(path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def watcher(stack) -> Iterator[MqttWatcher]:
    w = MqttWatcher(stack.mqtt_url, ["gridwatch/incidents/#"])
    yield w
    w.close()


@pytest.fixture(scope="module")
def pub(stack) -> Iterator[MqttPublisher]:
    p = MqttPublisher(stack.mqtt_url)
    yield p
    p.close()


def snapshots(watcher: MqttWatcher, pred: Any = None) -> dict[str, dict[str, Any]]:
    """Latest snapshot per incident id seen on MQTT."""
    out: dict[str, dict[str, Any]] = {}
    for _, body in watcher.matching(lambda t, b: isinstance(b, dict) and "incident" in b):
        inc = body["incident"]
        if (pred is None or pred(inc)) and inc["version"] >= out.get(inc["id"], {}).get("version", 0):
            out[inc["id"]] = inc
    return out


def with_source(watcher: MqttWatcher, source_id: str) -> dict[str, dict[str, Any]]:
    return snapshots(watcher, lambda i: any(s["id"] == source_id for s in i["sources"]))


MANHOLES = [d for d in REG if d.kind == "manhole" and not d.gateway]


def test_sensor_event_and_resident_report_for_one_cover_merge_and_a_far_report_does_not(pipe, watcher, pub,
                                                                                          receiver):
    dev = MANHOLES[0]
    far = next(d for d in MANHOLES if 1800 < distance_m(dev.lat, dev.lon, d.lat, d.lon) < 2500)
    send(pub, dev, NIGHT, cover_open=True, tilt_deg=60.0)
    near = resident_report(dev.lat + 0.0002, dev.lon, NIGHT + MIN, dev.grid_code)  # ~22 m away
    away = resident_report(far.lat, far.lon, NIGHT + 2 * MIN, far.grid_code, text="cover missing by the school")
    wait_for(lambda: snapshots(watcher, lambda i: i["grid_code"] == dev.grid_code), 60, "incident from the sensor")
    produce(pipe.kafka_url, pipe.topic("reports"), [(r.grid_code, r.encode()) for r in (near, away)])

    # the merge and the confirmation are two versions published one after the other: wait for the second
    merged = wait_for(lambda: [i for i in with_source(watcher, near.service_request_id).values()
                               if len(i["sources"]) == 2 and any(h["action"] == "confirmed" for h in i["history"])],
                      60, "the report merged into the sensor incident")[0]
    assert [s["kind"] for s in merged["sources"]] == ["event", "report"]
    assert merged["sources"][0]["subject"] == dev.id and merged["sources"][0]["type"] == "manhole_open"
    assert merged["category_group"] == "manhole" and merged["level"] == "red" and merged["status"] == "reported"
    assert merged["priority"] == 30 + 5 + 15  # red + an extra source + sensor-confirmed
    assert [h["action"] for h in merged["history"]][:3] == ["created", "merged", "confirmed"]
    assert merged["tier"] == "community" and merged["tier_code"] == dev.grid_code[:12]
    alone = wait_for(lambda: with_source(watcher, away.service_request_id), 60, "the far report's incident")
    [(far_id, far_inc)] = alone.items()
    assert far_id != merged["id"] and len(far_inc["sources"]) == 1
    # one incident per place, on the per-grid MQTT topic
    topics = {t for t, b in watcher.matching(lambda t, b: b.get("incident", {}).get("id") == merged["id"])}
    chain = [t["code"] for t in merged["tiers"]]
    assert topics == {"/".join(["gridwatch/incidents", *chain])}
    assert len(snapshots(watcher, lambda i: i["grid_code"] == dev.grid_code and i["category_group"] == "manhole")) == 1
    # the webhook got the same changes, signed (the receiver answers 401 on a bad signature)
    wait_for(lambda: any(b["incident"]["id"] == merged["id"] and b["change"] == "source_added"
                         for b in receiver.bodies()), 30, "webhook delivery")
    assert receiver.bad_signatures == 0


def test_an_incident_past_its_sla_escalates_level_and_tier(pipe, watcher, pub):
    # a cover with a streetlight in its grid (same grid -> same partition), far from the other tests'
    # covers so that it opens an incident of its own instead of joining theirs
    others = [MANHOLES[0], MANHOLES[7]]
    cover = next(d for d in MANHOLES if any(x.kind == "streetlight" for x in REG.by_grid(d.grid_code))
                 and all(distance_m(d.lat, d.lon, o.lat, o.lon) > 1000 for o in others))
    grid = cover.grid_code
    lamps = [d for d in REG.by_grid(grid) if d.kind == "streetlight"][:1]
    t0 = NIGHT + 30 * MIN
    send(pub, cover, t0, tilt_deg=20.0)
    send(pub, cover, t0 + MIN, tilt_deg=21.0)  # tilted: yellow after 2 readings (SLA 600 s in this test)
    first = wait_for(lambda: [i for i in snapshots(watcher, lambda i: i["grid_code"] == grid).values()
                              if i["sources"][0]["subject"] == cover.id], 60, "tilted incident")[0]
    assert first["level"] == "yellow" and first["tier"] == "community"
    deadline = first["sla_deadline_ts"]
    assert deadline == t0 + MIN + 600_000
    # event time moves on: a lamp in the same grid goes dark (its own incident); its event at t0 + 15 min
    # puts the watermark (minus 5 s lateness) past the deadline once, not past the next one (+5 min)
    for k in (14, 15):
        send(pub, lamps[0], t0 + k * MIN, lamp_on=False, current_a=0.0, voltage_v=220.0, lux=1.0)

    def escalated() -> Any:
        inc = snapshots(watcher, lambda i: i["id"] == first["id"]).get(first["id"])
        return inc if inc and inc["escalations"] >= 1 else None

    wait_for(escalated, 60, "SLA escalation")
    time.sleep(1)
    inc = escalated()
    assert inc["escalations"] == 1
    assert (inc["level"], inc["tier"], inc["tier_code"], inc["overdue"]) == ("red", "street", grid[:9], True)
    esc = next(h for h in inc["history"] if h["action"] == "overdue")
    assert esc["ts"] == deadline and esc["actor"] == "supervision" and esc["tier"] == "street"
    assert inc["sla_deadline_ts"] == deadline + 300_000  # red's SLA from the breach
    # ... and the grid's town operators get it on their wildcard topic
    assert watcher.matching(lambda t, b: t.startswith(f"gridwatch/incidents/330100/330102/{grid[:9]}/")
                            and b.get("incident", {}).get("escalations") == 1)


def test_failing_webhook_retries_then_dead_letters(pipe, receiver):
    def dead() -> list[dict[str, Any]]:
        return [r for r in read_topic(pipe.kafka_url, pipe.topic("deadletter"), timeout=1.5)
                if r["stage"] == "channel" and "down-hook" in r["detail"]]

    dl = wait_for(dead, 60, "webhook dead letters")
    rec = dl[0]
    assert rec["reason"] == "webhook_failed" and "3 attempts failed" in rec["detail"] and "HTTP 503" in rec["detail"]
    change = json.loads(rec["payload"])
    assert change["change"] == "created"
    delivery = f"{change['incident']['id']}:{change['incident']['version']}"
    assert receiver.down_attempts[delivery] == 3
    assert all(w.proc.poll() is None for w in pipe.workers)


def test_malformed_inputs_of_the_incident_agent_are_dead_lettered_and_the_next_input_still_fuses(pipe, watcher):
    """A grid event and a report that do not decode, each before a good report on the same partition: each goes to
    the dead-letter topic with its reason and bytes, and the agent goes on with the next record."""
    dev = MANHOLES[3]
    good = resident_report(dev.lat, dev.lon, NIGHT + 45 * MIN, dev.grid_code, text="cover rattles under every car")
    produce(pipe.kafka_url, pipe.topic("events"), [(dev.grid_code, b"{not an event")])
    produce(pipe.kafka_url, pipe.topic("reports"), [(dev.grid_code, b"[1, 2"), (good.grid_code, good.encode())])

    def dead() -> dict[str, dict[str, Any]] | None:
        got = {r["reason"]: r for r in read_topic(pipe.kafka_url, pipe.topic("deadletter"), timeout=1.5)
               if r["stage"] == "incidents"}
        return got if {"bad_event", "bad_report"} <= set(got) else None

    letters = wait_for(dead, 60, "the incident agent's dead letters")
    assert letters["bad_event"]["payload"] == "{not an event" and letters["bad_event"]["source"] == pipe.topic("events")
    assert letters["bad_report"]["payload"] == "[1, 2" and letters["bad_report"]["source"] == pipe.topic("reports")
    wait_for(lambda: with_source(watcher, good.service_request_id), 60, "the good report's incident")
    assert all(w.proc.poll() is None for w in pipe.workers)


def test_each_worker_tells_what_its_agents_did_on_mqtt_and_in_its_log(pipe, stats):
    """What an operator sees of the workers at work: each one's counters, the totals on MQTT (one topic per
    worker process) and what moved in its log. The tests above made incidents and dead-lettered a webhook."""
    ours = tuple(f"-{w.pid}" for w in pipe.workers)  # topics end in the worker process's pid

    def totals() -> dict[str, dict[str, int]]:  # the newest message of each of this pipeline's worker topics
        return {t: b["counts"] for t, b in stats.matching(lambda t, b: t.endswith(ours) and isinstance(b, dict))}

    def both() -> tuple[dict[str, int], dict[str, int]] | None:
        by_kind = {("incidents" if "incident_inputs" in c else "telemetry"): c for c in totals().values()}
        inc, tel = by_kind.get("incidents", {}), by_kind.get("telemetry", {})
        return (inc, tel) if inc.get("incident_changes") and tel.get("dead_letters.webhook_failed") else None

    inc, tel = wait_for(both, 30, "both workers' figures on MQTT")
    assert inc["incident_inputs"] >= 4 and inc["incident_changes"] >= 4  # watermark records are inputs too
    assert inc["dead_letters.bad_event"] == 1 and inc["dead_letters.bad_report"] == 1
    assert inc["incident_fusion_cpu_us"] > 0  # the fusion's own CPU (bench incidents sets it beside the worker's)
    assert tel["readings"] > 0 and tel["events"] > 0 and tel["alerts"] > 0 and tel["channel.ok-hook"] > 0
    assert len(totals()) == 2 and all(t.startswith("gridwatch/stats/worker/gridwatch") for t in totals())
    log = pipe.incident_worker.log()
    assert "worker figures, last" in log and "incident_changes +" in log
    # the incident agent's inputs took the raw lane (gridwatch/compat.py), not the conductor
    lanes = " ".join(line for line in log.splitlines() if "raw lane: " in line)
    assert pipe.topic("events") in lanes and pipe.topic("reports") in lanes, lanes


def test_killed_worker_recovers_every_open_incident_with_its_history(pipe, watcher, pub):
    dev = MANHOLES[7]  # (kept > 1 km from the escalation test's cover)
    more = [d for d in MANHOLES[8:] if distance_m(d.lat, d.lon, dev.lat, dev.lon) > 1000][:2]
    for d in (dev, *more):
        send(pub, d, NIGHT + 60 * MIN, cover_open=True)
    wait_for(lambda: all(snapshots(watcher, lambda i, d=d: i["sources"][0]["subject"] == d.id) for d in (dev, *more)),
             60, "three more incidents")
    time.sleep(1.5)  # let the worker write its changelog
    before = {i: inc for i, inc in snapshots(watcher).items() if inc["status"] not in ("resolved", "evaluated",
                                                                                       "closed", "cancelled")}
    assert len(before) >= 3
    pipe.incident_worker.kill()  # the worker holding the incidents table
    # while it is down: an operator comments on every open incident, and a report is re-delivered
    acts = [OperatorAction(i, inc["grid_code"], "comment", "op-city", NIGHT + 61 * MIN, note="after restart?")
            for i, inc in before.items()]
    produce(pipe.kafka_url, pipe.topic("actions"), [(a.grid_code, a.encode()) for a in acts])
    again = resident_report(dev.lat, dev.lon, NIGHT + 60 * MIN + 5000, dev.grid_code, text="open cover")
    produce(pipe.kafka_url, pipe.topic("reports"), [(again.grid_code, again.encode())] * 2)
    t0 = time.monotonic()
    pipe.incident_worker.start()

    def commented() -> Any:
        now = snapshots(watcher, lambda i: i["id"] in before)
        return now if all(any(h["note"] == "after restart?" for h in now[i]["history"]) for i in before) else None

    after = wait_for(commented, 120, "every open incident commented after the restart")
    print(f"worker restart to every incident answering: {time.monotonic() - t0:.1f}s")
    for iid, inc in before.items():
        got = after[iid]
        # the whole history survived the crash, and the new entry continues it
        assert got["history"][:len(inc["history"])] == inc["history"], iid
        # (besides the comment: the re-delivered report joining, and supervision, may add entries)
        new = got["history"][len(inc["history"]):]
        assert [h["action"] for h in new if h["action"] not in ("merged", "confirmed", "overdue")] == ["comment"], new
        assert [s["id"] for s in got["sources"]][:len(inc["sources"])] == [s["id"] for s in inc["sources"]]
    merged = wait_for(lambda: with_source(watcher, again.service_request_id), 60, "report after restart")
    [(iid, inc)] = merged.items()
    assert inc["sources"][0]["subject"] == dev.id  # joined the recovered incident, once
    assert [s["id"] for s in inc["sources"]].count(again.service_request_id) == 1
