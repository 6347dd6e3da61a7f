"""Grid-event alerts are a channel like the incident channels: one list, one registry, filters per channel."""

from __future__ import annotations

import pytest

from gridwatch.agents.alerts import event_channels
from gridwatch.agents.channels.base import ChannelConfigError, EventChannel, build_channels
from gridwatch.agents.channels.mqtt_alerts import MqttAlertChannel
from gridwatch.core.settings import load_settings
from gridwatch.pipeline.schemas.events import GridEvent, TierRef
from gridwatch.pipeline.schemas.mqtt_topics import alert_topic

SETTINGS = load_settings()
MQTT = {"name": "mqtt", "type": "mqtt"}


def event(level: str = "red", phase: str = "new") -> GridEvent:
    tiers = [TierRef("city", "330100", "杭州市"), TierRef("district", "330102", "上城区"),
             TierRef("street", "330102001", "清波街道"), TierRef("community", "330102001001", "劳动路社区")]
    return GridEvent("e1", "manhole_open", phase, level, "mh-1", "manhole", "G-1", tiers,  # type: ignore[arg-type]
                     30.2, 120.1, 1000, 1000)


def test_without_an_event_channel_listed_the_mqtt_alerts_channel_is_used():
    channels = event_channels([MQTT], SETTINGS)
    assert [(c.name, type(c)) for c in channels] == [("alerts", MqttAlertChannel)]
    assert channels[0].topic_prefix == SETTINGS.mqtt.alert_prefix


def test_a_disabled_alerts_channel_turns_alerts_off_and_others_are_built_from_the_list():
    assert event_channels([{"name": "alerts", "type": "mqtt_alerts", "enabled": False}, MQTT], SETTINGS) == []
    two = event_channels([{"name": "city", "type": "mqtt_alerts", "topic_prefix": "city/alerts/", "levels": ["red"]},
                          {"name": "all", "type": "mqtt_alerts"}], SETTINGS)
    assert [(c.name, c.topic_prefix) for c in two] == [("city", "city/alerts"), ("all", SETTINGS.mqtt.alert_prefix)]


def test_event_channel_filters_are_levels_and_phases():
    ch = MqttAlertChannel("red-new", {"levels": ["red"], "phases": ["new"]}, SETTINGS)
    assert ch.accepts_event(event("red", "new"))
    assert not ch.accepts_event(event("yellow", "new"))
    assert not ch.accepts_event(event("red", "end"))
    with pytest.raises(ChannelConfigError, match="phases"):
        MqttAlertChannel("x", {"phases": ["opened"]}, SETTINGS)
    with pytest.raises(ChannelConfigError, match="unknown key"):
        MqttAlertChannel("x", {"changes": ["created"]}, SETTINGS)  # an incident channel's filter


def test_a_wrong_event_channel_is_left_out_and_does_not_silence_the_others():
    channels = event_channels([{"name": "bad", "type": "mqtt_alerts", "timeout_s": "soon"},
                               {"name": "alerts", "type": "mqtt_alerts"}], SETTINGS)
    assert [c.name for c in channels] == ["alerts"]


def test_the_incident_fan_out_builds_only_incident_channels():
    built = build_channels([{"name": "alerts", "type": "mqtt_alerts"}, MQTT], SETTINGS)
    assert [c.name for c in built] == ["mqtt"] and not any(isinstance(c, EventChannel) for c in built)


def test_alert_topic_is_the_tier_path_and_the_event_type():
    ev = event()
    assert alert_topic("gridwatch/alerts", ev.tier_code, ev.grid_code, ev.type) == \
        "gridwatch/alerts/330100/330102/330102001/330102001001/G-1/manhole_open"
