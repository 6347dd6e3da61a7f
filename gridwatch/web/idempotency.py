"""Idempotent Open311 POSTs: a retry files nothing twice, even after a 503.

Why this is needed: a 503 from ``POST requests`` does not mean "not stored". When Kafka is slow the
produce may time out here and still be written once the broker catches up. So the attempt is
remembered *before* producing, and a retry (same ``Idempotency-Key`` header, or without one the same
content from the same client within ``web.dedupe_window_s``) reuses its service_request_id and
requested time: it is produced again only while the first copy is not seen on the reports topic, and
any second copy carries the same id, which every consumer already treats as one report.

With a key the id is derived from the key alone, so a retry through another api instance behind the
same load balancer gets the same id too.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

MAX_KEY = 128


@dataclass(slots=True)
class Attempt:
    rid: str
    requested_ms: int
    fingerprint: str  # what was asked: a key reused for another request is refused
    expires: float  # monotonic
    stored: bool = False  # Kafka confirmed it


def check_key(key: str) -> str | None:
    """An error message when ``key`` is not a usable Idempotency-Key (1-128 visible ASCII characters)."""
    if not key or len(key) > MAX_KEY or not key.isascii() or not key.isprintable() or key != key.strip():
        return f"Idempotency-Key must be 1-{MAX_KEY} visible ASCII characters (e.g. a UUID)"
    return None


def rid_for_key(api_key: str, key: str) -> str:
    """The service_request_id of every POST made with ``key`` (same form as a content-derived one)."""
    return "r" + hashlib.sha1(f"idempotency|{api_key}|{key}".encode()).hexdigest()[:15]


class RecentPosts:
    """Attempts by slot (the key, or the content fingerprint), forgotten after ``window_s``."""

    def __init__(self, window_s: float, max_entries: int = 50_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._by_slot: OrderedDict[str, Attempt] = OrderedDict()

    def get(self, slot: str) -> Attempt | None:
        a = self._by_slot.get(slot)
        if a is None or a.expires < time.monotonic():
            return None
        return a

    def begin(self, slot: str, rid: str, requested_ms: int, fingerprint: str) -> Attempt:
        now = time.monotonic()
        a = Attempt(rid, requested_ms, fingerprint, now + self.window_s)
        self._by_slot[slot] = a
        self._by_slot.move_to_end(slot)
        while self._by_slot and (len(self._by_slot) > self.max_entries
                                 or next(iter(self._by_slot.values())).expires < now):
            self._by_slot.popitem(last=False)
        return a
