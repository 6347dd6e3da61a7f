"""Everything a request handler needs, built once per app by ``server.create_app``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from gridwatch.core.settings import Settings

from .audit import AuditLog
from .auth import Accounts, TokenSigner
from .catalog import Catalog
from .geocode import Geocoder
from .idempotency import RecentPosts
from .ratelimit import TokenBucket
from .revocations import Revocations
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
    posts: RecentPosts = field(default_factory=lambda: RecentPosts(600))  # Open311 POST attempts (idempotency)
    stats: dict[str, int] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)  # incident category groups (incidents.yaml), for filters
    audit: AuditLog | None = None
    revoked: Revocations = field(default_factory=Revocations)
    # Password hashing runs here, off the event loop (PBKDF2 releases the GIL), two at a time at most.
    hash_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, "gw-hash"))

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


CTX: web.AppKey[WebContext] = web.AppKey("gridwatch", WebContext)


def ctx(request: web.Request) -> WebContext:
    return request.app[CTX]
