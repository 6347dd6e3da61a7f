"""Open311 GeoReport v2 under ``/open311/v2/``: services, service definitions, POST / GET requests.

Why the letter of the spec: residents' apps and city CRMs already speak GeoReport v2, so a standard
client must work unchanged: form-encoded POSTs, ``.json`` / ``.xml`` formats, ``lat`` / ``long``,
comma-separated id lists, W3C dates, and errors as a list of ``{code, description}``. A request
is located to a grid and produced to ``<prefix>.reports`` before the answer goes back (so an
answered request is in Kafka); its id is the deterministic ``report_id`` of its content.
Its status follows the incident it joined: open while the incident is worked, closed once resolved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from datetime import datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from aiokafka.errors import KafkaError

from gridwatch.pipeline.schemas.incidents import OperatorAction
from gridwatch.pipeline.schemas.reports import ResidentReport, report_id

from .clients import real_client
from .context import WebContext, ctx
from .idempotency import check_key, rid_for_key
from .inputs import BadInput, check_unicode, parse_json
from .prefs import pick_language
from .views import CLOSED_STATUSES

log = logging.getLogger("gridwatch.web.open311")

MAX_DESCRIPTION = 4000
MAX_FIELD = 200
MAX_RESULTS = 1000
MAX_SPAN = timedelta(days=90)
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,30}$")
URL_RE = re.compile(r"^https?://[^\s]{1,2000}$")
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone", "device_id", "account_id")
# XML element names of list items, by the list's element name.
XML_ITEMS = {"services": "service", "service_requests": "request", "errors": "error", "attributes": "attribute",
             "values": "value", "endpoints": "endpoint", "formats": "format"}


# A timed-out produce may still be written once the broker catches up: say so, and how to retry safely.
MAY_BE_STORED = ("消息队列暂不可用：本次提交可能已保存，请用同一 Idempotency-Key 重试（不会重复立案）/ the report "
                 "queue is unavailable: this request may have been stored; retry with the same Idempotency-Key "
                 "(it will not be filed twice)")


class Open311Error(Exception):
    """An Open311-style error: HTTP status and one or more descriptions."""

    def __init__(self, status: int, *descriptions: str, headers: dict[str, str] | None = None) -> None:
        super().__init__("; ".join(descriptions))
        self.status = status
        self.descriptions = descriptions or ("error",)
        self.headers = headers or {}


# ---------------------------------------------------------------------------------------- rendering
def xml_of(root: str, value: Any) -> str:
    """Open311 XML: lists become ``<root><item>..</item></root>``, dicts child elements, None empty."""
    return '<?xml version="1.0" encoding="utf-8"?>\n' + _xml(root, value)


def _xml(name: str, value: Any) -> str:
    if value is None:
        return f"<{name}/>" if name else ""
    if isinstance(value, list):
        item = XML_ITEMS.get(name, "item")
        return f"<{name}>" + "".join(_xml(item, v) for v in value) + f"</{name}>"
    if isinstance(value, dict):
        return f"<{name}>" + "".join(_xml(k, v) for k, v in value.items()) + f"</{name}>"
    text = ("true" if value else "false") if isinstance(value, bool) else escape(str(value))
    return f"<{name}>{text}</{name}>"


def render(fmt: str, root: str, value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    if fmt == "xml":
        return web.Response(text=xml_of(root, value), status=status, content_type="text/xml", charset="utf-8",
                            headers=headers)
    return web.Response(text=json.dumps(value, ensure_ascii=False), status=status, content_type="application/json",
                        headers=headers)


def error_response(fmt: str, status: int, descriptions: tuple[str, ...] | list[str],
                   headers: dict[str, str] | None = None) -> web.Response:
    body = [{"code": status, "description": d} for d in descriptions]
    return render(fmt, "errors", body, status, headers)


def fmt_of(request: web.Request) -> str:
    f = request.match_info.get("fmt")
    if f in ("json", "xml"):
        return f
    return "xml" if request.path.endswith(".xml") else "json"


# ---------------------------------------------------------------------------------------- time
def w3c(ts_ms: int | None, c: WebContext) -> str | None:
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, c.tz).isoformat(timespec="seconds")


def parse_date(text: str, c: WebContext, name: str) -> datetime:
    """A W3C / ISO 8601 date or date-time; without a zone it is the city's local time."""
    try:
        d = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C date-time such as 2026-11-20T22:00:00+08:00") from None
    return d if d.tzinfo else d.replace(tzinfo=c.tz)


