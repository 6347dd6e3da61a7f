"""Webhook channel: HTTP POST of each incident change, signed, retried, dead-lettered.

Headers (GitHub-style, so receivers can reuse their verification code):
  X-Gridwatch-Signature: sha256=<hex HMAC-SHA256 of the exact body with the shared secret>
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
from pathlib import Path
from typing import Any

import aiohttp

from .base import ChangeInfo, Channel, ChannelConfigError, DeliveryError, register

log = logging.getLogger("gridwatch.channels.webhook")
RETRY_STATUS = frozenset({408, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The X-Gridwatch-Signature value of a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


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
                   "X-Gridwatch-Signature": sign(self.secret, body),
                   "X-Gridwatch-Delivery": f"{change.incident_id}:{change.version}",
                   "X-Gridwatch-Change": change.change}
        waits = backoff_delays(self.max_attempts, self.backoff_s, self.max_backoff_s)
        last = ""
        for attempt in range(self.max_attempts):
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
