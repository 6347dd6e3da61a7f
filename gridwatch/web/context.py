"""Everything a request handler needs, built once per app by ``server.create_app``."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gridwatch.core.settings import Settings

from .auth import Accounts, TokenSigner
from .catalog import Catalog
from .geocode import Geocoder
from .ratelimit import TokenBucket
from .views import IncidentView


@dataclass
class WebContext:
    settings: Settings
    city: Any  # devices.registry.City
    catalog: Catalog
    accounts: Accounts
    signer: TokenSigner
    view: IncidentView
    geocoder: Geocoder
    limiter: TokenBucket
    tz: ZoneInfo
    producer: Any = None  # AIOKafkaProducer once started
    recent_posts: OrderedDict[str, tuple[str, int, float]] = field(default_factory=OrderedDict)
    stats: dict[str, int] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)  # incident category groups (incidents.yaml), for filters

    @property
    def gridmap(self) -> Any:
        return self.city.gridmap

    @property
    def registry(self) -> Any:
        return self.city.registry

    def topic(self, family: str) -> str:
        return self.settings.topic(family)

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def remember_post(self, key: str, rid: str, requested_ms: int) -> None:
        """Remember a produced request so a client's retry within the window gets the same id."""
        now = time.monotonic()
        self.recent_posts[key] = (rid, requested_ms, now + self.settings.web.dedupe_window_s)
        self.recent_posts.move_to_end(key)
        while self.recent_posts and (len(self.recent_posts) > 50_000 or next(iter(self.recent_posts.values()))[2] < now):
            self.recent_posts.popitem(last=False)

    def recent_post(self, key: str) -> tuple[str, int] | None:
        hit = self.recent_posts.get(key)
        if hit is None or hit[2] < time.monotonic():
            return None
        return hit[0], hit[1]


CTX: web.AppKey[WebContext] = web.AppKey("gridwatch", WebContext)


def ctx(request: web.Request) -> WebContext:
    return request.app[CTX]
