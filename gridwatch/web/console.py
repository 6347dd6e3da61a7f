"""The operator console: the page (``/console``) and its JSON API (``/api/...``).

Why every handler re-checks the scope: the page hides what an operator may not see, but the API is
the boundary. Each endpoint resolves the operator from the token, then filters or refuses (403)
by the incident's tier chain, so a hand-made request for another town's incident gets nothing.
Actions are not applied here: they are produced as ``OperatorAction`` to ``<prefix>.actions``; the
backend applies them and the resulting ``IncidentChange`` comes back through the view and stream.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gridwatch.agents.lifecycle import TRANSITIONS, LifecycleError, check_action
from gridwatch.core.settings import STATE_DIR
from gridwatch.pipeline.schemas.codec import SchemaError
from gridwatch.pipeline.schemas.incidents import STATUSES, Incident, OperatorAction
from gridwatch.store.evidence import evidence_refs
from gridwatch.store.records import list_rank

from .auth import Operator
from .clients import real_client
from .context import WebContext, ctx
from .inputs import BadInput, check_unicode, parse_json
from .open311 import Open311Error, build_report, produce_action, produce_report
from .prefs import I18N_DIR, LANGUAGES, Preferences
from .ratelimit import TokenBucket
from .revocations import token_id
from .statistics import stats, stats_from_store
from .views import CLOSED_STATUSES, public_incident, summary

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "gw_session"
LOGIN_LIMIT: web.AppKey[TokenBucket] = web.AppKey("login_limit", TokenBucket)  # failed logins per client
LOGIN_ACCOUNT_LIMIT: web.AppKey[TokenBucket] = web.AppKey("login_account_limit", TokenBucket)  # ... per account
PREFS: web.AppKey[Preferences] = web.AppKey("console_prefs", Preferences)


def api_error(status: int, message: str, headers: dict[str, str] | None = None,
              fields: dict[str, Any] | None = None) -> web.HTTPException:
    """A JSON error the console shows (``fields``: machine-readable details it can translate from)."""
    kw: dict[str, Any] = {"text": json.dumps({"error": message, **(fields or {})}),
                          "content_type": "application/json", "headers": headers}
    if status == 413:  # its constructor wants the sizes first (a TypeError, i.e. a 500, without them)
        return web.HTTPRequestEntityTooLarge(0, **kw)
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
           409: web.HTTPConflict, 415: web.HTTPUnsupportedMediaType, 422: web.HTTPUnprocessableEntity,
           429: web.HTTPTooManyRequests, 503: web.HTTPServiceUnavailable}[status]
    return cls(**kw)


# ---------------------------------------------------------------------------------------- auth
def request_token(request: web.Request) -> str:
    """The bearer token, else the session cookie ("" when neither)."""
    auth = request.headers.get("Authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    return token or request.cookies.get(COOKIE, "")


def require_operator(request: web.Request) -> Operator:
    """The logged-in operator (bearer token or session cookie, not logged out), or 401."""
    c = ctx(request)
    token = request_token(request)
    claims = c.signer.claims(token) if token else None
    op = c.accounts.get(claims[0]) if claims else None
    if op is None or c.revoked.is_revoked(token_id(token)):
        raise api_error(401, "log in first (POST /api/login)")
    return op


def client_of(request: web.Request) -> str:
    """The real client address (behind the proxies of web.trusted_proxies)."""
    return real_client(request.remote, request.headers.get("X-Forwarded-For", ""),
                       ctx(request).settings.web.trusted_proxies)


def audit(request: web.Request, event: str, **fields: Any) -> None:
    c = ctx(request)
    if c.audit is not None:
        c.audit.write(event, client=client_of(request), **fields)


def visible_or_403(request: web.Request, op: Operator, incident_id: str) -> dict[str, Any]:
    inc = ctx(request).view.incidents.get(incident_id)
    if inc is None:
        raise api_error(404, f"no incident {incident_id!r}")
    if op.scope not in inc["_codes"]:
        raise api_error(403, f"incident {incident_id} is outside your scope ({op.scope})")
    return inc


async def json_body(request: web.Request, *, limit: int = 65536) -> Any:
    if request.content_type != "application/json":
        raise api_error(415, "send JSON (Content-Type: application/json)")
    if request.content_length and request.content_length > limit:
        raise api_error(413, f"body over {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:  # chunked bodies carry no Content-Length
        raise api_error(413, f"body over {limit} bytes")
    try:
        return parse_json(raw)
    except BadInput as e:
        raise api_error(400, str(e)) from None


async def login(request: web.Request) -> web.Response:
    """Only failed attempts cost: per client address and per account name, so guessing is slowed
    while operators behind the same proxy as an attacker still get in."""
    c = ctx(request)
    by_client, by_account = request.app[LOGIN_LIMIT], request.app[LOGIN_ACCOUNT_LIMIT]
    client = client_of(request)
    wait = by_client.wait(client)
    if wait > 0:
        audit(request, "login_throttled", reason="client")
        raise api_error(429, "too many failed logins from your address; wait",
                        {"Retry-After": TokenBucket.retry_after(wait)})
    if request.content_type == "application/json":
        body = await json_body(request, limit=4096)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        if request.content_length and request.content_length > 4096:
            raise api_error(413, "body over 4096 bytes")
        try:
            body = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
            check_unicode(body)
        except BadInput as e:
            raise api_error(400, str(e)) from None
        except (ValueError, AssertionError, UnicodeDecodeError) as e:  # e.g. multipart without a boundary
            raise api_error(400, f"cannot read the form: {e}") from None
    else:
        raise api_error(415, "send JSON {user, password} or a form")
    if not isinstance(body, dict) or not isinstance(body.get("user"), str) or not isinstance(body.get("password"), str):
        raise api_error(400, "give user and password")
    user, password = body["user"][:128], body["password"]
    wait = by_account.wait(user)
    if wait > 0:
        audit(request, "login_throttled", user=user, reason="account")
        raise api_error(429, "too many failed logins for this account; wait",
                        {"Retry-After": TokenBucket.retry_after(wait)})
    loop = asyncio.get_running_loop()
    op = await loop.run_in_executor(c.hash_pool, c.accounts.login, user, password)
    if op is None:
        by_client.take(client)
        by_account.take(user)
        audit(request, "login_failed", user=user)
        raise api_error(401, "wrong user or password")
    token = c.signer.issue(op.user)
    audit(request, "login_ok", user=op.user, role=op.role, scope=op.scope, token_id=token_id(token))
    resp = web.json_response({"token": token, "operator": op.public(c.gridmap), "expires_in": c.signer.ttl_s})
    resp.set_cookie(COOKIE, token, max_age=c.signer.ttl_s, httponly=True, samesite="Strict", path="/")
    return resp


async def logout(request: web.Request) -> web.Response:
    """Ends the session: the token (bearer or cookie) is refused from now on, here at once and on the
    other api instances once they read the logout from ``<prefix>.audit`` (revocation_feed.py)."""
    c = ctx(request)
    token = request_token(request)
    claims = c.signer.claims(token) if token else None
    if claims is not None:
        tid = token_id(token)
        c.revoked.revoke(tid, claims[1])
        audit(request, "logout", user=claims[0], token_id=tid, expires=claims[1])  # other instances revoke it too
    resp = web.json_response({"ok": True, "revoked": claims is not None})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def me(request: web.Request) -> web.Response:
    op = require_operator(request)
    c = ctx(request)
    return web.json_response({**op.public(c.gridmap), "timezone": c.city.timezone, "city": c.city.name,
                              "city_zh": c.gridmap.area(c.city.code).name_zh if c.city.code in c.gridmap else "",
                              "categories": c.categories, "lang": request.app[PREFS].get(op.user).get("lang"),
                              "languages": list(LANGUAGES)})


async def put_preferences(request: web.Request) -> web.Response:
    """PUT {"lang": "zh-CN" | "en"}: remembered for the operator on every desk."""
    op = require_operator(request)
    body = await json_body(request, limit=4096)
    if not isinstance(body, dict) or not body:
        raise api_error(400, "send a JSON object, e.g. {\"lang\": \"zh-CN\"}")
    try:
        return web.json_response(request.app[PREFS].update(op.user, body))
    except ValueError as e:
        raise api_error(400, str(e)) from None


# ---------------------------------------------------------------------------------------- incidents
def _sql_filters(request: web.Request, op: Operator) -> tuple[str, dict[str, Any]]:
    """(area code, filters) of the query that SQL answers on the store's indexes: area, tier, level, status."""
    c = ctx(request)
    q = request.query
    area = q.get("area") or q.get("grid") or ""
    if area:
        if area not in c.gridmap:
            raise api_error(400, f"unknown area code {area!r}")
        if op.scope not in [a.code for a in c.gridmap.chain(area)]:
            raise api_error(403, f"area {area} is outside your scope ({op.scope})")
    statuses: list[str] = []
    if q.get("status"):
        want = set(q["status"].split(","))
        statuses = [s for s in STATUSES if s in want or ("open" in want and s not in CLOSED_STATUSES)
                    or ("closed" in want and s in CLOSED_STATUSES)] or ["-"]  # "-": matches nothing
    levels = q["level"].split(",") if q.get("level") else []
    if q.get("supervised") and q["supervised"] not in SUPERVISED_FILTERS:
        raise api_error(400, "supervised must be 1, 0 or overdue")
    return area or op.scope, {"statuses": statuses, "levels": levels, "tier": q.get("tier", "")}


