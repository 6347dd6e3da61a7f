"""Code helpers for the three public code systems a grid-governance city uses.

- CJ/T 213-2005 unit-grid codes (15 digits) and the admin tiers they nest in;
- CJ/T 214-2007 city-part ("component") codes (16 digits), e.g. manhole covers, streetlights;
- GB/T 28181 video device IDs (20 digits), e.g. Sharp Eyes cameras.

Why a module of its own: every layer (registry, bridge, rules, console) keys data by these codes, and
a code that is one digit off silently lands an alert in the wrong grid. So each builder validates
its input and each parser rejects malformed codes with a ValueError that says what to fix.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "TIERS",
    "TIER_LENGTHS",
    "GridCode",
    "grid_code",
    "parse_grid_code",
    "tier_of",
    "parent_code",
    "tier_chain",
    "validate_area_code",
    "city_of",
    "ComponentClass",
    "COMPONENT_CLASSES",
    "KIND_CLASSES",
    "MANHOLE_CLASSES",
    "ComponentCode",
    "component_code",
    "parse_component_code",
    "component_class_for",
    "GB28181_TYPES",
    "Gb28181Id",
    "gb28181_id",
    "parse_gb28181",
    "is_component_code",
    "is_gb28181_id",
]

# --------------------------------------------------------------------------------------------------
# CJ/T 213 unit grids and the admin tiers
# --------------------------------------------------------------------------------------------------

TIERS: tuple[str, ...] = ("city", "district", "street", "community", "grid")
"""Command tiers, top to bottom (city -> county/district -> town/street -> village/community -> grid)."""

TIER_LENGTHS: dict[str, int] = {"city": 6, "district": 6, "street": 9, "community": 12, "grid": 15}


def _digits(value: str, n: int, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string of {n} digits, got {type(value).__name__} {value!r}")
    if len(value) != n or not value.isascii() or not value.isdigit():
        raise ValueError(f"{what} must be exactly {n} digits, got {value!r} ({len(value)} chars)")
    return value


def _seq(value: int | str, n: int, what: str) -> str:
    """Zero-pad an int (or digit string) sequence number to n digits; 0 is reserved."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an int or a digit string, got {value!r}")
    if isinstance(value, int):
        if not 1 <= value < 10**n:
            raise ValueError(f"{what} must be between 1 and {10**n - 1}, got {value}")
        return f"{value:0{n}d}"
    s = _digits(value, n, what)
    if int(s) == 0:
        raise ValueError(f"{what} must not be {s!r}: numbering starts at 1")
    return s


@functools.lru_cache(maxsize=4096)
def _check_district(district: str) -> str:
    """A GB/T 2260 county-level code: 6 digits, province 11-82, last two digits not 00 (that is a city)."""
    _digits(district, 6, "district code (GB/T 2260)")
    if not 11 <= int(district[:2]) <= 82:
        raise ValueError(f"district code {district!r}: province part {district[:2]!r} is not a GB/T 2260 province (11-82)")
    if district[2:4] == "00":
        raise ValueError(f"district code {district!r} is a province code (PP0000); a district code looks like PPCCDD")
    if district[4:] == "00":
        raise ValueError(
            f"district code {district!r} ends in 00, which GB/T 2260 uses for a prefecture-level city; "
            f"a district/county code ends in 01-99 (e.g. {district[:4]}02)"
        )
    return district


def city_of(code: str) -> str:
    """City (prefecture-level) code of any tier code: its first 4 digits + '00' (e.g. 330102... -> 330100)."""
    if not isinstance(code, str) or len(code) < 6:
        raise ValueError(f"code {code!r} is too short to hold a 6-digit admin code")
    return code[:4] + "00"


class GridCode(NamedTuple):
    """The four parts of a CJ/T 213 unit-grid code."""

    district: str  # 6 digits, GB/T 2260
    street: str  # 3 digits (town/street within the district)
    community: str  # 3 digits (village/community within the street)
    seq: str  # 3 digits (grid within the community)

    @property
    def code(self) -> str:
        return self.district + self.street + self.community + self.seq


def grid_code(district: str, street: int | str, community: int | str, seq: int | str) -> str:
    """Build a 15-digit CJ/T 213 grid code from its parts (ints are zero-padded)."""
    return (
        _check_district(district)
        + _seq(street, 3, "street part")
        + _seq(community, 3, "community part")
        + _seq(seq, 3, "grid sequence")
    )


def parse_grid_code(code: str) -> GridCode:
    """Split and validate a 15-digit grid code: 6 district + 3 street + 3 community + 3 sequence."""
    _digits(code, 15, "grid code (CJ/T 213)")
    try:
        grid_code(code[:6], code[6:9], code[9:12], code[12:15])
    except ValueError as e:
        raise ValueError(f"grid code {code!r}: {e}") from None
    return GridCode(code[:6], code[6:9], code[9:12], code[12:15])


