"""Open311 GeoReport v2 against a real `gridwatch api` process and the real embedded Kafka broker:
what a standard client sends (form posts, .json/.xml), where the report lands (the reports topic,
keyed by grid), and that bad input gets an Open311 error with a 4xx, never a 5xx."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gridwatch.pipeline.schemas.reports import ResidentReport, report_id
from tests.harness import read_topic, wait_for
from tests.web.conftest import Api
from tests.web.samples import CITY, change, incident

TZ = ZoneInfo(CITY.timezone)
MANHOLE = next(d for d in CITY.registry.by_kind("manhole") if d.grid_code.startswith("330102001"))
LAMP = next(d for d in CITY.registry.by_kind("streetlight") if d.grid_code.startswith("330102001"))


def reports_on_kafka(api: Api, timeout: float = 2.0) -> dict[str, tuple[str, ResidentReport]]:
    """Every report on <prefix>.reports by id, with its Kafka key."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def main() -> dict[str, tuple[str, ResidentReport]]:
        c = AIOKafkaConsumer(api.topic("reports"), bootstrap_servers=api.kafka_url.removeprefix("kafka://"),
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        out: dict[str, tuple[str, ResidentReport]] = {}
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for recs in (await c.getmany(timeout_ms=300)).values():
                    for r in recs:
                        rep = ResidentReport.decode(r.value)
                        assert rep.service_request_id not in out or out[rep.service_request_id][1] == rep
                        out[rep.service_request_id] = (r.key.decode(), rep)
        finally:
            await c.stop()
        return out

    return asyncio.run(main())


def test_service_list_and_definitions_in_json_and_xml(api: Api) -> None:
    r = api.get("/open311/v2/services.json")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    services = {s["service_code"]: s for s in r.json()}
    assert {"manhole_cover", "streetlight_out", "flooding", "other"} <= set(services)
    assert services["manhole_cover"]["metadata"] is True and services["flooding"]["metadata"] is False
    assert services["manhole_cover"]["type"] == "realtime" and "井盖" in services["manhole_cover"]["keywords"]

    root = ET.fromstring(api.get("/open311/v2/services.xml").body)
    assert root.tag == "services"
    assert {s.findtext("service_code") for s in root.findall("service")} == set(services)
    assert root.find("service/metadata").text in ("true", "false")

    d = api.get("/open311/v2/services/manhole_cover.json").json()
    assert d["service_code"] == "manhole_cover"
    hazard = next(a for a in d["attributes"] if a["code"] == "hazard")
    assert hazard["datatype"] == "singlevaluelist" and {v["key"] for v in hazard["values"]} >= {"open_hole"}
    x = ET.fromstring(api.get("/open311/v2/services/manhole_cover.xml").body)
    assert x.tag == "service_definition" and x.find("attributes/attribute/code") is not None
    assert x.findtext(".//attribute/values/value/key") == "open_hole"

    # Chinese by default; English for Accept-Language: en or ?locale=en (locale wins), in JSON and XML
    assert services["manhole_cover"]["service_name"] == "井盖缺失、打开或损坏" and r.headers["Content-Language"] == "zh-CN"
    en = api.get("/open311/v2/services.json", headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert en.headers["Content-Language"] == "en" and "Accept-Language" in en.headers["Vary"]
    assert {s["service_code"]: s["service_name"] for s in en.json()}["manhole_cover"].startswith("Manhole cover")
    assert api.get("/open311/v2/services.json?locale=en", headers={"Accept-Language": "zh-CN"}).json()[0][
        "group"] == "Public facilities"
    assert ET.fromstring(api.get("/open311/v2/services.xml?locale=zh_CN").body).findtext("service/group") == "公共设施"
    assert hazard["description"] == "现在是否有危险？"
    en_def = api.get("/open311/v2/services/manhole_cover.json", headers={"Accept-Language": "en"}).json()
    assert next(a for a in en_def["attributes"] if a["code"] == "hazard")["values"][0]["name"] == "Open hole in the road"

    nf = api.get("/open311/v2/services/nope.json")
    assert nf.status == 404 and nf.json()[0]["code"] == 404
    nfx = ET.fromstring(api.get("/open311/v2/services/nope.xml").body)
    assert nfx.tag == "errors" and nfx.findtext("error/code") == "404"
    disc = api.get("/open311/discovery.json").json()
    assert disc["endpoints"][0]["url"].endswith("/open311/v2/")


def test_standard_form_post_lands_on_kafka_keyed_by_grid_and_reads_back(api: Api) -> None:
    """The way Open311 clients post: application/x-www-form-urlencoded, attribute[code]=value."""
    form = {"service_code": "manhole_cover", "lat": f"{MANHOLE.lat:.6f}", "long": f"{MANHOLE.lon:.6f}",
            "description": "井盖不见了 the cover is gone", "media_url": "https://example.org/p/1.jpg",
            "first_name": "Li", "last_name": "Wei", "email": "li.wei@example.org", "phone": "13800000000",
            "device_id": "phone-1", "account_id": "acct-9", "attribute[asset_id]": MANHOLE.id,
            "attribute[hazard]": "open_hole", "api_key": "any"}
    t0 = int(time.time() * 1000)
    r = api.post("/open311/v2/requests.json", form=form)
    assert r.status == 201, r.text
    body = r.json()
    rid = body[0]["service_request_id"]
    assert body[0]["account_id"] == "acct-9" and MANHOLE.grid_code in body[0]["service_notice"]
    assert r.headers["Location"] == f"/open311/v2/requests/{rid}.json"

    # the answer came after Kafka confirmed: the record is there, keyed by the grid code
    key, rep = reports_on_kafka(api)[rid]
    assert key == rep.grid_code == CITY.gridmap.locate(MANHOLE.lat, MANHOLE.lon) == MANHOLE.grid_code
    assert rep.service_code == "manhole_cover" and rep.source == "open311" and rep.device_id == MANHOLE.id
    assert rep.contact == {k: form[k] for k in ("first_name", "last_name", "email", "phone", "device_id", "account_id")}
    assert rep.media_url == form["media_url"] and "hazard=open_hole" in rep.description
    assert t0 <= rep.requested_ms <= int(time.time() * 1000)
    assert rid == report_id(rep.service_code, rep.lat, rep.lon, rep.requested_ms, rep.description)

    # a client retrying the same POST gets the same id, and nothing is produced twice
    again = api.post("/open311/v2/requests.json", form=form)
    assert again.status == 201 and again.json()[0]["service_request_id"] == rid
    assert sum(1 for k in reports_on_kafka(api) if k == rid) == 1

    one = api.get(f"/open311/v2/requests/{rid}.json").json()
    assert len(one) == 1
    row = one[0]
    assert row["service_request_id"] == rid and row["status"] == "open" and row["service_code"] == "manhole_cover"
    assert abs(row["lat"] - MANHOLE.lat) < 1e-6 and abs(row["long"] - MANHOLE.lon) < 1e-6
    assert row["media_url"] == form["media_url"] and row["requested_datetime"].endswith("+08:00")
    assert "email" not in row and "li.wei" not in str(row)  # contact details are never published

    x = ET.fromstring(api.get(f"/open311/v2/requests/{rid}.xml").body)
    assert x.tag == "service_requests" and x.findtext("request/service_request_id") == rid
    assert x.findtext("request/status") == "open"


def test_json_body_xml_answer_and_address_string(api: Api) -> None:
    lamp_no = LAMP.name.rsplit("#", 1)[1]
    road = LAMP.name.removeprefix("Streetlight ").rsplit(" #", 1)[0]
    r = api.post("/open311/v2/requests.xml", json_body={"service_code": "streetlight_out",
                                                          "address_string": f"{road} #{lamp_no}",
                                                          "description": "路灯不亮"})
    assert r.status == 201, r.text
    root = ET.fromstring(r.body)
    rid = root.findtext("request/service_request_id")
    _, rep = reports_on_kafka(api)[rid]
    assert rep.device_id == LAMP.id and rep.grid_code == LAMP.grid_code and rep.address == f"{road} #{lamp_no}"
    # an area name works too, and a device code as address_id
    r2 = api.post("/open311/v2/requests.json", form={"service_code": "garbage", "address_string": "Yunping Community"})
    assert r2.status == 201 and reports_on_kafka(api)[r2.json()[0]["service_request_id"]][1].grid_code.startswith("330102001001")
    r3 = api.post("/open311/v2/requests.json", form={"service_code": "manhole_cover", "address_id": MANHOLE.id})
    assert reports_on_kafka(api)[r3.json()[0]["service_request_id"]][1].device_id == MANHOLE.id


BAD_POSTS = [
    ({"service_code": "manhole_cover", "lat": "0", "long": "0"}, "outside this city"),
    ({"service_code": "nope", "lat": "30.25", "long": "120.07"}, "not found"),
    ({"service_code": "manhole_cover"}, "location is required"),
    ({"lat": "30.25", "long": "120.07"}, "service_code is required"),
    ({"service_code": "manhole_cover", "lat": "30.25"}, "together"),
    ({"service_code": "manhole_cover", "lat": "abc", "long": "120.07"}, "decimal number"),
    ({"service_code": "manhole_cover", "lat": "nan", "long": "120.07"}, "between"),
    ({"service_code": "manhole_cover", "lat": "1e999", "long": "120.07"}, "between"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "email": "nobody"}, "e-mail"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "media_url": "javascript:x"}, "media_url"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "description": "x" * 4001}, "longer"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "attribute[colour]": "red"}, "not an attribute"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "attribute[hazard]": "meh"}, "one of"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "attribute[asset_id]": "1" * 16}, "not a device"),
    ({"service_code": "manhole_cover", "address_string": "Atlantis Boulevard 1"}, "names no place"),
    ({"service_code": "manhole_cover", "lat": "30.25", "long": "120.07", "first_name": "a\x00b"}, "control"),
]