def _filtered(request: web.Request, op: Operator, month: str = "") -> list[dict[str, Any]]:
    """The operator's incidents matching the query's filters: area, tier, level and status (and the
    month) in SQL on the store's indexes; category (groups or source types) and supervision here."""
    q = request.query
    scope, where = _sql_filters(request, op)
    incs = ctx(request).view.visible(scope, month=month, **where)
    if q.get("category"):
        cats = set(q["category"].split(","))
        incs = [i for i in incs if i.get("category_group") in cats or cats & {s.get("type") for s in i["sources"]}]
    if q.get("supervised"):
        incs = [i for i in incs if supervised_matches(i, q["supervised"])]
    return incs


def report_ids(incs: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for i in incs for s in i.get("sources", []) if s.get("kind") == "report"]


SUPERVISED_FILTERS = ("1", "true", "0", "false", "overdue")


def supervised_matches(inc: dict[str, Any], want: str) -> bool:
    """``supervised=1``: under a supervision notice; ``0``: not; ``overdue``: its notice's deadline passed."""
    sv = inc.get("supervision")
    if want == "overdue":
        return bool(sv and sv.get("overdue"))
    return (sv is not None) == (want in ("1", "true"))


async def list_incidents(request: web.Request) -> web.Response:
    """Open before closed, red first, newest first (ties by id). A page comes from SQL (an index walk
    from ``after``, the previous page's ``next``, whatever the history) and the total from the per-area
    counters (``total_exact`` False: at least ``total``); a category that is not one of the backend's
    category groups (an event or service type of the incident's sources) is filtered here."""
    op = require_operator(request)
    c = ctx(request)
    try:
        limit = max(1, min(int(request.query.get("limit", "500")), 5000))
    except ValueError:
        raise api_error(400, "limit must be a number") from None
    after = _cursor(request.query.get("after", ""))
    cats = [x for x in request.query.get("category", "").split(",") if x]
    if cats and not set(cats) <= set(c.categories):  # source types: matched on the documents here
        incs = _filtered(request, op)

        def order(rank: int, updated: int, iid: str) -> tuple[Any, ...]:
            return rank, -updated, _desc(iid)

        def cursor(i: dict[str, Any]) -> tuple[int, int, str]:
            return list_rank(i["status"], i.get("level") or "blue"), i.get("updated_ts") or 0, i["id"]

        incs.sort(key=lambda i: order(*cursor(i)))
        if after is not None:
            incs = [i for i in incs if order(*cursor(i)) > order(*after)]
        total, exact, page = len(incs), True, incs[:limit]
        nxt = cursor(page[-1]) if len(incs) > limit else None
    else:
        scope, where = _sql_filters(request, op)
        sv = {"true": "1", "false": "0"}.get(request.query.get("supervised", ""), request.query.get("supervised", ""))
        res = await asyncio.to_thread(c.view.store.page, scope, limit, after=after, categories=cats, supervised=sv,
                                      **where)
        total, exact, page, nxt = res.total, res.exact, res.incidents, res.next
    reports = c.view.store.reports_by_id(report_ids(page))
    return web.json_response({"total": total, "total_exact": exact, "ready": c.view.ready.is_set(),
                              "next": f"{nxt[0]}:{nxt[1]}:{nxt[2]}" if nxt else None,
                              "incidents": [summary(i, reports) for i in page]})


