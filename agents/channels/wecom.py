"""WeCom (企业微信) group robot: each incident change as a Chinese markdown message to an office's group.

POST ``https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<key>`` with
``{"msgtype": "markdown", "markdown": {"content": "..."}}`` (content at most 4096 bytes; the robot
answers ``{"errcode": 0, "errmsg": "ok"}``). The key is a secret (anyone with it can post to the
group): it comes from an env var or a file, never from incidents.yaml. @mentions: user ids go into the
markdown as ``<@userid>``; mobiles and @all only work in a text message, so for a change at a
mention level a short text message with ``mentioned_mobile_list`` follows the markdown.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .base import ChangeInfo, register
from .robot import RobotChannel, read_secret

COLOUR = {"red": "warning", "yellow": "comment", "blue": "info"}  # the three colours WeCom markdown has


@register("wecom")
class WeComChannel(RobotChannel):
    keys = RobotChannel.keys | {"key_env", "key_file"}
    default_url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    retry_errcodes = frozenset({-1, 45009})  # system busy; over the robot's rate (20 messages a minute)
    max_bytes = 4096
    colours = COLOUR
    colour_default = "comment"
    row_format = "> {label}：{value}"

    def configure_robot(self, cfg: dict[str, Any]) -> None:
        self.key = read_secret(self.name, cfg, "key", "GRIDWATCH_WECOM_KEY")

    def post_url(self) -> str:
        return f"{self.url}{'&' if '?' in self.url else '?'}key={quote(self.key, safe='')}"

    def payloads(self, change: ChangeInfo) -> list[dict[str, Any]]:
        headline, lines = self.markdown(change)
        mobiles, userids, at_all = self.mentions(change)
        if userids:
            lines.append(" ".join(f"<@{u}>" for u in userids))
        out: list[dict[str, Any]] = [{"msgtype": "markdown", "markdown": {"content": self.fit("\n".join(lines))}}]
        if mobiles or at_all:
            out.append({"msgtype": "text", "text": {"content": f"{headline}，请及时处置。",
                                                    "mentioned_mobile_list": [*mobiles, *(["@all"] if at_all else [])]}})
        return out