@pytest.mark.parametrize("form,why", BAD_POSTS, ids=[w for _, w in BAD_POSTS])
def test_bad_posts_get_open311_errors(api: Api, form: dict, why: str) -> None:
    r = api.post("/open311/v2/requests.json", form=form)
    assert r.status == 400, r.text
    errs = r.json()
    assert isinstance(errs, list) and errs and all(e["code"] == 400 for e in errs)
    assert any(why in e["description"] for e in errs), errs
    x = api.post("/open311/v2/requests.xml", form=form)
    root = ET.fromstring(x.body)
    assert x.status == 400 and root.tag == "errors" and root.findtext("error/code") == "400"


def test_malformed_bodies_and_queries_are_4xx(api: Api) -> None:
    cases = [
        api.post("/open311/v2/requests.json", data=b"{not json", headers={"Content-Type": "application/json"}),
        api.post("/open311/v2/requests.json", json_body=[1, 2]),
        api.post("/open311/v2/requests.json", json_body={"service_code": {"x": 1}}),
        api.post("/open311/v2/requests.json", data=b"hello", headers={"Content-Type": "text/plain"}),
        api.post("/open311/v2/requests.json", data=b"\xff\xfe=\xff", headers={"Content-Type": "application/x-www-form-urlencoded"}),
        api.post("/open311/v2/requests.json", data=b"x" * 1_100_000, headers={"Content-Type": "application/x-www-form-urlencoded"}),
        api.get("/open311/v2/requests.json?start_date=yesterday"),
        api.get("/open311/v2/requests.json?start_date=2026-01-01T00:00:00Z&end_date=2026-06-01T00:00:00Z"),
        api.get("/open311/v2/requests.json?start_date=2026-02-01T00:00:00Z&end_date=2026-01-01T00:00:00Z"),
        api.get("/open311/v2/requests.json?status=pending"),
        api.get("/open311/v2/requests.json?status=open&status=closed"),
        api.get("/open311/v2/requests/nope.json"),
        api.get("/open311/v2/requests.csv"),
        api.post("/open311/v2/services.json"),
    ]
    for r in cases:
        assert 400 <= r.status < 500, (r.status, r.text)
        errs = r.json()
        assert isinstance(errs, list) and errs[0]["code"] == r.status, r.text


