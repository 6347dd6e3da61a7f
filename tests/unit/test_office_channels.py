"""WeCom and DingTalk group robots and 12345 hotline callbacks, each against a local receiver over real
HTTP (tests/office_receivers.py) that checks the exact JSON, the key / token and the signatures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import urllib.parse
from typing import Any

import pytest

from gridwatch.agents.channels.base import ChangeInfo, ChannelConfigError, DeliveryError, build_channels
from gridwatch.agents.channels.dingtalk import dingtalk_sign
from gridwatch.pipeline.schemas.events import TierRef
from gridwatch.pipeline.schemas.incidents import (
    Incident,
    IncidentChange,
    IncidentSource,
    Supervision,
    Transition,
)
from tests.office_receivers import DINGTALK_SECRET, OfficeReceivers

GRID = "330102001001005"
TIERS = [TierRef("city", "330100", "兰溪新城"), TierRef("district", "330102", "梅桥区"),
         TierRef("street", "330102001", "安沙街道"), TierRef("community", "330102001001", "云坪社区"),
         TierRef("grid", GRID, "云坪第五网格")]
T = 1_763_647_200_000  # 2025-11-20 14:00 UTC = 22:00 in Shanghai


def change(level: str = "red", kind: str = "created", *, hotline: bool = False, tier: str = "community",
           supervised: bool = False) -> ChangeInfo:
    src = (IncidentSource("report", "h123", "manhole_cover", T, T, message="井盖不见了", origin="hotline",
                          external_id="GD-20251120-0007") if hotline else
           IncidentSource("event", "e1", "manhole_open", T, T, subject="3301020101000003", level=level,
                          message="cover_open is true", origin="telemetry"))
    inc = Incident("i1", "manhole", "t", level, 30, "dispatched", tier, "330102001001", "municipal_facilities", GRID,
                   TIERS, 30.0, 120.0, T, T, T + 7_200_000, [src], version=4, assist=["traffic_police"])
    if supervised:
        inc.supervision = Supervision("jiwei", "限期办结", T + 3_600_000, T)
    t = Transition(T + 60_000, "dispatch", "city", note="请市政处置", to_status="dispatched")
    return ChangeInfo.parse(IncidentChange(inc, kind, T + 60_000, t).encode())


@pytest.fixture
def receivers(monkeypatch) -> Any:
    r = OfficeReceivers()
    for k, v in r.env().items():
        monkeypatch.setenv(k, v)
    yield r
    r.close()


def deliver_all(channels: list[Any], *changes: ChangeInfo) -> list[Exception | None]:
    """Start the channels, deliver each change to each, stop; the errors (or None) in order."""

    async def main() -> list[Exception | None]:
        out: list[Exception | None] = []
        for ch in channels:
            await ch.start()
        try:
            for c in changes:
                for ch in channels:
                    try:
                        await ch.deliver(c, b"{}")
                        out.append(None)
                    except DeliveryError as e:
                        out.append(e)
        finally:
            for ch in channels:
                await ch.stop()
        return out

    return asyncio.run(main())


def test_a_red_incident_reaches_both_robots_as_chinese_markdown_with_mentions(receivers):
    wecom, ding = build_channels(receivers.channels()[:2])
    assert deliver_all([wecom, ding], change("red", supervised=True)) == [None, None]
    md, text = receivers.wecom
    content = md["markdown"]["content"]
    assert content.startswith('### <font color="warning">【红色预警】井盖：井盖打开</font>')
    for line in ("> 级别：红色预警", "> 事件：新事件", "> 地点：梅桥区 安沙街道 云坪社区 云坪第五网格",
                 "> 时间：2025-11-20 22:01:00", "> 状态：已派单 · 社区级 · municipal_facilities（协办：traffic_police）",
                 "> 进展：派单：请市政处置", "> 督办：期限 2025-11-20 23:00:00", "> 编号：i1",
                 "[查看详情](http://console.test/console#incident=i1)", "<@zhangsan>"):
        assert line in content.split("\n"), line
    assert text == {"msgtype": "text", "text": {"content": "【红色预警】井盖：井盖打开，请及时处置。",
                                                "mentioned_mobile_list": ["13800000001"]}}
    [msg] = receivers.dingtalk
    assert msg["msgtype"] == "markdown" and msg["markdown"]["title"] == "【红色预警】井盖：井盖打开"
    assert msg["at"] == {"atMobiles": ["13800000002"], "atUserIds": [], "isAtAll": False}
    assert "- **地点**：梅桥区 安沙街道 云坪社区 云坪第五网格" in msg["markdown"]["text"].split("\n\n")
    assert msg["markdown"]["text"].endswith("@13800000002")
    assert receivers.rejected == []


def test_filters_by_level_area_and_work_order_tier_and_mentions_only_at_mention_levels(receivers):
    [town] = build_channels([{**receivers.channels()[0], "name": "ansha", "levels": ["red", "yellow", "blue"],
                              "scope": "330102001", "work_tiers": ["community", "street"]}])
    assert town.accepts(change("yellow")) and town.accepts(change("red", tier="street"))
    assert not town.accepts(change("red", tier="district"))
    [other_town] = build_channels([{**receivers.channels()[0], "name": "x", "scope": "330102002"}])
    assert not other_town.accepts(change("red"))
    [city] = build_channels(receivers.channels()[:1])
    assert not city.accepts(change("yellow"))  # the city's group: red only
    assert town.mentions(change("yellow")) == ([], [], False)
    assert deliver_all([town], change("blue")) == [None]
    [only] = receivers.wecom  # no @-text message below red
    assert only["markdown"]["content"].startswith('### <font color="info">【蓝色预警】')


def test_dingtalk_signature_is_hmac_sha256_of_timestamp_and_secret_base64_url_encoded():
    ts = 1_763_647_200_123
    raw = hmac.new(b"SECxyz", f"{ts}\nSECxyz".encode(), hashlib.sha256).digest()
    assert urllib.parse.unquote_plus(dingtalk_sign("SECxyz", ts)) == base64.b64encode(raw).decode()
    assert "+" not in dingtalk_sign("SECxyz", ts) and "/" not in dingtalk_sign("SECxyz", ts)


def test_busy_and_broken_answers_are_retried_and_refusals_dead_letter_without_a_crash(receivers, monkeypatch):
    wecom, ding = build_channels(receivers.channels()[:2])
    receivers.script["wecom"] = [45009, 500, "html"]  # over the rate, a server error, a proxy's page: then ok
    receivers.script["dingtalk"] = [130101]  # sending too fast: then ok
    assert deliver_all([wecom, ding], change("red")) == [None, None]
    assert receivers.attempts == {"wecom": 5, "dingtalk": 2, "hotline": 0}  # 3 failed + markdown + text
    receivers.script["wecom"] = ["html"] * 4
    receivers.script["dingtalk"] = [310000]  # a refusal (bad signature): not retried
    [w_err, d_err] = deliver_all([wecom, ding], change("red"))
    assert isinstance(w_err, DeliveryError) and "4 attempts failed" in str(w_err) and "not a robot answer" in str(w_err)
    assert isinstance(d_err, DeliveryError) and "errcode 310000" in str(d_err) and "not retried" in str(d_err)
    # a wrong secret is caught by the receiver's own check of the signature
    monkeypatch.setenv("TEST_DINGTALK_SECRET", DINGTALK_SECRET + "x")
    [bad] = build_channels(receivers.channels()[1:2])
    [err] = deliver_all([bad], change("red"))
    assert isinstance(err, DeliveryError) and "sign not match" in str(err)
    assert receivers.rejected == [("dingtalk", "sign not match")]


def test_hotline_callbacks_only_for_hotline_orders_signed_with_the_order_id(receivers):
    [hotline] = build_channels(receivers.channels()[2:])
    assert not hotline.accepts(change("red")) and hotline.accepts(change("yellow", "supervised", hotline=True))
    assert deliver_all([hotline], change("yellow", "action", hotline=True)) == [None]
    [cb] = receivers.hotline
    body = cb["body"]
    assert cb["headers"]["X-Gridwatch-Delivery"] == "i1:4" and cb["headers"]["X-Gridwatch-Change"] == "action"
    assert {k: body[k] for k in ("order_id", "service_request_id", "incident_id", "status", "status_name", "action",
                                 "action_name", "note", "department", "assist", "closed", "time")} == {
        "order_id": "GD-20251120-0007", "service_request_id": "h123", "incident_id": "i1", "status": "dispatched",
        "status_name": "已派单", "action": "dispatch", "action_name": "派单", "note": "请市政处置",
        "department": "municipal_facilities", "assist": ["traffic_police"], "closed": False,
        "time": "2025-11-20 22:01:00"}


def test_robot_config_errors_name_the_key(monkeypatch):
    monkeypatch.setenv("K", "k")
    for entry, msg in [
        ({"name": "w", "type": "wecom", "key_env": "NOT_SET_ANYWHERE"}, "no key"),
        ({"name": "w", "type": "wecom", "key_env": "K", "mention": {"levels": ["purple"]}}, "mention.levels"),
        ({"name": "w", "type": "wecom", "key_env": "K", "mention": {"phones": []}}, "mention"),
        ({"name": "w", "type": "wecom", "key_env": "K", "link": "http://x/"}, "link"),
        ({"name": "w", "type": "wecom", "key_env": "K", "work_tiers": ["grid"]}, "work_tiers"),
        ({"name": "d", "type": "dingtalk", "access_token_env": "K", "secret_env": "NOT_SET_ANYWHERE"}, "no secret"),
        ({"name": "h", "type": "hotline", "url": "http://x/", "secret_env": "NOT_SET_ANYWHERE"}, "no secret"),
    ]:
        with pytest.raises(ChannelConfigError, match=msg):
            build_channels([entry])
