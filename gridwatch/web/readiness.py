"""Liveness and readiness of the api: ``/api/health/live``, ``/api/health/ready`` (and ``/api/health``).

Why two: a load balancer must stop sending residents' reports to an api that cannot store them
(readiness), but must not restart a process only because Kafka is away (liveness). Readiness asks
the brokers, it does not trust a flag: a Kafka metadata round trip and an MQTT CONNECT/CONNACK,
each bounded by ``web.ready_timeout_s``. A frozen broker keeps its TCP connections open, so only a
round trip tells it apart from a live one.

Ready means: Kafka answers and the incident view has caught up once. MQTT is checked and reported
too; the api itself does not publish to MQTT, so an MQTT outage is shown (``mqtt.ok: false``) but
does not take the api out of the load balancer.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from typing import Any

from aiohttp import web

from gridwatch.core.settings import Settings, SettingsError

from .context import WebContext, ctx

CACHE_S = 1.0  # checks are shared by the requests of one second (a probe storm costs one round trip)


async def kafka_check(c: WebContext, timeout: float) -> dict[str, Any]:
    if c.producer is None:
        return {"ok": False, "detail": "not connected yet"}
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(c.producer.client.fetch_all_metadata(), timeout)
    except Exception as e:  # timeout (frozen or unreachable broker), connection refused, ...
        return {"ok": False, "detail": f"no metadata answer within {timeout:g} s ({type(e).__name__})"}
    return {"ok": True, "ms": round((time.monotonic() - t0) * 1000, 1)}


def _mqtt_connect_packet(client_id: str, user: str | None, password: str | None) -> bytes:
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("!H", len(b)) + b

    flags = 0x02 | (0x80 if user else 0) | (0x40 if user and password else 0)  # clean session
    payload = s(client_id) + (s(user) if user else b"") + (s(password) if user and password else b"")
    body = s("MQTT") + bytes([4, flags]) + struct.pack("!H", 10) + payload
    n, length = len(body), b""
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            break
    return b"\x10" + length + body


async def mqtt_check(settings: Settings, timeout: float) -> dict[str, Any]:
    """An MQTT 3.1.1 CONNECT with this component's credentials; ok when the CONNACK says accepted."""
    try:
        host, port, user, password = settings.mqtt_endpoint()
        tls = settings.mqtt_tls()
    except SettingsError as e:
        return {"ok": None, "detail": f"not configured: {e}"}
    ctx_ssl = None
    if tls:
        ctx_ssl = ssl.create_default_context(cafile=settings.mqtt.ca_file or None)
    t0 = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=ctx_ssl)
            writer.write(_mqtt_connect_packet(f"gw-ready-{time.monotonic_ns() % 10**9}", user, password))
            await writer.drain()
            ack = await reader.readexactly(4)
            if ack[0] == 0x20 and ack[3] == 0:
                writer.write(b"\xe0\x00")  # DISCONNECT
                await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as e:
        return {"ok": False, "detail": f"{host}:{port}: no CONNACK within {timeout:g} s ({type(e).__name__})"}
    finally:
        if writer is not None:
            writer.close()
    if ack[0] != 0x20:
        return {"ok": False, "detail": f"{host}:{port}: not an MQTT broker"}
    if ack[3] != 0:
        return {"ok": False, "detail": f"{host}:{port}: connection refused (CONNACK code {ack[3]}: check "
                                       f"mqtt.username / GRIDWATCH_MQTT_PASSWORD)"}
    return {"ok": True, "ms": round((time.monotonic() - t0) * 1000, 1)}


_cache: dict[int, tuple[float, dict[str, Any]]] = {}


async def checks(c: WebContext) -> dict[str, Any]:
    """Kafka and MQTT (at most one round trip each per CACHE_S) and the view."""
    hit = _cache.get(id(c))
    if hit is None or hit[0] <= time.monotonic():
        timeout = c.settings.web.ready_timeout_s
        kafka, mqtt = await asyncio.gather(kafka_check(c, timeout), mqtt_check(c.settings, timeout))
        hit = (time.monotonic() + CACHE_S, {"kafka": kafka, "mqtt": mqtt})
        _cache[id(c)] = hit
    out = {**hit[1], "view": {"ok": c.view.ready.is_set()}}
    out["ready"] = bool(out["kafka"]["ok"] and out["view"]["ok"])
    return out


async def live(request: web.Request) -> web.Response:
    """The process answers: nothing else is asked (a restart would not bring Kafka back)."""
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    """200 when Kafka answers and the view caught up, else 503 with what is missing."""
    result = await checks(ctx(request))
    return web.json_response(result, status=200 if result["ready"] else 503)


async def health(request: web.Request) -> web.Response:
    """Everything at once for people (always 200): readiness checks, the view's size, counters."""
    c = ctx(request)
    result = await checks(c)
    # exact up to 10,000 rows, then the database's estimate: health never scans the tables
    incidents, reports = await asyncio.to_thread(lambda: (len(c.view.incidents), len(c.view.reports)))
    return web.json_response({"ready": c.view.ready.is_set(), "kafka": result["kafka"]["ok"],
                              "checks": result, "incidents": incidents, "reports": reports,
                              "changes_seen": c.view.changes_seen, "streams": len(c.view.subscribers),
                              "counters": c.stats})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/health", health), web.get("/api/health/live", live), web.get("/api/health/ready", ready)]
