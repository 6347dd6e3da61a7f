"""Device registry: every city part that publishes telemetry, with its grid, circuit and gateway.

Why: the MQTT bridge must reject readings from unknown devices (or from a gateway a device does not
belong to), rules need each device's kind, thresholds and circuit, and Kafka partitioning needs a
shard key that keeps a lamp circuit in one partition. The registry is loaded once from a CSV table
(documented in docs/devices.md) and then read-only, so lookups are plain dict reads.
"""

from __future__ import annotations

import csv
import json
import math
import re
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from gridwatch.pipeline.schemas.mqtt_topics import device_topic, gateway_topic

from . import codes
from .gridmap import GridMap

if TYPE_CHECKING:
    from gridwatch.core.settings import Settings

__all__ = [
    "KINDS",
    "PIPE_NETWORKS",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_WATER_ALARM_CM",
    "CSV_COLUMNS",
    "Device",
    "Registry",
    "RegistryError",
    "City",
    "load_city",
    "write_devices_csv",
    "SAMPLE_CITY_DIR",
]

KINDS: tuple[str, ...] = ("streetlight", "manhole", "water_gauge", "camera")
PIPE_NETWORKS: tuple[str, ...] = ("water-supply", "sewage", "rain")
DEFAULT_INTERVAL_S: dict[str, int] = {"streetlight": 60, "manhole": 60, "water_gauge": 30, "camera": 30}
DEFAULT_WATER_ALARM_CM: dict[str, float] = {"manhole": 150.0, "water_gauge": 20.0}
"""Water-depth alarm when a device has no ``water_alarm_cm`` attribute: 150 cm in a manhole well,
20 cm of standing water on a road (many cities close a road at ~27 cm)."""

CSV_COLUMNS: tuple[str, ...] = (
    "id", "kind", "name", "lat", "lon", "grid_code", "circuit", "pipe_network", "gateway", "report_interval_s", "attrs",
    "name_zh",
)
REQUIRED_COLUMNS = ("id", "kind", "lat", "lon")
DATA_DIR = Path(__file__).resolve().parent / "data"
SAMPLE_CITY_DIR = DATA_DIR / "sample-city"

# ids that go into MQTT topics and Kafka keys: no '/', '+', '#', spaces
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


_NETWORK_OF_CLASS = {mm: net for net, mm in codes.MANHOLE_CLASSES.items()}


class RegistryError(ValueError):
    """A device table is malformed; the message lists file:line and what to fix."""


@dataclass(frozen=True, slots=True)
class Device:
    """One device. ``attrs`` holds kind-specific settings (e.g. water_alarm_cm); do not mutate it."""

    id: str  # CJ/T 214 component code, or GB/T 28181 ID for cameras
    kind: str  # one of KINDS
    name: str
    lat: float
    lon: float
    grid_code: str  # CJ/T 213 unit grid the device stands in
    circuit: str | None = None  # streetlights: lamp circuit id, e.g. CIR-330102001-007
    pipe_network: str | None = None  # manholes: water-supply | sewage | rain
    gateway: str | None = None  # edge gateway that publishes for it; None = publishes on its own topic
    report_interval_s: int = 60
    attrs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    name_zh: str = field(default="", compare=False, hash=False)  # Chinese display name ("" = same as name)

    @property
    def shard_key(self) -> str:
        """Kafka key: the circuit for lamps (whole-circuit rules need them in one partition), else the id."""
        return self.circuit or self.id

    @property
    def water_alarm_cm(self) -> float:
        """Water depth alarm level for manholes and gauges (attr, else the default)."""
        return float(self.attrs.get("water_alarm_cm", DEFAULT_WATER_ALARM_CM.get(self.kind, 150.0)))

    @property
    def topic(self) -> str:
        """MQTT topic this device's telemetry arrives on (its own, or its gateway's)."""
        return gateway_topic(self.gateway) if self.gateway else device_topic(self.id)


