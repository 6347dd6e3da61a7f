"""12345 hotline status callbacks: every change of an incident that came from a hotline work order
goes back to the hotline system, signed, as the webhook channel does it.

Why a webhook underneath: signing, retries with back-off and dead-lettering are the webhook's
(agents/channels/webhook.py), so the hotline system verifies the same headers as any webhook receiver
(``X-Gridwatch-Signature``, ``X-Gridwatch-Delivery`` = incident id:version); only the body differs:
one callback per hotline order in the incident (two calls about one problem fuse into one incident, and
each order hears about it), in the hotline's terms (its order id, a Chinese status name).
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import zh_text
from .base import ChangeInfo, ChannelConfigError, register
from .robot import local_time
from .webhook import WebhookChannel

CLOSED = ("resolved", "evaluated", "closed", "cancelled")


def hotline_orders(inc: dict[str, Any]) -> list[tuple[str, str]]:
    """(order id, report id) of every hotline work order fused into the incident."""
    return [(s.get("external_id") or s["id"], s["id"]) for s in inc.get("sources", [])
            if s.get("kind") == "report" and s.get("origin") == "hotline"]


def callback_body(change: ChangeInfo, order_id: str, report_id: str, tz: ZoneInfo) -> dict[str, Any]:
    """What the hotline system gets about one order after one change."""
    rec = change.record
    inc = rec["incident"]
    t = rec.get("transition") or {}
    ts = int(rec.get("ts") or inc["updated_ts"])
    return {
        "order_id": order_id, "service_request_id": report_id, "incident_id": inc["id"], "version": change.version,
        "change": change.change, "action": t.get("action", ""), "action_name": zh_text.ACTION.get(t.get("action", ""), ""),
        "note": t.get("note", ""), "status": change.status, "status_name": zh_text.STATUS.get(change.status, change.status),
        "closed": change.status in CLOSED, "level": change.level, "level_name": zh_text.LEVEL.get(change.level, ""),
        "department": inc.get("department", ""), "assist": inc.get("assist", []), "tier": inc.get("tier", ""),
        "supervision": inc.get("supervision"), "rating": inc.get("rating"), "ts": ts, "time": local_time(ts, tz),
        "title": zh_text.title(inc),
    }


@register("hotline")
class HotlineCallbackChannel(WebhookChannel):
    keys = WebhookChannel.keys | {"timezone"}

    def configure(self, cfg: dict[str, Any]) -> None:
        super().configure({"secret_env": "GRIDWATCH_HOTLINE_SECRET", **cfg})
        try:
            self.tz = ZoneInfo(str(cfg.get("timezone", "Asia/Shanghai")))
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ChannelConfigError(f"channel {self.name!r}.timezone: {e}") from None

    def accepts(self, change: ChangeInfo) -> bool:
        return super().accepts(change) and bool(hotline_orders(change.record["incident"]))

    async def deliver(self, change: ChangeInfo, body: bytes) -> None:
        for order_id, report_id in hotline_orders(change.record["incident"]):
            payload = callback_body(change, order_id, report_id, self.tz)
            await super().deliver(change, json.dumps(payload, ensure_ascii=False).encode())