def test_get_requests_filters(api: Api) -> None:
    ids = {}
    for code in ("flooding", "road_damage"):
        lat, lon = CITY.gridmap.centroid("330102002001001")
        r = api.post("/open311/v2/requests.json", form={"service_code": code, "lat": str(lat), "long": str(lon),
                                                        "description": f"filters {code}"})
        ids[code] = r.json()[0]["service_request_id"]
    both = api.get(f"/open311/v2/requests.json?service_request_id={ids['flooding']},{ids['road_damage']},unknown").json()
    assert {r["service_request_id"] for r in both} == set(ids.values())
    fl = api.get("/open311/v2/requests.json?service_code=flooding").json()
    assert ids["flooding"] in {r["service_request_id"] for r in fl} and all(r["service_code"] == "flooding" for r in fl)
    assert ids["flooding"] in {r["service_request_id"] for r in api.get("/open311/v2/requests.json?status=open").json()}
    assert api.get("/open311/v2/requests.json?status=closed&service_code=flooding").json() == []
    now = datetime.now(TZ)
    q = f"start_date={(now - timedelta(hours=1)).isoformat(timespec='seconds')}&end_date={(now + timedelta(minutes=1)).isoformat(timespec='seconds')}"
    window = api.get("/open311/v2/requests.json?" + q.replace("+", "%2B")).json()
    assert set(ids.values()) <= {r["service_request_id"] for r in window}
    old = api.get("/open311/v2/requests.json?start_date=2025-01-01&end_date=2025-02-01").json()
    assert old == []
    rows = api.get("/open311/v2/requests.json").json()
    stamps = [r["requested_datetime"] for r in rows]
    assert stamps == sorted(stamps, reverse=True)  # newest first
    x = ET.fromstring(api.get("/open311/v2/requests.xml?service_code=flooding").body)
    assert ids["flooding"] in {e.findtext("service_request_id") for e in x.findall("request")}


