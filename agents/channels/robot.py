"""What the group-robot channels (WeCom, DingTalk) share: which incidents a group gets, the Chinese
markdown message, @mentions, secrets, and posting with retries.

Why a base of its own: an office's group is one entry under ``channels:`` per tier (the city command
centre's group gets red only, a town's group everything in its town), so area, work-order tier,
level and change filters, and who is @-mentioned at which level, are the same for both robots; only
the URL, the signature and the JSON shape differ (wecom.py, dingtalk.py).

Both robots answer HTTP 200 with ``{"errcode": 0, "errmsg": "ok"}``; anything else is a failure:
rate limits and busy answers are retried with back-off, other errcodes (a wrong key, a bad signature,
a malformed message) go to the dead-letter topic at once with the robot's own errmsg.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp

from gridwatch.pipeline.schemas.events import LEVELS
from gridwatch.pipeline.schemas.incidents import WORK_TIERS

from . import zh_text
from .base import ChangeInfo, Channel, ChannelConfigError, DeliveryError
from .webhook import backoff_delays

log = logging.getLogger("gridwatch.channels.robot")
RETRY_STATUS = frozenset({408, 429})
UNREADABLE = -2  # an answer that is not the robot's JSON (a proxy's error page): retried


def read_secret(channel: str, cfg: dict[str, Any], base: str, default_env: str) -> str:
    """A secret from ``<base>_file`` (first line) or the env var named by ``<base>_env`` (default given)."""
    if cfg.get(f"{base}_file"):
        try:
            return Path(str(cfg[f"{base}_file"])).read_text().splitlines()[0].strip()
        except (OSError, IndexError) as e:
            raise ChannelConfigError(f"channel {channel!r}.{base}_file: cannot read it ({e})") from None
    env = str(cfg.get(f"{base}_env", default_env))
    value = os.environ.get(env, "").strip()
    if not value:
        raise ChannelConfigError(f"channel {channel!r}: no {base} (set ${env}, or {base}_file / {base}_env)")
    return value


def local_time(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def message_lines(change: ChangeInfo, tz: ZoneInfo, link: str) -> tuple[str, list[tuple[str, str]], str]:
    """(headline, [(label, value)], link URL) of one incident change, in Chinese."""
    rec = change.record
    inc = rec["incident"]
    level = zh_text.LEVEL.get(change.level, change.level)
    headline = f"【{level}】{zh_text.title(inc)}"
    t = rec.get("transition") or {}
    status = zh_text.STATUS.get(change.status, change.status)
    handling = zh_text.TIER.get(inc.get("tier", ""), inc.get("tier", ""))
    dept = inc.get("department") or ""
    if inc.get("assist"):
        dept += f"（协办：{'、'.join(inc['assist'])}）"
    rows = [("级别", level), ("事件", zh_text.CHANGE.get(change.change, change.change)),
            ("地点", zh_text.place(inc)), ("时间", local_time(int(rec.get("ts") or inc["updated_ts"]), tz)),
            ("状态", f"{status} · {handling}" + (f" · {dept}" if dept else ""))]
    if t.get("action") and t["action"] not in ("created",):
        step = zh_text.ACTION.get(t["action"], t["action"])
        rows.append(("进展", f"{step}：{t['note']}" if t.get("note") else step))
    sv = inc.get("supervision")
    if sv:
        rows.append(("督办", f"{'已超期' if sv.get('overdue') else '期限'} {local_time(int(sv['deadline']), tz)}"))
    first = (inc.get("sources") or [{}])[0]
    if first.get("message"):
        rows.append(("描述", str(first["message"])[:200]))
    rows.append(("编号", inc["id"]))
    return headline, rows, link.format(id=inc["id"]) if link else ""


class RobotChannel(Channel):
    """Filters, mentions and the retrying POST of a group robot; subclasses build URL and payload."""

    keys: ClassVar[frozenset[str]] = frozenset({"url", "scope", "work_tiers", "mention", "link", "timezone",
                                                "timeout_s", "max_attempts", "backoff_s", "max_backoff_s"})
    default_url: ClassVar[str] = ""
    retry_errcodes: ClassVar[frozenset[int]] = frozenset()  # errcodes that mean "busy / too fast": retried
    max_bytes: ClassVar[int] = 4096  # markdown content limit of the robot
    colours: ClassVar[dict[str, str]] = {}  # level -> the headline's font colour in the robot's markdown
    colour_default: ClassVar[str] = ""
    row_format: ClassVar[str] = "{label}：{value}"  # one (label, value) row of message_lines as markdown

    def configure(self, cfg: dict[str, Any]) -> None:
        url = cfg.get("url", self.default_url)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ChannelConfigError(f"channel {self.name!r}.url: an http:// or https:// URL")
        self.url = url
        self.scope = str(cfg.get("scope", "") or "")
        self.work_tiers = self._subset(cfg, "work_tiers", WORK_TIERS)
        self.link = str(cfg.get("link", "") or "")
        if self.link and "{id}" not in self.link:
            raise ChannelConfigError(f"channel {self.name!r}.link: a URL with {{id}} where the incident id goes")
        try:
            self.tz = ZoneInfo(str(cfg.get("timezone", "Asia/Shanghai")))
            self.timeout_s = float(cfg.get("timeout_s", 5))
            self.max_attempts = int(cfg.get("max_attempts", 5))
            self.backoff_s = float(cfg.get("backoff_s", 1))
            self.max_backoff_s = float(cfg.get("max_backoff_s", 60))
        except (TypeError, ValueError, ZoneInfoNotFoundError) as e:
            raise ChannelConfigError(f"channel {self.name!r}: {e}") from None
        if self.max_attempts < 1:
            raise ChannelConfigError(f"channel {self.name!r}.max_attempts: at least 1")
        mention = cfg.get("mention") or {}
        if not isinstance(mention, dict) or set(mention) - {"levels", "mobiles", "userids", "all"}:
            raise ChannelConfigError(f"channel {self.name!r}.mention: a mapping of levels, mobiles, userids, all")
        self.mention_levels = frozenset(mention.get("levels", ["red"]))
        if not self.mention_levels <= set(LEVELS):
            raise ChannelConfigError(f"channel {self.name!r}.mention.levels: a list of {', '.join(LEVELS)}")
        self.mobiles = [str(m) for m in mention.get("mobiles", []) or []]
        self.userids = [str(u) for u in mention.get("userids", []) or []]
        self.at_all = bool(mention.get("all", False))
        self.configure_robot(cfg)
        self.session: aiohttp.ClientSession | None = None

    def configure_robot(self, cfg: dict[str, Any]) -> None:
        """Read the robot's own keys (credentials)."""

    def accepts(self, change: ChangeInfo) -> bool:
        if not super().accepts(change):
            return False
        if self.scope and self.scope not in change.tiers.values():
            return False
        return change.record["incident"].get("tier", "") in self.work_tiers

    def mentions(self, change: ChangeInfo) -> tuple[list[str], list[str], bool]:
        """(mobiles, user ids, @all) to @-mention for this change (nobody below the mention levels)."""
        if change.level not in self.mention_levels:
            return [], [], False
        return self.mobiles, self.userids, self.at_all

    def markdown(self, change: ChangeInfo) -> tuple[str, list[str]]:
        """(headline, markdown lines) of one change: the coloured headline, the rows, the link."""
        headline, rows, link = message_lines(change, self.tz, self.link)
        lines = [f'### <font color="{self.colours.get(change.level, self.colour_default)}">{headline}</font>']
        lines += [self.row_format.format(label=label, value=value) for label, value in rows]
        if link:
            lines.append(f"[查看详情]({link})")
        return headline, lines

    def payloads(self, change: ChangeInfo) -> list[dict[str, Any]]:
        """The JSON bodies to send for one change (usually one)."""
        raise NotImplementedError

    def post_url(self) -> str:
        """The URL of one POST (DingTalk signs each with the current time)."""
        return self.url

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def deliver(self, change: ChangeInfo, body: bytes) -> None:
        for payload in self.payloads(change):
            await self.post(payload)

    async def post(self, payload: dict[str, Any]) -> None:
        """POST one message; retried on network errors, 5xx / 408 / 429 and the robot's busy errcodes."""
        assert self.session is not None, "start() first"
        data = json.dumps(payload, ensure_ascii=False).encode()
        waits = backoff_delays(self.max_attempts, self.backoff_s, self.max_backoff_s)
        last = ""
        for attempt in range(self.max_attempts):
            try:
                async with self.session.post(self.post_url(), data=data,
                                             headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
                    text = await resp.text()
                    if resp.status >= 500 or resp.status in RETRY_STATUS:
                        last = f"HTTP {resp.status}"
                    elif resp.status != 200:
                        raise DeliveryError(f"{self.type} robot answered HTTP {resp.status} (not retried): {text[:200]}")
                    else:
                        code, msg = self._errcode(text)
                        if code == 0:
                            return
                        last = f"errcode {code}: {msg}"
                        if code not in self.retry_errcodes and code != UNREADABLE:
                            raise DeliveryError(f"{self.type} robot refused the message, {last} (not retried)")
            except (TimeoutError, aiohttp.ClientError) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < len(waits):
                log.info("%s %s: attempt %d failed (%s), retrying in %.1fs", self.type, self.name, attempt + 1, last,
                         waits[attempt])
                await asyncio.sleep(waits[attempt])
        raise DeliveryError(f"{self.type} robot: {self.max_attempts} attempts failed, last: {last}")

    @staticmethod
    def _errcode(text: str) -> tuple[int, str]:
        try:
            d = json.loads(text)
            return int(d.get("errcode", -1)), str(d.get("errmsg", ""))
        except (ValueError, TypeError, AttributeError):
            return UNREADABLE, f"not a robot answer: {text[:200]!r}"

    def fit(self, text: str) -> str:
        """Cut a markdown text to the robot's byte limit (on a character boundary)."""
        raw = text.encode()
        if len(raw) <= self.max_bytes:
            return text
        return raw[: self.max_bytes - 6].decode(errors="ignore") + "\n……"
