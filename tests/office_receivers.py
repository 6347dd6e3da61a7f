"""Local stand-ins of the offices' receivers, on real HTTP: a WeCom group robot, a DingTalk custom robot
and a 12345 hotline system's callback URL.

Each checks what the real one checks, written from their public API descriptions and not with the
channel's own code: the exact JSON shape of a message, the robot key / access token, DingTalk's signature
(HMAC-SHA256 of "<timestamp ms>\\n<secret>" keyed with the secret, base64; timestamp within an hour),
the webhook signature of a callback. It answers as they do ({"errcode": 0, "errmsg": "ok"} or an
errcode), and can be told to answer badly first (busy errcodes, HTTP 500, a non-JSON page).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gridwatch.agents.routing import DEFAULT_PATH
from tests.harness import LocalHttpServer

WECOM_KEY = "wecom-key-693a91f6"
DINGTALK_TOKEN = "dingtalk-token-5c1e"
DINGTALK_SECRET = "SEC0123456789abcdef-dingtalk-secret"
HOTLINE_SECRET = "hotline-callback-secret"


def _exact(d: Any, keys: set[str], optional: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    return isinstance(d, dict) and keys <= set(d) <= keys | optional


class OfficeReceivers(LocalHttpServer):
    """The three receivers on one port: /cgi-bin/webhook/send, /robot/send, /hotline/callback."""

    def __init__(self) -> None:
        self.wecom: list[dict[str, Any]] = []
        self.dingtalk: list[dict[str, Any]] = []
        self.hotline: list[dict[str, Any]] = []
        self.rejected: list[tuple[str, str]] = []  # (receiver, why)
        self.attempts = {"wecom": 0, "dingtalk": 0, "hotline": 0}
        self.script: dict[str, list[Any]] = {"wecom": [], "dingtalk": [], "hotline": []}  # bad answers to give first
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_post("/robot/send", self._dingtalk)
        app.router.add_post("/hotline/callback", self._hotline)

    def _scripted(self, who: str) -> web.Response | None:
        with self._lock:
            self.attempts[who] += 1
            if not self.script[who]:
                return None
            answer = self.script[who].pop(0)
        if isinstance(answer, int) and answer >= 100 and answer < 600:
            return web.Response(status=answer, text="upstream error")
        if answer == "html":
            return web.Response(text="<html>gateway</html>", content_type="text/html")
        return web.json_response({"errcode": answer, "errmsg": "scripted"})

    def _reject(self, who: str, why: str, errcode: int) -> web.Response:
        with self._lock:
            self.rejected.append((who, why))
        return web.json_response({"errcode": errcode, "errmsg": why})

    async def _wecom(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if (bad := self._scripted("wecom")) is not None:
            return bad
        if request.query.get("key") != WECOM_KEY:
            return self._reject("wecom", "invalid webhook url (key)", 93000)
        if request.content_type != "application/json":
            return self._reject("wecom", f"content type {request.content_type}", 40008)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._reject("wecom", "body is not JSON", 40008)
        ok = False
        if isinstance(body, dict) and body.get("msgtype") == "markdown":
            md = body.get("markdown")
            ok = _exact(body, {"msgtype", "markdown"}) and _exact(md, {"content"}) and isinstance(md["content"], str) \
                and 0 < len(md["content"].encode()) <= 4096
        elif isinstance(body, dict) and body.get("msgtype") == "text":
            tx = body.get("text")
            ok = _exact(body, {"msgtype", "text"}) and _exact(tx, {"content"}, {"mentioned_list", "mentioned_mobile_list"}) \
                and isinstance(tx["content"], str) and all(isinstance(m, str) for m in tx.get("mentioned_mobile_list", []))
        if not ok:
            return self._reject("wecom", f"invalid message {body!r}"[:300], 40008)
        with self._lock:
            self.wecom.append(body)
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _dingtalk(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if (bad := self._scripted("dingtalk")) is not None:
            return bad
        q = request.query
        if q.get("access_token") != DINGTALK_TOKEN:
            return self._reject("dingtalk", "token is not exist", 300001)
        try:
            ts = int(q.get("timestamp", ""))
        except ValueError:
            return self._reject("dingtalk", "timestamp missing", 310000)
        if abs(time.time() * 1000 - ts) > 3_600_000:
            return self._reject("dingtalk", "timestamp too old", 310000)
        expected = base64.b64encode(hmac.new(DINGTALK_SECRET.encode(), f"{ts}\n{DINGTALK_SECRET}".encode(),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(q.get("sign", ""), expected):  # aiohttp URL-decodes the query
            return self._reject("dingtalk", "sign not match", 310000)
        try:
            body = json.loads(raw)
        except ValueError:
            return self._reject("dingtalk", "body is not JSON", 40035)
        md, at = body.get("markdown") if isinstance(body, dict) else None, body.get("at") if isinstance(body, dict) else None
        ok = (_exact(body, {"msgtype", "markdown"}, {"at"}) and body["msgtype"] == "markdown"
              and _exact(md, {"title", "text"}) and all(isinstance(md[k], str) and md[k] for k in ("title", "text")))
        if ok and at is not None:
            ok = _exact(at, set(), {"atMobiles", "atUserIds", "isAtAll"}) and isinstance(at.get("isAtAll", False), bool) \
                and all(f"@{m}" in md["text"] for m in at.get("atMobiles", []))  # a mention shows in the text
        if not ok:
            return self._reject("dingtalk", f"invalid message {body!r}"[:300], 40035)
        with self._lock:
            self.dingtalk.append({**body, "_timestamp": ts})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _hotline(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if (bad := self._scripted("hotline")) is not None:
            return bad
        # The documented scheme, checked here on its own: "t=<unix s>,v1=<hex HMAC-SHA256 of '<t>.' + body>",
        # refused when t is more than 5 minutes off (a replay).
        fields = dict(p.strip().partition("=")[::2] for p in request.headers.get("X-Gridwatch-Signature", "").split(","))
        t = fields.get("t", "")
        expected = hmac.new(HOTLINE_SECRET.encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
        if not (t.isdigit() and abs(time.time() - int(t)) <= 300
                and hmac.compare_digest(expected, fields.get("v1", ""))):
            with self._lock:
                self.rejected.append(("hotline", "bad signature"))
            return web.Response(status=401)
        with self._lock:
            self.hotline.append({"headers": dict(request.headers), "body": json.loads(raw)})
        return web.json_response({"code": 0, "msg": "received"})

    # ------------------------------------------------------------------ channel config for these receivers
    def channels(self, **overrides: dict[str, Any]) -> list[dict[str, Any]]:
        """incidents.yaml ``channels:`` entries pointing at this receiver (secrets in env vars, see env())."""
        entries = [
            {"name": "city-wecom", "type": "wecom", "url": f"{self.url}/cgi-bin/webhook/send",
             "key_env": "TEST_WECOM_KEY", "levels": ["red"], "link": "http://console.test/console#incident={id}",
             "mention": {"levels": ["red"], "mobiles": ["13800000001"], "userids": ["zhangsan"]},
             "max_attempts": 4, "backoff_s": 0.05},
            {"name": "city-dingtalk", "type": "dingtalk", "url": f"{self.url}/robot/send",
             "access_token_env": "TEST_DINGTALK_TOKEN", "secret_env": "TEST_DINGTALK_SECRET", "levels": ["red"],
             "mention": {"levels": ["red"], "mobiles": ["13800000002"]}, "max_attempts": 4, "backoff_s": 0.05},
            {"name": "hotline-12345", "type": "hotline", "url": f"{self.url}/hotline/callback",
             "secret_env": "TEST_HOTLINE_SECRET", "max_attempts": 4, "backoff_s": 0.05},
        ]
        return [{**e, **overrides.get(e["name"], {})} for e in entries]

    def worker_env(self, folder: Path) -> dict[str, str]:
        """Env of a worker whose incident channels point here: the shipped incidents config with these
        ``channels:`` written into ``folder``, and the secrets they name."""
        cfg = yaml.safe_load(DEFAULT_PATH.read_text())
        cfg["channels"] = self.channels()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"incidents-{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        return {"GRIDWATCH_INCIDENTS_CONFIG": str(path), **self.env()}

    @staticmethod
    def env() -> dict[str, str]:
        return {"TEST_WECOM_KEY": WECOM_KEY, "TEST_DINGTALK_TOKEN": DINGTALK_TOKEN,
                "TEST_DINGTALK_SECRET": DINGTALK_SECRET, "TEST_HOTLINE_SECRET": HOTLINE_SECRET}