def _desc(s: str) -> tuple[int, ...]:
    """Sorts strings backwards (the list's ties: larger id first)."""
    return tuple(-ord(ch) for ch in s) + (1,)


def _cursor(raw: str) -> tuple[int, int, str] | None:
    """``after=<rank>:<updated_ts>:<id>`` (a page's ``next``) -> the keyset cursor."""
    if not raw:
        return None
    try:
        rank, upd, iid = raw.split(":", 2)
        return int(rank), int(upd), iid
    except ValueError:
        raise api_error(400, "after must be the 'next' of the previous page") from None


async def get_incident(request: web.Request) -> web.Response:
    op = require_operator(request)
    c = ctx(request)
    inc = visible_or_403(request, op, request.match_info["id"])
    body = public_incident(inc)
    body["images"] = evidence_refs(inc)
    reports = c.view.store.reports_by_id(report_ids([inc]))
    body["reports"] = {rid: _report_view(c, rep) for rid, rep in reports.items()}
    return web.json_response(body)


async def get_timeline(request: web.Request) -> web.Response:
    """Every stored version of the case file (一案一档), oldest first: what changed, when, by whom."""
    op = require_operator(request)
    c = ctx(request)
    inc = visible_or_403(request, op, request.match_info["id"])
    versions = [{"version": ch["incident"]["version"], "change": ch.get("change"), "ts": ch.get("ts"),
                 "transition": ch.get("transition"), "status": ch["incident"].get("status"),
                 "level": ch["incident"].get("level")} for ch in c.view.store.timeline(inc["id"])]
    return web.json_response({"id": inc["id"], "versions": versions, "history": inc.get("history", [])})