class Registry:
    """Read-only collection of devices with indexes by kind, gateway, circuit and grid."""

    def __init__(self, devices: Iterable[Device], source: str = "<memory>"):
        self.source = source
        self._by_id: dict[str, Device] = {}
        self._by_kind: dict[str, list[Device]] = {k: [] for k in KINDS}
        self._by_gateway: dict[str, list[Device]] = {}
        self._by_circuit: dict[str, list[Device]] = {}
        self._by_grid: dict[str, list[Device]] = {}
        for d in devices:
            if d.id in self._by_id:
                raise RegistryError(f"{source}: duplicate device id {d.id!r}")
            if d.kind not in self._by_kind:
                raise RegistryError(f"{source}: device {d.id!r} has unknown kind {d.kind!r}")
            self._by_id[d.id] = d
            self._by_kind[d.kind].append(d)
            if d.gateway:
                self._by_gateway.setdefault(d.gateway, []).append(d)
            if d.circuit:
                self._by_circuit.setdefault(d.circuit, []).append(d)
            self._by_grid.setdefault(d.grid_code, []).append(d)
        # attribute -> value -> devices for group(): the indexes above, others built on first use
        self._groups: dict[str, dict[str, list[Device]]] = {
            "kind": self._by_kind, "gateway": self._by_gateway, "circuit": self._by_circuit, "grid_code": self._by_grid}
        overlap = set(self._by_gateway) & set(self._by_id)
        if overlap:
            raise RegistryError(f"{source}: gateway ids collide with device ids: {sorted(overlap)[:5]}")

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, devices_path: str | PathLike[str], gridmap: GridMap, *, strict_ids: bool = True, max_errors: int = 20
    ) -> Registry:
        """Read a devices CSV; rows without grid_code are placed with ``gridmap.locate_many``.

        ``strict_ids`` requires CJ/T 214 component codes (GB/T 28181 IDs for cameras); with False any
        topic-safe token ([A-Za-z0-9._:-], up to 64 chars) is accepted, e.g. for a city's own IDs.
        Errors are collected (up to ``max_errors``) and raised together as one RegistryError.
        """
        path = Path(devices_path)
        try:
            fh = path.open(newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            raise RegistryError(f"{path}: device table not found") from None
        errors: list[str] = []
        rows: list[tuple[int, dict[str, Any]]] = []
        with fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise RegistryError(f"{path}: empty file; expected a header row {','.join(CSV_COLUMNS)}") from None
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise RegistryError(f"{path}:1: header lacks column(s) {missing}; columns are {','.join(CSV_COLUMNS)}")
            unknown = [h for h in header if h not in CSV_COLUMNS]
            if unknown:
                raise RegistryError(
                    f"{path}:1: unknown column(s) {unknown}; put extra settings in the 'attrs' JSON column"
                )
            col = {h: i for i, h in enumerate(header)}
            ncol = len(header)
            gridmap_bbox = gridmap.bbox()
            seen: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != ncol:
                    errors.append(f"{path}:{line}: has {len(row)} fields, header has {ncol} (unquoted comma in a field?)")
                else:
                    try:
                        rec = _parse_row(row, col, gridmap, gridmap_bbox, strict_ids)
                    except ValueError as e:
                        errors.append(f"{path}:{line}: {e}")
                    else:
                        if rec["id"] in seen:
                            errors.append(f"{path}:{line}: duplicate device id {rec['id']!r} (first on line {seen[rec['id']]})")
                        else:
                            seen[rec["id"]] = line
                            rows.append((line, rec))
                if len(errors) >= max_errors:
                    break
        if not errors:
            todo = [i for i, (_, rec) in enumerate(rows) if not rec["grid_code"]]
            if todo:
                lats = np.fromiter((rows[i][1]["lat"] for i in todo), float, len(todo))
                lons = np.fromiter((rows[i][1]["lon"] for i in todo), float, len(todo))
                for i, g in zip(todo, gridmap.locate_many(lats, lons), strict=True):
                    line, rec = rows[i]
                    if g is None:
                        errors.append(
                            f"{path}:{line}: device {rec['id']} at lat {rec['lat']}, lon {rec['lon']} lies in no grid "
                            f"of the map; fix lat/lon or fill grid_code"
                        )
                        if len(errors) >= max_errors:
                            break
                    rec["grid_code"] = g
        if errors:
            more = f" (stopped after the first {max_errors})" if len(errors) >= max_errors else ""
            raise RegistryError(f"{len(errors)} error(s) in device table {path}{more}:\n  " + "\n  ".join(errors))
        return cls((Device(**rec) for _, rec in rows), source=str(path))

    # ------------------------------------------------------------------------------------ lookups
    def get(self, device_id: str) -> Device | None:
        return self._by_id.get(device_id)

    def __getitem__(self, device_id: str) -> Device:
        try:
            return self._by_id[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r}") from None

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_id.values())

    def by_kind(self, kind: str) -> list[Device]:
        if kind not in self._by_kind:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        return list(self._by_kind[kind])

    def by_gateway(self, gateway_id: str) -> list[Device]:
        """Devices a gateway publishes for ([] for an unknown gateway)."""
        return list(self._by_gateway.get(gateway_id, ()))

    def gateways(self) -> list[str]:
        return sorted(self._by_gateway)

    def circuit(self, circuit_id: str) -> list[Device]:
        """Lamps of a circuit ([] for an unknown circuit)."""
        return list(self._by_circuit.get(circuit_id, ()))

    def group(self, attribute: str, value: str) -> list[Device]:
        """Devices whose ``attribute`` equals ``value``: the members of a group rule's group (its
        ``group_by``, e.g. the lamps of a circuit), for any device attribute, without a list to edit."""
        return list(self._group_index(attribute).get(value, ()))

    def group_size(self, attribute: str, value: str) -> int:
        """``len(group(attribute, value))`` without copying the group (a group rule asks per reading)."""
        return len(self._group_index(attribute).get(value, ()))

    def _group_index(self, attribute: str) -> dict[str, list[Device]]:
        index = self._groups.get(attribute)
        if index is None:
            index = self._groups[attribute] = {}
            for d in self._by_id.values():
                if (v := getattr(d, attribute, None)) not in (None, ""):
                    index.setdefault(str(v), []).append(d)
        return index

    def circuits(self) -> dict[str, list[Device]]:
        """Circuit id -> its lamps, sorted by circuit id."""
        return {c: list(self._by_circuit[c]) for c in sorted(self._by_circuit)}

    def by_grid(self, grid_code: str) -> list[Device]:
        return list(self._by_grid.get(grid_code, ()))

    def counts(self) -> dict[str, int]:
        """Devices per kind."""
        return {k: len(v) for k, v in self._by_kind.items()}

    def save(self, path: str | PathLike[str]) -> None:
        """Write the registry as a devices CSV (the format :meth:`load` reads)."""
        write_devices_csv(self, path)

    def __repr__(self) -> str:
        return f"Registry({len(self)} devices: " + ", ".join(f"{n} {k}" for k, n in self.counts().items()) + ")"