def test_status_follows_the_incident_the_report_joined(api: Api) -> None:
    r = api.post("/open311/v2/requests.json", form={"service_code": "manhole_cover", "lat": str(MANHOLE.lat),
                                                    "long": str(MANHOLE.lon), "email": "res@example.org",
                                                    "description": "status test"})
    rid = r.json()[0]["service_request_id"]
    row = api.get(f"/open311/v2/requests/{rid}.json").json()[0]
    assert row["status"] == "open" and row["agency_responsible"] is None
    # the backend's incident agent fuses it and later resolves it: its IncidentChange records
    now = int(time.time() * 1000)
    inc = incident(MANHOLE.grid_code, ts=now, status="dispatched", report_ids=(rid,))
    api.produce("incidents", inc.grid_code, change(inc))
    wait_for(lambda: api.get(f"/open311/v2/requests/{rid}.json").json()[0]["agency_responsible"], 15, "join")
    row = api.get(f"/open311/v2/requests/{rid}.json").json()[0]
    assert row["status"] == "open" and row["agency_responsible"] == "municipal_facilities"
    assert "dispatched" in row["status_notes"] and row["expected_datetime"]
    assert api.post(f"/open311/v2/requests/{rid}/evaluation.json", form={"rating": "5", "email": "res@example.org"}).status == 409

    from gridwatch.pipeline.schemas.incidents import Transition

    inc.status, inc.version, inc.resolved_ts = "resolved", 2, now + 120_000
    inc.history.append(Transition(now + 120_000, "resolve", "ansha", "cover replaced", "dispatched", "resolved"))
    inc.updated_ts = now + 120_000
    api.produce("incidents", inc.grid_code, change(inc, "action"))
    wait_for(lambda: api.get(f"/open311/v2/requests/{rid}.json").json()[0]["status"] == "closed", 15, "closed")
    row = api.get(f"/open311/v2/requests/{rid}.json").json()[0]
    assert row["status_notes"] == "resolved (municipal_facilities): cover replaced"
    assert row["expected_datetime"] is None
    assert rid in {x["service_request_id"] for x in api.get("/open311/v2/requests.json?status=closed").json()}

    # the fifth ticket: the resident rates it, proving it is theirs with the e-mail they filed with
    assert api.post(f"/open311/v2/requests/{rid}/evaluation.json", form={"rating": "5", "email": "x@example.org"}).status == 403
    assert api.post(f"/open311/v2/requests/{rid}/evaluation.json", form={"rating": "9", "email": "res@example.org"}).status == 400
    ok = api.post(f"/open311/v2/requests/{rid}/evaluation.json", form={"rating": "4", "email": "res@example.org",
                                                                      "comment": "quick"})
    assert ok.status == 202, ok.text
    acts = [a for a in read_topic(api.kafka_url, api.topic("actions"), 2.0) if a["incident_id"] == inc.id]
    assert acts[-1]["action"] == "evaluate" and acts[-1]["rating"] == 4 and acts[-1]["actor"] == f"resident:{rid}"
    assert acts[-1]["grid_code"] == inc.grid_code