def _report_view(c: WebContext, rep: dict[str, Any] | None) -> dict[str, Any] | None:
    if rep is None:
        return None
    return {k: rep.get(k) for k in ("service_request_id", "service_code", "description", "address", "media_url",
                                    "source", "requested_ms", "device_id")}


async def post_action(request: web.Request) -> web.Response:
    op = require_operator(request)
    c = ctx(request)
    inc = visible_or_403(request, op, request.match_info["id"])
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise api_error(400, "give {\"action\": ..., \"note\": ...}")
    action = body["action"]
    if not op.may(action) or action in ("evaluate", "chat_import"):
        raise api_error(403, f"role {op.role} may not {action!r} (allowed: {', '.join(op.public(c.gridmap)['actions'])})")
    note, department, level = body.get("note", ""), body.get("department", ""), body.get("level", "")
    if not all(isinstance(x, str) for x in (note, department, level)) or len(note) > 2000 or len(department) > 100:
        raise api_error(400, "note (<= 2000 chars), department and level must be strings")
    if action in ("comment", "supervise") and not note.strip():
        raise api_error(400, f"a {action} needs a note")
    now = int(time.time() * 1000)
    assist = body.get("assist")
    if assist is not None and (action != "dispatch" or not isinstance(assist, list)):
        raise api_error(400, "assist (assisting departments, 吹哨报到) is a list of department names given with dispatch")
    deadline = supervision_deadline(body, now, c) if action == "supervise" else None
    act = OperatorAction(inc["id"], inc["grid_code"], action, op.user, now, actor_tier_code=op.scope,
                         note=note.strip(), department=department.strip(), level=level, assist=assist,
                         deadline=deadline)
    try:
        act.validate()
    except SchemaError as e:
        raise api_error(400, str(e)) from None
    refuse_now(inc, act)
    await _with_api_errors(produce_action(c, act))
    audit(request, "action", user=op.user, incident=inc["id"], action=action, action_id=act.id,
          note=act.note[:200] or None, department=act.department or None, level=act.level or None)
    return web.json_response({"accepted": True, "action_id": act.id, "incident_id": inc["id"],
                              "version": inc.get("version")}, status=202)


