"""The operator console in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright),
against the whole real path: MQTT -> bridge -> Kafka -> Faust worker (telemetry + incident agents)
-> `gridwatch api` -> Server-Sent Events -> the page.

An operator of Ansha Subdistrict logs in, sees an incident appear live after a manhole sensor reading
is published over MQTT, sees a resident's Open311 report join it, opens it, sees the evidence,
acknowledges and resolves it; the state change is visible in the API (and closes the resident's
request). An operator of Chunyuan Subdistrict (another town) sees none of it. Screenshots are saved
under test-artifacts/console/.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import ARTIFACTS, MqttPublisher, Pipeline, wait_for
from tests.web.conftest import Api, start_api
from tests.web.samples import CITY

CHROMIUM = os.environ.get("GRIDWATCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
SHOTS = ARTIFACTS / "console"
MANHOLE = next(d for d in CITY.registry.by_kind("manhole") if d.grid_code.startswith("330102001") and not d.gateway)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"Debian chromium not installed at {CHROMIUM} (./run setup installs it)")


@pytest.fixture(scope="module")
def live(stack) -> Iterator[tuple[Pipeline, Api]]:
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url, prefix=f"b{uuid.uuid4().hex[:8]}").start()
    api = start_api(stack.kafka_url, pipe.prefix)
    yield pipe, api
    api.proc.stop()
    pipe.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def login(browser: object, api: Api, user: str) -> object:
    ctx = browser.new_context(viewport={"width": 1500, "height": 920}, timezone_id="Asia/Shanghai")  # type: ignore[attr-defined]
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(api.url + "/console")
    page.wait_for_selector("#login-form")
    page.fill("#login-user", user)
    page.fill("#login-password", f"{user}-demo")
    page.click("#login-submit")
    page.wait_for_selector("#app:not(.hidden)")
    page.wait_for_selector("#live.on", timeout=15_000)  # the live stream is connected
    return page


def test_operator_sees_a_sensor_incident_live_and_works_it(live: tuple[Pipeline, Api], browser: object) -> None:
    pipe, api = live
    SHOTS.mkdir(parents=True, exist_ok=True)
    ansha = login(browser, api, "ansha")
    other = login(browser, api, "chunyuan")
    ansha.screenshot(path=str(SHOTS / "01-logged-in.png"))
    assert ansha.locator(".incident").count() == 0
    assert ansha.inner_text("#who-scope").startswith("scope: Ansha Subdistrict")

    # a manhole cover in Ansha Subdistrict opens: the device publishes over MQTT
    pub = MqttPublisher(pipe.mqtt_url)
    ts = int(time.time() * 1000) - 2000
    try:
        t0 = time.time()
        pub.publish(f"v1/devices/{MANHOLE.id}/telemetry", {"ts": ts, "values": {"cover_open": True, "tilt_deg": 70.0,
                                                                                "battery_pct": 80.0}})
        ansha.wait_for_selector(".incident.level-red", timeout=60_000)
        seen_after = time.time() - t0
    finally:
        pub.close()
    row = ansha.locator(".incident.level-red").first
    iid = row.get_attribute("data-incident-id")
    assert iid and "Manhole" in row.inner_text()
    ansha.wait_for_selector(f"#layer-incidents [data-incident-id='{iid}']")  # on the map too
    ansha.screenshot(path=str(SHOTS / "02-incident-appeared-live.png"))

    # a resident reports the same cover through Open311: it joins the incident
    rep = api.post("/open311/v2/requests.json", form={"service_code": "manhole_cover", "lat": str(MANHOLE.lat),
                                                      "long": str(MANHOLE.lon), "description": "井盖被掀开了",
                                                      "attribute[asset_id]": MANHOLE.id, "email": "r@example.org"})
    assert rep.status == 201, rep.text
    rid = rep.json()[0]["service_request_id"]
    token = api.login("ansha")
    wait_for(lambda: len(api.get(f"/api/incidents/{iid}", token=token).json()["sources"]) == 2, 30,
             "the resident report to join the sensor incident")

    ansha.click(f".incident[data-incident-id='{iid}']")
    ansha.wait_for_selector(f"#detail-title[data-incident-id='{iid}']")
    ansha.locator("#detail .source").nth(1).wait_for(timeout=15_000)  # (the page's CSP forbids eval'd waits)
    evidence = ansha.inner_text("#detail .evidence")
    assert "cover_open" in evidence and "true" in evidence and "70" in evidence
    assert "resident report" in ansha.inner_text("#detail")
    ansha.screenshot(path=str(SHOTS / "03-incident-detail-evidence.png"))

    # acknowledge, then resolve: the backend applies them and the page updates from the stream
    ansha.fill("#action-note", "crew on the way")
    ansha.click("#act-ack")
    ansha.wait_for_selector("#detail-acked", timeout=30_000)
    ansha.screenshot(path=str(SHOTS / "04-acknowledged.png"))
    ansha.fill("#action-note", "cover put back and locked")
    ansha.click("#act-resolve")
    ansha.wait_for_selector("#detail-status.st-resolved", timeout=30_000)
    timeline = ansha.inner_text("#timeline")
    assert "resolve" in timeline and "ack" in timeline and "cover put back and locked" in timeline
    assert ansha.is_disabled("#act-resolve") and ansha.is_disabled("#act-ack")  # done: the page knows
    ansha.select_option("#f-status", "")
    ansha.locator("#timeline").scroll_into_view_if_needed()
    ansha.screenshot(path=str(SHOTS / "05-resolved-timeline.png"))

    # the state change is visible in the API, and the resident's Open311 request is closed
    inc = api.get(f"/api/incidents/{iid}", token=token).json()
    assert inc["status"] == "resolved" and inc["acked"] is True
    assert [(h["action"], h["actor"]) for h in inc["history"] if h["action"] in ("ack", "resolve")] == [
        ("ack", "ansha"), ("resolve", "ansha")]
    req = api.get(f"/open311/v2/requests/{rid}.json").json()[0]
    assert req["status"] == "closed" and "cover put back and locked" in req["status_notes"]

    # the operator of another town never saw it, on the page or through the API
    other.wait_for_timeout(500)
    assert other.locator(f"[data-incident-id='{iid}']").count() == 0
    assert other.locator(".incident").count() == 0
    assert api.get(f"/api/incidents/{iid}", token=api.login("chunyuan")).status == 403
    other.screenshot(path=str(SHOTS / "06-other-town-sees-nothing.png"))

    ansha.click("#tab-stats")
    ansha.wait_for_selector("#k-closure")
    assert "100.0 %" in ansha.inner_text("#k-closure")
    ansha.screenshot(path=str(SHOTS / "07-statistics.png"))
    assert not ansha.errors and not other.errors, (ansha.errors, other.errors)
    print(f"incident visible in the console {seen_after:.1f} s after the MQTT publish")
