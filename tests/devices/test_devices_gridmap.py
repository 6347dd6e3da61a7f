"""GridMap: loading and validating GeoJSON, tiling of the sample city, tier chains, point location."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box

from gridwatch.devices import codes
from gridwatch.devices.gridmap import Area, GridMap, GridMapError
from gridwatch.devices.registry import City


def test_sample_map_tiers(sample_city: City) -> None:
    gm = sample_city.gridmap
    counts = {t: len(gm.areas(t)) for t in codes.TIERS}
    assert counts["city"] == 1 and counts["district"] == 4 and counts["street"] == 16 and counts["community"] == 64
    assert 350 <= counts["grid"] <= 400
    assert gm.city == Area("330100", "Lanxi New City", "city", None)
    for comm in gm.areas("community"):
        assert 4 <= len(gm.children(comm.code)) <= 8


def test_grids_tile_the_city_without_gaps_or_overlaps(sample_city: City) -> None:
    gm = sample_city.gridmap
    polys = [gm.geometry(g) for g in gm.grid_codes]
    union = shapely.union_all(polys)
    assert union.geom_type == "Polygon" and len(union.interiors) == 0  # one piece, no holes
    total = sum(p.area for p in polys)
    assert total == pytest.approx(union.area, rel=1e-9)  # areas add up: no overlaps
    tree = shapely.STRtree(polys)
    a, b = tree.query(polys, predicate="intersects")
    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        if i < j:
            assert polys[i].intersection(polys[j]).area < 1e-12, (gm.grid_codes[i], gm.grid_codes[j])
    # every tier's own polygon is the union of its grids
    for d in gm.areas("district"):
        assert gm.geometry(d.code).symmetric_difference(shapely.union_all([gm.geometry(g) for g in gm.grids_under(d.code)])).area < 1e-12
    # roughly a 20 x 15 km box around (30.27, 120.15)
    min_lon, min_lat, max_lon, max_lat = gm.bbox()
    assert 0.19 < max_lon - min_lon < 0.24 and 0.12 < max_lat - min_lat < 0.15
    assert min_lat < 30.27 < max_lat and min_lon < 120.15 < max_lon


def test_chain_children_and_grids_under(sample_city: City) -> None:
    gm = sample_city.gridmap
    for g in gm.grid_codes:
        chain = gm.chain(g)
        assert [a.tier for a in chain] == list(codes.TIERS)
        assert [a.code for a in chain] == [c for _, c in codes.tier_chain(g)]
    street = gm.areas("street")[0].code
    kids = gm.children(street)
    assert all(k.parent == street and k.tier == "community" for k in kids)
    under = gm.grids_under(street)
    assert under == sorted(g for g in gm.grid_codes if g.startswith(street))
    assert sum(len(gm.grids_under(k.code)) for k in kids) == len(under)
    assert gm.grids_under("330100") == gm.grid_codes
    assert gm.grids_under(under[0]) == [under[0]]
    with pytest.raises(KeyError, match="no area with code"):
        gm.chain("330102099001001")


def test_polygon_and_bbox(sample_city: City) -> None:
    gm = sample_city.gridmap
    g = gm.grid_codes[0]
    rings = gm.polygon(g)
    assert len(rings) == 1 and rings[0][0] == rings[0][-1] and len(rings[0]) in (5, 7)
    lon, lat = rings[0][0]
    assert 119.9 < lon < 120.4 and 30.1 < lat < 30.4
    b = gm.bbox(g)
    assert all(b[0] <= x <= b[2] and b[1] <= y <= b[3] for x, y in rings[0])
    city_rings = gm.polygon("330100")
    assert len(city_rings) == 1 and len(city_rings[0]) > 50


def test_locate_points(sample_city: City) -> None:
    gm = sample_city.gridmap
    for g in gm.grid_codes[::7]:
        lat, lon = gm.centroid(g)
        assert gm.locate(lat, lon) == g
    min_lon, min_lat, max_lon, max_lat = gm.bbox()
    assert gm.locate(min_lat - 0.01, min_lon - 0.01) is None
    assert gm.locate(0.0, 0.0) is None
    assert gm.locate_many([float("nan"), 30.27], [120.15, float("inf")]) == [None, None]
    assert gm.locate_many([], []) == []
    # a shared vertex of several grids goes to the smallest code, whatever the input order
    ring = gm.polygon(gm.grid_codes[200])[0]
    lon, lat = ring[1]
    owners = sorted(c for c in gm.grid_codes if gm.geometry(c).intersects(Point(lon, lat)))
    assert len(owners) >= 2
    assert gm.locate(lat, lon) == owners[0]
    with pytest.raises(ValueError, match="equally long"):
        gm.locate_many([1.0, 2.0], [1.0])


def test_locate_many_matches_brute_force_and_is_fast(sample_city: City) -> None:
    gm = sample_city.gridmap
    min_lon, min_lat, max_lon, max_lat = gm.bbox()
    rng = np.random.default_rng(3)
    n = 100_000
    lons = rng.uniform(min_lon - 0.01, max_lon + 0.01, n)
    lats = rng.uniform(min_lat - 0.01, max_lat + 0.01, n)
    t0 = time.perf_counter()
    got = gm.locate_many(lats, lons)
    dt = time.perf_counter() - t0
    print(f"\n[bench] locate_many: {n} points x {len(gm.grid_codes)} grids in {dt * 1000:.0f} ms")
    polys = [gm.geometry(g) for g in gm.grid_codes]
    for k in rng.choice(n, 1000, replace=False).tolist():
        p = Point(lons[k], lats[k])
        want = next((gm.grid_codes[i] for i, poly in enumerate(polys) if poly.intersects(p)), None)
        assert got[k] == want
    assert sum(g is None for g in got) > 0  # the margin around the city is outside every grid


# ------------------------------------------------------------------------------------------ validation
def _fc() -> list[dict[str, Any]]:
    """A tiny valid map: city, district, street, community and two grids."""
    def f(code: str, tier: str, parent: str | None, geom: Any = None) -> dict[str, Any]:
        return {
            "type": "Feature",
            "properties": {"code": code, "name": f"{tier} {code}", "tier": tier, "parent": parent},
            "geometry": shapely.geometry.mapping(geom) if geom is not None else None,
        }
    return [
        f("330100", "city", None),
        f("330102", "district", "330100"),
        f("330102001", "street", "330102"),
        f("330102001001", "community", "330102001"),
        f("330102001001001", "grid", "330102001001", box(120.0, 30.0, 120.01, 30.01)),
        f("330102001001002", "grid", "330102001001", box(120.01, 30.0, 120.02, 30.01)),
    ]


def test_small_map_without_upper_geometries() -> None:
    gm = GridMap.from_features(_fc())
    assert gm.locate(30.005, 120.005) == "330102001001001"
    assert gm.locate(30.005, 120.015) == "330102001001002"
    assert gm.locate(30.005, 120.01) == "330102001001001"  # shared edge: smaller code
    assert gm.bbox("330102") == pytest.approx((120.0, 30.0, 120.02, 30.01))
    assert gm.bbox("330100") == pytest.approx((120.0, 30.0, 120.02, 30.01))
    assert gm.geometry("330102001001").area == pytest.approx(0.0002)
    assert [a.code for a in gm.chain("330102001001002")] == ["330100", "330102", "330102001", "330102001001", "330102001001002"]
    # round trip through to_features
    gm2 = GridMap.from_features(gm.to_features())
    assert gm2.grid_codes == gm.grid_codes


def _broken(mutate: Any) -> list[dict[str, Any]]:
    fc = copy.deepcopy(_fc())
    mutate(fc)
    return fc


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda fc: fc.append(copy.deepcopy(fc[4])), r"feature #6 .*duplicate code, already used by .*feature #4"),
        (lambda fc: fc[3]["properties"].update(parent="330102002"), r"'parent' is '330102002' but a community code's parent is its prefix '330102001'"),
        (lambda fc: fc[3]["properties"].update(code="330102002001", parent="330102002"), r"parent '330102002' is not in the file"),
        (lambda fc: fc[4]["properties"].update(tier="cell"), r"feature #4 .*'tier' is 'cell'"),
        (lambda fc: fc[4]["properties"].update(tier="community"), r"looks like a grid code; a community code has 12 digits"),
        (lambda fc: fc[4].update(geometry=None), r"feature #4 .*a grid needs a Polygon or MultiPolygon"),
        (lambda fc: fc[4].update(geometry={"type": "Point", "coordinates": [120, 30]}), r"must be a Polygon or MultiPolygon, got 'Point'"),
        (lambda fc: fc[4].update(geometry={"type": "Polygon", "coordinates": [[[120, 30], [120.01, 30.01], [120.01, 30], [120, 30.01], [120, 30]]]}), r"invalid polygon \(Self-intersection"),
        (lambda fc: fc[4].update(geometry={"type": "Polygon", "coordinates": [[[30, 120], [30.01, 120], [30.01, 120.01], [30, 120]]]}), r"swapped or projected"),
        (lambda fc: fc[4].update(geometry={"type": "Polygon", "coordinates": [[[120, 30], [120.01]]]}), r"cannot read geometry"),
        (lambda fc: fc[0]["properties"].update(parent="330000"), r"the city's 'parent' must be null"),
        (lambda fc: fc.pop(0), r"exactly one feature with tier 'city' .*found 0"),
        (lambda fc: fc[4]["properties"].pop("name"), r"'name' must be a non-empty string"),
        (lambda fc: fc.__setitem__(4, {"type": "Feature"}), r"feature #4: missing 'properties'"),
        (lambda fc: fc[4]["properties"].update(code="330102001001000"), r"grid sequence must not be '000'"),
    ],
)
def test_validation_errors_name_the_feature(mutate: Any, fragment: str) -> None:
    with pytest.raises(GridMapError, match=fragment):
        GridMap.from_features(_broken(mutate), source="t.geojson")


def test_second_city_rejected() -> None:
    fc = _fc() + [{"type": "Feature", "properties": {"code": "330200", "name": "x", "tier": "city", "parent": None}, "geometry": None}]
    with pytest.raises(GridMapError, match="exactly one feature with tier 'city'"):
        GridMap.from_features(fc)


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(GridMapError, match="not found"):
        GridMap.load(tmp_path / "nope.geojson")
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(GridMapError, match="not valid JSON"):
        GridMap.load(bad)
    bad.write_text(json.dumps({"type": "Feature"}))
    with pytest.raises(GridMapError, match="FeatureCollection"):
        GridMap.load(bad)
    good = tmp_path / "good.geojson"
    good.write_text(json.dumps({"type": "FeatureCollection", "features": _fc()}))
    assert len(GridMap.load(good).grid_codes) == 2