MAX_SUPERVISION_H = 24 * 90


def supervision_deadline(body: dict[str, Any], now_ms: int, c: WebContext) -> int:
    """The deadline of a supervision notice: ``deadline_h`` hours from now, or ``deadline`` as epoch ms
    or an ISO date-time (city time zone without an offset); in the future, within 90 days."""
    hours, at = body.get("deadline_h"), body.get("deadline")
    if (hours is None) == (at is None):
        raise api_error(400, "a supervision notice needs deadline_h (hours from now) or deadline (a date-time)")
    if hours is not None:
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= MAX_SUPERVISION_H:
            raise api_error(400, f"deadline_h must be a number of hours, more than 0 and at most {MAX_SUPERVISION_H}")
        return now_ms + int(hours * 3_600_000)
    if isinstance(at, int) and not isinstance(at, bool):
        ms = at
    elif isinstance(at, str):
        try:
            d = datetime.fromisoformat(at.strip())
        except ValueError:
            raise api_error(400, f"deadline {at!r} is not a date-time such as 2026-11-21T18:00:00+08:00") from None
        ms = int((d if d.tzinfo else d.replace(tzinfo=c.tz)).timestamp() * 1000)
    else:
        raise api_error(400, "deadline must be epoch milliseconds or an ISO 8601 date-time")
    if not now_ms < ms <= now_ms + MAX_SUPERVISION_H * 3_600_000:
        raise api_error(400, "deadline must be in the future, at most 90 days ahead")
    return ms


def refuse_now(inc: dict[str, Any], act: OperatorAction) -> None:
    """409 with the workflow's own reason when the incident's current state does not allow ``act``.

    The same check the backend runs (agents.lifecycle.check_action), so the console shows why at once
    instead of waiting for a change that never comes. Actions the lifecycle does not know are left to it.
    """
    if act.action not in TRANSITIONS:
        return
    try:
        check_action(Incident.from_dict(public_incident(inc)), act)
    except SchemaError:
        return  # a snapshot of another schema version: let the backend decide
    except LifecycleError as e:
        raise api_error(409, str(e), fields={"reason": e.reason, "action": act.action, "status": inc["status"],
                                             "allowed_from": list(TRANSITIONS[act.action][0])}) from None


async def _with_api_errors(coro: Any) -> Any:
    try:
        return await coro
    except Open311Error as e:
        raise api_error(e.status, "; ".join(e.descriptions), e.headers) from None


