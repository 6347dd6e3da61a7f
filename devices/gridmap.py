"""The city's grid map: which unit grid a point is in, and the tier chain above each grid.

Why: every reading, event and incident is filed under a grid code and escalates up its tier chain
(grid -> community -> street -> district -> city). Devices and resident reports carry coordinates,
so the map must assign points to grids fast (100k devices at start-up, single reports at run time);
``locate_many`` uses a shapely 2 STRtree over the grid polygons for that.

Input is a GeoJSON FeatureCollection (WGS-84 lon/lat); see docs/devices.md for its properties.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from . import codes

__all__ = ["Area", "GridMap", "GridMapError", "BBox"]

BBox = tuple[float, float, float, float]
"""(min_lon, min_lat, max_lon, max_lat)"""


class GridMapError(ValueError):
    """A grid map file is malformed; the message names the feature and what to fix."""


@dataclass(frozen=True, slots=True)
class Area:
    """One area of any tier (the city, a district, street, community or unit grid)."""

    code: str
    name: str
    tier: str  # one of codes.TIERS
    parent: str | None  # parent area code; None for the city
    name_zh: str = field(default="", compare=False)  # Chinese name for the console ("" = same as name)

    def __post_init__(self) -> None:
        if not self.name_zh:
            object.__setattr__(self, "name_zh", self.name)


class GridMap:
    """Areas of all tiers plus the grid polygons, with point-in-grid lookup."""

    def __init__(self, areas: Iterable[Area], geometries: dict[str, BaseGeometry], source: str = "<memory>"):
        """Build from validated areas and polygons; prefer :meth:`load` / :meth:`from_features`."""
        self.source = source
        self._areas: dict[str, Area] = {}
        self._children: dict[str, list[str]] = {}
        for a in areas:
            self._areas[a.code] = a
            self._children.setdefault(a.code, [])
            if a.parent is not None:
                self._children.setdefault(a.parent, []).append(a.code)
        for kids in self._children.values():
            kids.sort()
        self._geoms = dict(geometries)
        self.grid_codes: list[str] = sorted(c for c, a in self._areas.items() if a.tier == "grid")
        self._grid_index = {c: i for i, c in enumerate(self.grid_codes)}
        self._grid_geoms = np.array([self._geoms[c] for c in self.grid_codes], dtype=object)
        shapely.prepare(self._grid_geoms)
        self._tree = shapely.STRtree(self._grid_geoms)
        self._union_cache: dict[str, BaseGeometry] = {}
        cities = [a for a in self._areas.values() if a.tier == "city"]
        self.city: Area | None = cities[0] if cities else None

    # ---------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | PathLike[str]) -> GridMap:
        """Read and validate a GeoJSON FeatureCollection of areas (see docs/devices.md)."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GridMapError(f"{p}: grid map file not found") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise GridMapError(f"{p}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection" or not isinstance(
            doc.get("features"), list
        ):
            raise GridMapError(f"{p}: expected a GeoJSON FeatureCollection with a 'features' list")
        return cls.from_features(doc["features"], source=str(p))

    @classmethod
    def from_features(cls, features: Sequence[dict[str, Any]], source: str = "<memory>") -> GridMap:
        """Validate GeoJSON features (dicts) and build the map."""
        areas: list[Area] = []
        geoms: dict[str, BaseGeometry] = {}
        where_of: dict[str, str] = {}
        for i, feat in enumerate(features):
            where = f"{source}: feature #{i}"
            if not isinstance(feat, dict) or feat.get("type") != "Feature":
                raise GridMapError(f"{where}: not a GeoJSON Feature object")
            props = feat.get("properties")
            if not isinstance(props, dict):
                raise GridMapError(f"{where}: missing 'properties' (needs code, name, tier, parent)")
            code = props.get("code")
            name = props.get("name")
            tier = props.get("tier")
            parent = props.get("parent")
            if isinstance(code, int) and not isinstance(code, bool):
                code = str(code)  # tolerate numbers, but a leading zero would be lost: keep codes as strings
            where = f"{where} (code {code!r}, name {name!r})"
            if not isinstance(code, str) or not code:
                raise GridMapError(f"{where}: property 'code' must be a non-empty string of digits")
            if not isinstance(name, str) or not name.strip():
                raise GridMapError(f"{where}: property 'name' must be a non-empty string")
            if tier not in codes.TIERS:
                raise GridMapError(f"{where}: property 'tier' is {tier!r}; expected one of {', '.join(codes.TIERS)}")
            try:
                codes.validate_area_code(code, tier)
            except ValueError as e:
                raise GridMapError(f"{where}: {e}") from None
            if parent is not None and not isinstance(parent, str):
                parent = str(parent)
            expected_parent = codes.parent_code(code)
            if parent != expected_parent:
                if tier == "city":
                    raise GridMapError(f"{where}: the city's 'parent' must be null, got {parent!r}")
                raise GridMapError(
                    f"{where}: 'parent' is {parent!r} but a {tier} code's parent is its prefix {expected_parent!r}; "
                    f"fix the code or the parent"
                )
            if code in where_of:
                raise GridMapError(f"{where}: duplicate code, already used by {where_of[code]}")
            where_of[code] = where
            geom_doc = feat.get("geometry")
            if geom_doc is None:
                if tier == "grid":
                    raise GridMapError(f"{where}: a grid needs a Polygon or MultiPolygon geometry")
            else:
                geoms[code] = _parse_geometry(geom_doc, where)
            name_zh = props.get("name_zh")
            if name_zh is not None and (not isinstance(name_zh, str) or not name_zh.strip()):
                raise GridMapError(f"{where}: property 'name_zh' must be a non-empty string when given")
            areas.append(Area(code, name.strip(), tier, parent, (name_zh or "").strip()))

        if not areas:
            raise GridMapError(f"{source}: no features")
        cities = [a for a in areas if a.tier == "city"]
        if len(cities) != 1:
            raise GridMapError(
                f"{source}: need exactly one feature with tier 'city' (the root of the tier chain), found {len(cities)}"
            )
        for a in areas:
            if a.parent is not None and a.parent not in where_of:
                raise GridMapError(
                    f"{where_of[a.code]}: parent {a.parent!r} is not in the file; add a feature for it (geometry optional)"
                )
        if not any(a.tier == "grid" for a in areas):
            raise GridMapError(f"{source}: no features with tier 'grid'")
        return cls(areas, geoms, source)

    # ---------------------------------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self._areas)

    def __contains__(self, code: object) -> bool:
        return code in self._areas

    def areas(self, tier: str | None = None) -> list[Area]:
        """All areas (of one tier if given), sorted by code."""
        return [self._areas[c] for c in sorted(self._areas) if tier is None or self._areas[c].tier == tier]

    def area(self, code: str) -> Area:
        """The area with this code; KeyError naming the code if unknown."""
        try:
            return self._areas[code]
        except KeyError:
            raise KeyError(f"no area with code {code!r} in grid map {self.source}") from None

    def chain(self, grid_code: str) -> list[Area]:
        """Areas from the city down to ``grid_code`` (any tier code works)."""
        out = []
        code: str | None = self.area(grid_code).code
        while code is not None:
            a = self._areas[code]
            out.append(a)
            code = a.parent
        out.reverse()
        return out

    def children(self, code: str) -> list[Area]:
        """Direct children of an area, sorted by code."""
        self.area(code)
        return [self._areas[c] for c in self._children.get(code, [])]

    def grids_under(self, code: str) -> list[str]:
        """Codes of all grids at or below an area (sorted)."""
        a = self.area(code)
        if a.tier == "grid":
            return [code]
        if a.tier == "city":
            return list(self.grid_codes)
        lo = bisect.bisect_left(self.grid_codes, code)
        hi = bisect.bisect_right(self.grid_codes, code + "9" * (15 - len(code)))
        return self.grid_codes[lo:hi]

    def geometry(self, code: str) -> BaseGeometry:
        """Shapely geometry of an area; for a tier stored without one, the union of its grids."""
        self.area(code)
        g = self._geoms.get(code)
        if g is not None:
            return g
        if code not in self._union_cache:
            grids = self.grids_under(code)
            if not grids:
                raise KeyError(f"area {code!r} has no geometry and no grids below it")
            self._union_cache[code] = shapely.union_all([self._geoms[c] for c in grids])
        return self._union_cache[code]

    def polygon(self, code: str) -> list[list[tuple[float, float]]]:
        """Rings of an area as lists of (lon, lat): every part's exterior, then its holes (even-odd fill)."""
        g = self.geometry(code)
        parts = list(g.geoms) if isinstance(g, MultiPolygon) or hasattr(g, "geoms") else [g]  # union may be a collection
        rings: list[list[tuple[float, float]]] = []
        for part in parts:
            if not isinstance(part, Polygon):
                continue
            rings.append([(float(x), float(y)) for x, y in part.exterior.coords])
            rings.extend([(float(x), float(y)) for x, y in r.coords] for r in part.interiors)
        return rings

    def bbox(self, code: str | None = None) -> BBox:
        """(min_lon, min_lat, max_lon, max_lat) of an area, or of all grids when code is None."""
        if code is None or (self.area(code).tier == "city" and code not in self._geoms):
            b = shapely.total_bounds(self._grid_geoms)
        elif code in self._geoms:
            b = self._geoms[code].bounds
        else:
            b = shapely.total_bounds(np.array([self._geoms[c] for c in self.grids_under(code)], dtype=object))
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    def centroid(self, code: str) -> tuple[float, float]:
        """(lat, lon) of a point inside the area (a representative point, not the centroid: always inside)."""
        p = self.geometry(code).representative_point()
        return (p.y, p.x)

    # ---------------------------------------------------------------------------------------- locate
    def locate(self, lat: float, lon: float) -> str | None:
        """Grid code containing the point, or None outside every grid."""
        return self.locate_many([lat], [lon])[0]

    def locate_many(self, lats: Sequence[float] | np.ndarray, lons: Sequence[float] | np.ndarray) -> list[str | None]:
        """Grid codes for many points at once (STRtree query); None where a point is in no grid.

        A point on an edge shared by two grids goes to the grid with the smaller code, so the
        answer never depends on input order.
        """
        la = np.asarray(lats, dtype=float)
        lo = np.asarray(lons, dtype=float)
        if la.shape != lo.shape or la.ndim != 1:
            raise ValueError(f"lats and lons must be 1-D and equally long, got shapes {la.shape} and {lo.shape}")
        idx = self.locate_indices(la, lo)
        codes_arr = self.grid_codes
        return [codes_arr[i] if i >= 0 else None for i in idx.tolist()]

    def locate_indices(self, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
        """Like locate_many but returns indices into ``grid_codes`` (-1 = none): no per-point objects."""
        n = len(lats)
        out = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return out
        finite = np.isfinite(lats) & np.isfinite(lons)
        pts = shapely.points(np.where(finite, lons, 0.0), np.where(finite, lats, 0.0))
        hits = self._tree.query(pts, predicate="intersects")  # (2, k): point index, grid index
        if hits.shape[1]:
            pi, gi = hits
            # several hits for one point (shared edge): keep the smallest grid index (= smallest code)
            order = np.lexsort((gi, pi))
            pi, gi = pi[order], gi[order]
            first = np.ones(len(pi), dtype=bool)
            first[1:] = pi[1:] != pi[:-1]
            out[pi[first]] = gi[first]
        out[~finite] = -1
        return out

    # ---------------------------------------------------------------------------------------- export
    def to_features(self) -> list[dict[str, Any]]:
        """GeoJSON features for all areas (those stored without geometry get geometry null)."""
        feats = []
        for a in self.areas():
            g = self._geoms.get(a.code)
            feats.append({
                "type": "Feature",
                "properties": {"code": a.code, "name": a.name, "name_zh": a.name_zh, "tier": a.tier, "parent": a.parent},
                "geometry": mapping(g) if g is not None else None,
            })
        return feats

    def __repr__(self) -> str:
        counts = {t: 0 for t in codes.TIERS}
        for a in self._areas.values():
            counts[a.tier] += 1
        name = self.city.name if self.city else "?"
        return f"GridMap({name!r}, " + ", ".join(f"{n} {t}" for t, n in counts.items()) + ")"


def _parse_geometry(geom_doc: Any, where: str) -> BaseGeometry:
    if not isinstance(geom_doc, dict) or geom_doc.get("type") not in ("Polygon", "MultiPolygon"):
        got = geom_doc.get("type") if isinstance(geom_doc, dict) else type(geom_doc).__name__
        raise GridMapError(f"{where}: geometry must be a Polygon or MultiPolygon, got {got!r}")
    try:
        g = shape(geom_doc)
    except Exception as e:  # shapely raises several types for bad coordinate arrays
        raise GridMapError(f"{where}: cannot read geometry coordinates ({e})") from None
    if g.is_empty:
        raise GridMapError(f"{where}: geometry is empty")
    minx, miny, maxx, maxy = g.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise GridMapError(f"{where}: geometry has non-finite coordinates")
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise GridMapError(
            f"{where}: coordinates outside lon [-180, 180] / lat [-90, 90] (bounds {g.bounds}); "
            f"GeoJSON positions are [lon, lat] in WGS-84 - are they swapped or projected?"
        )
    if not g.is_valid:
        raise GridMapError(
            f"{where}: invalid polygon ({shapely.is_valid_reason(g)}); fix self-intersections/unclosed rings "
            f"(e.g. shapely.make_valid) and re-export"
        )
    if g.area <= 0:
        raise GridMapError(f"{where}: polygon has zero area")
    return g
