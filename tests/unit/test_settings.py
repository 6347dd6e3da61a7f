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


@pytest.mark.parametrize(("text", "key"), [
    ("kafka:\n  partitions:\n", "kafka.partitions"),  # found by test_fuzz_configs: was a TypeError
    ("kafka:\n  partitions: ~\n", "kafka.partitions"),
    ("kafka:\n  partitions: 0\n", "kafka.partitions"),
    ("kafka:\n  partitions: true\n", "kafka.partitions"),
    ("kafka:\n  partitions: 2.5\n", "kafka.partitions"),
    ("kafka:\n  tansu_quirks: maybe\n", "kafka.tansu_quirks"),
    ("mqtt:\n  url:\n", "mqtt.url"),
    ("web:\n  port: 70000\n", "web.port"),
    ("web:\n  port: -1\n", "web.port"),
    ("web:\n  rate_per_min: 0\n", "web.rate_per_min"),
    ("web:\n  rate_per_min: .nan\n", "web.rate_per_min"),
    ("web:\n  require_api_key: 1\n", "web.require_api_key"),
    ("bridge:\n  linger_ms: -5\n", "bridge.linger_ms"),
    ("bridge:\n  stats_interval_s: .inf\n", "bridge.stats_interval_s"),
    ("worker:\n  upstream_idle_s: 0\n", "worker.upstream_idle_s"),
    ("worker:\n  log_level: loud\n", "worker.log_level"),
    ("influx:\n  writers: 0\n", "influx.writers"),
    ("city:\n  path: 12\n", "city.path"),
])
def test_every_null_wrong_type_and_out_of_range_value_names_its_key(tmp_path, monkeypatch, text, key):
    monkeypatch.delenv("GRIDWATCH_KAFKA_TANSU_QUIRKS", raising=False)  # tests/conftest.py sets it
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(SettingsError, match=key.split(".")[-1]) as e:
        load_settings(f)
    assert key.split(".")[0] in str(e.value)


def test_bad_environment_and_flag_values_name_their_key(monkeypatch):
    monkeypatch.setenv("GRIDWATCH_WEB_PORT", "-3")
    with pytest.raises(SettingsError, match="web.port"):
        load_settings()
    monkeypatch.delenv("GRIDWATCH_WEB_PORT")
    with pytest.raises(SettingsError, match="kafka.partitions"):
        load_settings(None, {"kafka.partitions": 0})
    with pytest.raises(SettingsError, match="nope.x"):
        load_settings(None, {"nope.x": 1})
    assert load_settings(None, {"web.rate_per_min": 5}).web.rate_per_min == 5.0  # an int is a fine float