# ---------------------------------------------------------------------------------------- map, stats
async def city_map(request: web.Request) -> web.Response:
    """Grid polygons, the area tree and device positions inside the operator's scope (no tiles)."""
    op = require_operator(request)
    c = ctx(request)
    gm = c.gridmap
    grids = gm.grids_under(op.scope)
    gset = set(grids)
    areas = [{"code": a.code, "name": a.name, "name_zh": a.name_zh, "tier": a.tier, "parent": a.parent}
             for a in gm.areas() if a.code in gset or (a.tier != "grid" and _under(gm, a.code, op.scope))]
    kinds = sorted({d.kind for d in c.registry})
    devices = [[d.id, kinds.index(d.kind), round(d.lat, 6), round(d.lon, 6), d.grid_code]
               for g in grids for d in c.registry.by_grid(g)]
    return web.json_response({
        "scope": op.scope, "bbox": gm.bbox(op.scope), "centre": c.city.centre,
        "chain": [{"code": a.code, "name": a.name, "name_zh": a.name_zh, "tier": a.tier, "parent": a.parent}
                  for a in gm.chain(op.scope)],  # the scope and the areas above it, for names
        "areas": areas, "grids": [{"code": g, "name": gm.area(g).name, "name_zh": gm.area(g).name_zh,
                                   "rings": [[[round(x, 6), round(y, 6)] for x, y in r] for r in gm.polygon(g)]}
                                  for g in grids],
        "device_kinds": kinds, "devices": devices,
    })


def _under(gm: Any, code: str, scope: str) -> bool:
    return scope in [a.code for a in gm.chain(code)]


async def get_stats(request: web.Request) -> web.Response:
    op = require_operator(request)
    c = ctx(request)
    month = request.query.get("month") or None
    if month is not None:
        try:
            datetime.strptime(month, "%Y-%m")
        except ValueError:
            raise api_error(400, "month must look like 2026-11") from None
    area = request.query.get("area") or request.query.get("grid") or ""
    months = c.view.store.months(area if area in c.gridmap else op.scope)
    month = month or (months[0] if months else datetime.now(c.tz).strftime("%Y-%m"))
    q, sat = request.query, c.settings.stats.satisfied_min_rating
    if q.get("category") or q.get("supervised") or q.get("tier"):  # filters the counters do not have
        incs = _filtered(request, op, month)
        return web.json_response(stats(incs, c.gridmap, c.tz, month, months=months, satisfied_min=sat))
    scope, where = _sql_filters(request, op)
    body = await asyncio.to_thread(stats_from_store, c.view.store, c.gridmap, scope, month, months,
                                   statuses=where["statuses"], levels=where["levels"], satisfied_min=sat)
    return web.json_response(body)


# ---------------------------------------------------------------------------------------- chat import
def parse_time(value: Any, c: WebContext) -> int:
    """Epoch ms (or s), ISO 8601, or "YYYY-MM-DD HH:MM[:SS]" in the city's time zone -> epoch ms."""
    if isinstance(value, bool):
        raise ValueError("time must be a date-time or epoch milliseconds")
    if isinstance(value, int | float):
        ms = int(value if value > 1e11 else value * 1000)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("/", "-")
        if text.isdigit():
            return parse_time(int(text), c)
        try:
            d = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"time {value!r} is not a date-time (e.g. 2026-11-20 22:05)") from None
        ms = int((d if d.tzinfo else d.replace(tzinfo=c.tz)).timestamp() * 1000)
    else:
        raise ValueError("time is required (ISO 8601 or epoch milliseconds)")
    if not 946_684_800_000 <= ms <= int(time.time() * 1000) + 86_400_000:
        raise ValueError("time is before 2000 or in the future")
    return ms


async def chat_import(request: web.Request) -> web.Response:
    """Grid workers' free-text chat records -> resident reports with a guessed category.

    Body: ``[{"text": ..., "time": ..., "place": ...}]`` (or ``lat``/``long`` instead of ``place``;
    optional ``worker``). Each record is answered on its own: the import goes on past bad ones.
    """
    op = require_operator(request)
    c = ctx(request)
    if not op.may("chat_import"):
        raise api_error(403, f"role {op.role} may not import chat records")
    body = await json_body(request, limit=c.settings.web.max_body_bytes)
    if isinstance(body, dict) and isinstance(body.get("records"), list):
        body = body["records"]
    if not isinstance(body, list) or not body:
        raise api_error(400, "send a JSON list of {text, time, place | lat/long}")
    if len(body) > c.settings.web.chat_import_max:
        raise api_error(413, f"at most {c.settings.web.chat_import_max} records per import")
    results = []
    for n, rec in enumerate(body):
        try:
            results.append({"index": n, **await _import_one(c, op, rec)})
        except (ValueError, Open311Error) as e:
            msg = "; ".join(e.descriptions) if isinstance(e, Open311Error) else str(e)
            if isinstance(e, Open311Error) and e.status == 503:
                raise api_error(503, msg, e.headers) from None
            results.append({"index": n, "error": msg})
    ok = sum(1 for r in results if "error" not in r)
    audit(request, "chat_import", user=op.user, accepted=ok, rejected=len(results) - ok,
          ids=[r["service_request_id"] for r in results if "service_request_id" in r][:50])
    return web.json_response({"accepted": ok, "rejected": len(results) - ok, "results": results})


