"""Channel plug-ins: config checks, MQTT topic per grid, webhook signing, retries and give-up."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import pytest
from aiohttp import web

from gridwatch.agents.channels.base import ChangeInfo, ChannelConfigError, DeliveryError, build_channels
from gridwatch.agents.channels.mqtt import incident_topic
from gridwatch.agents.channels.webhook import backoff_delays, sign, verify
from gridwatch.pipeline.schemas.events import TierRef
from gridwatch.pipeline.schemas.incidents import Incident, IncidentChange

GRID = "330102001001005"
TIERS = [TierRef("city", "330100", "c"), TierRef("district", "330102", "d"), TierRef("street", "330102001", "s"),
         TierRef("community", "330102001001", "v"), TierRef("grid", GRID, "g")]


def change(level: str = "red", kind: str = "created") -> ChangeInfo:
    inc = Incident("i1", "manhole", "t", level, 30, "reported", "community", "330102001001", "x", GRID, TIERS,
                   30.0, 120.0, 1, 1, 2, version=3)
    return ChangeInfo.parse(IncidentChange(inc, kind, 1).encode())


def test_mqtt_topic_is_the_tier_path_of_the_grid():
    assert incident_topic("gridwatch/incidents", change()) == \
        "gridwatch/incidents/330100/330102/330102001/330102001001/330102001001005"


def test_filters_and_config_errors(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "s")
    [ch] = build_channels([{"name": "h", "type": "webhook", "url": "http://x/", "secret_env": "HOOK_SECRET",
                            "levels": ["red"], "changes": ["escalated"]}])
    assert ch.accepts(change("red", "escalated")) and not ch.accepts(change("blue", "escalated"))
    assert not ch.accepts(change("red", "created"))
    assert build_channels([{"name": "m", "type": "mqtt", "enabled": False}]) == []
    for entry, msg in [
        ({"name": "a", "type": "pager"}, "unknown channel type"),
        ({"name": "a", "type": "mqtt", "colour": 1}, "unknown key"),
        ({"name": "a", "type": "webhook", "url": "ftp://x"}, "url"),
        ({"name": "a", "type": "webhook", "url": "http://x", "secret_env": "NOPE_NOT_SET"}, "no secret"),
        ({"name": "a", "type": "mqtt", "levels": ["purple"]}, "levels"),
    ]:
        with pytest.raises(ChannelConfigError, match=msg):
            build_channels([entry])


def test_backoff_doubles_and_is_capped():
    assert backoff_delays(5, 0.5, 3) == [0.5, 1.0, 2.0, 3]
    assert backoff_delays(1, 0.5, 3) == []


def test_webhook_signs_retries_with_backoff_and_gives_up(monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "top-secret")
    calls: list[tuple[float, str, bytes, str]] = []
    answers = {"/flaky": [503, 500, 204], "/down": [503] * 10, "/reject": [400]}

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append((time.monotonic(), request.path, body, request.headers["X-Gridwatch-Signature"]))
        return web.Response(status=answers[request.path].pop(0))

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{name}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = {"type": "webhook", "secret_env": "HOOK_SECRET", "max_attempts": 3, "backoff_s": 0.05}
        flaky, down, reject = build_channels([
            {**base, "name": "flaky", "url": f"http://127.0.0.1:{port}/flaky"},
            {**base, "name": "down", "url": f"http://127.0.0.1:{port}/down"},
            {**base, "name": "reject", "url": f"http://127.0.0.1:{port}/reject"},
        ])
        body = json.dumps(change().record).encode()
        try:
            for ch in (flaky, down, reject):
                await ch.start()
            await flaky.deliver(change(), body)  # 503, 500, then 204: delivered on the third attempt
            with pytest.raises(DeliveryError, match="3 attempts failed, last: HTTP 503"):
                await down.deliver(change(), body)
            with pytest.raises(DeliveryError, match="not retried"):
                await reject.deliver(change(), body)
        finally:
            for ch in (flaky, down, reject):
                await ch.stop()
            await runner.cleanup()

    asyncio.run(main())
    flaky_calls = [c for c in calls if c[1] == "/flaky"]
    assert len(flaky_calls) == 3 and len([c for c in calls if c[1] == "/down"]) == 3
    assert len([c for c in calls if c[1] == "/reject"]) == 1
    gaps = [b[0] - a[0] for a, b in zip(flaky_calls, flaky_calls[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential back-off
    for sent, _, body, signature in calls:
        t, v1 = (kv.split("=", 1)[1] for kv in signature.split(","))
        assert v1 == hmac.new(b"top-secret", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert abs(int(t) - (time.time() - (time.monotonic() - sent))) <= 2  # signed when sent
        assert verify(b"top-secret", signature, body)


def test_webhook_signature_carries_a_timestamp_so_replays_are_refused():
    body = b'{"change": "created"}'
    sig = sign(b"k", body, ts=1_700_000_000)
    assert sig.startswith("t=1700000000,v1=")
    assert verify(b"k", sig, body, now=1_700_000_100)
    assert not verify(b"k", sig, body, now=1_700_000_000 + 301)  # captured and replayed 5 minutes later
    assert not verify(b"k", sig, body + b" ", now=1_700_000_000)  # body changed
    assert not verify(b"other", sig, body, now=1_700_000_000)
    forged = sig.replace("t=1700000000", "t=1700000500")  # a replay with a fresh timestamp: MAC breaks
    assert not verify(b"k", forged, body, now=1_700_000_500)
    for junk in ("", "sha256=abc", "t=x,v1=y", "v1=" + "0" * 64):
        assert not verify(b"k", junk, body)


def test_change_info_reads_what_channels_need_and_rejects_junk():
    c = change("yellow", "escalated")
    assert (c.change, c.incident_id, c.version, c.level, c.grid_code) == ("escalated", "i1", 3, "yellow", GRID)
    assert c.tier_code("street") == "330102001" and c.tier_code("nowhere") is None
    from gridwatch.pipeline.schemas.codec import SchemaError
    for junk in (b"{", b"[]", b'{"v": 1}', b'{"v": 1, "change": "x", "incident": {"id": 1}}'):
        with pytest.raises(SchemaError):
            ChangeInfo.parse(junk)