def tier_of(code: str) -> str:
    """Tier of an area code from its length (a 6-digit code ending in 00 is a city, else a district)."""
    if not isinstance(code, str) or not code.isascii() or not code.isdigit():
        raise ValueError(f"area code {code!r} must be a string of digits")
    n = len(code)
    if n == 6:
        return "city" if code[4:] == "00" else "district"
    for tier in ("street", "community", "grid"):
        if n == TIER_LENGTHS[tier]:
            return tier
    raise ValueError(
        f"area code {code!r} has {n} digits; expected 6 (city/district), 9 (street), 12 (community) or 15 (grid)"
    )


def validate_area_code(code: str, tier: str | None = None) -> str:
    """Check an area code is well formed for its tier (inferred from length when tier is None)."""
    if tier is not None and tier not in TIER_LENGTHS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    actual = tier_of(code)
    if tier is not None and actual != tier:
        want = TIER_LENGTHS[tier]
        hint = " and end in 00" if tier == "city" else (" and not end in 00" if tier == "district" else "")
        raise ValueError(f"code {code!r} looks like a {actual} code; a {tier} code has {want} digits{hint}")
    if actual == "city":
        _digits(code, 6, "city code")
        if not 11 <= int(code[:2]) <= 82 or code[2:4] == "00":
            raise ValueError(f"city code {code!r} is not a GB/T 2260 prefecture-level code (PPCC00)")
        return code
    _check_district(code[:6])
    if actual == "street":
        _seq(code[6:9], 3, f"street part of {code!r}")
    elif actual == "community":
        _seq(code[6:9], 3, f"street part of {code!r}")
        _seq(code[9:12], 3, f"community part of {code!r}")
    elif actual == "grid":
        parse_grid_code(code)
    return code


def parent_code(code: str) -> str | None:
    """Code of the tier above (grid -> community -> street -> district -> city -> None)."""
    validate_area_code(code)
    tier = tier_of(code)
    if tier == "city":
        return None
    if tier == "district":
        return city_of(code)
    return code[: TIER_LENGTHS[TIERS[TIERS.index(tier) - 1]]]


def tier_chain(code: str) -> list[tuple[str, str]]:
    """(tier, code) pairs from the city down to ``code`` (a grid code gives all five tiers).

    The tier codes are prefixes of the grid code: district = code[:6], street = code[:9],
    community = code[:12], grid = code[:15]; the city is district[:4] + '00'.
    """
    tier = tier_of(code)
    validate_area_code(code, tier)
    chain = [("city", city_of(code))]
    for t in TIERS[1 : TIERS.index(tier) + 1]:
        chain.append((t, code[: TIER_LENGTHS[t]]))
    return chain


# --------------------------------------------------------------------------------------------------
# CJ/T 214 city-part (component) codes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentClass:
    """One (major, minor) row of the component class table."""

    major: str
    minor: str
    kind: str  # gridwatch device kind, e.g. 'manhole'
    name: str
    name_zh: str
    source: str  # 'CJ/T 214' where checked against public material, else 'gridwatch'


# Major classes of CJ/T 214: 01 public facilities (公用设施), 02 road/traffic (道路交通设施),
# 03 city appearance/environment (市容环境设施), 04 landscaping (园林绿化设施), 05 buildings/land
# (房屋土地), 06 other (其他设施).
#
# 01/01..01/03 (water-supply, sewage, rain-water manhole covers) follow the standard (a deployed
# system's sample code 3205080101000001 is a 上水井盖). Public systems list streetlights (路灯) under
# 公用设施 too, but the minor number could not be verified from material available here, so the
# streetlight and water-gauge rows below are gridwatch's own assignment in the 50+ minor range,
# away from the standard's rows. A city with its own table edits COMPONENT_CLASSES/KIND_CLASSES.
COMPONENT_CLASSES: dict[tuple[str, str], ComponentClass] = {
    ("01", "01"): ComponentClass("01", "01", "manhole", "water-supply manhole cover", "上水井盖", "CJ/T 214"),
    ("01", "02"): ComponentClass("01", "02", "manhole", "sewage manhole cover", "污水井盖", "CJ/T 214"),
    ("01", "03"): ComponentClass("01", "03", "manhole", "rain-water manhole cover", "雨水井盖", "CJ/T 214"),
    ("01", "50"): ComponentClass("01", "50", "streetlight", "streetlight", "路灯", "gridwatch"),
    ("01", "51"): ComponentClass("01", "51", "water_gauge", "road water-level gauge", "积水监测点", "gridwatch"),
}

MANHOLE_CLASSES: dict[str, tuple[str, str]] = {
    "water-supply": ("01", "01"),
    "sewage": ("01", "02"),
    "rain": ("01", "03"),
}
"""Pipe network of a manhole -> (major, minor)."""

KIND_CLASSES: dict[str, tuple[str, str]] = {
    "streetlight": ("01", "50"),
    "water_gauge": ("01", "51"),
}
"""Device kind -> (major, minor) for kinds with one class (manholes go by pipe network)."""


_COMPONENT_RE = re.compile(r"([0-9]{6})([0-9]{2})([0-9]{2})([0-9]{6})\Z")


