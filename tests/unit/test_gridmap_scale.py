"""The spatial index at a real city's scale: ~6,000 grids (one city has 5,828) and 100k devices."""

from __future__ import annotations

import time

import numpy as np

from gridwatch.devices.gridmap import GridMap


def rect(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def big_map() -> tuple[GridMap, dict[str, tuple[float, float, float, float]]]:
    """10 districts x 10 streets x 10 communities x 6 grids, as a tiling of rectangles."""
    feats = [{"type": "Feature", "properties": {"code": "330100", "name": "c", "tier": "city", "parent": None}, "geometry": None}]
    boxes = {}
    lon0, lat0, cell = 120.0, 30.0, 0.002
    for d in range(10):
        dc = f"3301{d + 1:02d}"
        feats.append({"type": "Feature", "properties": {"code": dc, "name": dc, "tier": "district", "parent": "330100"}, "geometry": None})
        for s in range(10):
            sc = f"{dc}{s + 1:03d}"
            feats.append({"type": "Feature", "properties": {"code": sc, "name": sc, "tier": "street", "parent": dc}, "geometry": None})
            for c in range(10):
                cc = f"{sc}{c + 1:03d}"
                feats.append({"type": "Feature", "properties": {"code": cc, "name": cc, "tier": "community", "parent": sc}, "geometry": None})
                for g in range(6):
                    gc = f"{cc}{g + 1:03d}"
                    x = lon0 + ((d * 10 + s) * 6 + g) * cell
                    y = lat0 + c * cell
                    boxes[gc] = (x, y, x + cell, y + cell)
                    feats.append({"type": "Feature", "properties": {"code": gc, "name": gc, "tier": "grid", "parent": cc},
                                  "geometry": rect(*boxes[gc])})
    return GridMap.from_features(feats), boxes


def test_100k_devices_against_6000_grids():
    t0 = time.perf_counter()
    gm, boxes = big_map()
    t_build = time.perf_counter() - t0
    assert len(gm.areas("grid")) == 6000
    rng = np.random.default_rng(3)
    codes = list(boxes)
    pick = rng.integers(0, len(codes), 100_000)
    # points strictly inside their box, so the expected grid is known
    lons = np.array([boxes[codes[i]][0] for i in pick]) + rng.uniform(0.0002, 0.0018, len(pick))
    lats = np.array([boxes[codes[i]][1] for i in pick]) + rng.uniform(0.0002, 0.0018, len(pick))
    t0 = time.perf_counter()
    found = gm.locate_many(lats, lons)
    t_locate = time.perf_counter() - t0
    assert found == [codes[i] for i in pick]
    assert gm.locate(29.0, 119.0) is None  # outside the city
    print(f"6,000-grid map built in {t_build:.2f}s; 100,000 devices located in {t_locate * 1000:.0f} ms")