async def _import_one(c: WebContext, op: Operator, rec: Any) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise ValueError("a record must be an object {text, time, place}")
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is required")
    ms = parse_time(rec.get("time"), c)
    code, hits = c.catalog.classify(text)
    params: dict[str, Any] = {"service_code": code, "description": text.strip()}
    for src, dst in (("lat", "lat"), ("long", "long"), ("lon", "long"), ("place", "address_string")):
        v = rec.get(src)
        if v is not None and not isinstance(v, dict | list | bool):
            params[dst] = str(v)
    worker = rec.get("worker")
    params["account_id"] = f"chat:{worker if isinstance(worker, str) and worker.strip() else op.user}"[:200]
    report = build_report(c, params, source="chat", requested_ms=ms)
    if op.scope not in [a.code for a in c.gridmap.chain(report.grid_code)]:
        raise ValueError(f"the place is in grid {report.grid_code}, outside your scope ({op.scope})")
    await produce_report(c, report)
    return {"service_request_id": report.service_request_id, "service_code": code, "keywords": hits,
            "grid_code": report.grid_code, "lat": report.lat, "long": report.lon, "device_id": report.device_id}


# ---------------------------------------------------------------------------------------- files
async def evidence(request: web.Request) -> web.FileResponse:
    """A snapshot picture, served only when an incident in the operator's scope references it (the
    store's incident_evidence joined to the incident's areas: one index lookup, whatever the scope)."""
    op = require_operator(request)
    c = ctx(request)
    ref = request.match_info["ref"]
    if not await asyncio.to_thread(c.view.store.evidence_in_scope, ref, op.scope):
        raise api_error(404, "no such evidence in your scope")
    root = Path(c.settings.web.evidence_dir or STATE_DIR / "evidence").resolve()
    path = (root / ref).resolve()
    if root not in path.parents or not path.is_file():
        raise api_error(404, "evidence file not found")
    return web.FileResponse(path, headers={"Content-Type": mimetypes.guess_type(path.name)[0] or "image/jpeg"})


async def openapi_spec(request: web.Request) -> web.FileResponse:
    return web.FileResponse(Path(__file__).resolve().parent / "openapi.yaml",
                            headers={"Content-Type": "application/yaml"})


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def favicon(request: web.Request) -> web.Response:
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           'fill="#16202b"/><path d="M3 3h10v10H3z" fill="none" stroke="#4cc2ff"/><circle cx="10" cy="6" r="2" '
           'fill="#e5484d"/></svg>')
    return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", root),
        web.get("/console", page),
        web.get("/favicon.ico", favicon),
        web.get("/openapi.yaml", openapi_spec),
        web.static("/console/static", STATIC, append_version=False),
        web.static("/console/i18n", I18N_DIR, append_version=False),
        web.post("/api/login", login),
        web.post("/api/logout", logout),
        web.get("/api/me", me),
        web.put("/api/me/preferences", put_preferences),
        web.get("/api/incidents", list_incidents),
        web.get("/api/incidents/{id}", get_incident),
        web.get("/api/incidents/{id}/timeline", get_timeline),
        web.post("/api/incidents/{id}/actions", post_action),
        web.get("/api/map", city_map),
        web.get("/api/stats", get_stats),
        web.post("/api/chat-import", chat_import),
        web.get("/api/evidence/{ref:.+}", evidence),
    ]