class ComponentCode(NamedTuple):
    """The parts of a 16-digit CJ/T 214 component code."""

    district: str  # 6 digits
    major: str  # 2 digits
    minor: str  # 2 digits
    seq: str  # 6 digits
    cls: ComponentClass | None  # None when (major, minor) is not in COMPONENT_CLASSES

    @property
    def code(self) -> str:
        return self.district + self.major + self.minor + self.seq


def component_code(district: str, major: int | str, minor: int | str, seq: int | str) -> str:
    """Build a 16-digit component code: 6 district + 2 major + 2 minor + 6 sequence."""
    return _check_district(district) + _seq(major, 2, "major class") + _seq(minor, 2, "minor class") + _seq(
        seq, 6, "component sequence"
    )


def parse_component_code(code: str) -> ComponentCode:
    """Split and validate a component code; ``cls`` tells the class when it is a known one."""
    m = _COMPONENT_RE.match(code) if isinstance(code, str) else None
    if m is None or m[2] == "00" or m[3] == "00" or m[4] == "000000":  # slow path only to explain the error
        _digits(code, 16, "component code (CJ/T 214)")
        try:
            component_code(code[:6], code[6:8], code[8:10], code[10:16])
        except ValueError as e:
            raise ValueError(f"component code {code!r}: {e}") from None
    try:
        _check_district(m[1])  # type: ignore[index]
    except ValueError as e:
        raise ValueError(f"component code {code!r}: {e}") from None
    return ComponentCode(m[1], m[2], m[3], m[4], COMPONENT_CLASSES.get((m[2], m[3])))  # type: ignore[index]


def component_class_for(kind: str, pipe_network: str | None = None) -> tuple[str, str]:
    """(major, minor) for a device kind (and a manhole's pipe network)."""
    if kind == "manhole":
        if pipe_network not in MANHOLE_CLASSES:
            raise ValueError(
                f"manhole pipe network {pipe_network!r} unknown; expected one of {', '.join(MANHOLE_CLASSES)}"
            )
        return MANHOLE_CLASSES[pipe_network]
    if kind not in KIND_CLASSES:
        raise ValueError(f"no component class for kind {kind!r} (cameras carry GB/T 28181 IDs)")
    return KIND_CLASSES[kind]


def is_component_code(code: str) -> bool:
    try:
        parse_component_code(code)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# GB/T 28181 video device IDs
# --------------------------------------------------------------------------------------------------

GB28181_TYPES: dict[str, str] = {
    "111": "DVR",
    "112": "video server",
    "113": "encoder",
    "114": "decoder",
    "118": "NVR",
    "131": "camera",
    "132": "network camera (IPC)",
    "200": "central signalling server (platform/gateway)",
    "215": "business group",
    "216": "virtual organisation",
}
"""Type codes (digits 11-13) seen most; other digits are accepted and reported as unknown type."""


class Gb28181Id(NamedTuple):
    """The parts of a 20-digit GB/T 28181 device ID."""

    centre: str  # 8 digits: province 2 + city 2 + district 2 + base unit 2
    industry: str  # 2 digits (00 = public-security road surveillance)
    type_code: str  # 3 digits (131 camera, 132 IPC, 111 DVR, 200 platform)
    network: str  # 1 digit (0-4 surveillance private network, 5 police, 6 government, 7 internet, 8 social)
    seq: str  # 6 digits
    type_name: str | None

    @property
    def code(self) -> str:
        return self.centre + self.industry + self.type_code + self.network + self.seq


def gb28181_id(
    centre: str, industry: str = "00", type_code: str = "132", network: str = "0", seq: int | str = 1
) -> str:
    """Build a 20-digit GB/T 28181 ID: 8 centre + 2 industry + 3 type + 1 network + 6 sequence.

    ``centre`` may be given as a 6-digit district code, which is padded with base unit '00'.
    """
    if isinstance(centre, str) and len(centre) == 6:
        centre = centre + "00"
    _digits(centre, 8, "GB/T 28181 centre code")
    if not 11 <= int(centre[:2]) <= 82:
        raise ValueError(f"GB/T 28181 centre code {centre!r}: province part {centre[:2]!r} is not 11-82")
    _digits(industry, 2, "GB/T 28181 industry code")
    _digits(type_code, 3, "GB/T 28181 type code")
    if not 100 <= int(type_code) <= 999:
        raise ValueError(f"GB/T 28181 type code {type_code!r} must be 100-999 (e.g. 131 camera, 132 IPC)")
    _digits(network, 1, "GB/T 28181 network code")
    return centre + industry + type_code + network + _seq(seq, 6, "GB/T 28181 sequence")


def parse_gb28181(device_id: str) -> Gb28181Id:
    """Split and validate a 20-digit GB/T 28181 device ID."""
    _digits(device_id, 20, "GB/T 28181 device ID")
    parts = (device_id[:8], device_id[8:10], device_id[10:13], device_id[13], device_id[14:20])
    try:
        gb28181_id(*parts)
    except ValueError as e:
        raise ValueError(f"GB/T 28181 ID {device_id!r}: {e}") from None
    return Gb28181Id(*parts, GB28181_TYPES.get(parts[2]))


def is_gb28181_id(device_id: str) -> bool:
    try:
        parse_gb28181(device_id)
    except ValueError:
        return False
    return True