def _parse_row(
    row: list[str], col: dict[str, int], gridmap: GridMap, bbox: tuple[float, float, float, float], strict_ids: bool
) -> dict[str, Any]:
    rec = dict(zip(col, [v.strip() for v in row], strict=True))

    def get(name: str) -> str:
        return rec.get(name, "")

    dev_id = get("id")
    kind = get("kind")
    if not dev_id:
        raise ValueError("empty id")
    if kind not in KINDS:
        raise ValueError(f"device {dev_id}: kind {kind!r} unknown; expected one of {', '.join(KINDS)}")
    pipe = get("pipe_network") or None
    if strict_ids:
        if kind == "camera":
            codes.parse_gb28181(dev_id)
        else:
            cc = codes.parse_component_code(dev_id)
            if cc.cls is not None and cc.cls.kind != kind:
                raise ValueError(
                    f"device {dev_id}: class {cc.major}/{cc.minor} is a {cc.cls.name} ({cc.cls.kind}) but kind is {kind!r}"
                )
            if kind == "manhole" and cc.cls is not None:
                net = _NETWORK_OF_CLASS.get((cc.major, cc.minor))
                if pipe is None:
                    pipe = net
                elif net is not None and pipe != net:
                    raise ValueError(f"device {dev_id}: pipe_network {pipe!r} contradicts its class ({cc.cls.name})")
    elif not _TOKEN.match(dev_id):
        raise ValueError(f"device id {dev_id!r} must be 1-64 chars of [A-Za-z0-9._:-] (it goes into MQTT topics)")
    try:
        lat = float(get("lat"))
        lon = float(get("lon"))
    except ValueError:
        raise ValueError(f"device {dev_id}: lat/lon must be decimal degrees, got {get('lat')!r}, {get('lon')!r}") from None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"device {dev_id}: lat/lon ({lat}, {lon}) out of range")
    grid = get("grid_code") or None
    if grid is not None:
        if grid not in gridmap or gridmap.area(grid).tier != "grid":
            raise ValueError(f"device {dev_id}: grid_code {grid!r} is not a grid of the map; leave it empty to locate")
        margin = 0.05  # ~5 km: tolerates devices just outside, catches swapped or projected coordinates
        if not (bbox[0] - margin <= lon <= bbox[2] + margin and bbox[1] - margin <= lat <= bbox[3] + margin):
            raise ValueError(
                f"device {dev_id}: ({lat}, {lon}) is far outside the map (lon {bbox[0]:.4f}..{bbox[2]:.4f}, "
                f"lat {bbox[1]:.4f}..{bbox[3]:.4f}); lat/lon swapped?"
            )
    if kind == "manhole":
        if pipe not in PIPE_NETWORKS:
            raise ValueError(f"device {dev_id}: manhole pipe_network {pipe!r}; expected one of {', '.join(PIPE_NETWORKS)}")
    elif pipe is not None:
        raise ValueError(f"device {dev_id}: pipe_network is only for manholes (kind is {kind})")
    circuit = get("circuit") or None
    if circuit is not None:
        if kind != "streetlight":
            raise ValueError(f"device {dev_id}: circuit is only for streetlights (kind is {kind})")
        if not _TOKEN.match(circuit):
            raise ValueError(f"device {dev_id}: circuit id {circuit!r} must be [A-Za-z0-9._:-], up to 64 chars")
    gateway = get("gateway") or None
    if gateway is not None and not _TOKEN.match(gateway):
        raise ValueError(f"device {dev_id}: gateway id {gateway!r} must be [A-Za-z0-9._:-], up to 64 chars (MQTT topic)")
    interval_s = get("report_interval_s")
    if interval_s:
        try:
            interval = int(interval_s)
        except ValueError:
            raise ValueError(f"device {dev_id}: report_interval_s {interval_s!r} is not a whole number of seconds") from None
        if not 1 <= interval <= 86400:
            raise ValueError(f"device {dev_id}: report_interval_s {interval} must be 1..86400")
    else:
        interval = DEFAULT_INTERVAL_S[kind]
    raw_attrs = get("attrs")
    attrs: dict[str, Any] = {}
    if raw_attrs:
        try:
            attrs = json.loads(raw_attrs)
        except ValueError as e:
            raise ValueError(f"device {dev_id}: attrs is not valid JSON ({e}); write e.g. {{\"water_alarm_cm\": 150}}") from None
        if not isinstance(attrs, dict):
            raise ValueError(f"device {dev_id}: attrs must be a JSON object, got {type(attrs).__name__}")
    for key in ("water_alarm_cm", "rated_current_a"):
        v = attrs.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not v > 0):
            raise ValueError(f"device {dev_id}: attrs.{key} must be a positive number, got {v!r}")
    return {
        "id": dev_id, "kind": kind, "name": get("name") or dev_id, "lat": lat, "lon": lon, "grid_code": grid,
        "circuit": circuit, "pipe_network": pipe, "gateway": gateway, "report_interval_s": interval, "attrs": attrs,
        "name_zh": get("name_zh") or get("name") or dev_id,
    }


