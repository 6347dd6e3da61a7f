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

from gridwatch.compat import fetch_wait_ms
from gridwatch.core.settings import STATE_DIR, Settings, SettingsError
from gridwatch.store.feed import follow as follow_topics

from . import console, hotline, open311, readiness, stream
from .audit import AuditLog
from .auth import Accounts, TokenSigner
from .catalog import Catalog
from .clients import parse_proxies
from .context import CTX, WebContext
from .demo_guard import refuse_demo_credentials
from .geocode import Geocoder
from .idempotency import RecentPosts
from .inputs import is_clean_text
from .prefs import Preferences
from .ratelimit import TokenBucket
from .revocation_feed import follow
from .views import IncidentView

log = logging.getLogger("gridwatch.web")
TOPICS = ("reports", "incidents", "actions", "audit")
CSP = ("default-src 'self'; img-src 'self' data: http: https:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")


class MalformedRequestFilter(logging.Filter):
    """aiohttp answers a request it cannot parse (control bytes in a header, a bad request line) with
    400 itself, then logs a full traceback at ERROR. That is a client's mistake, not ours: keep one
    warning line so an operator's log is not flooded by any scanner on the internet."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "malformed request answered %s: %s", (exc.code, exc.message.split("\n")[0])
            record.levelno, record.levelname, record.exc_info, record.exc_text = logging.WARNING, "WARNING", None, None
        return True


logging.getLogger("aiohttp.server").addFilter(MalformedRequestFilter())


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    is_311 = request.path.startswith("/open311")
    try:
        if not is_clean_url(request):
            raise web.HTTPBadRequest(text="the URL is not valid UTF-8 text")
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


def is_clean_url(request: web.Request) -> bool:
    """Whether the decoded path and query hold only real Unicode (no lone surrogates from bad %-escapes)."""
    return is_clean_text(request.path) and all(is_clean_text(k) and is_clean_text(v)
                                                for k, v in request.query.items())


def build_context(settings: Settings, city: Any = None, store_url: str | None = None) -> WebContext:
    from gridwatch.devices.registry import city_of
    from gridwatch.store import open_store

    if not 1 <= settings.stats.satisfied_min_rating <= 5:
        raise SettingsError(f"stats.satisfied_min_rating must be 1-5 (ratings are 1-5), got "
                            f"{settings.stats.satisfied_min_rating}")
    city = city or city_of(settings)
    w = settings.web
    try:
        parse_proxies(w.trusted_proxies)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    accounts = Accounts.load(settings.config_path(w.operators), city.gridmap)
    refuse_demo_credentials(settings, accounts)
    return WebContext(
        settings=settings, city=city,
        catalog=Catalog.load(settings.config_path(w.services)),
        accounts=accounts,
        signer=TokenSigner(w.session_secret or secrets.token_hex(32), w.session_ttl_s),
        view=IncidentView(open_store(settings, city.timezone, url=store_url)), geocoder=Geocoder(city.registry, city.gridmap),
        limiter=TokenBucket(float(w.rate_per_min), w.rate_burst), tz=ZoneInfo(city.timezone),
        posts=RecentPosts(w.dedupe_window_s),
        audit=AuditLog(w.audit_log or STATE_DIR / "audit.log", settings.topic("audit")),
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
    """The web app. ``kafka=False`` leaves Kafka out (unit tests feed ``app[CTX].view`` directly; without
    a configured ``store.url`` they get an in-memory store)."""
    c = build_context(settings, city, None if kafka or settings.store.url else "sqlite://")
    c.view.ready.set()  # the store is open: nothing to replay
    c.categories = category_groups(settings)
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.web.max_body_bytes)
    app[CTX] = c
    app[stream.STREAMS] = set()
    w = settings.web
    app[console.LOGIN_LIMIT] = TokenBucket(w.login_rate_per_min, w.login_burst)
    app[console.LOGIN_ACCOUNT_LIMIT] = TokenBucket(w.login_account_rate_per_min, w.login_account_burst)
    app[console.PREFS] = Preferences()
    app.add_routes(open311.routes())
    app.add_routes(console.routes())
    app.add_routes(readiness.routes())
    app.on_cleanup.append(_stop_hash_pool)
    app.add_routes(hotline.routes())
    app.router.add_get("/api/stream", stream.stream)
    app.on_shutdown.append(stream.close_streams)
    app.on_cleanup.append(_close_store)
    if kafka:
        app.cleanup_ctx.append(_kafka)
    return app


async def _close_store(app: web.Application) -> None:
    app[CTX].view.store.close()


async def _stop_hash_pool(app: web.Application) -> None:
    app[CTX].hash_pool.shutdown(wait=False, cancel_futures=True)


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    """Producer + view consumer for the app's lifetime."""
    from gridwatch.pipeline.kafka_io import ensure_topics, start_producer

    c = app[CTX]
    s = c.settings
    await ensure_topics(s, TOPICS)
    c.producer = await start_producer(s, linger_ms=0)
    if c.audit is not None:
        c.audit.producer = c.producer
    stop = asyncio.Event()
    task = asyncio.create_task(_consume_forever(c, stop), name="incident-view")
    logouts = asyncio.create_task(follow(c.revoked, s.kafka_bootstrap(), c.topic("audit"), stop), name="logouts")
    try:
        yield
    finally:
        stop.set()
        for t in (task, logouts):
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
        producer, c.producer = c.producer, None
        if c.audit is not None:
            c.audit.producer = None
        await producer.stop()


async def _consume_forever(c: WebContext, stop: asyncio.Event) -> None:
    """The live feed: incidents and reports into the store (from where it left off) and the streams."""
    topics = {"incidents": c.topic("incidents"), "reports": c.topic("reports")}
    bootstrap = c.settings.kafka_bootstrap()
    wait_ms = await fetch_wait_ms(c.settings.kafka, bootstrap, 100)
    while not stop.is_set():
        try:
            await follow_topics(c.view.store, bootstrap, topics, stop, consumer="api", fetch_max_wait_ms=wait_ms,
                                on_batch=c.view.publish, on_caught_up=c.view.caught_up.set)
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
