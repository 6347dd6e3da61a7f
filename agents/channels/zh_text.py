"""Chinese wording of incident messages sent to offices' groups (WeCom, DingTalk) and the hotline.

Why here and not in the console's string table: these messages are built by the worker, which has no
browser; the words are the offices' own (红色预警, 已派单, 督办 ...). A category group or event type missing
from these tables falls back to the group's title in incidents.yaml or the raw code.
"""

from __future__ import annotations

from typing import Any

LEVEL = {"red": "红色预警", "yellow": "黄色预警", "blue": "蓝色预警"}
STATUS = {"reported": "已上报", "dispatched": "已派单", "accepted": "已受理", "in_progress": "处置中",
          "resolved": "已办结", "evaluated": "已评价", "closed": "已结案", "cancelled": "已撤销"}
CHANGE = {"created": "新事件", "source_added": "新增线索", "source_updated": "线索更新", "action": "处置进展",
          "escalated": "升级", "auto_resolved": "传感器恢复（待确认）", "reopened": "重新打开", "closed": "结案",
          "supervised": "督办", "supervision_overdue": "督办超期"}
ACTION = {"created": "立案", "merged": "合并线索", "confirmed": "多源印证", "source_update": "线索更新",
          "source_end": "传感器恢复", "auto_resolve": "自动办结", "overdue": "超时升级", "auto_close": "自动结案",
          "ack": "签收", "dispatch": "派单", "accept": "受理", "start": "开始处置", "resolve": "办结",
          "escalate": "上报升级", "comment": "批注", "evaluate": "群众评价", "confirm": "确认办结", "reopen": "重新打开",
          "cancel": "撤销", "supervise": "督办", "supervision_overdue": "督办超期"}
TIER = {"city": "市级", "district": "区县级", "street": "街道级", "community": "社区级", "grid": "网格"}
GROUP = {"manhole": "井盖", "streetlight": "路灯", "flooding": "积水内涝", "device_fault": "设备需维护", "road": "道路破损",
         "sanitation": "垃圾", "parking": "违章停车", "public_order": "公共秩序", "other": "其他问题"}
EVENT = {"manhole_open": "井盖打开", "manhole_tilted": "井盖倾斜", "manhole_displaced": "井盖移位",
         "lamp_out_night": "夜间不亮", "lamp_lit_day": "白天亮灯", "circuit_dark": "整条回路熄灭",
         "water_over_level": "水位超限", "battery_low": "电量低", "device_offline": "设备离线",
         "vehicle_parked": "车辆违停", "crowd": "人员聚集", "restricted_zone": "闯入禁区", "line_crossing": "越线"}
ORIGIN = {"open311": "群众上报", "chat": "网格员上报", "hotline": "12345 热线"}


def title(inc: dict[str, Any]) -> str:
    """E.g. "井盖：井盖打开 + 群众上报 1 件"."""
    group = GROUP.get(inc.get("category_group", ""), inc.get("category_group", ""))
    srcs = inc.get("sources", [])
    events = sorted({EVENT.get(s.get("type", ""), s.get("type", "")) for s in srcs if s.get("kind") == "event"})
    reports: dict[str, int] = {}
    for s in srcs:
        if s.get("kind") == "report":
            label = ORIGIN.get(s.get("origin", ""), "群众上报")
            reports[label] = reports.get(label, 0) + 1
    parts = ([("、".join(events))] if events else []) + [f"{k} {n} 件" for k, n in reports.items()]
    return f"{group}：{' + '.join(parts)}" if parts else group


def place(inc: dict[str, Any]) -> str:
    """The area chain below the city, e.g. "梅桥区 安沙街道 云坪社区 网格 005"."""
    names = [t.get("name") or t.get("code", "") for t in inc.get("tiers", []) if t.get("tier") != "city"]
    return " ".join(n for n in names if n)
