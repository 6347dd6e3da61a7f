"""The offices' side of the API against a real `gridwatch api` and Kafka: supervision notices and joint
dispatch as actions, the supervised filter, the 12345 hotline's work-order endpoint, and the statistics
(satisfaction share with a configured threshold, district / town / grid ranking, definitions)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gridwatch.pipeline.schemas.incidents import IncidentSource, OperatorAction, Supervision
from gridwatch.pipeline.schemas.reports import ResidentReport, hotline_report_id
from gridwatch.web.statistics import figures
from tests.harness import read_topic, wait_for
from tests.web.conftest import Api, start_api
from tests.web.samples import CITY, change, incident

TOKEN = "hotline-token-3f9c"
ANSHA = CITY.gridmap.grids_under("330102001")
CHUNYUAN = CITY.gridmap.grids_under("330102002")
PINGFENG = CITY.gridmap.grids_under("330105")
H = 3_600_000


@pytest.fixture(scope="module")
def api(stack) -> Iterator[Api]:
    """An api of its own: hotline tokens set, satisfaction counted from 5 of 5 (the default is 4)."""
    a = start_api(stack.kafka_url, f"o{uuid.uuid4().hex[:8]}",
                  {"GRIDWATCH_HOTLINE_TOKENS": f"other-token,{TOKEN}", "GRIDWATCH_STATS_SATISFIED_MIN_RATING": "5",
                   "GRIDWATCH_WEB_RATE_PER_MIN": "100000", "GRIDWATCH_WEB_RATE_BURST": "10000"}, name="offices")
    yield a
    a.proc.stop()


@pytest.fixture(scope="module")
def cases(api: Api) -> dict[str, Any]:
    now = int(time.time() * 1000)
    done = dict(status="resolved", resolved_ts=now - H)
    made = {
        "sup": incident(ANSHA[1], ts=now - 3 * H, level="red", status="dispatched"),
        "r5": incident(ANSHA[2], ts=now - 2 * H, level="blue", rating=5, **done),
        "r2": incident(ANSHA[4], ts=now - 2 * H, level="blue", rating=2, **done),
        "late": incident(CHUNYUAN[1], ts=now - 2 * H, level="yellow", rating=4, **done),
        "unrated": incident(PINGFENG[0], ts=now - 2 * H, level="yellow"),
    }
    made["sup"].supervision = Supervision("jiwei", "限期办结", now + H, now - H, "330100")
    made["sup"].assist = ["traffic_police"]
    made["late"].supervision = Supervision("jiwei", "督办", now - 90 * 60_000, now - 2 * H, "330100", overdue=True)
    for inc in made.values():
        api.produce("incidents", inc.grid_code, change(inc))
    city = api.login("city")
    wait_for(lambda: api.get("/api/incidents?status=", token=city).json()["total"] >= len(made), 20, "cases in view")
    return made


def act(api: Api, user: str, iid: str, body: dict[str, Any]) -> Any:
    return api.post(f"/api/incidents/{iid}/actions", json_body=body, token=api.login(user))


def test_the_discipline_commission_supervises_any_tier_with_a_deadline_and_only_that(api: Api, cases: dict) -> None:
    sup = cases["sup"]
    me = api.get("/api/me", token=api.login("jiwei")).json()
    assert (me["role"], me["actions"]) == ("discipline", ["comment", "supervise"])
    t0 = int(time.time() * 1000)
    r = act(api, "jiwei", sup.id, {"action": "supervise", "note": "三日内办结并回复", "deadline_h": 72})
    assert r.status == 202, r.text
    r2 = act(api, "meiqiao", sup.id, {"action": "supervise", "note": "区督办", "deadline": "2099-01-01T00:00:00"})
    assert r2.status == 400  # more than 90 days ahead
    in_2h = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 7200))
    r3 = act(api, "meiqiao", sup.id, {"action": "supervise", "note": "区督办", "deadline": in_2h})
    assert r3.status == 202, r3.text  # a supervisor (the district centre) may supervise too
    acts = {a["id"]: OperatorAction(**a) for a in read_topic(api.kafka_url, api.topic("actions"), 2.0)}
    a = acts[r.json()["action_id"]]
    a.validate()
    assert (a.action, a.actor, a.actor_tier_code, a.note) == ("supervise", "jiwei", "330100", "三日内办结并回复")
    assert a.deadline is not None and abs(a.deadline - (t0 + 72 * H)) < 60_000
    assert abs(acts[r3.json()["action_id"]].deadline - (t0 + 2 * H)) < 60_000
    for user, body, status in [
        ("ansha", {"action": "supervise", "note": "x", "deadline_h": 1}, 403),  # an operator may not supervise
        ("jiwei", {"action": "dispatch"}, 403),  # the commission does not handle the work
        ("jiwei", {"action": "supervise", "note": "x"}, 400),  # no deadline
        ("jiwei", {"action": "supervise", "note": "x", "deadline_h": 1, "deadline": 1}, 400),
        ("jiwei", {"action": "supervise", "note": "x", "deadline_h": -1}, 400),
        ("jiwei", {"action": "supervise", "note": "x", "deadline": int(time.time() * 1000) - 1000}, 400),  # past
        ("jiwei", {"action": "supervise", "deadline_h": 1}, 400),  # no note
        ("city", {"action": "comment", "note": "x", "assist": ["roads"]}, 400),  # assist only with dispatch
        ("city", {"action": "dispatch", "assist": "roads"}, 400),
    ]:
        assert act(api, user, sup.id, body).status == status, (user, body)


def test_dispatch_with_assisting_departments_is_produced_as_one_action(api: Api, cases: dict) -> None:
    r = act(api, "city", cases["unrated"].id, {"action": "dispatch", "department": "roads",
                                               "assist": ["traffic_police", "power_supply"]})
    assert r.status == 202, r.text
    acts = {a["id"]: a for a in read_topic(api.kafka_url, api.topic("actions"), 2.0)}
    got = acts[r.json()["action_id"]]
    assert (got["department"], got["assist"]) == ("roads", ["traffic_police", "power_supply"])


def test_supervised_filter_and_the_supervision_field(api: Api, cases: dict) -> None:
    city = api.login("city")
    ids = lambda q: {i["id"] for i in api.get(f"/api/incidents?status=&{q}", token=city).json()["incidents"]}  # noqa: E731
    assert ids("supervised=1") == {cases["sup"].id, cases["late"].id}
    assert ids("supervised=overdue") == {cases["late"].id}
    assert cases["sup"].id not in ids("supervised=0") and cases["r5"].id in ids("supervised=0")
    assert api.get("/api/incidents?supervised=maybe", token=city).status == 400
    row = next(i for i in api.get("/api/incidents?supervised=1", token=city).json()["incidents"]
               if i["id"] == cases["sup"].id)
    assert {k: row["supervision"][k] for k in ("by", "note", "overdue")} == {"by": "jiwei", "note": "限期办结",
                                                                             "overdue": False}
    assert row["supervision"]["deadline"] == cases["sup"].supervision.deadline and row["assist"] == ["traffic_police"]
    ansha = api.login("ansha")  # scope still holds: the other town's supervised case is not theirs
    assert {i["id"] for i in api.get("/api/incidents?supervised=1", token=ansha).json()["incidents"]} == {cases["sup"].id}


def test_statistics_count_satisfaction_as_a_share_rank_three_tiers_and_carry_definitions(api: Api, cases: dict) -> None:
    st = api.get("/api/stats", token=api.login("city")).json()
    o = st["overall"]
    assert (o["ratings"], o["satisfied"], o["satisfaction"]) == (3, 1, round(1 / 3, 4))  # only the 5 counts at >= 5
    assert (o["supervised"], o["supervised_overdue"]) == (2, 1)
    assert st["satisfaction_threshold"] == {"min_rating": 5, "scale": 5}
    assert "≥ 5 of 5" in st["definitions"]["satisfaction"]["en"] and "≥ 5 分" in st["definitions"]["satisfaction"]["zh-CN"]
    assert {"supervised", "supervised_overdue", "index", "ranking"} <= set(st["definitions"])
    r = st["ranking"]
    assert {d["code"] for d in r["districts"]} == {"330102", "330105"}
    pingfeng = next(d for d in r["districts"] if d["code"] == "330105")
    assert pingfeng["satisfaction"] is None and pingfeng["ratings"] == 0  # "no ratings", not a default
    assert [t["rank"] for t in r["towns"]] == list(range(1, len(r["towns"]) + 1))
    assert {t["code"] for t in r["towns"]} >= {"330102001", "330102002"}
    ansha = next(t for t in r["towns"] if t["code"] == "330102001")
    assert (ansha["supervised"], ansha["satisfaction"]) == (1, 0.5)
    assert {g["code"] for g in r["grids"]} == {i.grid_code for i in cases.values()}


def test_statistics_figures_unit() -> None:
    base = {"status": "evaluated", "created_ts": 0, "resolved_ts": H}
    incs = [{**base, "rating": r} for r in (5, 4, 3, 1)] + [{**base, "status": "reported", "rating": None}]
    f4, f5 = figures(incs, 4), figures(incs, 5)
    assert (f4["satisfaction"], f4["satisfied"], f4["ratings"]) == (0.5, 2, 4)
    assert f5["satisfaction"] == 0.25
    none = figures([{**base, "rating": None}], 4)
    assert none["satisfaction"] is None
    # without ratings the index leaves satisfaction out (weights 0.4 / 0.3 / 0.1 scaled up), not a made-up 0.8
    assert none["index"] == round(100 * (0.4 * 1 + 0.3 * 1 + 0.1 * (1 - 1 / 72)) / 0.8, 1)


def hotline(api: Api, body: Any, token: str | None = TOKEN) -> Any:
    return api.post("/api/hotline/orders", json_body=body, token=token)


def test_hotline_orders_are_filed_once_as_reports_with_their_order_id(api: Api) -> None:
    dev = next(d for d in CITY.registry.by_grid(ANSHA[6]) if d.kind == "manhole")
    order = {"order_id": "GD-20261120-000123", "category": "manhole_cover", "content": "市民来电：井盖松动有异响",
             "lat": dev.lat, "long": dev.lon, "reported_at": "2026-11-20T22:05:00+08:00",
             "caller": {"name": "张先生", "phone": "13900000000"}}
    assert hotline(api, order, token=None).status == 401
    assert hotline(api, order, token="guess").status == 401
    r = hotline(api, order)
    assert r.status == 201, r.text
    rid = hotline_report_id(order["order_id"])
    assert r.json() | {} == {"order_id": order["order_id"], "service_request_id": rid, "grid_code": ANSHA[6],
                             "service_code": "manhole_cover", "status": "received", "duplicate": False,
                             "closed": False, "incident_id": None,
                             "status_url": f"/api/hotline/orders/{order['order_id']}"}
    again = hotline(api, {**order, "content": "再次来电催办"})
    assert again.status == 200 and again.json()["duplicate"] is True and again.json()["service_request_id"] == rid
    recs = [ResidentReport(**x) for x in read_topic(api.kafka_url, api.topic("reports"), 2.0)
            if x["service_request_id"] == rid]
    assert len(recs) == 1  # idempotent on the order id
    rep = recs[0]
    reported = int(datetime(2026, 11, 20, 14, 5, tzinfo=UTC).timestamp() * 1000)  # 22:05 in Shanghai
    assert (rep.source, rep.external_id, rep.grid_code, rep.requested_ms) == ("hotline", order["order_id"], ANSHA[6],
                                                                              reported)
    assert rep.contact == {"first_name": "张先生", "phone": "13900000000", "account_id": f"hotline:{order['order_id']}"}
    # a category we do not have is classified from the text, an address stands in for coordinates
    place = next(d for g in ANSHA[7:] for d in CITY.registry.by_grid(g) if d.kind == "streetlight")
    r2 = hotline(api, {"order_id": "GD-2", "category": "城市照明", "content": "路灯不亮", "address": place.id})
    assert r2.status == 201, r2.text
    assert r2.json()["service_code"] == "streetlight_out" and r2.json()["grid_code"] == place.grid_code
    for bad in ({"content": "x", "lat": dev.lat, "long": dev.lon}, {"order_id": "a b", "content": "x"},
                {"order_id": "GD-3", "lat": dev.lat, "long": dev.lon}, {"order_id": "GD-4", "content": "x"},
                {"order_id": "GD-5", "content": "x", "lat": 1.0, "long": 1.0}, ["not", "an", "object"],
                {"order_id": "GD-6", "content": "x", "lat": dev.lat, "long": dev.lon, "reported_at": "yesterday"}):
        assert hotline(api, bad).status == 400, bad
    # its status follows the incident it joined
    st = api.get(f"/api/hotline/orders/{order['order_id']}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert (st["status"], st["incident_id"]) == ("received", None)
    inc = incident(ANSHA[6], ts=rep.requested_ms, level="yellow", status="dispatched", event=False,
                   report_ids=(rid,))
    inc.sources[0] = IncidentSource("report", rid, "manhole_cover", rep.requested_ms, rep.requested_ms,
                                    origin="hotline", external_id=order["order_id"])
    api.produce("incidents", inc.grid_code, change(inc))
    path = f"/api/hotline/orders/{order['order_id']}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    st = wait_for(lambda: (s := api.get(path, headers=auth).json())["incident_id"] and s, 15, "order status")
    assert (st["status"], st["closed"], st["department"], st["incident_id"]) == ("dispatched", False,
                                                                                "municipal_facilities", inc.id)
    assert api.get("/api/hotline/orders/GD-unknown", headers=auth).status == 404
    assert api.get(path).status == 401