def write_devices_csv(devices: Iterable[Device], path: str | PathLike[str]) -> None:
    """Write devices in the CSV format Registry.load reads (attrs as compact JSON)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for d in devices:
            w.writerow((
                d.id, d.kind, d.name, f"{d.lat:.6f}", f"{d.lon:.6f}", d.grid_code, d.circuit or "", d.pipe_network or "",
                d.gateway or "", d.report_interval_s,
                json.dumps(d.attrs, separators=(",", ":"), ensure_ascii=False) if d.attrs else "", d.name_zh,
            ))


# ---------------------------------------------------------------------------------------- cities
@dataclass(slots=True)
class City:
    """A loaded city folder: grid map, device registry and its settings from city.yaml."""

    name: str
    code: str
    path: Path
    gridmap: GridMap
    registry: Registry
    centre: tuple[float, float]  # (lat, lon)
    timezone: str = "Asia/Shanghai"
    meta: dict[str, Any] = field(default_factory=dict)


def city_at(path: str | None) -> City:
    """The city a ``city.path`` setting names: a folder, a shipped city's name, or "" / "sample"."""
    return load_city(None if path in (None, "", "sample") else path)


def city_of(settings: Settings) -> City:
    """The city of these settings (``city.path``)."""
    return city_at(settings.city.path)


