"""One plug-in registry (gridwatch.core.plugins) behind rules, scene rules, detectors and channels."""

from __future__ import annotations

import textwrap

import pytest

from gridwatch.agents.channels.base import CHANNELS, ChannelConfigError, build_channels
from gridwatch.agents.rules.base import RULES, RuleConfigError, build_rule
from gridwatch.core.plugins import Plugins
from gridwatch.models.detectors.registry import DETECTORS
from gridwatch.models.scene_rules import SCENE_RULES


def test_every_shipped_plugin_is_found_from_its_file_alone():
    """No list to edit: the package scan finds each plug-in file's registration."""
    assert {"threshold", "lamp_night_out", "lamp_day_burn", "circuit_dark", "offline"} <= set(RULES.types())
    assert {"mqtt", "webhook", "wecom", "dingtalk", "hotline"} <= set(CHANNELS.types())
    assert {"onnx_yolo", "yolo_darknet_onnx"} <= set(DETECTORS.types())
    assert {"crowd", "vehicle_parked", "restricted_zone", "line_crossing"} <= set(SCENE_RULES.types())


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