def test_chat_records_become_reports_with_a_guessed_category(api: Api) -> None:
    token = api.login("ansha")  # Ansha Subdistrict, 330102001
    lamp_no = LAMP.name.rsplit("#", 1)[1]
    road = LAMP.name.removeprefix("Streetlight ").rsplit(" #", 1)[0]
    outside = next(d for d in CITY.registry.by_kind("manhole") if d.grid_code.startswith("330102002"))
    records = [
        {"text": f"{road}{lamp_no}号路灯不亮,请处理", "time": "2026-11-20 22:05", "place": f"{road} #{lamp_no}"},
        {"text": "井盖松动,车辆经过有响声", "time": 1763647500000, "lat": MANHOLE.lat, "long": MANHOLE.lon, "worker": "张网格员"},
        {"text": "Heavy rain: standing water / flooding at the underpass", "time": "2026-11-20T22:10:00+08:00",
         "lat": MANHOLE.lat, "long": MANHOLE.lon},
        {"text": "居民反映楼下有人吵架", "time": "2026-11-20 22:20", "lat": MANHOLE.lat, "long": MANHOLE.lon},
        {"text": "井盖丢失", "time": "2026-11-20 22:30", "lat": outside.lat, "long": outside.lon},  # another town
        {"text": "路灯不亮", "place": f"{road} #{lamp_no}"},  # no time
        {"text": "积水", "time": "2026-11-20 22:40", "place": "nowhere at all"},
        "not an object",
    ]
    r = api.post("/api/chat-import", json_body=records, token=token)
    assert r.status == 200, r.text
    res = r.json()["results"]
    assert r.json()["accepted"] == 4 and r.json()["rejected"] == 4
    assert [x.get("service_code") for x in res[:4]] == ["streetlight_out", "manhole_cover", "flooding", "other"]
    assert res[0]["device_id"] == LAMP.id and "路灯" in res[0]["keywords"]
    assert "outside your scope" in res[4]["error"] and "time" in res[5]["error"]
    assert "names no place" in res[6]["error"] and "object" in res[7]["error"]
    onk = reports_on_kafka(api)
    key, rep = onk[res[1]["service_request_id"]]
    assert key == MANHOLE.grid_code and rep.source == "chat" and rep.requested_ms == 1763647500000
    assert rep.contact == {"account_id": "chat:张网格员"}
    assert onk[res[0]["service_request_id"]][1].requested_ms == int(datetime(2026, 11, 20, 22, 5, tzinfo=TZ).timestamp() * 1000)
    # importing the same records again produces the same ids (deterministic), not new reports
    again = api.post("/api/chat-import", json_body=records[:4], token=token).json()["results"]
    assert [x["service_request_id"] for x in again] == [x["service_request_id"] for x in res[:4]]
    # who may import: an operator, not a viewer, not anonymous
    assert api.post("/api/chat-import", json_body=records[:1], token=api.login("auditor")).status == 403
    assert api.post("/api/chat-import", json_body=records[:1]).status == 401
    assert api.post("/api/chat-import", json_body={"x": 1}, token=token).status == 400
