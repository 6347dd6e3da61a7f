"""Property-based bad input for config files and grid maps: a clear error of the documented type, never a crash.

Examples per test come from the hypothesis profile (tests/conftest.py): fixed in CI, longer with
``--hypothesis-profile explore``."""

from __future__ import annotations

import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridwatch.agents.rules.base import RuleConfigError, load_rules
from gridwatch.core.settings import Settings, SettingsError, load_settings
from gridwatch.devices.gridmap import GridMap, GridMapError

scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats() | st.text(max_size=12)
docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=25)
SECTIONS = [f.name for f in fields(Settings) if f.name != "source"] + ["nope"]
KEYS = sorted({k.name for s in SECTIONS[:-1] if is_dataclass(v := getattr(Settings(), s)) for k in fields(v)}) + ["x"]
CASES = {"settings": 0, "rules": 0, "gridmap": 0}


def _write(doc: object) -> Path:
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)  # noqa: SIM115
    f.write(yaml.safe_dump(doc, allow_unicode=True))
    f.close()
    return Path(f.name)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(docs, st.dictionaries(st.sampled_from(SECTIONS), st.one_of(docs, st.dictionaries(st.sampled_from(KEYS), scalars)), max_size=4)))
def test_settings_files(doc):
    CASES["settings"] += 1
    path = _write(doc)
    try:
        load_settings(path)
    except SettingsError as e:
        assert str(e)


rule_entry = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["threshold", "lamp_night_out", "circuit_dark", "offline", "zzz"]) | scalars,
    "name": st.text(max_size=8), "kinds": st.lists(st.sampled_from(["manhole", "streetlight"]), max_size=2) | scalars,
    "level": st.sampled_from(["red", "yellow", "blue", "pink"]), "field": scalars | st.just("tilt_deg"),
    "above": scalars, "below": scalars, "equals": scalars, "raise_after": scalars, "escalate": docs,
    "intervals": scalars, "window_s": scalars})


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(docs, st.fixed_dictionaries({"rules": st.lists(rule_entry, max_size=4)})))
def test_rules_files(doc):
    CASES["rules"] += 1
    path = _write(doc)
    try:
        load_rules(path)
    except RuleConfigError as e:
        assert str(e)


coords = st.lists(st.lists(st.floats(-200, 200, allow_nan=False), min_size=2, max_size=3), max_size=6)
feature = st.fixed_dictionaries({"type": st.just("Feature")}, optional={
    "properties": st.fixed_dictionaries({}, optional={
        "code": st.sampled_from(["330100", "330102", "330102001", "330102001001", "330102001001001", "12", "x"]),
        "name": st.text(max_size=5), "tier": st.sampled_from(["city", "district", "street", "community", "grid", "moon"]),
        "parent": st.sampled_from([None, "330100", "330102", "330102001", "330102001001", "999999"])}),
    "geometry": st.one_of(st.none(), docs, st.fixed_dictionaries({"type": st.just("Polygon"), "coordinates": st.lists(coords, max_size=2)}))})


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(feature, max_size=6))
def test_grid_maps(features):
    CASES["gridmap"] += 1
    try:
        GridMap.from_features(features)
    except GridMapError as e:
        assert str(e)


def test_zz_report_cases():
    print(f"config/grid-map fuzz cases tried: {CASES}")
