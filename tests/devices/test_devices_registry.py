"""Registry and load_city: the sample city's devices, CSV validation with file:line, 100k load."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import Point

from gridwatch.devices import codes
from gridwatch.devices.gridmap import GridMap
from gridwatch.devices.registry import CSV_COLUMNS, City, Device, Registry, RegistryError, load_city


def test_sample_city_loads(sample_city: City) -> None:
    reg = sample_city.registry
    assert sample_city.name == "Lanxi New City" and sample_city.code == "330100"
    assert sample_city.timezone == "Asia/Shanghai"
    assert sample_city.centre == pytest.approx((30.27, 120.15), abs=0.01)
    assert len(reg) == 3000
    assert reg.counts() == {"streetlight": 1500, "manhole": 1140, "water_gauge": 90, "camera": 270}
    assert load_city("sample-city").registry.counts() == reg.counts()


def test_every_device_is_inside_its_grid(sample_city: City) -> None:
    gm = sample_city.gridmap
    for d in sample_city.registry:
        assert gm.geometry(d.grid_code).contains(Point(d.lon, d.lat)), d
    got = gm.locate_many(np.array([d.lat for d in sample_city.registry]), np.array([d.lon for d in sample_city.registry]))
    assert got == [d.grid_code for d in sample_city.registry]


def test_device_ids_and_fields_follow_the_codes(sample_city: City) -> None:
    reg = sample_city.registry
    for d in reg:
        if d.kind == "camera":
            p = codes.parse_gb28181(d.id)
            assert p.type_code == "132" and p.centre[:6] == d.grid_code[:6]
            assert d.gateway is None and d.report_interval_s == 30
        else:
            cc = codes.parse_component_code(d.id)
            assert cc.cls is not None and cc.cls.kind == d.kind
            assert cc.district == d.grid_code[:6]
        if d.kind == "manhole":
            assert codes.MANHOLE_CLASSES[d.pipe_network] == (d.id[6:8], d.id[8:10])
            assert d.water_alarm_cm in (120.0, 150.0, 180.0) and d.report_interval_s == 60
        if d.kind == "water_gauge":
            assert d.gateway is None and d.report_interval_s == 30 and 10 <= d.water_alarm_cm <= 30
        if d.kind == "streetlight":
            assert d.circuit and d.shard_key == d.circuit
            assert 0.4 <= d.attrs["rated_current_a"] <= 1.2
        else:
            assert d.shard_key == d.id
        assert d.topic == (f"v1/gateway/{d.gateway}/telemetry" if d.gateway else f"v1/devices/{d.id}/telemetry")


def test_circuits_and_gateways(sample_city: City) -> None:
    reg = sample_city.registry
    circuits = reg.circuits()
    assert len(circuits) >= 40
    for cid, lamps in circuits.items():
        assert cid.startswith("CIR-") and len(cid) == len("CIR-330102001-007")
        assert 20 <= len(lamps) <= 40
        assert len({d.gateway for d in lamps}) == 1, f"lamps of {cid} must share a gateway"
        assert reg.circuit(cid) == lamps
    gws = reg.gateways()
    assert gws and all(g.startswith("GW-") for g in gws)
    sizes = [len(reg.by_gateway(g)) for g in gws]
    assert min(sizes) >= 50 and max(sizes) <= 300
    assert sum(sizes) == sum(1 for d in reg if d.gateway)
    own = [d for d in reg if d.gateway is None]
    assert {d.kind for d in own} == {"manhole", "water_gauge", "camera"}  # NB-IoT manholes, gauges, cameras
    assert reg.by_gateway("GW-none") == [] and reg.circuit("CIR-none") == []


def test_lookups(sample_city: City) -> None:
    reg = sample_city.registry
    d = next(iter(reg))
    assert reg.get(d.id) is d and reg[d.id] is d and d.id in reg
    assert reg.get("nope") is None
    with pytest.raises(KeyError, match="unknown device"):
        reg["nope"]
    assert len(reg.by_kind("camera")) == 270
    with pytest.raises(ValueError, match="unknown kind"):
        reg.by_kind("lamp")
    assert all(x.grid_code == d.grid_code for x in reg.by_grid(d.grid_code))
    assert hash(d) == hash(Device(**{f: getattr(d, f) for f in Device.__slots__}))  # attrs excluded from hash


def test_save_and_reload_round_trip(sample_city: City, tmp_path: Path) -> None:
    out = tmp_path / "devices.csv"
    sample_city.registry.save(out)
    again = Registry.load(out, sample_city.gridmap)
    assert list(again) == list(sample_city.registry)
    assert [d.attrs for d in again] == [d.attrs for d in sample_city.registry]


# ------------------------------------------------------------------------------------------ CSV validation
HEADER = ",".join(c for c in CSV_COLUMNS if c != "name_zh")  # optional column: tables without it still load


def _write(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    p = tmp_path / "devices.csv"
    p.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return p


def test_empty_grid_code_is_located(sample_city: City, tmp_path: Path) -> None:
    gm = sample_city.gridmap
    g = gm.grid_codes[10]
    lat, lon = gm.centroid(g)
    p = _write(
        tmp_path,
        f"3301020102000001,manhole,Test cover,{lat},{lon},,,,,,\"{{\"\"water_alarm_cm\"\": 120}}\"",
        f"3301020150000001,streetlight,Lamp,{lat},{lon},,CIR-x-1,,GW-a,,",
        f"33010200001320000001,camera,Cam,{lat},{lon},{g},,,,,",
    )
    reg = Registry.load(p, gm)
    mh = reg.get("3301020102000001")
    assert mh.grid_code == g and mh.pipe_network == "sewage"  # inferred from class 01/02
    assert mh.water_alarm_cm == 120 and mh.report_interval_s == 60
    assert reg.get("3301020150000001").report_interval_s == 60 and reg.gateways() == ["GW-a"]
    assert reg.get("33010200001320000001").report_interval_s == 30


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("3301020101000001,lamp,x,30.27,120.15,,,,,,", r"devices.csv:2: device 3301020101000001: kind 'lamp' unknown"),
        ("330102010100001,manhole,x,30.27,120.15,,,,,,", r":2: component code \(CJ/T 214\) must be exactly 16 digits"),
        ("3301020101000001,streetlight,x,30.27,120.15,,,,,,", r":2: device 3301020101000001: class 01/01 is a water-supply manhole cover"),
        ("3301020101000001,manhole,x,30.27,120.15,,,rain,,,", r"pipe_network 'rain' contradicts its class"),
        ("3301020499000001,manhole,x,30.27,120.15,,,,,,", r"manhole pipe_network None; expected one of water-supply, sewage, rain"),
        ("3301020101000001,manhole,x,north,120.15,,,,,,", r"lat/lon must be decimal degrees"),
        ("3301020101000001,manhole,x,120.15,30.27,,,,,,", r"lat/lon \(120.15, 30.27\) out of range"),
        ("3301020101000001,manhole,x,30.27,121.15,,,,,,", r":2: device 3301020101000001 at lat 30.27, lon 121.15 lies in no grid"),
        ("3301020101000001,manhole,x,31.27,120.15,330102001001001,,,,,", r"far outside the map .*swapped"),
        ("3301020101000001,manhole,x,30.27,120.15,330102001001,,,,,", r"grid_code '330102001001' is not a grid of the map"),
        ("3301020101000001,manhole,x,30.27,120.15,,,,,,{bad", r"attrs is not valid JSON"),
        ("3301020101000001,manhole,x,30.27,120.15,,,,,,[1]", r"attrs must be a JSON object"),
        ("3301020101000001,manhole,x,30.27,120.15,,,,,,\"{\"\"water_alarm_cm\"\": -3}\"", r"attrs.water_alarm_cm must be a positive number"),
        ("3301020101000001,manhole,x,30.27,120.15,,,,GW/1,,", r"gateway id 'GW/1' must be"),
        ("3301020101000001,manhole,x,30.27,120.15,,CIR-1,,,,", r"circuit is only for streetlights"),
        ("3301020101000001,manhole,x,30.27,120.15,,,,,sixty,", r"report_interval_s 'sixty' is not a whole number"),
        ("33010200001320000001,camera,x,30.27,120.15,,,sewage,,,", r"pipe_network is only for manholes"),
        ("3301020101000001,camera,x,30.27,120.15,,,,,,", r"GB/T 28181 device ID must be exactly 20 digits"),
        ("3301020101000001,manhole,x,30.27", r":2: has 4 fields, header has 11"),
    ],
)
def test_bad_rows_name_file_and_line(sample_city: City, tmp_path: Path, row: str, fragment: str) -> None:
    p = _write(tmp_path, row)
    with pytest.raises(RegistryError, match=fragment):
        Registry.load(p, sample_city.gridmap)


def test_duplicates_and_many_errors(sample_city: City, tmp_path: Path) -> None:
    ok = "3301020101000001,manhole,x,30.27,120.15,,,,,,"
    p = _write(tmp_path, ok, ok)
    with pytest.raises(RegistryError, match=r":3: duplicate device id '3301020101000001' \(first on line 2\)"):
        Registry.load(p, sample_city.gridmap)
    p = _write(tmp_path, *[f"x{i},lamp,x,1,1,,,,,," for i in range(30)])
    with pytest.raises(RegistryError, match=r"20 error\(s\) .*stopped after the first 20") as e:
        Registry.load(p, sample_city.gridmap)
    assert ":2:" in str(e.value) and ":21:" in str(e.value)


def test_header_errors(sample_city: City, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r":1: header lacks column\(s\) \['lon'\]"):
        Registry.load(_write(tmp_path, header="id,kind,lat"), sample_city.gridmap)
    with pytest.raises(RegistryError, match=r"unknown column\(s\) \['colour'\]; put extra settings in the 'attrs'"):
        Registry.load(_write(tmp_path, header="id,kind,lat,lon,colour"), sample_city.gridmap)
    with pytest.raises(RegistryError, match="not found"):
        Registry.load(tmp_path / "missing.csv", sample_city.gridmap)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RegistryError, match="empty file"):
        Registry.load(tmp_path / "empty.csv", sample_city.gridmap)


def test_minimal_columns_and_free_ids(sample_city: City, tmp_path: Path) -> None:
    p = _write(tmp_path, "lamp-1,streetlight,30.27,120.15", "gauge.7,water_gauge,30.27,120.15", header="id,kind,lat,lon")
    with pytest.raises(RegistryError, match="component code"):
        Registry.load(p, sample_city.gridmap)
    reg = Registry.load(p, sample_city.gridmap, strict_ids=False)
    assert reg.get("lamp-1").name == "lamp-1" and reg.get("gauge.7").report_interval_s == 30
    assert reg.get("gauge.7").water_alarm_cm == 20.0  # default for a road gauge (150 for a manhole)
    p = _write(tmp_path, "lamp/1,streetlight,30.27,120.15", header="id,kind,lat,lon")
    with pytest.raises(RegistryError, match="goes into MQTT topics"):
        Registry.load(p, sample_city.gridmap, strict_ids=False)


def test_load_city_errors(tmp_path: Path, sample_city: City) -> None:
    with pytest.raises(FileNotFoundError, match="shipped cities: .*sample-city"):
        load_city("atlantis")
    city = tmp_path / "c"
    city.mkdir()
    (city / "grids.geojson").write_text((sample_city.path / "grids.geojson").read_text())
    (city / "devices.csv").write_text(HEADER + "\n")
    c = load_city(city)  # city.yaml is optional
    assert c.name == "Lanxi New City" and len(c.registry) == 0 and c.timezone == "Asia/Shanghai"
    assert c.gridmap.locate(*c.centre) is not None
    (city / "city.yaml").write_text("name: Test\ntimezone: Mars/Olympus\n")
    with pytest.raises(ValueError, match="not an IANA zone"):
        load_city(city)
    (city / "city.yaml").write_text("name: Test\ncode: '330200'\n")
    with pytest.raises(ValueError, match="differs from the grid map's city"):
        load_city(city)
    (city / "city.yaml").write_text("name: Test\ncentre: [30.1, 120.1]\n")
    assert load_city(city).centre == (30.1, 120.1)


def test_load_100k_devices(big_city_dir: Path) -> None:
    gm = GridMap.load(big_city_dir / "grids.geojson")
    t0 = time.perf_counter()
    reg = Registry.load(big_city_dir / "devices.csv", gm)
    dt = time.perf_counter() - t0
    print(f"\n[bench] Registry.load 100k devices: {dt:.2f}s")
    assert len(reg) == 100_000
    lats = np.array([d.lat for d in reg])
    lons = np.array([d.lon for d in reg])
    t0 = time.perf_counter()
    got = gm.locate_many(lats, lons)
    print(f"[bench] locate_many 100k generated devices: {(time.perf_counter() - t0) * 1000:.0f} ms")
    assert got == [d.grid_code for d in reg]
    sizes = collections.Counter(d.gateway for d in reg if d.gateway)
    assert min(sizes.values()) >= 50 and max(sizes.values()) <= 300
    assert all(20 <= len(v) <= 40 for v in reg.circuits().values())


def test_a_group_rule_can_group_by_any_device_attribute(sample_city: City) -> None:
    """group_by is generic: the engine sizes a group by the registry, not by a hard-coded "circuit"."""
    from gridwatch.agents.rules.engine import RuleEngine

    reg = sample_city.registry
    cid, lamps = next(iter(reg.circuits().items()))
    gw = reg.gateways()[0]
    assert reg.group("circuit", cid) == lamps and reg.group("gateway", gw) == reg.by_gateway(gw)
    assert reg.group("gateway", "GW-none") == [] and reg.group("no_such_attribute", "x") == []
    engine = RuleEngine([], reg, sample_city.gridmap)
    assert engine.group_size("circuit", cid) == len(lamps)
    assert engine.group_size("gateway", gw) == len(reg.by_gateway(gw)) > 1
