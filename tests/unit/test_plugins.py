"""One plug-in registry (gridwatch.core.plugins) behind rules, scene rules, detectors, channels and sinks."""

from __future__ import annotations

import sys
import textwrap

import pytest

from gridwatch.agents.channels.base import CHANNELS, ChannelConfigError, build_channels
from gridwatch.agents.rules.base import RULES, RuleConfigError, build_rule
from gridwatch.agents.sinks.base import SINKS, SinkConfigError
from gridwatch.core.plugins import Plugins
from gridwatch.core.settings import Settings, SettingsError, load_settings
from gridwatch.models.detectors.registry import DETECTORS
from gridwatch.models.scene_rules import SCENE_RULES


def test_every_shipped_plugin_is_found_from_its_file_alone():
    """No list to edit: the package scan finds each plug-in file's registration."""
    assert {"threshold", "lamp_night_out", "lamp_day_burn", "circuit_dark", "offline"} <= set(RULES.types())
    assert {"mqtt", "webhook", "wecom", "dingtalk", "hotline"} <= set(CHANNELS.types())
    assert {"onnx_yolo", "yolo_darknet_onnx"} <= set(DETECTORS.types())
    assert {"crowd", "vehicle_parked", "restricted_zone", "line_crossing"} <= set(SCENE_RULES.types())
    assert {"influx", "store"} <= set(SINKS.types())


def test_a_rule_of_ones_own_is_one_module_named_by_the_entry(tmp_path, monkeypatch):
    (tmp_path / "my_city_rules.py").write_text(textwrap.dedent('''
        from gridwatch.agents.rules.base import Rule, Verdict, register

        @register("hydrant_pressure")
        class HydrantPressure(Rule):
            def check(self, values, device, active, ctx):
                return Verdict(values.get("bar", 9) < 2)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    rule = build_rule({"type": "hydrant_pressure", "module": "my_city_rules", "kinds": ["water_gauge"]}, "rules[0]")
    assert rule is not None and type(rule).__name__ == "HydrantPressure" and rule.type == "hydrant_pressure"
    with pytest.raises(RuleConfigError, match="cannot import rule module 'no_such_module'"):
        build_rule({"type": "x", "module": "no_such_module", "kinds": ["manhole"]}, "rules[1]")


def test_an_unknown_type_names_the_entry_and_the_known_types():
    with pytest.raises(ChannelConfigError, match=r"channel 'pager': unknown channel type 'sms' \(known: .*dingtalk"):
        build_channels([{"name": "pager", "type": "sms"}])
    with pytest.raises(RuleConfigError, match=r"rules\[3\]: unknown rule type 'nope' \(known: .*threshold"):
        build_rule({"type": "nope", "kinds": ["manhole"]}, "rules[3]")


def test_two_different_classes_under_one_name_are_refused():
    plugins: Plugins[type] = Plugins("widget", None, KeyError)

    class A:
        pass

    class B:
        pass

    plugins.register("w")(A)
    plugins.register("w")(A)  # the same class again (a module imported twice) is fine
    assert plugins.get("w") is A and A.type == "w"  # type: ignore[attr-defined]
    with pytest.raises(KeyError, match="widget type 'w' registered twice"):
        plugins.add("w", B)


ARCHIVE_SINK = '''
from dataclasses import dataclass

from gridwatch.agents.sinks.base import Sink, register


@dataclass
class ArchiveConfig:
    path: str = "/srv/archive"
    every_s: float = 60.0


@register("archive")
class Archive(Sink):
    config_class = ArchiveConfig

    def install(self, ctx):
        return None
'''


@pytest.fixture
def fresh_sinks(monkeypatch):
    """The sink registry as before its first scan, restored afterwards."""
    import gridwatch.agents.sinks as package
    from gridwatch.agents.sinks.base import SINKS

    monkeypatch.setattr(SINKS, "_classes", dict(SINKS._classes))
    monkeypatch.setattr(SINKS, "_scanned", False)
    monkeypatch.setattr(package, "__path__", list(package.__path__))
    yield package
    sys.modules.pop("gridwatch.agents.sinks.archive_test_sink", None)
    vars(package).pop("archive_test_sink", None)


def test_a_sink_dropped_into_the_package_is_found_without_a_list(tmp_path, fresh_sinks):
    """A new file in agents/sinks/ (here: a folder added to the package's path) is one sink more: the
    registry, the agent names of --agents and the typed config all know it, no list edited."""
    from gridwatch.agents.sinks.base import SINKS, build_sinks
    from gridwatch.app import resolve_agents

    (tmp_path / "archive_test_sink.py").write_text(ARCHIVE_SINK)
    fresh_sinks.__path__.append(str(tmp_path))
    assert {"influx", "store", "archive"} <= set(SINKS.types())
    s = Settings()
    s.sinks = [{"type": "store"}, {"type": "archive", "path": "/data/cold", "every_s": 5}]
    sinks = build_sinks(s)
    assert list(sinks) == ["store_sink", "archive_sink"]
    archive = sinks["archive_sink"]
    assert type(archive).__name__ == "Archive" and archive.config.path == "/data/cold"
    assert archive.config.every_s == 5.0 and isinstance(archive.config.every_s, float)
    assert resolve_agents("archive_sink", s) == ("archive_sink",)
    assert resolve_agents("", s)[-2:] == ("store_sink", "archive_sink")
    s.sinks = [{"type": "archive", "every_s": "often"}]
    with pytest.raises(SinkConfigError, match=r"sinks\[0\] \(archive\)\.every_s: expected float"):
        build_sinks(s)


def test_a_wrong_sink_entry_is_refused_with_what_is_known():
    from gridwatch.agents.sinks.base import build_sinks

    s = Settings()
    s.sinks = [{"type": "store"}, {"type": "kafka_archive"}]
    with pytest.raises(SinkConfigError, match=r"sinks\[1\]: unknown sink type 'kafka_archive' \(known: .*influx, store"):
        build_sinks(s)
    s.sinks = [{"type": "influx", "url": "http://x"}]  # the built-in sinks keep their settings in a section
    with pytest.raises(SinkConfigError, match=r"sinks\[0\] \(influx\): unknown key\(s\) \['url'\]; .* influx: section"):
        build_sinks(s)
    s.sinks = [{"type": "store"}, {"type": "store"}]
    with pytest.raises(SinkConfigError, match="a second sink named 'store'"):
        build_sinks(s)


def test_the_sinks_list_of_a_config_file_replaces_the_shipped_one(tmp_path, monkeypatch):
    """Existing keys and env vars keep working: the store and influx settings stay in their sections."""
    from gridwatch.agents.sinks.base import build_sinks
    from gridwatch.app import resolve_agents

    monkeypatch.setenv("GRIDWATCH_INFLUX_BUCKET", "city")
    f = tmp_path / "gw.yaml"
    f.write_text("sinks:\n  - type: influx\n  - {type: store, enabled: false}\nstore:\n  batch_size: 7\n")
    s = load_settings(f)
    sinks = build_sinks(s)
    assert list(sinks) == ["influx_sink"] and sinks["influx_sink"].config.bucket == "city"
    assert resolve_agents("store_sink", s) == ("store_sink",)  # known, though off: installs nothing
    assert load_settings().store.batch_size == 500 and s.store.batch_size == 7
    f.write_text("sinks:\n  - store\n")
    with pytest.raises(SettingsError, match=r"sinks\[0\]: a mapping with a type"):
        load_settings(f)
