"""The 12345 citizen hotline link, inbound side: work orders filed like resident reports.

Why like a resident report: a hotline case is a resident's complaint taken by phone, so it goes to
``<prefix>.reports`` (source ``hotline``, ``external_id`` = the order id) and fusion treats it as any
report: it joins an open incident of the same problem nearby or opens one. Its report id comes from the
order id alone, so the hotline system re-sending an order (a timeout, a retry) files it once. Status goes
back through the ``hotline`` channel (agents/channels/hotline.py) on every change of the incident.

Authentication: a bearer token shared with the hotline system (``hotline.token_env`` / ``token_file``);
failed attempts are slowed like failed console logins.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gridwatch.pipeline.schemas.reports import hotline_report_id

from .console import LOGIN_LIMIT, _with_api_errors, api_error, json_body, parse_time
from .context import WebContext, ctx
from .open311 import Open311Error, build_report, produce_report, w3c
from .ratelimit import TokenBucket
from .views import CLOSED_STATUSES

ORDER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def hotline_tokens(c: WebContext) -> list[str]:
    """Accepted tokens, read on each request (a rotated token works without a restart)."""
    h = c.settings.hotline
    tokens = [t.strip() for t in os.environ.get(h.token_env, "").split(",") if t.strip()]
    if h.token_file:
        with contextlib.suppress(OSError):  # a missing file: no tokens from it (404 if none at all)
            tokens += [t.strip() for t in Path(h.token_file).read_text().splitlines() if t.strip()]
    return tokens


def require_hotline(request: web.Request) -> None:
    """401 unless the request carries one of the hotline tokens; 404 when none is configured (the link is off)."""
    c = ctx(request)
    limiter, client = request.app[LOGIN_LIMIT], f"hotline:{request.remote or '?'}"
    wait = limiter.wait(client)
    if wait > 0:
        raise api_error(429, "too many failed attempts; wait", {"Retry-After": TokenBucket.retry_after(wait)})
    tokens = hotline_tokens(c)
    if not tokens:
        raise api_error(404, f"the hotline link is off here: no token configured (set "
                             f"${c.settings.hotline.token_env} or hotline.token_file)")
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not given or not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
        limiter.take(client)
        raise api_error(401, "give the hotline token as Authorization: Bearer <token>")


def _str(body: dict[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    v = body.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ValueError(f"{key} is required")
        return ""
    if not isinstance(v, str | int) or isinstance(v, bool):
        raise ValueError(f"{key} must be a string")
    v = str(v).strip()
    if len(v) > limit:
        raise ValueError(f"{key} is longer than {limit} characters")
    return v


def order_params(c: WebContext, body: Any) -> tuple[str, dict[str, Any], int]:
    """(order id, Open311-style parameters, event time ms) of a work order; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("send a JSON object {order_id, content, category, address | lat/long, reported_at}")
    order_id = _str(body, "order_id", 64, required=True)
    if not ORDER_ID_RE.match(order_id):
        raise ValueError("order_id may hold letters, digits and _ . : - (at most 64)")
    content = _str(body, "content", 4000, required=True)
    category = _str(body, "category", 64)
    code = category if c.catalog.get(category) else c.catalog.classify(f"{category} {content}")[0]
    params: dict[str, Any] = {"service_code": code, "description": content, "account_id": f"hotline:{order_id}"}
    for src, dst in (("lat", "lat"), ("long", "long"), ("lon", "long")):
        v = body.get(src)
        if v is not None and not isinstance(v, dict | list | bool):
            params[dst] = str(v)
    address = _str(body, "address", 500)
    if address:
        params["address_string"] = address
    caller = body.get("caller") or {}
    if not isinstance(caller, dict):
        raise ValueError("caller must be an object {name, phone}")
    if caller.get("name"):
        params["first_name"] = _str(caller, "name", 200)
    if caller.get("phone"):
        params["phone"] = _str(caller, "phone", 200)
    when = body.get("reported_at")
    ms = parse_time(when, c) if when is not None else int(time.time() * 1000)
    return order_id, params, ms


async def post_order(request: web.Request) -> web.Response:
    """File a hotline work order; 201 the first time, 200 with ``duplicate: true`` after that."""
    require_hotline(request)
    c = ctx(request)
    body = await json_body(request, limit=c.settings.web.max_body_bytes)
    try:
        order_id, params, ms = order_params(c, body)
        report = build_report(c, params, source="hotline", requested_ms=ms)
    except ValueError as e:
        raise api_error(400, str(e)) from None
    except Open311Error as e:
        raise api_error(e.status, "; ".join(e.descriptions)) from None
    rid = hotline_report_id(order_id)
    answer = {"order_id": order_id, "service_request_id": rid, "status_url": f"/api/hotline/orders/{order_id}"}
    if rid in c.view.reports:
        return web.json_response({**answer, **order_status(c, order_id), "duplicate": True})
    report.service_request_id, report.external_id = rid, order_id
    await _with_api_errors(produce_report(c, report))
    return web.json_response({**answer, "grid_code": report.grid_code, "service_code": report.service_code,
                              "status": "received", "closed": False, "incident_id": None, "duplicate": False},
                             status=201)


def order_status(c: WebContext, order_id: str) -> dict[str, Any]:
    """Where a work order stands: its incident's status, department(s), supervision, rating."""
    rid = hotline_report_id(order_id)
    inc = c.view.incident_of_report(rid)
    if inc is None:
        return {"status": "received", "closed": False, "incident_id": None}
    return {"status": inc["status"], "closed": inc["status"] in CLOSED_STATUSES, "incident_id": inc["id"],
            "level": inc.get("level"), "department": inc.get("department"), "assist": inc.get("assist", []),
            "supervision": inc.get("supervision"), "rating": inc.get("rating"),
            "updated": w3c(inc.get("updated_ts"), c), "version": inc.get("version")}


async def get_order(request: web.Request) -> web.Response:
    require_hotline(request)
    c = ctx(request)
    order_id = request.match_info["order_id"]
    rid = hotline_report_id(order_id)
    if rid not in c.view.reports:
        raise api_error(404, f"no hotline order {order_id!r}")
    return web.json_response({"order_id": order_id, "service_request_id": rid, **order_status(c, order_id)})


def routes() -> list[web.RouteDef]:
    return [web.post("/api/hotline/orders", post_order), web.get("/api/hotline/orders/{order_id}", get_order)]