def load_city(path_or_name: str | PathLike[str] | None = None, *, strict_ids: bool = True) -> City:
    """Load a city folder (grids.geojson + devices.csv + optional city.yaml).

    With no argument, the shipped sample city; a bare name picks a shipped city under devices/data/.
    """
    if path_or_name is None:
        folder = SAMPLE_CITY_DIR
    else:
        folder = Path(path_or_name)
        if not folder.is_dir():
            shipped = DATA_DIR / str(path_or_name)
            if shipped.is_dir() and "/" not in str(path_or_name):
                folder = shipped
            else:
                names = sorted(p.name for p in DATA_DIR.iterdir() if p.is_dir()) if DATA_DIR.is_dir() else []
                raise FileNotFoundError(f"city folder {str(path_or_name)!r} not found (shipped cities: {names})")
    meta: dict[str, Any] = {}
    yaml_path = folder / "city.yaml"
    if yaml_path.exists():
        try:
            meta = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{yaml_path}: not valid YAML ({e})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{yaml_path}: must be a mapping of settings (name, code, centre, timezone)")
    gridmap = GridMap.load(folder / str(meta.get("grids", "grids.geojson")))
    registry = Registry.load(folder / str(meta.get("devices", "devices.csv")), gridmap, strict_ids=strict_ids)
    assert gridmap.city is not None  # GridMap.load guarantees exactly one city
    code = str(meta.get("code", gridmap.city.code))
    if code != gridmap.city.code:
        raise ValueError(f"{yaml_path}: code {code!r} differs from the grid map's city {gridmap.city.code!r}")
    tz = str(meta.get("timezone", "Asia/Shanghai"))
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{yaml_path}: timezone {tz!r} is not an IANA zone name (e.g. Asia/Shanghai)") from None
    centre_raw = meta.get("centre")
    if centre_raw is None:
        centre = gridmap.centroid(gridmap.city.code)
    else:
        try:
            if isinstance(centre_raw, dict):
                centre = (float(centre_raw["lat"]), float(centre_raw["lon"]))
            else:
                lat, lon = centre_raw
                centre = (float(lat), float(lon))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{yaml_path}: centre must be {{lat: .., lon: ..}} or [lat, lon], got {centre_raw!r}") from None
    return City(
        name=str(meta.get("name", gridmap.city.name)), code=code, path=folder, gridmap=gridmap, registry=registry,
        centre=centre, timezone=tz, meta=meta,
    )
