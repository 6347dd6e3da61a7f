"""Limits that hold, against a real `gridwatch api` behind a (simulated) trusted reverse proxy on
127.0.0.1: the Open311 rate limit cannot be reset with a random api_key or a spoofed X-Forwarded-For,
one attacker cannot lock the other operators out, logout revokes the token, and logins and actions
land in the audit log (file and topic)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import read_topic, wait_for
from tests.web.conftest import Api, start_api
from tests.web.samples import CITY, change, incident

LAMP = next(d for d in CITY.registry.by_kind("streetlight") if d.grid_code.startswith("330102001"))
GRID = CITY.gridmap.grids_under("330102001")[1]


@pytest.fixture(scope="module")
def audit_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.log"


SECRET = f"test-{uuid.uuid4().hex}"  # one session key for the instances behind one load balancer


@pytest.fixture(scope="module")
def lapi(stack, audit_file: Path) -> Iterator[Api]:
    env = {"GRIDWATCH_WEB_SESSION_SECRET": SECRET, "GRIDWATCH_WEB_RATE_PER_MIN": "1", "GRIDWATCH_WEB_RATE_BURST": "3",
           "GRIDWATCH_WEB_TRUSTED_PROXIES": "127.0.0.1,::1", "GRIDWATCH_WEB_TRUST_FORWARDED_FOR": "true",
           "GRIDWATCH_WEB_API_KEYS": "city-crm-key",
           "GRIDWATCH_WEB_LOGIN_RATE_PER_MIN": "1", "GRIDWATCH_WEB_LOGIN_BURST": "3",
           "GRIDWATCH_WEB_LOGIN_ACCOUNT_RATE_PER_MIN": "1", "GRIDWATCH_WEB_LOGIN_ACCOUNT_BURST": "6",
           "GRIDWATCH_WEB_AUDIT_LOG": str(audit_file)}
    a = start_api(stack.kafka_url, f"l{uuid.uuid4().hex[:8]}", env)
    yield a
    a.proc.stop()


def report(n: int) -> dict[str, str]:
    return {"service_code": "streetlight_out", "lat": str(LAMP.lat), "long": str(LAMP.lon),
            "description": f"lamp out, report {n} {uuid.uuid4().hex[:6]}", "attribute[asset_id]": LAMP.id}


def via_proxy(client: str, spoofed: str = "") -> dict[str, str]:
    """Headers as our proxy forwards them: whatever the client wrote, then the address it saw."""
    return {"X-Forwarded-For": f"{spoofed}, {client}" if spoofed else client}


def test_random_api_keys_and_spoofed_forwarded_for_do_not_reset_the_rate_limit(lapi: Api) -> None:
    statuses = [lapi.post("/open311/v2/requests.json", form={**report(n), "api_key": uuid.uuid4().hex},
                          headers=via_proxy("198.51.100.10")).status for n in range(3)]
    assert statuses == [403, 403, 403]  # keys are configured: an unknown one is refused, not a new bucket
    statuses = [lapi.post("/open311/v2/requests.json", form=report(n),
                          headers=via_proxy("198.51.100.10", spoofed=f"203.0.113.{n}")).status for n in range(5)]
    assert statuses[:3] == [201, 201, 201] and statuses[3:] == [429, 429], statuses
    # another real client behind the same proxy is not affected; a configured key has its own bucket
    assert lapi.post("/open311/v2/requests.json", form=report(9), headers=via_proxy("198.51.100.11")).status == 201
    r = lapi.post("/open311/v2/requests.json", form={**report(10), "api_key": "city-crm-key"},
                  headers=via_proxy("198.51.100.10"))
    assert r.status == 201, r.text


def test_one_attacker_behind_the_proxy_cannot_lock_out_the_operators(lapi: Api) -> None:
    attacker = via_proxy("198.51.100.66")
    statuses = [lapi.post("/api/login", json_body={"user": "city", "password": f"guess{n}"}, headers=attacker).status
                for n in range(5)]
    assert statuses == [401, 401, 401, 429, 429], statuses
    assert lapi.post("/api/login", json_body={"user": "city", "password": "city-demo"}, headers=attacker).status == 429
    # an operator at another desk behind the same proxy logs in
    r = lapi.post("/api/login", json_body={"user": "city", "password": "city-demo"}, headers=via_proxy("198.51.100.7"))
    assert r.status == 200, r.text


def test_guessing_one_account_from_many_addresses_is_throttled_per_account(lapi: Api) -> None:
    statuses = [lapi.post("/api/login", json_body={"user": "chunyuan", "password": f"g{n}"},
                          headers=via_proxy(f"192.0.2.{n}")).status for n in range(8)]
    assert statuses == [401] * 6 + [429, 429], statuses
    # other accounts are not affected
    r = lapi.post("/api/login", json_body={"user": "ansha", "password": "ansha-demo"}, headers=via_proxy("192.0.2.99"))
    assert r.status == 200, r.text


def test_logout_revokes_the_token_and_everything_is_audited(lapi: Api, audit_file: Path) -> None:
    from gridwatch.web.audit import read_entries

    inc = incident(GRID, ts=int(time.time() * 1000) - 60_000, level="yellow", status="dispatched")
    lapi.produce("incidents", inc.grid_code, change(inc))
    desk = via_proxy("198.51.100.20")
    r = lapi.post("/api/login", json_body={"user": "yunping", "password": "yunping-demo"}, headers=desk)
    assert r.status == 200, r.text
    token = r.json()["token"]
    wait_for(lambda: lapi.get(f"/api/incidents/{inc.id}", token=token).status == 200, 15, "the incident")
    r = lapi.post(f"/api/incidents/{inc.id}/actions", json_body={"action": "comment", "note": "已到现场"},
                  token=token, headers=desk)
    assert r.status == 202, r.text
    assert lapi.post("/api/logout", token=token, headers=desk).json() == {"ok": True, "revoked": True}
    assert lapi.get("/api/me", token=token).status == 401
    assert lapi.get("/api/me", headers={"Cookie": f"gw_session={token}"}).status == 401

    entries = [e for e in read_entries(audit_file) if e.get("user") == "yunping"]
    assert [e["event"] for e in entries] == ["login_ok", "action", "logout"], entries
    assert all(e["client"] == "198.51.100.20" for e in entries)
    assert entries[1]["incident"] == inc.id and entries[1]["action"] == "comment" and entries[1]["note"] == "已到现场"
    assert entries[0]["token_id"] == entries[2]["token_id"]
    failed = [e for e in read_entries(audit_file) if e["event"] == "login_failed"]
    assert {"city", "chunyuan"} <= {e["user"] for e in failed}
    on_topic = wait_for(lambda: [e for e in read_topic(lapi.kafka_url, lapi.topic("audit"), 2.0)
                                 if e.get("user") == "yunping"] or None, 20, "audit entries on the topic")
    assert [e["event"] for e in on_topic] == ["login_ok", "action", "logout"]


def test_liveness_and_readiness(lapi: Api) -> None:
    assert lapi.get("/api/health/live").json() == {"live": True}
    r = lapi.get("/api/health/ready")
    assert r.status == 200 and r.json()["kafka"]["ok"] is True and r.json()["view"]["ok"] is True, r.text
    assert lapi.get("/api/health").json()["kafka"] is True


def test_a_logout_on_one_instance_revokes_the_token_on_the_others(stack, lapi: Api, tmp_path) -> None:
    other = start_api(stack.kafka_url, lapi.prefix, {"GRIDWATCH_WEB_SESSION_SECRET": SECRET,
                                                     "GRIDWATCH_WEB_AUDIT_LOG": str(tmp_path / "audit2.log")}, "api2")
    try:
        r = lapi.post("/api/login", json_body={"user": "meiqiao", "password": "meiqiao-demo"},
                      headers=via_proxy("198.51.100.30"))
        assert r.status == 200, r.text
        token = r.json()["token"]
        assert other.get("/api/me", token=token).status == 200  # the premise: one token, both instances
        assert lapi.post("/api/logout", token=token).json()["revoked"] is True
        wait_for(lambda: other.get("/api/me", token=token).status == 401, 30, "the other instance to revoke it")
        assert lapi.get("/api/me", token=token).status == 401
    finally:
        other.proc.stop()