# ---------------------------------------------------------------------------------------- handlers
async def services(request: web.Request) -> web.Response:
    c = ctx(request)
    check_jurisdiction(request, c, request.query)
    lang = language_of(request)
    return render(fmt_of(request), "services", [s.to_open311(lang) for s in c.catalog.services], 200,
                  {"Content-Language": lang, "Vary": "Accept-Language"})


async def service_definition(request: web.Request) -> web.Response:
    c = ctx(request)
    check_jurisdiction(request, c, request.query)
    svc = c.catalog.get(request.match_info["code"])
    if svc is None:
        raise Open311Error(404, f"service_code {request.match_info['code']!r} not found")
    lang = language_of(request)
    return render(fmt_of(request), "service_definition", svc.definition(lang), 200,
                  {"Content-Language": lang, "Vary": "Accept-Language"})


def language_of(request: web.Request) -> str:
    """``locale`` (query or form, as some Open311 clients send it) wins over ``Accept-Language``; zh-CN by default."""
    return pick_language(request.query.get("locale") or request.headers.get("Accept-Language", ""))


async def get_requests(request: web.Request) -> web.Response:
    c = ctx(request)
    q = request.query
    check_jurisdiction(request, c, q)
    for key in q:
        if len(q.getall(key)) > 1:
            raise Open311Error(400, f"parameter {key} given more than once (use a comma-separated list)")
    ids = _csv(q.get("service_request_id", ""))
    if ids:
        by_id = c.view.store.reports_by_id(ids)
        rows = [by_id[i] for i in ids if i in by_id]
    else:
        codes = _csv(q.get("service_code", ""))
        statuses = _csv(q.get("status", ""))
        bad = [s for s in statuses if s not in ("open", "closed")]
        if bad:
            raise Open311Error(400, f"status must be open or closed, got {', '.join(bad)}")
        end = parse_date(q["end_date"], c, "end_date") if q.get("end_date") else None
        start = parse_date(q["start_date"], c, "start_date") if q.get("start_date") else None
        if start is None and end is None:
            end = datetime.now(c.tz)
        if start is None:
            start = end - MAX_SPAN  # type: ignore[operator]
        elif end is None:
            end = start + MAX_SPAN
        if end < start:  # type: ignore[operator]
            raise Open311Error(400, "end_date is before start_date")
        if end - start > MAX_SPAN:  # type: ignore[operator]
            raise Open311Error(400, "start_date to end_date may not span more than 90 days")
        lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000)  # type: ignore[union-attr]
        rows = c.view.store.reports_between(lo, hi, codes, limit=None if statuses else MAX_RESULTS)
        if statuses:  # a report's status is its incident's: joined per report
            rows = [r for r in rows if request_status(c, r)[0] in statuses][:MAX_RESULTS]
    return render(fmt_of(request), "service_requests", [request_row(c, r) for r in rows])


async def get_request(request: web.Request) -> web.Response:
    c = ctx(request)
    check_jurisdiction(request, c, request.query)
    rid = request.match_info["id"]
    rep = c.view.reports.get(rid)
    if rep is None:
        raise Open311Error(404, f"service_request_id {rid!r} not found")
    return render(fmt_of(request), "service_requests", [request_row(c, rep)])


