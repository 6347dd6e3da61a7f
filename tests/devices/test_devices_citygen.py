"""citygen: deterministic, realistic, and the shipped sample city is what the generator makes."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest

from gridwatch.devices import citygen
from gridwatch.devices.registry import SAMPLE_CITY_DIR, load_city

FILES = ("grids.geojson", "devices.csv", "city.yaml")


def test_same_seed_same_city_other_seed_other_city(tmp_path: Path) -> None:
    a = citygen.generate(tmp_path / "a", n_devices=600, seed=3)
    citygen.generate(tmp_path / "b", n_devices=600, seed=3)
    citygen.generate(tmp_path / "c", n_devices=600, seed=4)
    for f in FILES:
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False), f
    assert not filecmp.cmp(tmp_path / "a" / "devices.csv", tmp_path / "c" / "devices.csv", shallow=False)
    assert sum(a.devices.values()) == 600


def test_shipped_sample_city_is_reproducible(tmp_path: Path) -> None:
    citygen.generate(tmp_path, n_devices=3000, seed=7)
    for f in FILES:
        assert filecmp.cmp(tmp_path / f, SAMPLE_CITY_DIR / f, shallow=False), (
            f"devices/data/sample-city/{f} differs from the generator's output; if the generator changed on "
            f"purpose, regenerate with: python -m gridwatch.devices.citygen devices/data/sample-city"
        )
    size = sum((SAMPLE_CITY_DIR / f).stat().st_size for f in FILES)
    assert size < 2_000_000  # commit-sized


def test_grid_count_parameter(tmp_path: Path) -> None:
    res = citygen.generate(tmp_path, n_devices=200, seed=1, grids=300)
    assert 295 <= res.grids <= 305
    with pytest.raises(ValueError, match="grids must be between 256 and 512"):
        citygen.generate(tmp_path, grids=600)
    with pytest.raises(ValueError, match="at least 10"):
        citygen.generate(tmp_path, n_devices=3)


def test_water_gauges_sit_at_low_points(sample_city) -> None:  # type: ignore[no-untyped-def]
    gauges = sample_city.registry.by_kind("water_gauge")
    elev = [d.attrs["ground_elev_m"] for d in gauges]
    assert max(elev) < 4.0  # the terrain spans ~1..20 m; gauges take the lowest candidates
    assert {d.attrs["site"] for d in gauges} == {"underpass", "low-lying road"}


def test_lamps_line_roads_in_circuits(sample_city) -> None:  # type: ignore[no-untyped-def]
    # lamps of a circuit stand along one road segment: consecutive lamps 10-60 m apart
    for lamps in list(sample_city.registry.circuits().values())[:10]:
        names = {d.name.rsplit(" #", 1)[0] for d in lamps}
        assert len(names) == 1
        xy = np.array([[d.lon * 96.2, d.lat * 111.0] for d in sorted(lamps, key=lambda d: int(d.name.rsplit("#", 1)[1]))])
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1) * 1000
        assert 5 < np.median(steps) < 60, steps


def test_main_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert citygen.main([str(tmp_path / "x"), "--devices", "300", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ") and "grids" in out and "gateways" in out
    city = load_city(tmp_path / "x")
    assert len(city.registry) == 300 and city.meta["generator"] == {"seed": 5, "n_devices": 300, "grids": city.meta["counts"]["grids"]}
    assert citygen.main([str(tmp_path / "y"), "--grids", "100"]) == 2
    doc = json.loads((tmp_path / "x" / "grids.geojson").read_text())
    assert doc["type"] == "FeatureCollection"


def test_every_generated_name_has_a_chinese_twin(tmp_path: Path) -> None:
    """The console is Chinese first: areas and devices carry name_zh, derived without extra random draws."""
    from gridwatch.devices.citygen import zh_name
    from gridwatch.devices.registry import load_city

    city = load_city()  # the shipped sample city, regenerated with the Chinese names
    names = {a.code: a for a in city.gridmap.areas()}
    assert names["330100"].name_zh == "兰溪新城"
    for a in names.values():
        assert a.name_zh != a.name and zh_name(a.name) == a.name_zh
        assert not any(c.isascii() and c.isalpha() for c in a.name_zh), a.name_zh
    for d in city.registry:
        assert d.name_zh == zh_name(d.name) and not any(c.isascii() and c.isalpha() for c in d.name_zh), d
    assert zh_name("Ansha Subdistrict") == "安沙街道" and zh_name("Streetlight Nanning Road #35") == "南宁路路灯35号"
    with pytest.raises(ValueError, match="no Chinese name"):
        zh_name("Somewhere Else")
