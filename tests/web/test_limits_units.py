"""The pieces behind "limits that hold", one at a time: the real client behind trusted proxies, one
PBKDF2 run per login whether the user exists or not, hashing off the event loop, revocations, the
audit file, idempotency keys, demo credentials refused."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gridwatch.core.settings import CONFIG_DIR, SettingsError, load_settings
from gridwatch.web import auth, demo_guard
from gridwatch.web.audit import AuditLog, read_entries
from gridwatch.web.auth import Accounts, hash_password
from gridwatch.web.clients import real_client
from gridwatch.web.idempotency import RecentPosts, check_key, rid_for_key
from gridwatch.web.revocations import Revocations, token_id
from tests.web.samples import CITY


@pytest.mark.parametrize(("peer", "xff", "proxies", "want"), [
    ("203.0.113.9", "1.2.3.4", "", "203.0.113.9"),  # no trusted proxy: the header is anyone's
    ("203.0.113.9", "1.2.3.4", "10.0.0.0/8", "203.0.113.9"),  # peer is not our proxy: ignored
    ("10.0.0.2", "1.2.3.4", "10.0.0.0/8", "1.2.3.4"),
    ("10.0.0.2", "6.6.6.6, 1.2.3.4", "10.0.0.0/8", "1.2.3.4"),  # a spoofed first entry is not the client
    ("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.0.0.7", "10.0.0.0/8", "1.2.3.4"),  # two of our proxies
    ("10.0.0.2", "garbage, 1.2.3.4", "10.0.0.0/8", "1.2.3.4"),
    ("10.0.0.2", "1.2.3.4, garbage", "10.0.0.0/8", "10.0.0.2"),  # unreadable hop: stop at the last known
    ("::1", "[2001:db8::5]:4711", "::1", "2001:db8::5"),
    ("127.0.0.1", "198.51.100.7:5555", "127.0.0.1", "198.51.100.7"),
])
def test_real_client_believes_only_trusted_proxies(peer, xff, proxies, want) -> None:
    assert real_client(peer, xff, proxies) == want


def test_unknown_users_cost_one_pbkdf2_run_like_known_ones(monkeypatch) -> None:
    accounts = Accounts.load(CONFIG_DIR / "operators.yaml", CITY.gridmap)
    calls: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name, pw, salt, iterations, *a):
        calls.append(iterations)
        return real(name, pw, salt, iterations, *a)

    monkeypatch.setattr(auth.hashlib, "pbkdf2_hmac", counting)
    assert accounts.login("ansha", "wrong") is None
    known = list(calls)
    calls.clear()
    assert accounts.login("nobody-here", "wrong") is None
    assert calls == known == [120_000]
    calls.clear()
    assert accounts.login("ansha", "ansha-demo") is not None and calls == [120_000]


def test_login_hashes_off_the_event_loop(monkeypatch) -> None:
    from gridwatch.web.server import create_app

    threads: list[int] = []
    real = hashlib.pbkdf2_hmac

    def recording(*a):
        threads.append(threading.get_ident())
        return real(*a)

    async def main() -> None:
        app = create_app(load_settings(), city=CITY, kafka=False)
        monkeypatch.setattr(auth.hashlib, "pbkdf2_hmac", recording)
        async with TestClient(TestServer(app)) as client:
            loop_thread = threading.get_ident()
            for pw in ("wrong", "ansha-demo"):
                r = await client.post("/api/login", json={"user": "ansha", "password": pw})
                assert r.status in (200, 401)
            assert threads and loop_thread not in threads, "PBKDF2 ran on the event loop"

    asyncio.run(main())


def test_revocations_hold_until_expiry_then_clean_up() -> None:
    r = Revocations(max_entries=3)
    now = time.time()
    r.revoke("a", now + 100)
    r.revoke("b", now - 1)  # already expired by itself
    assert r.is_revoked("a") and not r.is_revoked("b") and not r.is_revoked("c")
    r.prune()
    assert len(r) == 1
    for i in range(5):
        r.revoke(f"x{i}", now + 200 + i)
    assert len(r) == 3 and r.is_revoked("x4")
    assert token_id("abc") != "abc" and len(token_id("abc")) == 32


def test_audit_log_is_json_lines_an_operator_can_read(tmp_path) -> None:
    log = AuditLog(tmp_path / "sub" / "audit.log")
    log.write("login_ok", user="ansha", client="10.0.0.9", note="")
    log.write("action", user="ansha", incident="inc-1", action="resolve", note="井盖已更换")
    entries = read_entries(tmp_path / "sub" / "audit.log")
    assert [e["event"] for e in entries] == ["login_ok", "action"]
    assert entries[1]["note"] == "井盖已更换" and "note" not in entries[0] and entries[0]["client"] == "10.0.0.9"


def test_idempotency_keys_and_attempts() -> None:
    assert check_key("6f1c2a4e-8d5b-4b8e-9f0a-1c2d3e4f5a6b") is None
    for bad in ("", " x", "x" * 129, "é", "a\tb"):
        assert check_key(bad), bad
    rid = rid_for_key("", "k1")
    assert rid == rid_for_key("", "k1") != rid_for_key("", "k2") != rid_for_key("city-crm", "k1")
    assert rid.startswith("r") and len(rid) == 16
    posts = RecentPosts(window_s=60)
    a = posts.begin("key:|k1", rid, 1000, "fp")
    assert posts.get("key:|k1") is a and not a.stored and posts.get("nope") is None
    assert RecentPosts(window_s=0).begin("s", rid, 1, "fp") is not None


def test_demo_credentials_are_refused_outside_the_demo(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(demo_guard.ALLOW_ENV, raising=False)
    s = load_settings()
    shipped = Accounts.load(CONFIG_DIR / "operators.yaml", CITY.gridmap)
    with pytest.raises(SettingsError, match="gridwatch operators add") as e:
        demo_guard.refuse_demo_credentials(s, shipped)
    assert "city" in str(e.value) and "ansha" in str(e.value)
    # the demo password re-hashed with a new salt is still a demo account
    f = tmp_path / "ops.yaml"
    f.write_text(f"operators:\n  - {{user: ansha, role: operator, scope: '330102001', "
                 f"password_hash: {hash_password('ansha-demo')}}}\n")
    with pytest.raises(SettingsError, match="ansha"):
        demo_guard.refuse_demo_credentials(s, Accounts.load(f, CITY.gridmap))
    f.write_text(f"operators:\n  - {{user: ansha, role: operator, scope: '330102001', "
                 f"password_hash: {hash_password('a real long password')}}}\n")
    real = Accounts.load(f, CITY.gridmap)
    demo_guard.refuse_demo_credentials(s, real)  # fine
    monkeypatch.setenv("GRIDWATCH_WEB_SESSION_SECRET", "change-me-random")  # deploy/.env.example's
    with pytest.raises(SettingsError, match="session_secret"):
        demo_guard.refuse_demo_credentials(load_settings(), real)
    monkeypatch.setenv(demo_guard.ALLOW_ENV, "allow")
    demo_guard.refuse_demo_credentials(load_settings(), shipped)


def test_gridwatch_api_refuses_to_start_with_the_shipped_accounts(tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != demo_guard.ALLOW_ENV}
    env["GRIDWATCH_STATE_DIR"] = str(tmp_path)
    p = subprocess.run([sys.executable, "-m", "gridwatch", "api", "--kafka", "kafka://127.0.0.1:9", "--port", "0"],
                       env=env, capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    assert "demo accounts" in out and "gridwatch operators add" in out and "api listening" not in out