async def post_request(request: web.Request) -> web.Response:
    """File a request; idempotent (see idempotency.py): a retry never files a second report."""
    c = ctx(request)
    fmt = fmt_of(request)
    params = await read_params(request, c)
    check_jurisdiction(request, c, params)
    idem = request.headers.get("Idempotency-Key", "")
    if idem and (problem := check_key(idem)):
        raise Open311Error(400, problem)
    client = check_key_and_rate(request, c, params)
    report = build_report(c, params)
    fingerprint = hashlib.sha1(json.dumps([report.service_code, round(report.lat, 6), round(report.lon, 6),
                                           report.description, report.media_url, report.contact],
                                          sort_keys=True).encode()).hexdigest()
    api_key = client.removeprefix("key:") if client.startswith("key:") else ""
    slot = f"key:{api_key}|{idem}" if idem else f"content:{client}|{fingerprint}"
    attempt = c.posts.get(slot)
    if attempt is not None and attempt.fingerprint != fingerprint:
        raise Open311Error(422, "this Idempotency-Key was used for a different request; use a new key "
                                "for a new report (此幂等键已用于另一份报告，新报告请用新键)")
    if attempt is None:
        rid = rid_for_key(api_key, idem) if idem else report.service_request_id
        attempt = c.posts.begin(slot, rid, report.requested_ms, fingerprint)
    report.service_request_id, report.requested_ms = attempt.rid, attempt.requested_ms
    replayed = attempt.stored or attempt.rid in c.view.reports
    if not replayed:  # the first try, or a retry of one that may not have been stored
        await produce_report(c, report)
        attempt.stored = True
    body = [{"service_request_id": report.service_request_id, "service_notice": service_notice(c, report),
             "account_id": report.contact.get("account_id") or None}]
    headers = {"Location": f"/open311/v2/requests/{report.service_request_id}.{fmt}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return render(fmt, "service_requests", body, status=201, headers=headers)


async def post_evaluation(request: web.Request) -> web.Response:
    """群众评单: the resident who filed a request rates how it was handled (1-5), once it is resolved.

    The requester proves it is theirs with the same email, phone, device_id or account_id the request
    carried. The backend records the rating on the incident (OperatorAction "evaluate").
    """
    c = ctx(request)
    params = await read_params(request, c)
    check_key_and_rate(request, c, params)
    rid = request.match_info["id"]
    rep = c.view.reports.get(rid)
    if rep is None:
        raise Open311Error(404, f"service_request_id {rid!r} not found")
    contact = {k: v for k, v in rep.get("contact", {}).items() if v}
    if not contact or not any(params.get(k) and params.get(k) == v for k, v in contact.items()):
        raise Open311Error(403, "give the email, phone, device_id or account_id the request was filed with")
    try:
        rating = int(str(params.get("rating", "")))
    except ValueError:
        raise Open311Error(400, "rating must be a whole number 1-5") from None
    if not 1 <= rating <= 5:
        raise Open311Error(400, "rating must be a whole number 1-5")
    inc = c.view.incident_of_report(rid)
    if inc is None:
        raise Open311Error(409, "the request has not been taken up yet; evaluate it once it is resolved")
    if inc["status"] != "resolved":
        raise Open311Error(409, f"the request is {inc['status']}; it can be evaluated once resolved")
    note = _text(params, "comment", MAX_DESCRIPTION)
    action = OperatorAction(inc["id"], inc["grid_code"], "evaluate", f"resident:{rid}", int(time.time() * 1000),
                            note=note, rating=rating)
    await produce_action(c, action)
    return web.json_response({"accepted": True, "action_id": action.id}, status=202)


# ---------------------------------------------------------------------------------------- input
async def read_params(request: web.Request, c: WebContext) -> dict[str, Any]:
    """Form-encoded (the spec's way), multipart or JSON body, over the query string."""
    params: dict[str, Any] = {k: v for k, v in request.query.items()}
    if request.content_length and request.content_length > c.settings.web.max_body_bytes:
        raise Open311Error(413, f"request body over {c.settings.web.max_body_bytes} bytes")
    ctype = request.content_type
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except (ValueError, AssertionError, UnicodeDecodeError) as e:  # e.g. multipart without a boundary
            raise Open311Error(400, f"cannot read the form body: {e}") from None
        for k, v in form.items():
            if isinstance(v, str):
                params[k] = v
    elif ctype == "application/json":
        try:
            body = parse_json(await request.read(), {})
        except BadInput as e:
            raise Open311Error(400, str(e)) from None
        if not isinstance(body, dict):
            raise Open311Error(400, "JSON body must be an object of request parameters")
        attrs = body.pop("attribute", None)
        if isinstance(attrs, dict):
            body.update({f"attribute[{k}]": v for k, v in attrs.items()})
        elif attrs is not None:
            raise Open311Error(400, "attribute must be an object of code: value")
        for k, v in body.items():
            if v is None:
                continue
            if isinstance(v, dict | list):
                raise Open311Error(400, f"parameter {k} must be a string or a number")
            params[str(k)] = v if isinstance(v, str) else json.dumps(v)
    elif await request.read():
        raise Open311Error(415, "send the request as application/x-www-form-urlencoded (or JSON)")
    try:
        check_unicode(params)  # form fields and the query string too
    except BadInput as e:
        raise Open311Error(400, str(e)) from None
    return params


def check_jurisdiction(request: web.Request, c: WebContext, params: Any) -> None:
    want = c.settings.web.jurisdiction_id
    got = params.get("jurisdiction_id")
    if want and got and got != want:
        raise Open311Error(404, f"jurisdiction_id {got!r} is not served here (this is {want!r})")


def check_key_and_rate(request: web.Request, c: WebContext, params: dict[str, Any]) -> str:
    """Refuse a missing api_key (when required) or an unknown one (whenever keys are configured), and
    clients over their rate. Returns the rate-limit key: ``key:<api key>`` or ``ip:<real client>``;
    an api_key that is not configured never gets a bucket of its own (a random one would reset the limit)."""
    key = str(params.get("api_key") or "")
    w = c.settings.web
    keys = {k.strip() for k in w.api_keys.split(",") if k.strip()}
    if w.require_api_key and not key:
        raise Open311Error(403, "api_key is required")
    if key and keys and key not in keys:
        raise Open311Error(403, "api_key is not valid")
    client = f"key:{key}" if key and key in keys else f"ip:{client_ip(request, c)}"
    wait = c.limiter.take(client)
    if wait > 0:
        c.count("rate_limited")
        raise Open311Error(429, f"too many requests; retry in {c.limiter.retry_after(wait)} s",
                           headers={"Retry-After": c.limiter.retry_after(wait)})
    return client


def client_ip(request: web.Request, c: WebContext) -> str:
    return real_client(request.remote, request.headers.get("X-Forwarded-For", ""), c.settings.web.trusted_proxies)


def _text(params: dict[str, Any], name: str, limit: int = MAX_FIELD) -> str:
    v = params.get(name)
    if v is None:
        return ""
    v = str(v).strip()
    if len(v) > limit:
        raise Open311Error(400, f"{name} is longer than {limit} characters")
    if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in v):
        raise Open311Error(400, f"{name} contains control characters")
    return v


