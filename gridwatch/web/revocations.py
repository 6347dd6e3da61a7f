"""Logged-out console tokens, refused until they would have expired anyway.

Why a list at all: tokens are stateless (auth.TokenSigner), so without one a token copied before a
logout stays good for ``web.session_ttl_s``. Only the hash of a token is kept, with its expiry, so the
list holds at most the tokens revoked within one TTL and cleans itself.
"""

from __future__ import annotations

import hashlib
import heapq
import time


def token_id(token: str) -> str:
    """A name for a token that can be logged and stored without being usable as the token."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()[:32]


class Revocations:
    def __init__(self, max_entries: int = 200_000) -> None:
        self._until: dict[str, float] = {}  # token id -> expiry (epoch s)
        self._heap: list[tuple[float, str]] = []
        self.max_entries = max_entries

    def revoke(self, tid: str, expires_at: float) -> None:
        self.prune()
        if tid not in self._until:
            heapq.heappush(self._heap, (expires_at, tid))
        self._until[tid] = expires_at
        while len(self._until) > self.max_entries:  # drop the ones closest to expiring by themselves
            _, old = heapq.heappop(self._heap)
            self._until.pop(old, None)

    def is_revoked(self, tid: str, now: float | None = None) -> bool:
        exp = self._until.get(tid)
        return exp is not None and exp >= (now or time.time())

    def prune(self, now: float | None = None) -> None:
        now = now or time.time()
        while self._heap and self._heap[0][0] < now:
            _, tid = heapq.heappop(self._heap)
            if self._until.get(tid, now + 1) < now:
                del self._until[tid]

    def __len__(self) -> int:
        return len(self._until)
