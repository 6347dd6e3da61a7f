"""The offices' links end to end: real Mosquitto, bridge, embedded broker, Faust worker and `gridwatch api`,
with local receivers on real HTTP standing in for a WeCom group robot, a DingTalk robot and the 12345
hotline system (tests/office_receivers.py: exact JSON, keys, DingTalk signature, callback signature).

* a manhole cover opens (MQTT reading) -> red incident -> WeCom and DingTalk get it, formatted and signed;
* a 12345 work order comes in over HTTP -> incident -> a signed callback on every change as operators
  dispatch it with an assisting department, the discipline commission supervises it, and it is handled;
* a supervision notice whose deadline passes in event time -> overdue in the incident, the filter and the
  statistics.
One pipeline for the module; the tests run in file order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from gridwatch.pipeline.schemas.reports import ResidentReport, report_id
from tests.e2e.test_telemetry_e2e import CITY, NIGHT, REG, send
from tests.harness import MqttPublisher, Pipeline, wait_for
from tests.office_receivers import OfficeReceivers
from tests.web.conftest import Api, start_api

TOKEN = "e2e-hotline-token"


def manholes_in(town: str) -> list[Any]:
    return [d for d in REG if d.kind == "manhole" and not d.gateway and d.grid_code.startswith(town)]


@pytest.fixture(scope="module")
def pipe(stack, receivers, tmp_path_factory) -> Iterator[Pipeline]:
    p = Pipeline(stack.kafka_url, stack.mqtt_url, env=receivers.worker_env(tmp_path_factory.mktemp("offices")))
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def api(pipe) -> Iterator[Api]:
    a = start_api(pipe.kafka_url, pipe.prefix, {"GRIDWATCH_HOTLINE_TOKENS": TOKEN}, name="offices-api")
    yield a
    a.proc.stop()


@pytest.fixture(scope="module")
def pub(stack) -> Iterator[MqttPublisher]:
    p = MqttPublisher(stack.mqtt_url)
    yield p
    p.close()


def test_a_red_sensor_incident_reaches_the_wecom_and_dingtalk_groups(pipe, api, pub, receivers):
    dev = manholes_in("330102002")[0]
    send(pub, dev, NIGHT, cover_open=True, tilt_deg=60.0)
    wait_for(lambda: len(receivers.wecom) >= 2 and receivers.dingtalk, 90, "robot messages")
    md = next(m for m in receivers.wecom if m["msgtype"] == "markdown")
    content = md["markdown"]["content"]
    community = next(a.name for a in CITY.gridmap.chain(dev.grid_code) if a.tier == "community")
    assert content.startswith('### <font color="warning">【红色预警】井盖：井盖打开</font>'), content
    assert "> 级别：红色预警" in content and community in content and "> 事件：新事件" in content
    assert "> 时间：2025-11-20 22:00:00" in content  # event time, in the city's time zone
    text = next(m for m in receivers.wecom if m["msgtype"] == "text")
    assert text["text"]["mentioned_mobile_list"] == ["13800000001"]
    ding = receivers.dingtalk[0]
    assert ding["markdown"]["title"] == "【红色预警】井盖：井盖打开" and ding["at"]["atMobiles"] == ["13800000002"]
    assert receivers.rejected == []  # every message had the exact format, key and signature
    assert receivers.hotline == []  # not a hotline case: no callback


def callbacks(receivers: OfficeReceivers, order_id: str) -> list[dict[str, Any]]:
    return [c["body"] for c in list(receivers.hotline) if c["body"]["order_id"] == order_id]


def post_order(api: Api, order_id: str, dev: Any) -> str:
    r = api.post("/api/hotline/orders", token=TOKEN, json_body={
        "order_id": order_id, "category": "manhole_cover", "content": f"市民来电：{dev.id} 井盖松动",
        "lat": dev.lat, "long": dev.lon, "caller": {"name": "李女士", "phone": "13700000000"}})
    assert r.status == 201, r.text
    st = wait_for(lambda: (s := api.get(f"/api/hotline/orders/{order_id}",
                                        headers={"Authorization": f"Bearer {TOKEN}"}).json())["incident_id"] and s,
                  60, "the order's incident")
    return st["incident_id"]


def act(api: Api, user: str, iid: str, body: dict[str, Any]) -> None:
    r = api.post(f"/api/incidents/{iid}/actions", json_body=body, token=api.login(user))
    assert r.status == 202, r.text


def test_a_hotline_order_becomes_an_incident_and_calls_back_on_every_change(pipe, api, receivers):
    dev = manholes_in("330102001")[0]
    order = "GD-E2E-0001"
    iid = post_order(api, order, dev)
    wait_for(lambda: callbacks(receivers, order), 60, "the created callback")
    steps = [("city", {"action": "dispatch", "department": "municipal_facilities", "assist": ["traffic_police"]},
              "dispatch", "dispatched"),
             ("jiwei", {"action": "supervise", "note": "请两小时内办结", "deadline_h": 2}, "supervise", "dispatched"),
             ("ansha", {"action": "accept"}, "accept", "accepted"),
             ("ansha", {"action": "start"}, "start", "in_progress"),
             ("ansha", {"action": "resolve", "note": "已更换井盖"}, "resolve", "resolved")]
    for n, (user, body, action, status) in enumerate(steps, 2):
        act(api, user, iid, body)
        got = wait_for(lambda n=n: len(callbacks(receivers, order)) >= n and callbacks(receivers, order), 60,
                       f"callback after {action}")
        assert (got[n - 1]["action"], got[n - 1]["status"]) == (action, status), got[n - 1]
    cbs = callbacks(receivers, order)
    assert [c["action"] for c in cbs] == ["created", "dispatch", "supervise", "accept", "start", "resolve"]
    assert [c["version"] for c in cbs] == sorted({c["version"] for c in cbs})  # in order, each once
    assert cbs[1]["assist"] == ["traffic_police"] and cbs[1]["status_name"] == "已派单"
    assert cbs[2]["supervision"]["by"] == "jiwei" and cbs[2]["change"] == "supervised"
    assert cbs[-1]["closed"] is True and cbs[-1]["note"] == "已更换井盖"
    assert {c["incident_id"] for c in cbs} == {iid} and ("hotline", "bad signature") not in receivers.rejected
    # the timeline and the incident show the joint handling and the notice
    inc = api.get(f"/api/incidents/{iid}", token=api.login("city")).json()
    sup = next(h for h in inc["history"] if h["action"] == "supervise")
    assert sup["actor"] == "jiwei" and sup["note"] == "请两小时内办结" and sup["deadline"] == inc["supervision"]["deadline"]
    disp = next(h for h in inc["history"] if h["action"] == "dispatch")
    assert disp["assist"] == ["traffic_police"] and inc["assist"] == ["traffic_police"]
    assert inc["sources"][0]["origin"] == "hotline" and inc["sources"][0]["external_id"] == order
    assert inc["supervision"]["overdue"] is False  # resolved before its deadline
    # the order re-sent: nothing new
    r = api.post("/api/hotline/orders", token=TOKEN, json_body={"order_id": order, "content": "催办",
                                                                 "lat": dev.lat, "long": dev.lon})
    assert r.status == 200 and r.json()["duplicate"] is True and r.json()["status"] == "resolved"


def produce_report(pipe: Pipeline, rep: ResidentReport) -> None:
    async def main() -> None:
        p = AIOKafkaProducer(bootstrap_servers=pipe.kafka_url.removeprefix("kafka://"), acks="all")
        await p.start()
        try:
            await p.send_and_wait(pipe.topic("reports"), rep.encode(), key=rep.grid_code.encode())
        finally:
            await p.stop()

    asyncio.run(main())


def test_a_notice_past_its_deadline_in_event_time_is_overdue_in_the_incident_filter_and_statistics(pipe, api,
                                                                                                 receivers):
    dev = manholes_in("330102001")[-1]
    order = "GD-E2E-0002"
    iid = post_order(api, order, dev)
    act(api, "jiwei", iid, {"action": "supervise", "note": "限期 36 秒", "deadline_h": 0.01})
    city = api.login("city")
    wait_for(lambda: api.get(f"/api/incidents/{iid}", token=city).json().get("supervision"), 60, "the notice")
    assert api.get(f"/api/incidents/{iid}", token=city).json()["supervision"]["overdue"] is False
    # event time moves on in this grid's partition: a resident reports garbage in the same grid 10 minutes later
    later = int(time.time() * 1000) + 600_000
    rep = ResidentReport(report_id("garbage", dev.lat, dev.lon, later, "垃圾堆放"), "garbage", "垃圾堆放", dev.lat,
                         dev.lon, later, dev.grid_code)
    produce_report(pipe, rep)
    inc = wait_for(lambda: (i := api.get(f"/api/incidents/{iid}", token=city).json())["supervision"]["overdue"] and i,
                   60, "supervision overdue")
    over = next(h for h in inc["history"] if h["action"] == "supervision_overdue")
    assert over["ts"] == inc["supervision"]["deadline"] and over["actor"] == "supervision"  # at the deadline
    assert inc["status"] == "reported"  # still open: that is why it is overdue
    assert iid in {i["id"] for i in api.get("/api/incidents?supervised=overdue", token=city).json()["incidents"]}
    wait_for(lambda: callbacks(receivers, order)[-1]["change"] == "supervision_overdue", 30, "overdue callback")
    st = api.get("/api/stats", token=city).json()
    assert st["overall"]["supervised"] >= 2 and st["overall"]["supervised_overdue"] >= 1
    town = next(t for t in st["ranking"]["towns"] if t["code"] == "330102001")
    assert town["supervised"] == 2 and town["supervised_overdue"] == 1