def _coord(params: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    raw = params.get(name)
    if raw is None or str(raw).strip() == "":
        return None
    try:
        v = float(str(raw).strip())
    except ValueError:
        raise Open311Error(400, f"{name} must be a decimal number (WGS-84 degrees)") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        raise Open311Error(400, f"{name} must be between {lo:g} and {hi:g}")
    return v


def build_report(c: WebContext, params: dict[str, Any], *, source: str = "open311",
                 requested_ms: int | None = None) -> ResidentReport:
    """Validate parameters and locate the request to a grid; Open311Error(400) says what is wrong."""
    errors: list[str] = []

    def attempt(fn: Any, *a: Any) -> Any:
        try:
            return fn(*a)
        except Open311Error as e:
            errors.extend(e.descriptions)
            return None

    code = attempt(_text, params, "service_code", 64)
    svc = c.catalog.get(code) if code else None
    if not code:
        errors.append("service_code is required (GET services.json lists them)")
    elif svc is None:
        errors.append(f"service_code {code!r} not found (GET services.json lists them)")
    description = attempt(_text, params, "description", MAX_DESCRIPTION) or ""
    media_url = attempt(_text, params, "media_url", 2000) or ""
    if media_url and not URL_RE.match(media_url):
        errors.append("media_url must be an http(s) URL")
    contact = {}
    for f in CONTACT_FIELDS:
        v = attempt(_text, params, f)
        if v:
            contact[f] = v
    if contact.get("email") and not EMAIL_RE.match(contact["email"]):
        errors.append("email is not a valid e-mail address")
    attrs: dict[str, str] = {}
    for k, v in params.items():
        m = re.fullmatch(r"attribute\[([^\]]{1,64})\]", k)
        if m:
            attrs[m.group(1)] = str(v).strip()[:MAX_FIELD]
    device_id = ""
    if svc is not None:
        known = {a.code: a for a in svc.attributes}
        for a in svc.attributes:
            if a.required and not attrs.get(a.code):
                errors.append(f"attribute[{a.code}] is required for {svc.service_code}")
        for k, v in attrs.items():
            a = known.get(k)
            if a is None:
                errors.append(f"attribute[{k}] is not an attribute of {svc.service_code}")
            elif a.values and v and not all(x in {key for key, _ in a.values} for x in v.split(",")):
                errors.append(f"attribute[{k}] must be one of {', '.join(key for key, _ in a.values)}")
        asset = attrs.get("asset_id", "")
        if asset:
            if c.registry.get(asset) is None:
                errors.append(f"attribute[asset_id] {asset!r} is not a device of this city")
            else:
                device_id = asset
    lat = attempt(_coord, params, "lat", -90, 90)
    lon = attempt(_coord, params, "long", -180, 180)
    address = attempt(_text, params, "address_string", 500) or ""
    address_id = attempt(_text, params, "address_id", 64) or ""
    if (lat is None) != (lon is None):
        errors.append("lat and long must be given together")
    if lat is None or lon is None:
        place = c.geocoder.lookup(address_id) or c.geocoder.lookup(address) if (address or address_id) else None
        if place is None:
            if address or address_id:
                errors.append("address_string / address_id names no place in this city; give lat and long")
            elif not any("lat and long" in e for e in errors):
                errors.append("a location is required: lat and long, or address_string, or address_id")
        else:
            lat, lon = place.lat, place.lon
            device_id = device_id or place.device_id
    elif device_id == "" and address_id and c.registry.get(address_id) is not None:
        device_id = address_id
    grid = None
    if lat is not None and lon is not None:
        grid = c.gridmap.locate(lat, lon)
        if grid is None:
            errors.append("the location is outside this city's grids")
    if errors:
        raise Open311Error(400, *errors)
    assert svc is not None and lat is not None and lon is not None and grid is not None
    extra = "; ".join(f"{k}={v}" for k, v in sorted(attrs.items()) if v and k != "asset_id")
    if extra:
        description = f"{description} [{extra}]" if description else f"[{extra}]"
    requested_ms = requested_ms if requested_ms is not None else int(time.time() * 1000)
    rid = report_id(svc.service_code, lat, lon, requested_ms, description)
    return ResidentReport(rid, svc.service_code, description, round(lat, 7), round(lon, 7), requested_ms, grid,
                          address=address, media_url=media_url, source=source, contact=contact, device_id=device_id)


# ---------------------------------------------------------------------------------------- Kafka
async def produce_report(c: WebContext, report: ResidentReport) -> None:
    """Produce and wait for Kafka's acknowledgement; then the report is in the view too."""
    await _produce(c, c.topic("reports"), report.grid_code, report.encode())
    from dataclasses import asdict

    await c.view.apply_report(asdict(report))
    c.count(f"reports.{report.source}")


async def produce_action(c: WebContext, action: OperatorAction) -> None:
    action.validate()
    await _produce(c, c.topic("actions"), action.grid_code, action.encode())
    c.count("actions")


async def _produce(c: WebContext, topic: str, key: str, value: bytes) -> None:
    if c.producer is None:
        raise Open311Error(503, "尚未连接到消息队列，未保存，请稍后重试 / not connected to Kafka yet, nothing "
                                "was stored; retry shortly", headers={"Retry-After": "5"})
    try:
        await c.producer.send_and_wait(topic, value, key=key.encode())
    except KafkaError as e:
        log.warning("produce to %s failed: %s", topic, e)
        raise Open311Error(503, MAY_BE_STORED, headers={"Retry-After": "5"}) from None


# ---------------------------------------------------------------------------------------- output
def request_status(c: WebContext, rep: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    """(open|closed, status_notes, incident) of a report, from the incident it joined."""
    inc = c.view.incident_of_report(rep["service_request_id"])
    if inc is None:
        return "open", "received; awaiting triage", None
    status = "closed" if inc["status"] in CLOSED_STATUSES else "open"
    notes = inc["status"].replace("_", " ")
    if inc.get("department"):
        notes += f" ({inc['department']})"
    last = next((h for h in reversed(inc.get("history", [])) if h.get("note")), None)
    if last is not None:
        notes += f": {last['note']}"
    return status, notes, inc


def service_notice(c: WebContext, rep: ResidentReport) -> str:
    area = c.gridmap.chain(rep.grid_code)
    return f"filed to grid {rep.grid_code} ({area[-1].name}, {area[2].name if len(area) > 2 else area[0].name})"


def request_row(c: WebContext, rep: dict[str, Any]) -> dict[str, Any]:
    status, notes, inc = request_status(c, rep)
    svc = c.catalog.get(rep["service_code"])
    expected = inc.get("sla_deadline_ts") if inc and status == "open" else None
    return {
        "service_request_id": rep["service_request_id"], "status": status, "status_notes": notes,
        "service_name": svc.service_name if svc else rep["service_code"], "service_code": rep["service_code"],
        "description": rep["description"], "agency_responsible": (inc or {}).get("department") or None,
        "service_notice": None, "requested_datetime": w3c(rep["requested_ms"], c),
        "updated_datetime": w3c(inc["updated_ts"] if inc else rep["requested_ms"], c),
        "expected_datetime": w3c(expected, c), "address": rep.get("address") or None, "address_id": None,
        "zipcode": None, "lat": rep["lat"], "long": rep["lon"], "media_url": rep.get("media_url") or None,
    }


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def routes() -> list[web.RouteDef]:
    return [
        web.get("/open311/v2/services.{fmt:json|xml}", services),
        web.get("/open311/v2/services/{code:[^/.]+}.{fmt:json|xml}", service_definition),
        web.get("/open311/v2/requests.{fmt:json|xml}", get_requests),
        web.post("/open311/v2/requests.{fmt:json|xml}", post_request),
        web.get("/open311/v2/requests/{id:[^/.]+}.{fmt:json|xml}", get_request),
        web.post("/open311/v2/requests/{id:[^/.]+}/evaluation.{fmt:json|xml}", post_evaluation),
        web.get("/open311/discovery.{fmt:json|xml}", discovery),
    ]


async def discovery(request: web.Request) -> web.Response:
    """Open311 service discovery: where the v2 endpoint lives and what formats it speaks."""
    base = f"{request.scheme}://{request.host}/open311/v2/"
    body = {"changeset": "2026-11-01T00:00:00Z", "contact": "grid command centre",
            "key_service": "api keys from the grid command centre",
            "endpoints": [{"specification": "http://wiki.open311.org/GeoReport_v2", "url": base,
                           "changeset": "2026-11-01T00:00:00Z", "type": "production",
                           "formats": ["application/json", "text/xml"]}]}
    return render(fmt_of(request), "discovery", body)
