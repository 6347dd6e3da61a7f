from __future__ import annotations

import pytest

from gridwatch.core.settings import SettingsError, load_settings, parse_mqtt_url


def test_defaults_env_and_overrides(monkeypatch, tmp_path):
    s = load_settings()
    assert s.kafka.topic_prefix == "gw" and s.kafka.partitions == 8
    monkeypatch.setenv("GRIDWATCH_KAFKA_PARTITIONS", "4")
    monkeypatch.setenv("GRIDWATCH_MQTT_URL", "mqtt://u:p@h:1884")
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  topic_prefix: replay1\n")
    s = load_settings(f, {"kafka.url": "kafka://k:9092", "city.path": None})
    assert (s.kafka.partitions, s.kafka.topic_prefix, s.kafka_bootstrap()) == (4, "replay1", "k:9092")
    assert s.mqtt_endpoint() == ("h", 1884, "u", "p")


def test_bad_config_names_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  partitons: 4\n")
    with pytest.raises(SettingsError, match="partitons"):
        load_settings(f)
    f.write_text("kafka:\n  partitions: many\n")
    with pytest.raises(SettingsError, match="partitions"):
        load_settings(f)
    f.write_text("kafka: [1\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(f)
    with pytest.raises(SettingsError, match="mqtt://"):
        parse_mqtt_url("http://x")


def test_embedded_without_a_running_stack_says_what_to_do(monkeypatch, tmp_path):
    import gridwatch.core.settings as gs

    monkeypatch.setattr(gs, "STACK_FILE", tmp_path / "none.json")
    with pytest.raises(SettingsError, match="gridwatch stack"):
        load_settings().kafka_bootstrap()
