"""Webhook channel: HTTP POST of each incident change, signed, retried, dead-lettered.

Headers:
  X-Gridwatch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + the exact body, shared secret>
                         (Stripe-style: the timestamp is signed too, so a receiver refuses a captured
                         request replayed later; ``verify`` below is what a receiver does. Each attempt
                         is signed afresh.)
  X-Gridwatch-Delivery:  <incident id>:<version>   (the same on a retry or a re-delivery: dedupe on it)
  X-Gridwatch-Change:    created / source_added / escalated / ...
Retried with exponential back-off on connection errors, timeouts, 5xx, 408 and 429; other 4xx mean
the receiver rejects this body, so retrying cannot help and the change is dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from .base import ChangeInfo, Channel, ChannelConfigError, DeliveryError, register

log = logging.getLogger("gridwatch.channels.webhook")
RETRY_STATUS = frozenset({408, 429})


SIGNATURE_TOLERANCE_S = 300  # what `verify` accepts by default: 5 minutes of clock difference and delay


def _mac(secret: bytes, ts: int, body: bytes) -> str:
    return hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, ts: float | None = None) -> str:
    """The X-Gridwatch-Signature value of a body sent at ``ts`` (now by default)."""
    t = int(time.time() if ts is None else ts)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(secret: bytes, header: str, body: bytes, *, tolerance_s: float = SIGNATURE_TOLERANCE_S,
           now: float | None = None) -> bool:
    """A receiver's check: the signature matches and its timestamp is within ``tolerance_s`` of now.

    Receivers should also drop a repeated X-Gridwatch-Delivery (a retry of a delivered change)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = _mac(secret, t, body)
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def backoff_delays(attempts: int, base_s: float, max_s: float) -> list[float]:
    """Waits between the attempts: base, 2*base, 4*base, ... capped at max_s (attempts - 1 waits)."""
    return [min(max_s, base_s * 2**i) for i in range(max(0, attempts - 1))]


@register("webhook")
class WebhookChannel(Channel):
    keys = frozenset({"url", "secret_env", "secret_file", "timeout_s", "max_attempts", "backoff_s",
                      "max_backoff_s", "headers"})

    def configure(self, cfg: dict[str, Any]) -> None:
        url = cfg.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ChannelConfigError(f"channel {self.name!r}.url: an http:// or https:// URL")
        self.url = url
        self.secret = self._secret(cfg)
        try:
            self.timeout_s = float(cfg.get("timeout_s", 5))
            self.max_attempts = int(cfg.get("max_attempts", 5))
            self.backoff_s = float(cfg.get("backoff_s", 0.5))
            self.max_backoff_s = float(cfg.get("max_backoff_s", 30))
        except (TypeError, ValueError) as e:
            raise ChannelConfigError(f"channel {self.name!r}: {e}") from None
        if self.max_attempts < 1:
            raise ChannelConfigError(f"channel {self.name!r}.max_attempts: at least 1")
        headers = cfg.get("headers", {})
        if not isinstance(headers, dict):
            raise ChannelConfigError(f"channel {self.name!r}.headers: a mapping")
        self.extra_headers = {str(k): str(v) for k, v in headers.items()}
        self.session: aiohttp.ClientSession | None = None

    def _secret(self, cfg: dict[str, Any]) -> bytes:
        if cfg.get("secret_file"):
            try:
                return Path(str(cfg["secret_file"])).read_text().splitlines()[0].strip().encode()
            except (OSError, IndexError) as e:
                raise ChannelConfigError(f"channel {self.name!r}.secret_file: cannot read it ({e})") from None
        env = str(cfg.get("secret_env", "GRIDWATCH_WEBHOOK_SECRET"))
        value = os.environ.get(env, "")
        if not value:
            raise ChannelConfigError(f"channel {self.name!r}: no secret (set ${env}, or secret_file / secret_env)")
        return value.encode()

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def deliver(self, change: ChangeInfo, body: bytes) -> None:
        assert self.session is not None, "start() first"
        headers = {**self.extra_headers, "Content-Type": "application/json", "User-Agent": "gridwatch-webhook",
                   "X-Gridwatch-Delivery": f"{change.incident_id}:{change.version}",
                   "X-Gridwatch-Change": change.change}
        waits = backoff_delays(self.max_attempts, self.backoff_s, self.max_backoff_s)
        last = ""
        for attempt in range(self.max_attempts):
            headers["X-Gridwatch-Signature"] = sign(self.secret, body)  # fresh timestamp per attempt
            try:
                async with self.session.post(self.url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        return
                    last = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status not in RETRY_STATUS:
                        raise DeliveryError(f"{self.url} rejected the change: {last} (not retried)")
            except (TimeoutError, aiohttp.ClientError) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < len(waits):
                log.info("webhook %s: attempt %d failed (%s), retrying in %.1fs", self.name, attempt + 1, last,
                         waits[attempt])
                await asyncio.sleep(waits[attempt])
        raise DeliveryError(f"{self.url}: {self.max_attempts} attempts failed, last: {last}")

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
