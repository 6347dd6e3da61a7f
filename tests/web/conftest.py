"""Fixtures of the web tests: a real `gridwatch api` process on the session's embedded Kafka, and a
plain HTTP client (urllib, as any Open311 client would be)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from gridwatch.core.procs import Proc
from tests.harness import ARTIFACTS, wait_for


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(method: str, url: str, *, form: dict[str, Any] | None = None, json_body: Any = None,
         data: bytes | None = None, headers: dict[str, str] | None = None, token: str | None = None) -> Reply:
    """One HTTP request with urllib; 4xx/5xx come back as a Reply, not an exception."""
    hdrs = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif json_body is not None:
        data = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


@dataclass
class Api:
    url: str
    prefix: str
    kafka_url: str
    proc: Proc
    tokens: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **kw: Any) -> Reply:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return http("POST", self.url + path, **kw)

    def http_put(self, path: str, body: Any, token: str | None) -> Reply:
        return http("PUT", self.url + path, json_body=body, token=token)

    def login(self, user: str) -> str:
        """A bearer token of a demo account (password "<user>-demo"), one login per account."""
        if user not in self.tokens:
            r = self.post("/api/login", json_body={"user": user, "password": f"{user}-demo"})
            assert r.status == 200, r.text
            self.tokens[user] = r.json()["token"]
        return self.tokens[user]

    def topic(self, family: str) -> str:
        return f"{self.prefix}.{family}"

    def produce(self, family: str, key: str, value: bytes | dict) -> None:
        """Produce a record as the backend would (e.g. an IncidentChange on <prefix>.incidents)."""
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()

        async def main() -> None:
            p = AIOKafkaProducer(bootstrap_servers=self.kafka_url.removeprefix("kafka://"))
            await p.start()
            try:
                await p.send_and_wait(self.topic(family), raw, key=key.encode())
            finally:
                await p.stop()

        asyncio.run(main())


def start_api(kafka_url: str, prefix: str, env: dict[str, str] | None = None, name: str = "api") -> Api:
    proc = Proc(f"{prefix}-{name}", ["api", "--kafka", kafka_url, "--prefix", prefix, "--port", "0"], ARTIFACTS,
                {"GRIDWATCH_KAFKA_TANSU_QUIRKS": "on",  # language choices of this api only, not var/'s
                 "GRIDWATCH_CONSOLE_PREFS": str(ARTIFACTS / f"{prefix}-{name}-prefs.json"), **(env or {})}).start()
    proc.wait_log("api listening on", 60)
    url = re.search(r"api listening on (http://\S+)", proc.log()).group(1)  # type: ignore[union-attr]
    api = Api(url, prefix, kafka_url, proc)
    wait_for(lambda: api.get("/api/health").json().get("ready"), 30, "the api's incident view to catch up")
    return api


@pytest.fixture(scope="module")
def api(stack) -> Iterator[Api]:
    """A real `gridwatch api` on its own topic prefix, rate limit wide open (the fuzzer posts a lot)."""
    a = start_api(stack.kafka_url, f"w{uuid.uuid4().hex[:8]}",
                  {"GRIDWATCH_WEB_RATE_PER_MIN": "1000000", "GRIDWATCH_WEB_RATE_BURST": "100000"})
    yield a
    a.proc.stop()
