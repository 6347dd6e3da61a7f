"""A 503 from Open311 `POST requests` while Kafka is frozen, then a retry after the thaw: exactly one
report, with and without an Idempotency-Key; readiness says Kafka is down while it is frozen.

Runs on a private embedded stack (its own Tansu broker, frozen with SIGSTOP), never the session's."""

from __future__ import annotations

import json
import signal
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from gridwatch.stack import EmbeddedStack
from tests.harness import read_topic, wait_for
from tests.web.conftest import Api, http, start_api
from tests.web.samples import CITY

MANHOLE = next(d for d in CITY.registry.by_kind("manhole") if d.grid_code.startswith("330102002"))


@pytest.fixture()
def private() -> Iterator[tuple[EmbeddedStack, Api]]:
    stack = EmbeddedStack().start()
    kafka = stack.procs["kafka"].proc
    api = None
    try:
        api = start_api(stack.kafka_url, f"i{uuid.uuid4().hex[:8]}", {"GRIDWATCH_MQTT_URL": stack.mqtt_url})
        yield stack, api
    finally:
        kafka.send_signal(signal.SIGCONT)
        if api is not None:
            api.proc.stop()
        stack.stop()


def post(api: Api, form: dict[str, str], key: str = "") -> tuple[int, object]:
    return http_long("POST", api.url + "/open311/v2/requests.json", form, {"Idempotency-Key": key} if key else {})


def http_long(method: str, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, object]:
    """Like conftest.http, with room for the api's 15 s produce timeout."""
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method=method,
                                 headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
    try:
        with urllib.request.urlopen(req, timeout=90) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_retry_after_a_503_files_one_report(private) -> None:
    stack, api = private
    ready = api.get("/api/health/ready")
    assert ready.status == 200 and ready.json()["kafka"]["ok"] and ready.json()["mqtt"]["ok"], ready.text
    tag = uuid.uuid4().hex[:8]
    forms = {name: {"service_code": "manhole_cover", "lat": str(MANHOLE.lat), "long": str(MANHOLE.lon),
                    "attribute[asset_id]": MANHOLE.id, "description": f"井盖缺失 {name} {tag}"}
             for name in ("keyed", "keyless")}
    key = str(uuid.uuid4())
    kafka = stack.procs["kafka"].proc
    kafka.send_signal(signal.SIGSTOP)  # the broker hangs: produce requests time out, connections stay open
    first: dict[str, tuple[int, object]] = {}
    threads = [threading.Thread(target=lambda n=n: first.__setitem__(n, post(api, forms[n], key if n == "keyed" else "")))
               for n in forms]
    for t in threads:
        t.start()
    frozen = wait_for(lambda: (r := api.get("/api/health/ready")).status == 503 and r, 30, "readiness to see Kafka down")
    assert frozen.json()["kafka"]["ok"] is False and frozen.json()["mqtt"]["ok"] is True, frozen.text
    assert http("GET", api.url + "/api/health").json()["kafka"] is False
    assert api.get("/api/health/live").status == 200
    for t in threads:
        t.join(120)
    for name, (status, body) in first.items():  # the premise: both were answered 503 while frozen
        assert status == 503, (name, status, body)
        desc = body[0]["description"]  # type: ignore[index]
        assert "may have been stored" in desc and "同一" in desc and desc.index("同一") < desc.index("may"), desc
    kafka.send_signal(signal.SIGCONT)

    retry = {n: post(api, forms[n], key if n == "keyed" else "") for n in forms}
    for name, (status, body) in retry.items():
        assert status == 201, (name, status, body)
    wait_for(lambda: api.get("/api/health/ready").status == 200, 30, "readiness after the thaw")

    def records() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in forms}
        for rec in read_topic(api.kafka_url, api.topic("reports"), 3.0):
            for n, f in forms.items():
                if rec.get("description") == f["description"]:
                    out[n].append(rec["service_request_id"])
        return out

    got = wait_for(lambda: r if all((r := records()).values()) else None, 30, "the reports on the topic")
    for name, ids in got.items():
        assert len(set(ids)) == 1, (name, ids)  # one report (a second copy, if any, has the same id)
        assert ids[0] == retry[name][1][0]["service_request_id"], (name, ids, retry[name])  # type: ignore[index]
        listed = api.get(f"/open311/v2/requests.json?service_request_id={ids[0]}").json()
        assert len(listed) == 1
    print(f"records on the topic per report (2 = the frozen attempt was stored after the thaw): "
          f"{ {n: len(ids) for n, ids in got.items()} }")
    # a key reused for another request is refused, not silently mapped to the first report
    status, body = post(api, {**forms["keyed"], "description": "something else"}, key)
    assert status == 422, body
