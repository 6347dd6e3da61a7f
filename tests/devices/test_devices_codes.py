"""CJ/T 213 grid codes, CJ/T 214 component codes and GB/T 28181 IDs: round trips and rejections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridwatch.devices import codes


def test_tier_chain_of_grid_code() -> None:
    assert codes.tier_chain("330102001002003") == [
        ("city", "330100"),
        ("district", "330102"),
        ("street", "330102001"),
        ("community", "330102001002"),
        ("grid", "330102001002003"),
    ]
    assert codes.tier_chain("330102001") == [("city", "330100"), ("district", "330102"), ("street", "330102001")]
    assert codes.tier_chain("330100") == [("city", "330100")]


def test_parent_and_tier_of() -> None:
    assert codes.tier_of("330100") == "city"
    assert codes.tier_of("330102") == "district"
    assert codes.tier_of("330102001") == "street"
    assert codes.tier_of("330102001002") == "community"
    assert codes.tier_of("330102001002003") == "grid"
    chain = []
    code: str | None = "330102001002003"
    while code is not None:
        chain.append(code)
        code = codes.parent_code(code)
    assert chain == ["330102001002003", "330102001002", "330102001", "330102", "330100"]


def test_grid_code_builder_pads_and_round_trips() -> None:
    g = codes.grid_code("330102", 1, 2, 3)
    assert g == "330102001002003"
    assert codes.parse_grid_code(g) == codes.GridCode("330102", "001", "002", "003")
    assert codes.parse_grid_code(g).code == g


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("33010200100200", "exactly 15 digits"),
        ("3301020010020031", "exactly 15 digits"),
        ("33010200100200x", "exactly 15 digits"),
        ("330100001002003", "prefecture-level city"),  # district part is a city code
        ("330000001002003", "province code"),
        ("990102001002003", "province"),
        ("330102000002003", "street part"),
        ("330102001000003", "community part"),
        ("330102001002000", "grid sequence"),
    ],
)
def test_parse_grid_code_rejects(code: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        codes.parse_grid_code(code)


def test_area_code_validation_messages() -> None:
    with pytest.raises(ValueError, match="expected 6 .* 9 .* 12 .* or 15"):
        codes.tier_of("3301020")
    with pytest.raises(ValueError, match="looks like a district code; a city code"):
        codes.validate_area_code("330102", "city")
    with pytest.raises(ValueError, match="unknown tier"):
        codes.validate_area_code("330102", "county")
    with pytest.raises(ValueError, match="digits"):
        codes.tier_chain("33O102")  # letter O


@given(
    st.sampled_from(["110101", "330102", "330108", "440305", "510104"]),
    st.integers(1, 999), st.integers(1, 999), st.integers(1, 999),
)
def test_grid_code_round_trip_property(district: str, street: int, community: int, seq: int) -> None:
    g = codes.grid_code(district, street, community, seq)
    p = codes.parse_grid_code(g)
    assert (p.district, int(p.street), int(p.community), int(p.seq)) == (district, street, community, seq)
    assert [c for _, c in codes.tier_chain(g)][1:] == [g[:6], g[:9], g[:12], g]


def test_component_code_round_trip_and_classes() -> None:
    c = codes.component_code("330102", "01", "01", 1)
    assert c == "3301020101000001"
    p = codes.parse_component_code(c)
    assert (p.district, p.major, p.minor, p.seq) == ("330102", "01", "01", "000001")
    assert p.cls is not None and p.cls.kind == "manhole" and p.cls.name_zh == "上水井盖"
    # a real deployed sample: Suzhou Gusu 上水井盖
    assert codes.parse_component_code("3205080101000001").cls.name == "water-supply manhole cover"
    assert codes.parse_component_code("3301020499000123").cls is None  # valid code, class not in our table
    assert codes.component_class_for("manhole", "sewage") == ("01", "02")
    assert codes.component_class_for("manhole", "rain") == ("01", "03")
    lamp = codes.component_code("330102", *codes.component_class_for("streetlight"), 42)
    assert codes.parse_component_code(lamp).cls.kind == "streetlight"
    assert codes.parse_component_code(codes.component_code("330102", *codes.KIND_CLASSES["water_gauge"], 1)).cls.kind == "water_gauge"


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("330102010100001", "exactly 16 digits"),
        ("33010201010000011", "exactly 16 digits"),
        ("33010201010000a1", "exactly 16 digits"),
        ("3301020101000000", "component sequence"),
        ("3301020001000001", "major class"),
        ("3301020100000001", "minor class"),
        ("3301000101000001", "prefecture-level city"),
    ],
)
def test_parse_component_code_rejects(code: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        codes.parse_component_code(code)
    assert not codes.is_component_code(code)


def test_component_builder_rejects() -> None:
    with pytest.raises(ValueError, match="between 1 and 999999"):
        codes.component_code("330102", "01", "01", 1_000_000)
    with pytest.raises(ValueError, match="must be a string of 16 digits"):
        codes.parse_component_code(3301020101000001)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pipe network"):
        codes.component_class_for("manhole", "gas")
    with pytest.raises(ValueError, match="GB/T 28181"):
        codes.component_class_for("camera")


def test_gb28181_round_trip() -> None:
    cam = codes.gb28181_id("330102", "00", "132", "0", 5)
    assert cam == "33010200001320000005"
    p = codes.parse_gb28181(cam)
    assert (p.centre, p.industry, p.type_code, p.network, p.seq) == ("33010200", "00", "132", "0", "000005")
    assert p.type_name == "network camera (IPC)"
    assert p.code == cam
    assert codes.parse_gb28181("34020000001110000001").type_name == "DVR"
    assert codes.parse_gb28181("34020000002000000001").type_name.startswith("central signalling")
    assert codes.parse_gb28181("34020000001990000001").type_name is None


@pytest.mark.parametrize(
    ("dev_id", "fragment"),
    [
        ("3402000000132000000", "exactly 20 digits"),
        ("340200000013200000011", "exactly 20 digits"),
        ("3402000000132000000x", "exactly 20 digits"),
        ("34020000000000000001", "type code"),
        ("00020000001320000001", "province"),
        ("34020000001320000000", "sequence"),
    ],
)
def test_parse_gb28181_rejects(dev_id: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        codes.parse_gb28181(dev_id)
    assert not codes.is_gb28181_id(dev_id)
