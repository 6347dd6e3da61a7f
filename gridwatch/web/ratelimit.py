"""Token-bucket rate limit for the public POST endpoints, per api_key or client IP.

Why a bucket: residents send bursts (a photo retried, three reports on one walk) that must pass,
while a script flooding the reports topic must not; the bucket allows ``burst`` at once and
``rate_per_min`` sustained, and tells the client when to come back (Retry-After).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBucket:
    """Many buckets keyed by client; the oldest idle ones are dropped beyond ``max_clients``."""

    def __init__(self, rate_per_min: float, burst: int, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = max(rate_per_min, 1e-9) / 60.0  # tokens per second
        self.burst = max(int(burst), 1)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; 0.0 when allowed, else the seconds to wait before a retry succeeds."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if cost > self.burst:
            cost = float(self.burst)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (cost - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has one token again (0.0 = it has one now), taking nothing."""
        tokens, last = self._buckets.get(key, (float(self.burst), self.clock()))
        tokens = min(float(self.burst), tokens + (self.clock() - last) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        """Retry-After header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait)))
