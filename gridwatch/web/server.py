"""The aiohttp application of ``gridwatch api``: Open311, console API, live stream, static console.

``create_app`` composes the route modules around one :class:`WebContext`; its Kafka side (producer
for reports and actions, consumer feeding the incident view) starts with the app and stops with it.
Errors never leak as tracebacks: Open311 paths answer in Open311's error format, ``/api`` in JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gridwatch.core.settings import Settings

from . import console, open311, stream
from .auth import Accounts, TokenSigner
from .catalog import Catalog
from .context import CTX, WebContext
from .geocode import Geocoder
from .prefs import Preferences
from .ratelimit import TokenBucket
from .views import IncidentView, consume

log = logging.getLogger("gridwatch.web")
TOPICS = ("reports", "incidents", "actions")
CSP = ("default-src 'self'; img-src 'self' data: http: https:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    is_311 = request.path.startswith("/open311")
    try:
        resp = await handler(request)
    except open311.Open311Error as e:
        if is_311:
            return open311.error_response(open311.fmt_of(request), e.status, e.descriptions, e.headers)
        raise console.api_error(e.status, "; ".join(e.descriptions), e.headers) from None
    except web.HTTPException as e:
        if is_311 and e.status >= 400:
            desc = e.text if e.text and not e.text.startswith(str(e.status)) else (e.reason or "error")
            keep = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
            return open311.error_response(open311.fmt_of(request), e.status, [desc], keep or None)
        if request.path.startswith("/api") and e.status >= 400 and e.content_type != "application/json":
            keep = {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")}
            return web.json_response({"error": e.reason}, status=e.status, headers=keep or None)
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        if is_311:
            return open311.error_response(open311.fmt_of(request), 500, ["internal error"])
        return web.json_response({"error": "internal error"}, status=500)
    if not resp.prepared:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.path.startswith("/console"):
            resp.headers.setdefault("Content-Security-Policy", CSP)
            resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp


def build_context(settings: Settings, city: Any = None) -> WebContext:
    from gridwatch.devices.registry import city_of

    city = city or city_of(settings)
    w = settings.web
    return WebContext(
        settings=settings, city=city,
        catalog=Catalog.load(settings.config_path(w.services)),
        accounts=Accounts.load(settings.config_path(w.operators), city.gridmap),
        signer=TokenSigner(w.session_secret or secrets.token_hex(32), w.session_ttl_s),
        view=IncidentView(), geocoder=Geocoder(city.registry, city.gridmap),
        limiter=TokenBucket(float(w.rate_per_min), w.rate_burst), tz=ZoneInfo(city.timezone),
    )


def category_groups(settings: Settings) -> list[str]:
    """Incident category groups of the backend's incidents.yaml (the console's category filter)."""
    import yaml

    from gridwatch.agents.routing import config_path

    path = config_path(settings)
    try:
        groups = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("groups") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return sorted(groups) if isinstance(groups, dict) else []


def create_app(settings: Settings, *, city: Any = None, kafka: bool = True) -> web.Application:
    """The web app. ``kafka=False`` leaves Kafka out (unit tests feed ``app[CTX].view`` directly)."""
    c = build_context(settings, city)
    c.categories = category_groups(settings)
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.web.max_body_bytes)
    app[CTX] = c
    app[stream.STREAMS] = set()
    app[console.LOGIN_LIMIT] = TokenBucket(20, 10)
    app[console.PREFS] = Preferences()
    app.add_routes(open311.routes())
    app.add_routes(console.routes())
    app.router.add_get("/api/stream", stream.stream)
    app.on_shutdown.append(stream.close_streams)
    if kafka:
        app.cleanup_ctx.append(_kafka)
    else:
        c.view.ready.set()
    return app


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    """Producer + view consumer for the app's lifetime."""
    from gridwatch.pipeline.kafka_io import ensure_topics, start_producer

    c = app[CTX]
    s = c.settings
    await ensure_topics(s, TOPICS)
    c.producer = await start_producer(s, linger_ms=0)
    stop = asyncio.Event()
    task = asyncio.create_task(_consume_forever(c, stop), name="incident-view")
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        producer, c.producer = c.producer, None
        await producer.stop()


async def _consume_forever(c: WebContext, stop: asyncio.Event) -> None:
    topics = {"incidents": c.topic("incidents"), "reports": c.topic("reports")}
    while not stop.is_set():
        try:
            await consume(c.view, c.settings.kafka_bootstrap(), topics, stop)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # broker gone: keep serving what we have, re-read when it is back
            log.warning("incident view consumer failed (%s); retrying", e)
            await asyncio.sleep(2)


async def serve(settings: Settings, stop: asyncio.Event, *, host: str | None = None, port: int | None = None,
                city: Any = None) -> None:
    """Run the api until ``stop`` is set; logs ``api listening on URL`` once it accepts connections."""
    app = create_app(settings, city=city)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=3)
    await runner.setup()
    site = web.TCPSite(runner, host or settings.web.host, settings.web.port if port is None else port)
    await site.start()
    sock = site._server.sockets[0].getsockname() if site._server and site._server.sockets else (host, port)  # type: ignore[union-attr]
    url = f"http://{sock[0]}:{sock[1]}"
    log.info("api listening on %s (console %s/console, Open311 %s/open311/v2/)", url, url, url)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
