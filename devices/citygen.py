"""Seeded generator of a realistic sample city: tiered grid map + device table along a road network.

Why: tests, demos and benchmarks need a city that behaves like a real one (grids that tile the area,
lamps in circuits along roads, manholes on three pipe networks, water gauges at low points, cameras
at crossings, gateways that own a neighbourhood's devices) at any size from a few thousand devices
to 100k, and the same city every time for a given seed.

Layout: a ~20 x 15 km box around (30.27, 120.15) is cut into a jittered lattice of 32 x 16 convex
cells; 4 districts x 4 streets x 4 communities, each community 4 x 2 cells, some pairs merged so a
community has 4-8 grids (~380 in all). Lattice lines are main roads, with lanes across cells.

    python -m gridwatch.devices.citygen OUT --devices 3000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon, mapping

from . import codes
from .gridmap import GridMap
from .registry import DEFAULT_INTERVAL_S, Device, write_devices_csv

__all__ = ["generate", "main", "CITY_CODE", "CITY_NAME", "DISTRICT_CODES", "GenerateResult"]

CITY_CODE = "330100"
CITY_NAME = "Lanxi New City"  # fictional
DISTRICT_CODES = ("330102", "330105", "330106", "330108")
CENTRE = (30.27, 120.15)  # (lat, lon)
WIDTH_KM, HEIGHT_KM = 20.0, 15.0
NX, NY = 32, 16  # lattice cells
COMM_W, COMM_H = 4, 2  # cells per community
JITTER = 0.18  # of a cell side; below ~0.25 every cell stays convex
KY = 110.574  # km per degree latitude
KX = 111.320 * math.cos(math.radians(CENTRE[0]))  # km per degree longitude here

# share of devices per kind (cameras take the rest)
MIX = {"streetlight": 0.50, "manhole": 0.38, "water_gauge": 0.03}
CIRCUIT_SIZE = (20, 40)
GATEWAY_SIZE = (80, 250)
LAMP_POWERS_W = (100, 150, 200, 250)

_SYL_A = (
    "Lan", "Qing", "Bai", "Jin", "Yun", "Mei", "Tao", "Song", "Zhu", "He", "Shi", "Feng", "Hu", "Jing", "Wen",
    "Cui", "Liu", "Yang", "Xin", "Chun", "Qiu", "Dong", "Nan", "Bei", "Hua", "Long", "Fu", "An", "Kang", "Ping",
)
_SYL_B = ("xi", "yun", "sha", "qiao", "lin", "yuan", "tang", "shan", "ting", "wan", "he", "hu", "ning", "ping", "feng", "quan")
# the characters the syllables stand for: every generated name has a Chinese twin (no extra random draws,
# so adding the Chinese names changed no code, position or English name of the sample city)
_HAN_A = "兰青白金云梅桃松竹和石枫湖景文翠柳阳新春秋东南北华龙福安康平"
_HAN_B = "溪韵沙桥林苑塘山亭湾河湖宁坪峰泉"
_WORD_ZH = {a + b: ha + hb for a, ha in zip(_SYL_A, _HAN_A, strict=True) for b, hb in zip(_SYL_B, _HAN_B, strict=True)}
CITY_NAME_ZH = "兰溪新城"
_W = r"([A-Z][a-z]+(?: \d+)?)"  # one generated word, e.g. "Ansha" (or "Ansha 2" in a huge city)
_NET_ZH = {"Water-supply": "供水", "Sewage": "污水", "Rain-water": "雨水"}
_SITE_ZH = {"underpass": "下穿通道", "low-lying road": "低洼路段"}


@dataclass(slots=True)
class GenerateResult:
    out_dir: Path
    grids: int
    devices: dict[str, int]
    gateways: int
    circuits: int
    seconds: float


def _names(rng: np.random.Generator, n: int) -> list[str]:
    pool = [a + b for a in _SYL_A for b in _SYL_B if a.lower() != b]
    if n > len(pool):
        pool += [f"{p} {k}" for k in range(2, 2 + n // len(pool) + 1) for p in pool]
    idx = rng.permutation(len(pool))[:n]
    return [pool[i] for i in idx]


def _word_zh(word: str) -> str:
    base, _, n = word.partition(" ")
    return _WORD_ZH[base] + n


_ROAD_RULES = [(re.compile(rf"^{_W} Road$"), "{0}路"), (re.compile(rf"^{_W} Avenue$"), "{0}大道"),
               (re.compile(rf"^{_W} Lane (\d+)$"), "{0}{1}巷")]


def _road_zh(road: str) -> str:
    for pattern, fmt in _ROAD_RULES:
        m = pattern.match(road)
        if m:
            return fmt.format(_word_zh(m.group(1)), *m.groups()[1:])
    raise ValueError(f"no Chinese name for road {road!r}")


# (pattern, maker) per kind of generated name, most frequent first (lamps, manholes)
_NAME_RULES: list[tuple[re.Pattern[str], Any]] = [
    (re.compile(r"^Streetlight (.+) #(\d+)$"), lambda m: f"{_road_zh(m[1])}路灯{m[2]}号"),
    (re.compile(r"^(Water-supply|Sewage|Rain-water) manhole (.+)$"), lambda m: f"{_road_zh(m[2])}{_NET_ZH[m[1]]}井盖"),
    (re.compile(r"^Water gauge (.+) \((underpass|low-lying road)\)$"),
     lambda m: f"{_road_zh(m[1])}水位计（{_SITE_ZH[m[2]]}）"),
    (re.compile(r"^Camera (.+) mid-block$"), lambda m: f"{_road_zh(m[1])}路段摄像机"),
    (re.compile(r"^Camera (.+) x (.+)$"), lambda m: f"{_road_zh(m[1])}与{_road_zh(m[2])}交叉口摄像机"),
    (re.compile(rf"^{_W} District$"), lambda m: _word_zh(m[1]) + "区"),
    (re.compile(rf"^{_W} Subdistrict$"), lambda m: _word_zh(m[1]) + "街道"),
    (re.compile(rf"^{_W} Community$"), lambda m: _word_zh(m[1]) + "社区"),
    (re.compile(rf"^{_W} Community Grid (\d+)$"), lambda m: f"{_word_zh(m[1])}社区第{int(m[2])}网格"),
]


def zh_name(name: str) -> str:
    """The Chinese twin of a name this generator wrote (areas, roads, devices); ValueError if it did not."""
    if name == CITY_NAME:
        return CITY_NAME_ZH
    for pattern, make in _NAME_RULES:
        m = pattern.match(name)
        if m:
            return make(m)
    raise ValueError(f"no Chinese name for {name!r}")


def _to_lonlat(xy: np.ndarray) -> np.ndarray:
    """km (origin at the box's south-west corner) -> (lon, lat) degrees."""
    lon = CENTRE[1] + (xy[..., 0] - WIDTH_KM / 2) / KX
    lat = CENTRE[0] + (xy[..., 1] - HEIGHT_KM / 2) / KY
    return np.stack([lon, lat], axis=-1)


def _elevation_m(xy: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Synthetic terrain: a meandering river valley plus gentle hills; water gauges go to its low points."""
    x, y = xy[..., 0], xy[..., 1]
    river_y = 0.42 * HEIGHT_KM + 1.6 * np.sin(2 * np.pi * x / 9.0 + phase[0])
    return 3.0 + 0.9 * np.abs(y - river_y) + 1.3 * np.sin(x / 3.1 + phase[1]) * np.cos(y / 2.3 + phase[2]) + 0.08 * x


def _shift_inside(p: np.ndarray, host: np.ndarray, centroids: np.ndarray, d_km: float | np.ndarray) -> np.ndarray:
    """Move points (on a cell's edge or inside it) d_km toward their host cell's centroid.

    Cells are convex, so a point between a boundary point and the centroid is inside the cell: every
    device ends up strictly inside one known grid, never on a shared edge.
    """
    c = centroids[host]
    v = c - p
    dist = np.linalg.norm(v, axis=1)
    f = np.minimum(1.0, np.asarray(d_km) / np.maximum(dist, 1e-9))
    return p + v * f[:, None]


def generate(
    out_dir: str | PathLike[str], n_devices: int = 3000, seed: int = 7, grids: int = 380, *, name: str = CITY_NAME
) -> GenerateResult:
    """Write grids.geojson, devices.csv and city.yaml for a generated city into ``out_dir``.

    Deterministic for (n_devices, seed, grids). ``grids`` may be 256..512 (pairs of the 512 lattice
    cells are merged to reach it).
    """
    t0 = time.perf_counter()
    if not 256 <= grids <= NX * NY:
        raise ValueError(f"grids must be between 256 and {NX * NY}, got {grids}")
    if n_devices < 10:
        raise ValueError(f"n_devices must be at least 10, got {n_devices}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------------------- lattice & cells
    cw, ch = WIDTH_KM / NX, HEIGHT_KM / NY
    gx, gy = np.meshgrid(np.arange(NX + 1) * cw, np.arange(NY + 1) * ch)  # (NY+1, NX+1)
    V = np.stack([gx, gy], axis=-1)
    V[..., 0] += rng.uniform(-JITTER, JITTER, gx.shape) * cw
    V[..., 1] += rng.uniform(-JITTER, JITTER, gy.shape) * ch
    V_ll = np.round(_to_lonlat(V), 6)  # shared vertices: rounded once, identical in every polygon
    ncell = NX * NY

    def cell_of(i: int, j: int) -> int:
        return j * NX + i

    cell_vertices = np.empty((ncell, 4, 2))
    for j in range(NY):
        for i in range(NX):
            cell_vertices[cell_of(i, j)] = (V[j, i], V[j, i + 1], V[j + 1, i + 1], V[j + 1, i])
    centroids = cell_vertices.mean(axis=1)

    # ---------------------------------------------------------------------------- tiers & grids
    n_comm_x, n_comm_y = NX // COMM_W, NY // COMM_H  # 8 x 8 communities
    n_merge_total = ncell - grids
    merges_per_comm = np.zeros(n_comm_x * n_comm_y, dtype=int)
    for k in rng.permutation(np.repeat(np.arange(n_comm_x * n_comm_y), 4))[:n_merge_total]:
        merges_per_comm[k] += 1  # at most 4 merges of a community's 8 cells

    area_names = iter(_names(rng, 4 + 16 + 64 + (NX + 1) + (NY + 1)))
    features: list[dict[str, Any]] = []
    grid_rings: dict[str, list[tuple[float, float]]] = {}
    grid_name: dict[str, str] = {}
    comm_names: dict[str, str] = {}
    cell_grid = [""] * ncell
    tier_members: dict[str, list[str]] = {}  # area code -> grid codes under it
    district_names = {d: f"{next(area_names)} District" for d in DISTRICT_CODES}
    street_names: dict[str, str] = {}
    for dx in range(2):
        for dy in range(2):
            district = DISTRICT_CODES[dy * 2 + dx]
            for sx in range(2):
                for sy in range(2):
                    street = district + f"{(1 - sy) * 2 + sx + 1:03d}"  # numbered north-west first
                    street_names[street] = f"{next(area_names)} Subdistrict"
                    for cx in range(2):
                        for cy in range(2):
                            community = street + f"{(1 - cy) * 2 + cx + 1:03d}"
                            comm_names[community] = f"{next(area_names)} Community"
                            ci, cj = dx * 4 + sx * 2 + cx, dy * 4 + sy * 2 + cy
                            i0, j0 = ci * COMM_W, cj * COMM_H
                            # cells in reading order (north row first, west to east)
                            cells = [(i0 + a, j0 + b) for b in range(COMM_H - 1, -1, -1) for a in range(COMM_W)]
                            groups = _merge_cells(cells, merges_per_comm[cj * n_comm_x + ci], rng)
                            for seq, group in enumerate(groups, start=1):
                                g = community + f"{seq:03d}"
                                grid_rings[g] = _ring(group, V_ll)
                                grid_name[g] = f"{comm_names[community]} Grid {seq:02d}"
                                for i, j in group:
                                    cell_grid[cell_of(i, j)] = g
                                for tier_code in (district, street, community):
                                    tier_members.setdefault(tier_code, []).append(g)

    grid_codes = sorted(grid_rings)
    grid_polys = {g: Polygon(grid_rings[g]) for g in grid_codes}
    city_zh = CITY_NAME_ZH if name == CITY_NAME else name
    features.append(_feature(CITY_CODE, name, "city", None, shapely.union_all(list(grid_polys.values())), city_zh))
    for code in sorted(tier_members):
        tier = codes.tier_of(code)
        nm = {"district": district_names, "street": street_names, "community": comm_names}[tier][code]
        geom = shapely.union_all([grid_polys[g] for g in tier_members[code]])
        features.append(_feature(code, nm, tier, codes.parent_code(code), geom, zh_name(nm)))
    for g in grid_codes:
        features.append(_feature(g, grid_name[g], "grid", g[:12], grid_polys[g], zh_name(grid_name[g])))

    # ---------------------------------------------------------------------------- roads
    ew_names = [f"{next(area_names)} Road" for _ in range(NY + 1)]
    ns_names = [f"{next(area_names)} Avenue" for _ in range(NX + 1)]
    n_lamps = int(round(n_devices * MIX["streetlight"]))
    n_manholes = int(round(n_devices * MIX["manhole"]))
    n_gauges = max(1, int(round(n_devices * MIX["water_gauge"])))
    n_cams = max(1, n_devices - n_lamps - n_manholes - n_gauges)
    n_lamps = n_devices - n_manholes - n_gauges - n_cams
    circuits_needed = math.ceil(n_lamps / sum(CIRCUIT_SIZE) * 2)
    main_edges = NX * (NY + 1) + NY * (NX + 1)
    lanes_per_dir = max(1, math.ceil((circuits_needed * 1.1 - main_edges) / (2 * ncell)))
    seg_a, seg_b, seg_hosts, seg_road, seg_main = _roads(V, lanes_per_dir, ew_names, ns_names, cell_of)
    n_seg = len(seg_a)
    seg_two = np.array([len(h) == 2 for h in seg_hosts])
    seg_h0 = np.array([h[0] for h in seg_hosts])
    seg_h1 = np.array([h[-1] for h in seg_hosts])

    def along(seg: np.ndarray, t: np.ndarray, side: np.ndarray, d_km: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = seg_a[seg] + (seg_b[seg] - seg_a[seg]) * t[:, None]
        host = np.where(side == 1, seg_h1[seg], seg_h0[seg])
        return _shift_inside(p, host, centroids, d_km), host

    recs: list[dict[str, Any]] = []  # device records before ids are assigned

    # ---------------------------------------------------------------------------- streetlights
    sizes = []
    left = n_lamps
    while left > 0:
        k = int(rng.integers(CIRCUIT_SIZE[0], CIRCUIT_SIZE[1] + 1))
        k = min(k, left)
        if left - k < CIRCUIT_SIZE[0] and left - k > 0:
            k = left if left <= CIRCUIT_SIZE[1] else left - CIRCUIT_SIZE[0]
        sizes.append(k)
        left -= k
    order = np.concatenate([rng.permutation(np.flatnonzero(seg_main)), rng.permutation(np.flatnonzero(~seg_main))])
    if len(sizes) > n_seg:
        raise RuntimeError(f"road network too small: {len(sizes)} circuits for {n_seg} segments")
    lamp_seg = np.repeat(order[: len(sizes)], sizes)
    lamp_circ = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.repeat(np.cumsum([0, *sizes[:-1]]), sizes).astype(int)
    pos_in = np.arange(n_lamps) - starts
    size_of = np.repeat(sizes, sizes)
    t = (pos_in + 0.5) / size_of
    side = np.where(seg_two[lamp_seg], pos_in % 2, 0)
    lamp_xy, lamp_host = along(lamp_seg, t, side, 0.012)
    circ_power = rng.choice(LAMP_POWERS_W, size=len(sizes), p=[0.3, 0.35, 0.25, 0.1])
    circ_first = np.cumsum([0, *sizes[:-1]]).astype(int) if sizes else np.zeros(0, dtype=int)
    circ_street = [cell_grid[int(lamp_host[f])][:9] for f in circ_first]
    street_circ_count: dict[str, int] = {}
    circ_ids = []
    for st in circ_street:
        street_circ_count[st] = street_circ_count.get(st, 0) + 1
        circ_ids.append(f"CIR-{st}-{street_circ_count[st]:03d}")
    for k in range(n_lamps):
        c = int(lamp_circ[k])
        power = int(circ_power[c])
        recs.append({
            "kind": "streetlight", "xy": lamp_xy[k], "host": int(lamp_host[k]), "circuit": circ_ids[c],
            "name": f"Streetlight {seg_road[lamp_seg[k]]} #{int(pos_in[k]) + 1}",
            "attrs": {"rated_current_a": round(power / 220 / 0.95, 2), "power_w": power},
        })

    # ---------------------------------------------------------------------------- manholes
    mh_seg = np.where(
        rng.random(n_manholes) < 0.7,
        rng.choice(np.flatnonzero(seg_main), n_manholes),
        rng.choice(np.flatnonzero(~seg_main), n_manholes),
    )
    mh_t = rng.uniform(0.02, 0.98, n_manholes)
    mh_side = np.where(seg_two[mh_seg], rng.integers(0, 2, n_manholes), 0)
    mh_xy, mh_host = along(mh_seg, mh_t, mh_side, 0.004)
    mh_net = rng.choice(np.array(["water-supply", "sewage", "rain"]), n_manholes, p=[0.3, 0.35, 0.35])
    mh_depth = rng.integers(180, 351, n_manholes)
    mh_alarm = rng.choice([120, 150, 150, 150, 180], n_manholes)
    mh_lora = rng.random(n_manholes) < 0.6
    net_label = {"water-supply": "Water-supply manhole", "sewage": "Sewage manhole", "rain": "Rain-water manhole"}
    for k in range(n_manholes):
        recs.append({
            "kind": "manhole", "xy": mh_xy[k], "host": int(mh_host[k]), "pipe_network": str(mh_net[k]),
            "name": f"{net_label[str(mh_net[k])]} {seg_road[mh_seg[k]]}", "lora": bool(mh_lora[k]),
            "attrs": {"water_alarm_cm": int(mh_alarm[k]), "depth_cm": int(mh_depth[k])},
        })

    # ---------------------------------------------------------------------------- water gauges at low points
    phase = rng.uniform(0, 2 * np.pi, 3)
    n_cand = max(20 * n_gauges, 2000)
    cand_seg = rng.integers(0, n_seg, n_cand)
    cand_t = rng.uniform(0.05, 0.95, n_cand)
    cand_xy = seg_a[cand_seg] + (seg_b[cand_seg] - seg_a[cand_seg]) * cand_t[:, None]
    elev = _elevation_m(cand_xy, phase) + rng.normal(0, 0.4, n_cand)
    low = np.argsort(elev, kind="stable")[:n_gauges]
    g_xy, g_host = along(cand_seg[low], cand_t[low], np.zeros(n_gauges, dtype=int), 0.006)
    for k in range(n_gauges):
        site = "underpass" if rng.random() < 0.35 else "low-lying road"
        recs.append({
            "kind": "water_gauge", "xy": g_xy[k], "host": int(g_host[k]),
            "name": f"Water gauge {seg_road[cand_seg[low[k]]]} ({site})",
            "attrs": {"water_alarm_cm": int(rng.choice([15, 20, 27])), "site": site,
                      "ground_elev_m": round(float(elev[low[k]]), 2)},
        })

    # ---------------------------------------------------------------------------- cameras at crossings
    cross: list[tuple[np.ndarray, list[int], str]] = []
    for j in range(NY + 1):
        for i in range(NX + 1):
            hosts = [cell_of(a, b) for a in (i - 1, i) for b in (j - 1, j) if 0 <= a < NX and 0 <= b < NY]
            cross.append((V[j, i], hosts, f"{ew_names[j]} x {ns_names[i]}"))
    cam_pick = rng.permutation(len(cross))[: min(n_cams, len(cross))]
    cam_xy_l, cam_host_l, cam_name_l = [], [], []
    for k in cam_pick:
        p, hosts, nm = cross[k]
        cam_xy_l.append(p)
        cam_host_l.append(hosts[int(rng.integers(0, len(hosts)))])
        cam_name_l.append(f"Camera {nm}")
    extra = n_cams - len(cam_pick)
    if extra > 0:  # more cameras than crossings: mid-block cameras along roads
        es = rng.integers(0, n_seg, extra)
        et = rng.uniform(0.1, 0.9, extra)
        for k in range(extra):
            cam_xy_l.append(seg_a[es[k]] + (seg_b[es[k]] - seg_a[es[k]]) * et[k])
            cam_host_l.append(int(seg_hosts[es[k]][int(rng.integers(0, len(seg_hosts[es[k]])))]))
            cam_name_l.append(f"Camera {seg_road[es[k]]} mid-block")
    cam_xy = _shift_inside(np.array(cam_xy_l), np.array(cam_host_l), centroids, 0.010)
    for k in range(n_cams):
        recs.append({
            "kind": "camera", "xy": cam_xy[k], "host": int(cam_host_l[k]), "name": cam_name_l[k],
            "attrs": {"ptz": bool(rng.random() < 0.25), "network": "video-private"},
        })

    # ---------------------------------------------------------------------------- ids, grids, gateways
    xy_all = np.array([r["xy"] for r in recs])
    ll = _to_lonlat(xy_all)
    for r, (lon, lat) in zip(recs, ll.tolist(), strict=True):
        r["lon"], r["lat"] = round(lon, 6), round(lat, 6)
        r["grid"] = cell_grid[r["host"]]
    _assign_ids(recs)
    n_gateways = _assign_gateways(recs, rng)

    devices = [
        Device(
            id=r["id"], kind=r["kind"], name=r["name"], lat=r["lat"], lon=r["lon"], grid_code=r["grid"],
            circuit=r.get("circuit"), pipe_network=r.get("pipe_network"), gateway=r.get("gateway"),
            report_interval_s=DEFAULT_INTERVAL_S[r["kind"]], attrs=r["attrs"], name_zh=zh_name(r["name"]),
        )
        for r in recs
    ]
    kind_rank = {"streetlight": 0, "manhole": 1, "water_gauge": 2, "camera": 3}
    devices.sort(key=lambda d: (kind_rank[d.kind], d.id))

    # self-check: every device is inside the polygon of the grid it is filed under
    gm = GridMap.from_features(features, source="citygen")
    located = gm.locate_many(np.array([d.lat for d in devices]), np.array([d.lon for d in devices]))
    bad = [d.id for d, g in zip(devices, located, strict=True) if g != d.grid_code]
    if bad:
        raise RuntimeError(f"citygen bug: {len(bad)} devices outside their grid, e.g. {bad[:3]}")

    # ---------------------------------------------------------------------------- write
    (out / "grids.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "name": f"{name} grid map", "features": features},
                   separators=(",", ":"), ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    write_devices_csv(devices, out / "devices.csv")
    counts = {k: sum(1 for d in devices if d.kind == k) for k in kind_rank}
    centre_ll = _to_lonlat(np.array([WIDTH_KM / 2, HEIGHT_KM / 2]))
    city_yaml = (
        "# Generated by gridwatch.devices.citygen - fictional city for tests, demos and benchmarks.\n"
        f"name: {name}\n"
        f"name_zh: {city_zh}\n"
        f"code: '{CITY_CODE}'\n"
        f"centre: {{lat: {centre_ll[1]:.5f}, lon: {centre_ll[0]:.5f}}}\n"
        "timezone: Asia/Shanghai\n"
        "grids: grids.geojson\n"
        "devices: devices.csv\n"
        f"generator: {{seed: {seed}, n_devices: {n_devices}, grids: {len(grid_codes)}}}\n"
        f"counts: {{grids: {len(grid_codes)}, streetlight: {counts['streetlight']}, manhole: {counts['manhole']}, "
        f"water_gauge: {counts['water_gauge']}, camera: {counts['camera']}, gateways: {n_gateways}, "
        f"circuits: {len(sizes)}}}\n"
    )
    (out / "city.yaml").write_text(city_yaml, encoding="utf-8")
    return GenerateResult(out, len(grid_codes), counts, n_gateways, len(sizes), time.perf_counter() - t0)


def _merge_cells(cells: list[tuple[int, int]], n_merge: int, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
    """Group a community's cells into grids: n_merge pairs of edge-adjacent cells become one grid each."""
    best: tuple[set[tuple[int, int]], list[list[tuple[int, int]]]] = (set(cells), [])
    for _attempt in range(20):  # random greedy pairing can strand cells; retry (deterministically)
        free = set(cells)
        pairs: list[list[tuple[int, int]]] = []
        for _ in range(n_merge):
            cand = [
                (c, (c[0] + di, c[1] + dj))
                for c in cells if c in free
                for di, dj in ((1, 0), (0, 1))
                if (c[0] + di, c[1] + dj) in free
            ]
            if not cand:
                break
            a, b = cand[int(rng.integers(0, len(cand)))]
            free -= {a, b}
            pairs.append([a, b])
        if len(pairs) > len(best[1]):
            best = (free, pairs)
        if len(pairs) == n_merge:
            break
    free, pairs = best
    groups: list[list[tuple[int, int]]] = [[c] for c in cells if c in free] + pairs
    order = {c: k for k, c in enumerate(cells)}
    groups.sort(key=lambda g: min(order[c] for c in g))  # reading order of each grid's first cell
    return groups


def _ring(group: list[tuple[int, int]], V_ll: np.ndarray) -> list[tuple[float, float]]:
    """Counter-clockwise outline of one cell or of two edge-adjacent cells, from shared lattice vertices."""
    if len(group) == 1:
        (i, j), = group
        pts = [V_ll[j, i], V_ll[j, i + 1], V_ll[j + 1, i + 1], V_ll[j + 1, i]]
    else:
        (i, j) = min(group)
        other = max(group)
        if other == (i + 1, j):
            pts = [V_ll[j, i], V_ll[j, i + 1], V_ll[j, i + 2], V_ll[j + 1, i + 2], V_ll[j + 1, i + 1], V_ll[j + 1, i]]
        else:
            pts = [V_ll[j, i], V_ll[j, i + 1], V_ll[j + 1, i + 1], V_ll[j + 2, i + 1], V_ll[j + 2, i], V_ll[j + 1, i]]
    ring = [(float(p[0]), float(p[1])) for p in pts]
    return [*ring, ring[0]]


def _feature(code: str, name: str, tier: str, parent: str | None, geom: Any, name_zh: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"code": code, "name": name, "name_zh": name_zh, "tier": tier, "parent": parent},
        "geometry": _round_geom(mapping(geom)),
    }


def _round_geom(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 6)
    if isinstance(obj, list | tuple):
        return [_round_geom(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _round_geom(v) for k, v in obj.items()}
    return obj


def _roads(V: np.ndarray, lanes: int, ew_names: list[str], ns_names: list[str], cell_of: Any) -> tuple:
    """Road segments: every lattice edge (main roads) and ``lanes`` lanes per direction across each cell."""
    a_l, b_l, hosts_l, road_l, main_l = [], [], [], [], []
    for j in range(NY + 1):  # east-west main road edges
        for i in range(NX):
            hosts = [cell_of(i, b) for b in (j - 1, j) if 0 <= b < NY]
            a_l.append(V[j, i])
            b_l.append(V[j, i + 1])
            hosts_l.append(hosts)
            road_l.append(ew_names[j])
            main_l.append(True)
    for i in range(NX + 1):  # north-south main road edges
        for j in range(NY):
            hosts = [cell_of(a, j) for a in (i - 1, i) if 0 <= a < NX]
            a_l.append(V[j, i])
            b_l.append(V[j + 1, i])
            hosts_l.append(hosts)
            road_l.append(ns_names[i])
            main_l.append(True)
    for j in range(NY):
        for i in range(NX):
            c = cell_of(i, j)
            for k in range(1, lanes + 1):
                t = k / (lanes + 1)
                west = V[j, i] + (V[j + 1, i] - V[j, i]) * t
                east = V[j, i + 1] + (V[j + 1, i + 1] - V[j, i + 1]) * t
                south = V[j, i] + (V[j, i + 1] - V[j, i]) * t
                north = V[j + 1, i] + (V[j + 1, i + 1] - V[j + 1, i]) * t
                a_l += [west, south]
                b_l += [east, north]
                hosts_l += [[c], [c]]
                road_l += [f"{ew_names[j].rsplit(' ', 1)[0]} Lane {i + 1}", f"{ns_names[i].rsplit(' ', 1)[0]} Lane {j + 1}"]
                main_l += [False, False]
    return np.array(a_l), np.array(b_l), hosts_l, road_l, np.array(main_l)


def _assign_ids(recs: list[dict[str, Any]]) -> None:
    """Component codes (lamps, manholes, gauges) / GB/T 28181 IDs (cameras), numbered in grid order."""
    order = sorted(range(len(recs)), key=lambda k: (recs[k]["grid"], recs[k]["lat"], recs[k]["lon"]))
    seqs: dict[tuple[str, ...], int] = {}
    for k in order:
        r = recs[k]
        district = r["grid"][:6]
        if r["kind"] == "camera":
            key: tuple[str, ...] = (district, "cam")
            seqs[key] = seqs.get(key, 0) + 1
            r["id"] = codes.gb28181_id(district, "00", "132", "0", seqs[key])
        else:
            major, minor = codes.component_class_for(r["kind"], r.get("pipe_network"))
            key = (district, major, minor)
            seqs[key] = seqs.get(key, 0) + 1
            r["id"] = codes.component_code(district, major, minor, seqs[key])


def _assign_gateways(recs: list[dict[str, Any]], rng: np.random.Generator) -> int:
    """Give lamps (whole circuits) and LoRa manholes an edge gateway of ~80-250 devices near them.

    Gateways are packed per community when there are enough devices there, else per street,
    district or city, so a small city still gets gateways of realistic size.
    """
    units: dict[str, list[int]] = {}  # unit key -> record indices (a circuit, or one manhole)
    for k, r in enumerate(recs):
        if r["kind"] == "streetlight":
            units.setdefault(r["circuit"], []).append(k)
        elif r["kind"] == "manhole" and r["lora"]:
            units[r["id"]] = [k]
    if not units:
        return 0
    home = {u: recs[ks[0]]["grid"] for u, ks in units.items()}
    level = 4  # whole city, unless a finer tier gives every group enough devices for a gateway
    for n in (12, 9, 6):
        group_sizes: dict[str, int] = {}
        for u, ks in units.items():
            group_sizes[home[u][:n]] = group_sizes.get(home[u][:n], 0) + len(ks)
        if min(group_sizes.values()) >= 50 and sum(group_sizes.values()) / len(group_sizes) >= 120:
            level = n
            break
    by_group: dict[str, list[str]] = {}
    for u in sorted(units, key=lambda u: (home[u], recs[units[u][0]]["lat"], recs[units[u][0]]["lon"])):
        g = home[u][:level] if level > 4 else home[u][:4] + "00"
        by_group.setdefault(g, []).append(u)
    n_gw = 0
    for group, ulist in by_group.items():
        packs: list[list[str]] = [[]]
        size = 0
        target = int(rng.integers(GATEWAY_SIZE[0], GATEWAY_SIZE[1] + 1))
        for u in ulist:
            if size >= target:
                packs.append([])
                size = 0
                target = int(rng.integers(GATEWAY_SIZE[0], GATEWAY_SIZE[1] + 1))
            packs[-1].append(u)
            size += len(units[u])
        if len(packs) > 1 and sum(len(units[u]) for u in packs[-1]) < 50:
            tail = packs.pop()
            packs[-1].extend(tail)  # a small remainder joins the previous gateway (still <= ~300)
        for n, pack in enumerate(packs, start=1):
            gw = f"GW-{group}-{n:03d}"
            n_gw += 1
            for u in pack:
                for k in units[u]:
                    recs[k]["gateway"] = gw
    return n_gw


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: python -m gridwatch.devices.citygen OUT [--devices N] [--seed S] [--grids G]."""
    ap = argparse.ArgumentParser(prog="python -m gridwatch.devices.citygen", description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output folder (created): grids.geojson, devices.csv, city.yaml")
    ap.add_argument("--devices", type=int, default=3000, help="number of devices (default 3000)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    ap.add_argument("--grids", type=int, default=380, help="number of unit grids, 256..512 (default 380)")
    ap.add_argument("--name", default=CITY_NAME, help=f"city name (default {CITY_NAME!r})")
    args = ap.parse_args(argv)
    try:
        res = generate(args.out, n_devices=args.devices, seed=args.seed, grids=args.grids, name=args.name)
    except ValueError as e:
        print(f"citygen: {e}", file=sys.stderr)
        return 2
    kinds = ", ".join(f"{n} {k}" for k, n in res.devices.items())
    print(
        f"wrote {res.out_dir}: {res.grids} grids, {kinds}; {res.circuits} lamp circuits, "
        f"{res.gateways} gateways ({res.seconds:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
