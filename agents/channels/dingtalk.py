"""DingTalk (钉钉) custom robot: each incident change as a Chinese markdown message to an office's group.

POST ``https://oapi.dingtalk.com/robot/send?access_token=<token>&timestamp=<ms>&sign=<sign>`` with
``{"msgtype": "markdown", "markdown": {"title", "text"}, "at": {"atMobiles", "atUserIds", "isAtAll"}}``.
The signature is DingTalk's "加签" mode: HMAC-SHA256 of ``"<timestamp ms>\\n<secret>"`` keyed with the
secret, base64, URL-encoded; DingTalk refuses it an hour after the timestamp, so every attempt
(retries too) is signed anew. A mentioned mobile must also appear as ``@<mobile>`` in the text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import quote, quote_plus

from .base import ChangeInfo, register
from .robot import RobotChannel, read_secret

COLOUR = {"red": "#E5484D", "yellow": "#F5A524", "blue": "#3E63DD"}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The ``sign`` query value of DingTalk's signed robot URL (URL-encoded base64)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


@register("dingtalk")
class DingTalkChannel(RobotChannel):
    keys = RobotChannel.keys | {"access_token_env", "access_token_file", "secret_env", "secret_file"}
    default_url = "https://oapi.dingtalk.com/robot/send"
    retry_errcodes = frozenset({-1, 130101, 410100})  # busy; sending too fast (20 messages a minute)
    max_bytes = 18000
    colours = COLOUR
    colour_default = COLOUR["blue"]
    row_format = "- **{label}**：{value}"

    def configure_robot(self, cfg: dict[str, Any]) -> None:
        self.access_token = read_secret(self.name, cfg, "access_token", "GRIDWATCH_DINGTALK_TOKEN")
        self.secret = read_secret(self.name, cfg, "secret", "GRIDWATCH_DINGTALK_SECRET")

    def post_url(self, now_ms: int | None = None) -> str:
        ts = int(time.time() * 1000) if now_ms is None else now_ms
        sep = "&" if "?" in self.url else "?"
        return (f"{self.url}{sep}access_token={quote(self.access_token, safe='')}&timestamp={ts}"
                f"&sign={dingtalk_sign(self.secret, ts)}")

    def payloads(self, change: ChangeInfo) -> list[dict[str, Any]]:
        headline, lines = self.markdown(change)
        mobiles, userids, at_all = self.mentions(change)
        at = [f"@{m}" for m in mobiles] + [f"@{u}" for u in userids]
        if at:
            lines.append(" ".join(at))
        text = self.fit("\n\n".join(lines))
        return [{"msgtype": "markdown", "markdown": {"title": headline, "text": text},
                 "at": {"atMobiles": list(mobiles), "atUserIds": list(userids), "isAtAll": at_all}}]
