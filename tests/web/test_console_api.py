"""The console API against a real `gridwatch api` process and Kafka: logins, tier scopes enforced
server-side (lists, detail, actions, stream, map), actions produced as OperatorAction records, and
the statistics. Incidents are fed the way the backend publishes them (IncidentChange records)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from gridwatch.pipeline.schemas.incidents import OperatorAction
from tests.harness import read_topic, wait_for
from tests.web.conftest import Api
from tests.web.samples import CITY, change, incident

ANSHA_GRID = CITY.gridmap.grids_under("330102001")[3]  # Ansha Subdistrict (town)
CHUNYUAN_GRID = CITY.gridmap.grids_under("330102002")[0]  # Chunyuan Subdistrict (another town)


@pytest.fixture(scope="module")
def incidents(api: Api) -> dict[str, object]:
    now = int(time.time() * 1000)
    mine = incident(ANSHA_GRID, ts=now - 3_600_000, level="red", status="dispatched")
    done = incident(CITY.gridmap.grids_under("330102001")[5], ts=now - 7_200_000, level="blue", status="resolved",
                    rating=4, resolved_ts=now - 3_600_000, image="cam-7/e1.jpg")
    other = incident(CHUNYUAN_GRID, ts=now - 1_800_000, level="yellow", overdue=True)
    for inc in (mine, done, other):
        api.produce("incidents", inc.grid_code, change(inc))
    token = api.login("city")
    wait_for(lambda: api.get("/api/incidents?status=", token=token).json()["total"] >= 3, 15, "incidents in the view")
    return {"mine": mine, "done": done, "other": other}


def test_login_and_tokens(api: Api) -> None:
    assert api.post("/api/login", json_body={"user": "ansha", "password": "wrong"}).status == 401
    assert api.post("/api/login", json_body={"user": "nobody", "password": "x"}).status == 401
    assert api.post("/api/login", json_body={"user": 1}).status == 400
    r = api.post("/api/login", json_body={"user": "ansha", "password": "ansha-demo"})
    assert r.status == 200 and "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    me = api.get("/api/me", token=r.json()["token"]).json()
    assert me["scope"] == "330102001" and me["scope_tier"] == "street" and "resolve" in me["actions"]
    assert api.get("/api/me").status == 401
    assert api.get("/api/me", token="forged.token").status == 401
    tampered = r.json()["token"][:-2] + ("00" if not r.json()["token"].endswith("00") else "11")
    assert api.get("/api/me", token=tampered).status == 401
    for path in ("/api/incidents", "/api/map", "/api/stats", "/api/stream", "/api/incidents/x"):
        assert api.get(path).status == 401, path


def test_scope_is_enforced_on_every_endpoint(api: Api, incidents: dict) -> None:
    mine, other = incidents["mine"], incidents["other"]
    ansha, chunyuan, city = api.login("ansha"), api.login("chunyuan"), api.login("city")
    ids = lambda tok, q="": {i["id"] for i in api.get(f"/api/incidents?status={q}", token=tok).json()["incidents"]}  # noqa: E731
    assert mine.id in ids(ansha) and other.id not in ids(ansha)
    assert other.id in ids(chunyuan) and mine.id not in ids(chunyuan)
    assert {mine.id, other.id} <= ids(city)
    assert api.get(f"/api/incidents/{other.id}", token=ansha).status == 403
    assert api.get(f"/api/incidents/{mine.id}", token=chunyuan).status == 403
    assert api.get("/api/incidents/nope", token=ansha).status == 404
    assert api.post(f"/api/incidents/{other.id}/actions", json_body={"action": "ack"}, token=ansha).status == 403
    assert api.get("/api/incidents?area=330102002", token=ansha).status == 403
    assert api.get("/api/incidents?area=999", token=ansha).status == 400
    # a village (community) account sees only its own community
    yunping = api.login("yunping")
    assert all(i["grid_code"].startswith("330102001001") for i in api.get("/api/incidents?status=", token=yunping).json()["incidents"])
    # the map holds only the scope's grids and devices
    m = api.get("/api/map", token=ansha).json()
    assert m["grids"] and all(g["code"].startswith("330102001") for g in m["grids"])
    assert m["devices"] and all(d[4].startswith("330102001") for d in m["devices"])
    assert len(api.get("/api/map", token=city).json()["grids"]) == len(CITY.gridmap.grid_codes)


def test_detail_and_filters(api: Api, incidents: dict) -> None:
    done = incidents["done"]
    ansha = api.login("ansha")
    d = api.get(f"/api/incidents/{done.id}", token=ansha).json()
    assert d["sources"][0]["evidence"][0]["cover_open"] is True and "seen" not in d["sources"][0]
    assert d["images"] == [{"source": d["sources"][0]["id"], "url": "/api/evidence/cam-7/e1.jpg", "ref": "cam-7/e1.jpg"}]
    assert [h["action"] for h in d["history"]] == ["created", "dispatch"]
    open_ids = {i["id"] for i in api.get("/api/incidents?status=open", token=ansha).json()["incidents"]}
    closed_ids = {i["id"] for i in api.get("/api/incidents?status=closed", token=ansha).json()["incidents"]}
    assert incidents["mine"].id in open_ids and done.id in closed_ids and not open_ids & closed_ids
    reds = api.get("/api/incidents?status=&level=red", token=ansha).json()["incidents"]
    assert reds and all(i["level"] == "red" for i in reds)
    grid = api.get(f"/api/incidents?status=&grid={ANSHA_GRID}", token=ansha).json()["incidents"]
    assert {i["id"] for i in grid} == {incidents["mine"].id}
    assert api.get("/api/incidents?category=manhole&status=", token=ansha).json()["total"] >= 2
    assert api.get("/api/incidents?category=flooding&status=", token=ansha).json()["total"] == 0
    assert api.get("/api/evidence/cam-7/e1.jpg", token=api.login("chunyuan")).status == 404  # not in their scope


def test_evidence_is_served_to_the_scopes_holding_its_incident_only(api: Api, incidents: dict) -> None:
    """/api/evidence looks the picture's incidents up in the store (incident_evidence and their areas):
    the town and the city that hold the incident get the file, another town and no login do not."""
    import shutil

    from gridwatch.core.settings import STATE_DIR

    folder = STATE_DIR / "evidence" / f"test-{api.prefix}"  # the api's web.evidence_dir (default)
    ref = f"{folder.name}/snap.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snap.jpg").write_bytes(b"\xff\xd8 a picture")
    try:
        inc = incident(ANSHA_GRID, ts=int(time.time() * 1000) - 60_000, image="/" + ref)
        api.produce("incidents", inc.grid_code, change(inc))
        ansha = api.login("ansha")
        wait_for(lambda: api.get(f"/api/evidence/{ref}", token=ansha).status == 200, 15, "the picture in scope")
        assert api.get(f"/api/evidence/{ref}", token=ansha).body == b"\xff\xd8 a picture"
        assert api.get(f"/api/evidence/{ref}", token=api.login("city")).status == 200
        assert api.get(f"/api/evidence/{ref}", token=api.login("chunyuan")).status == 404  # another town
        assert api.get(f"/api/evidence/{ref}").status == 401
        assert api.get(f"/api/evidence/{folder.name}/other.jpg", token=ansha).status == 404  # no incident has it
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_actions_are_produced_for_the_backend_and_checked(api: Api, incidents: dict) -> None:
    mine = incidents["mine"]
    ansha = api.login("ansha")
    r = api.post(f"/api/incidents/{mine.id}/actions", json_body={"action": "ack", "note": "on my way"}, token=ansha)
    assert r.status == 202, r.text
    aid = r.json()["action_id"]
    r2 = api.post(f"/api/incidents/{mine.id}/actions", json_body={"action": "dispatch", "department": "drainage"},
                  token=ansha)
    assert r2.status == 202
    acts = {a["id"]: a for a in read_topic(api.kafka_url, api.topic("actions"), 2.0)}
    a = OperatorAction(**acts[aid])
    a.validate()
    assert (a.action, a.actor, a.actor_tier_code, a.note, a.grid_code) == ("ack", "ansha", "330102001", "on my way",
                                                                          mine.grid_code)
    assert acts[r2.json()["action_id"]]["department"] == "drainage"
    # checked before anything is produced
    bad = [({"action": "explode"}, 403), ({"action": "comment"}, 400), ({"note": "x"}, 400),
           ({"action": "ack", "note": 5}, 400), ({"action": "escalate", "level": "purple"}, 400),
           ({"action": "evaluate"}, 403)]
    for body, status in bad:
        assert api.post(f"/api/incidents/{mine.id}/actions", json_body=body, token=ansha).status == status, body
    assert api.post(f"/api/incidents/{mine.id}/actions", data=b"action=ack", token=ansha,
                    headers={"Content-Type": "application/x-www-form-urlencoded"}).status == 415
    # a read-only account may look but not act; a supervisor may cancel, an operator may not
    auditor = api.login("auditor")
    assert api.get(f"/api/incidents/{mine.id}", token=auditor).status == 200
    assert api.post(f"/api/incidents/{mine.id}/actions", json_body={"action": "ack"}, token=auditor).status == 403
    assert api.post(f"/api/incidents/{mine.id}/actions", json_body={"action": "cancel"}, token=ansha).status == 403
    assert api.post(f"/api/incidents/{mine.id}/actions", json_body={"action": "cancel"},
                    token=api.login("meiqiao")).status == 202


class SseReader:
    """Reads /api/stream in a thread, keeping every (event, data) it receives."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[tuple[str, dict]] = []
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.conn.request("GET", "/api/stream", headers={"Authorization": f"Bearer {token}"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200 and self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        event, data = "message", ""
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and data:
                    self.events.append((event, json.loads(data)))
                    event, data = "message", ""
        except (OSError, ValueError, AttributeError):  # AttributeError: closed under the reader
            pass

    def incident_ids(self) -> list[str]:
        return [d["incident"]["id"] for e, d in self.events if e == "incident"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread at once
        self.conn.close()
        self.thread.join(5)


@pytest.fixture
def streams(api: Api) -> Iterator[dict[str, SseReader]]:
    rs = {u: SseReader(api.url, api.login(u)) for u in ("ansha", "chunyuan", "city")}
    wait_for(lambda: all(any(e == "hello" for e, _ in r.events) for r in rs.values()), 10, "stream hello")
    yield rs
    for r in rs.values():
        r.close()


def test_live_stream_carries_only_the_operators_scope(api: Api, streams: dict[str, SseReader]) -> None:
    now = int(time.time() * 1000)
    a = incident(CITY.gridmap.grids_under("330102001")[7], ts=now, level="red")
    b = incident(CITY.gridmap.grids_under("330102002")[2], ts=now, level="yellow")
    t0 = time.time()
    api.produce("incidents", a.grid_code, change(a))
    api.produce("incidents", b.grid_code, change(b))
    wait_for(lambda: {a.id, b.id} <= set(streams["city"].incident_ids()), 15, "city stream")
    wait_for(lambda: a.id in streams["ansha"].incident_ids(), 5, "ansha stream")
    wait_for(lambda: b.id in streams["chunyuan"].incident_ids(), 5, "chunyuan stream")
    assert time.time() - t0 < 10
    time.sleep(0.5)
    assert b.id not in streams["ansha"].incident_ids() and a.id not in streams["chunyuan"].incident_ids()
    msg = next(d for e, d in streams["ansha"].events if e == "incident" and d["incident"]["id"] == a.id)
    assert msg["change"] == "created" and msg["incident"]["level"] == "red" and msg["transition"]["action"] == "created"
    # an older version arriving late changes nothing; a newer one is streamed
    a.version, a.status = 2, "dispatched"
    api.produce("incidents", a.grid_code, change(a, "action"))
    stale = incident(a.grid_code, ts=now, level="red")
    api.produce("incidents", a.grid_code, change(stale))
    wait_for(lambda: streams["ansha"].incident_ids().count(a.id) == 2, 10, "version 2 on the stream")
    time.sleep(0.5)
    assert streams["ansha"].incident_ids().count(a.id) == 2
    assert api.get(f"/api/incidents/{a.id}", token=api.login("ansha")).json()["status"] == "dispatched"


def test_an_action_the_workflow_would_refuse_gets_409_with_its_reason(api: Api, incidents: dict) -> None:
    done = incidents["done"]  # resolved already
    ansha = api.login("ansha")
    r = api.post(f"/api/incidents/{done.id}/actions", json_body={"action": "resolve", "note": "again"}, token=ansha)
    assert r.status == 409, r.text
    body = r.json()
    assert body["reason"] == "invalid_transition" and body["action"] == "resolve" and body["status"] == "resolved"
    assert "dispatched" in body["allowed_from"] and "not allowed" in body["error"]
    r = api.post(f"/api/incidents/{done.id}/actions", json_body={"action": "comment", "note": "noted"}, token=ansha)
    assert r.status == 202  # what the state allows still goes through
    acts = [a for a in read_topic(api.kafka_url, api.topic("actions"), 2.0) if a["incident_id"] == done.id]
    assert [a["action"] for a in acts] == ["comment"]  # the refused one never reached the workflow


def test_language_preference_is_kept_per_operator(api: Api) -> None:
    ansha, city = api.login("ansha"), api.login("city")
    me = api.get("/api/me", token=ansha).json()
    assert me["lang"] is None and me["languages"] == ["zh-CN", "en"] and me["name_zh"] == "安沙街道指挥中心"
    r = api.http_put("/api/me/preferences", {"lang": "en"}, ansha)
    assert r.status == 200 and r.json() == {"lang": "en"}
    assert api.get("/api/me", token=ansha).json()["lang"] == "en" and api.get("/api/me", token=city).json()["lang"] is None
    assert api.http_put("/api/me/preferences", {"lang": "fr"}, ansha).status == 400
    assert api.http_put("/api/me/preferences", {"colour": "red"}, ansha).status == 400
    assert api.http_put("/api/me/preferences", {"lang": "en"}, None).status == 401
    assert api.get("/console/i18n/zh-CN.json").json()["level.red"] == "红色预警"


def test_statistics(api: Api, incidents: dict) -> None:
    st = api.get("/api/stats", token=api.login("ansha")).json()
    o = st["overall"]
    assert o["incidents"] >= 2 and 0 < o["closure_rate"] < 1 and o["ratings"] == 1
    assert o["satisfaction"] == 1.0 and o["satisfied"] == 1  # the one rating is a 4: satisfied (>= 4 of 5)
    assert o["avg_handling_h"] == pytest.approx(1.0, abs=0.01)
    towns = st["ranking"]["towns"]
    assert [t["code"] for t in towns] == ["330102001"] and towns[0]["rank"] == 1  # only their own town
    grids = st["ranking"]["grids"]
    assert grids and all(g["code"].startswith("330102001") for g in grids)
    assert [g["index"] for g in grids] == sorted((g["index"] for g in grids), reverse=True)
    city = api.get("/api/stats", token=api.login("city")).json()
    assert {"330102001", "330102002"} <= {t["code"] for t in city["ranking"]["towns"]}
    assert city["overall"]["overdue"] >= 1
    assert api.get("/api/stats?month=2026-13x", token=api.login("city")).status == 400
