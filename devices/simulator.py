"""Fleet model and MQTT publisher behind ``gridwatch simulate`` and the benchmarks.

Why a model and not random numbers: the rule agents must see what real city parts send (lamps that
switch at dusk and dawn, manholes whose water level moves slowly, batteries that drain) so that
normal traffic raises no alerts and injected faults raise exactly the alerts they should.

- :class:`Fleet` turns (device, sim time) into telemetry values. Values are a pure function of
  (seed, device, sim second, injected faults), so a replay of the same sim time gives the same values.
- :class:`Publisher` publishes a fleet over MQTT on the topic contract shared with the bridge:
  ``v1/devices/{id}/telemetry`` for devices that publish themselves and one
  ``v1/gateway/{gw}/telemetry`` message per gateway per tick for devices behind an edge gateway.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridwatch.pipeline.mqtt_client import MAX_OUTSTANDING, check_queued
from gridwatch.pipeline.schemas.mqtt_topics import device_topic, gateway_topic

from .registry import Device, Registry
from .solar import NIGHT_ELEVATION_DEG, ambient_lux, solar_elevation_many

__all__ = [
    "FAULTS",
    "FAULT_TARGETS",
    "Fault",
    "Fleet",
    "Publisher",
    "PublishStats",
    "device_topic",
    "gateway_topic",
    "device_payload",
    "gateway_payload",
    "build_messages",
]

log = logging.getLogger("gridwatch.devices.simulator")

FAULTS: tuple[str, ...] = (
    "cover_open", "cover_tilt", "cover_displaced", "water_rising", "lamp_out", "lamp_day_burn",
    "circuit_dark", "battery_low", "offline",
)
FAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "cover_open": ("manhole",),
    "cover_tilt": ("manhole",),
    "cover_displaced": ("manhole",),
    "water_rising": ("manhole", "water_gauge"),
    "lamp_out": ("streetlight",),
    "lamp_day_burn": ("streetlight",),
    "circuit_dark": ("circuit",),
    "battery_low": ("manhole", "water_gauge"),
    "offline": ("streetlight", "manhole", "water_gauge", "camera", "gateway"),
}
"""Fault -> what it may target: device kinds, 'circuit' (a circuit id) or 'gateway' (a gateway id)."""

_RANDOM_FAULT_WEIGHTS = {
    "lamp_out": 0.18, "lamp_day_burn": 0.08, "circuit_dark": 0.04, "cover_tilt": 0.10, "cover_open": 0.08,
    "cover_displaced": 0.07, "water_rising": 0.15, "battery_low": 0.10, "offline": 0.20,
}
_KIND_CODE = {"streetlight": 0, "manhole": 1, "water_gauge": 2, "camera": 3}
_REF_TS = 1_704_067_200.0  # 2024-01-01T00:00Z: battery clock reference
_BASE_LEVEL_FRAC = {"water-supply": (0.10, 0.35), "sewage": (0.25, 0.45), "rain": (0.05, 0.30)}


# ------------------------------------------------------------------------------------------ hashing
_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wraps on overflow, as intended)."""
    x = x + _G
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _uniform(seed: int, idx: np.ndarray, t: int, salt: int) -> np.ndarray:
    """Deterministic U[0, 1) per (seed, device index, time step, salt): noise that replays identically."""
    key = _mix(np.array([(seed * 1_000_003 + salt * 7919) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    x = _mix(idx.astype(np.uint64) ^ key)
    x = _mix(x ^ np.uint64(t & 0xFFFFFFFFFFFFFFFF))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _normal(seed: int, idx: np.ndarray, t: int, salt: int) -> np.ndarray:
    u1 = 1.0 - _uniform(seed, idx, t, salt)
    u2 = _uniform(seed, idx, t, salt + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


# ------------------------------------------------------------------------------------------ faults
@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault on a device, circuit or gateway, active on [start_ts, end_ts)."""

    fault: str
    target: str
    start_ts: float
    end_ts: float | None = None  # None = until cleared
    params: dict[str, float] = field(default_factory=dict, compare=False, hash=False)

    def active(self, ts: float) -> bool:
        return self.start_ts <= ts and (self.end_ts is None or ts < self.end_ts)


# ------------------------------------------------------------------------------------------ fleet
def _subset(registry: Registry, limit: int) -> list[Device]:
    """About ``limit`` devices with the registry's kind mix: the first ones of each kind."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    total = len(registry)
    if limit >= total:
        return list(registry)
    keep: set[str] = set()
    for kind in _KIND_CODE:
        devs = registry.by_kind(kind)
        n = math.ceil(len(devs) * limit / total) if devs else 0
        keep.update(d.id for d in devs[:n])
    return [d for d in registry if d.id in keep]


class Fleet:
    """Telemetry model of every device in a registry, with fault injection."""

    def __init__(self, registry: Registry, seed: int = 7, limit: int | None = None):
        """Model ``registry``'s devices; ``limit`` keeps only about that many, with the same kind mix
        (the first devices of each kind in registry order, so lamp circuits stay mostly whole)."""
        self.registry = registry
        self.seed = int(seed)
        self.devices: list[Device] = _subset(registry, limit) if limit is not None else list(registry)
        self.index: dict[str, int] = {d.id: i for i, d in enumerate(self.devices)}
        self._circuits: dict[str, list[Device]] = {}
        self._gateways: dict[str, list[Device]] = {}
        for d in self.devices:
            if d.circuit:
                self._circuits.setdefault(d.circuit, []).append(d)
            if d.gateway:
                self._gateways.setdefault(d.gateway, []).append(d)
        n = len(self.devices)
        rng = np.random.default_rng([self.seed, 0x5EED])
        self._kind = np.array([_KIND_CODE[d.kind] for d in self.devices], dtype=np.int8)
        self._lat = np.array([d.lat for d in self.devices])
        self._lon = np.array([d.lon for d in self.devices])
        # lamps switch per circuit (one controller): use the circuit's mean position for the switch
        self._sw_lat = self._lat.copy()
        self._sw_lon = self._lon.copy()
        for lamps in self._circuits.values():
            ii = [self.index[d.id] for d in lamps]
            self._sw_lat[ii] = self._lat[ii].mean()
            self._sw_lon[ii] = self._lon[ii].mean()
        self._alarm = np.array([d.water_alarm_cm for d in self.devices])
        self._rated = np.array([float(d.attrs.get("rated_current_a", 0.7)) for d in self.devices])
        self._depth = np.array([float(d.attrs.get("depth_cm", 300.0)) for d in self.devices])
        # normal water depth in a well, as a share of its alarm level: sewage runs fullest, rain drains dry
        lo = np.array([_BASE_LEVEL_FRAC.get(d.pipe_network or "", (0.0, 0.0))[0] for d in self.devices])
        hi = np.array([_BASE_LEVEL_FRAC.get(d.pipe_network or "", (0.0, 0.0))[1] for d in self.devices])
        self._base_level = (lo + (hi - lo) * rng.random(n)) * self._alarm
        self._sewage = np.array([d.pipe_network == "sewage" for d in self.devices])
        self._inst_days = rng.uniform(0.0, 2500.0, n)  # battery installed this many days before the reference
        self._drain = rng.uniform(0.02, 0.08, n)  # % per day: 3-13 years per battery
        self.interval = np.array([d.report_interval_s for d in self.devices], dtype=np.int64)
        self.phase_ms = (
            (_uniform(self.seed, np.arange(n), 0, 99) * self.interval * 1000).astype(np.int64)
            if n else np.zeros(0, dtype=np.int64)
        )
        self._faults: dict[str, list[Fault]] = {}
        self._n_injected = 0

    def __len__(self) -> int:
        return len(self.devices)

    # -------------------------------------------------------------------------------- faults
    def inject(
        self, fault: str, target_id: str, start_ts: float, duration_s: float | None = None, **params: float
    ) -> Fault:
        """Schedule a fault. ``params`` override its magnitude (tilt_deg, displacement_cm, peak_cm,
        ramp_s, battery_pct); unspecified ones are drawn reproducibly from the fleet's seed."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        allowed = FAULT_TARGETS[fault]
        i_dev = self.index.get(target_id)
        if i_dev is not None:
            dev = self.devices[i_dev]
            if dev.kind not in allowed:
                raise ValueError(f"fault {fault!r} does not apply to {dev.kind} {target_id}; it targets {', '.join(allowed)}")
        elif not (
            ("circuit" in allowed and target_id in self._circuits)
            or ("gateway" in allowed and target_id in self._gateways)
        ):
            raise ValueError(f"fault {fault!r}: target {target_id!r} is not a {' / '.join(allowed)} of this fleet")
        if duration_s is not None and not duration_s > 0:
            raise ValueError(f"duration_s must be positive or None, got {duration_s}")
        rng = np.random.default_rng([self.seed, 0xFA, self._n_injected])
        self._n_injected += 1
        p: dict[str, float] = {}
        if fault == "cover_open":
            p["tilt_deg"] = round(float(rng.uniform(60, 90)), 1)
            p["displacement_cm"] = round(float(rng.uniform(0, 40)), 1)
        elif fault == "cover_tilt":
            p["tilt_deg"] = round(float(rng.uniform(15, 25)), 1)
        elif fault == "cover_displaced":
            p["displacement_cm"] = round(float(rng.uniform(10, 30)), 1)
        elif fault == "water_rising":
            i = self.index.get(target_id)
            alarm = float(self._alarm[i]) if i is not None else 150.0
            p["peak_cm"] = round(alarm * float(rng.uniform(1.2, 1.5)), 1)
            p["ramp_s"] = round(float(rng.uniform(600, 1800)), 1)
        elif fault == "battery_low":
            p["battery_pct"] = round(float(rng.uniform(3, 9)), 1)
        p.update({k: float(v) for k, v in params.items()})
        end = None if duration_s is None else float(start_ts) + float(duration_s)
        f = Fault(fault, target_id, float(start_ts), end, p)
        self._faults.setdefault(target_id, []).append(f)
        return f

    def clear(self, target_id: str | None = None) -> None:
        """Remove all faults (of one target)."""
        if target_id is None:
            self._faults.clear()
        else:
            self._faults.pop(target_id, None)

    def faults(self) -> list[Fault]:
        """All scheduled faults, by start time."""
        return sorted((f for fs in self._faults.values() for f in fs), key=lambda f: (f.start_ts, f.target))

    def active_faults(self, ts: float) -> list[Fault]:
        return [f for f in self.faults() if f.active(ts)]

    def random_faults(
        self, rate_per_hour: float, start_ts: float, horizon_s: float = 3600.0, kinds: Iterable[str] | None = None
    ) -> list[Fault]:
        """Schedule Poisson(rate x hours) random faults over [start_ts, start_ts + horizon_s).

        Reproducible from (seed, rate, start_ts, horizon): fault types are weighted towards common
        field failures and only target devices they apply to; durations are 5 min to 2 h.
        """
        if rate_per_hour < 0:
            raise ValueError(f"rate_per_hour must be >= 0, got {rate_per_hour}")
        rng = np.random.default_rng([self.seed, 0xF417, int(start_ts), int(horizon_s), int(rate_per_hour * 1000)])
        pools: dict[str, list[str]] = {}
        by_kind: dict[str, list[str]] = {k: [] for k in _KIND_CODE}
        for d in self.devices:
            by_kind[d.kind].append(d.id)
        for fault in kinds if kinds is not None else _RANDOM_FAULT_WEIGHTS:
            if fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
            targets: list[str] = []
            for t in FAULT_TARGETS[fault]:
                if t == "circuit":
                    targets += sorted(self._circuits)
                elif t != "gateway":
                    targets += by_kind[t]
            if targets:
                pools[fault] = targets
        if not pools:
            return []
        names = list(pools)
        w = np.array([_RANDOM_FAULT_WEIGHTS.get(f, 0.1) for f in names])
        n = int(rng.poisson(rate_per_hour * horizon_s / 3600.0))
        out = []
        for _ in range(n):
            fault = names[int(rng.choice(len(names), p=w / w.sum()))]
            pool = pools[fault]
            target = pool[int(rng.integers(0, len(pool)))]
            start = float(start_ts) + float(rng.uniform(0, horizon_s))
            duration = float(np.exp(rng.uniform(np.log(300), np.log(7200))))
            out.append(self.inject(fault, target, round(start, 3), round(duration, 1)))
        return out

    def _device_faults(self, i: int, ts: float) -> list[Fault]:
        d = self.devices[i]
        fs = [f for f in self._faults.get(d.id, ()) if f.active(ts)]
        if d.circuit and d.circuit in self._faults:
            fs += [f for f in self._faults[d.circuit] if f.active(ts)]
        if d.gateway and d.gateway in self._faults:
            fs += [f for f in self._faults[d.gateway] if f.active(ts)]
        return fs

    # -------------------------------------------------------------------------------- values
    def readings(self, sim_ts: float, devices: Sequence[Device] | None = None) -> list[tuple[Device, dict[str, Any]]]:
        """Telemetry values of the given devices (default: all) at sim time ``sim_ts`` (epoch s).

        Offline devices are left out. Values follow the topic contract (docs/devices.md).
        """
        if devices is None:
            idx = np.arange(len(self.devices))
        else:
            try:
                idx = np.fromiter((self.index[d.id] for d in devices), np.int64, len(devices))
            except KeyError as e:
                raise KeyError(f"device {e.args[0]!r} is not in this fleet") from None
        return [(self.devices[i], v) for i, v in self.values_at(sim_ts, idx)]

    def values_at(self, sim_ts: float, idx: np.ndarray) -> list[tuple[int, dict[str, Any]]]:
        """(device index, values) for device indices ``idx``; the fast path the Publisher uses."""
        idx = np.asarray(idx, dtype=np.int64)
        n = len(idx)
        if n == 0:
            return []
        t = int(math.floor(sim_ts))
        seed = self.seed
        kind = self._kind[idx]
        vals: list[dict[str, Any] | None] = [None] * n

        sel = np.flatnonzero(kind == 0)
        if len(sel):  # streetlights
            ii = idx[sel]
            el_sw = solar_elevation_many(self._sw_lat[ii], self._sw_lon[ii], sim_ts)
            el = solar_elevation_many(self._lat[ii], self._lon[ii], sim_ts)
            on = el_sw < NIGHT_ELEVATION_DEG
            cur = np.where(on, self._rated[ii] * (1.0 + np.clip(0.015 * _normal(seed, ii, t, 1), -0.04, 0.04)), 0.0)
            volt = 220.0 + 3.0 * _normal(seed, ii, t, 3)
            day = int(sim_ts // 86400)
            cloud = 0.35 + 0.65 * _uniform(seed, np.array([0]), day, 5)[0]
            lux = ambient_lux(el) * np.where(el > 0, cloud, 1.0) * (1.0 + 0.05 * _normal(seed, ii, t, 6))
            for k, o, c, v, lx in zip(
                sel.tolist(), on.tolist(), np.round(cur, 3).tolist(), np.round(volt, 1).tolist(),
                np.round(np.clip(lux, 0.0, 100_000.0), 1).tolist(), strict=True,
            ):
                vals[k] = {"lamp_on": o, "current_a": c, "voltage_v": v, "lux": lx}

        battery = None
        sel_b = np.flatnonzero((kind == 1) | (kind == 2))
        if len(sel_b):
            ii = idx[sel_b]
            days = (sim_ts - _REF_TS) / 86400.0 + self._inst_days[ii]
            battery = dict(zip(sel_b.tolist(), np.round(100.0 - np.mod(days * self._drain[ii], 95.0), 1).tolist(), strict=True))

        sel = np.flatnonzero(kind == 1)
        if len(sel):  # manholes
            ii = idx[sel]
            tilt = np.abs(0.8 + 0.5 * _normal(seed, ii, t, 7))
            disp = np.abs(0.2 * _normal(seed, ii, t, 8))
            solar_hour = (sim_ts / 3600.0 + self._lon[ii] / 15.0) % 24.0
            diurnal = np.where(self._sewage[ii], 8.0 * np.cos(2 * np.pi * (solar_hour - 8.0) / 12.0), 0.0)
            level = np.maximum(0.0, self._base_level[ii] + diurnal + 1.5 * _normal(seed, ii, t, 9))
            for k, a, b, lv in zip(
                sel.tolist(), np.round(tilt, 1).tolist(), np.round(disp, 1).tolist(), np.round(level, 1).tolist(), strict=True
            ):
                vals[k] = {"tilt_deg": a, "cover_open": False, "displacement_cm": b, "water_level_cm": lv,
                           "battery_pct": battery[k]}  # type: ignore[index]

        sel = np.flatnonzero(kind == 2)
        if len(sel):  # water gauges: a dry road reads ~0
            ii = idx[sel]
            level = np.maximum(0.0, 0.3 * _normal(seed, ii, t, 10))
            for k, lv in zip(sel.tolist(), np.round(level, 1).tolist(), strict=True):
                vals[k] = {"water_level_cm": lv, "battery_pct": battery[k]}  # type: ignore[index]

        for k in np.flatnonzero(kind == 3).tolist():
            vals[k] = {"online": True}

        out: list[tuple[int, dict[str, Any]]] = []
        has_faults = bool(self._faults)
        for k, i in enumerate(idx.tolist()):
            v = vals[k]
            assert v is not None
            if has_faults:
                fs = self._device_faults(i, sim_ts)
                if fs:
                    if any(f.fault == "offline" for f in fs):
                        continue
                    for f in fs:
                        self._apply(f, i, v, sim_ts)
            out.append((i, v))
        return out

    def _apply(self, f: Fault, i: int, v: dict[str, Any], ts: float) -> None:
        p = f.params
        name = f.fault
        if name == "cover_open":
            v["cover_open"] = True
            v["tilt_deg"] = p["tilt_deg"]
            v["displacement_cm"] = max(v["displacement_cm"], p["displacement_cm"])
        elif name == "cover_tilt":
            v["tilt_deg"] = p["tilt_deg"]
        elif name == "cover_displaced":
            v["displacement_cm"] = p["displacement_cm"]
        elif name == "water_rising":
            frac = min(1.0, (ts - f.start_ts) / max(1.0, p["ramp_s"]))
            base = v["water_level_cm"]
            level = base + (p["peak_cm"] - base) * frac
            if self._kind[i] == 1:
                level = min(level, self._depth[i])  # a manhole overflows at its rim
            v["water_level_cm"] = round(level, 1)
        elif name in ("lamp_out", "circuit_dark"):
            v["lamp_on"] = False
            v["current_a"] = 0.0
            if name == "circuit_dark":
                v["voltage_v"] = 0.0  # the feeder cable is cut: no supply voltage either
        elif name == "lamp_day_burn":
            if not v["lamp_on"]:
                v["lamp_on"] = True
                v["current_a"] = round(float(self._rated[i]), 3)
        elif name == "battery_low":
            v["battery_pct"] = p["battery_pct"]


# ------------------------------------------------------------------------------------------ payloads
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def device_payload(entries: Sequence[tuple[int, dict[str, Any]]]) -> bytes:
    """``{"ts": ms, "values": {...}}`` for one reading, a JSON list of them for several."""
    if len(entries) == 1:
        ts, values = entries[0]
        return _dumps({"ts": ts, "values": values}).encode()
    return _dumps([{"ts": ts, "values": values} for ts, values in entries]).encode()


def gateway_payload(batch: dict[str, Sequence[tuple[int, dict[str, Any]]]]) -> bytes:
    """ThingsBoard gateway style ``{"<device_id>": [{"ts": ms, "values": {...}}], ...}``."""
    return _dumps({dev: [{"ts": ts, "values": v} for ts, v in entries] for dev, entries in batch.items()}).encode()


def build_messages(readings: Iterable[tuple[Device, int, dict[str, Any]]]) -> list[tuple[str, bytes]]:
    """Group (device, ts_ms, values) into MQTT messages: one per gateway, one per self-publishing device."""
    by_gw: dict[str, dict[str, list[tuple[int, dict[str, Any]]]]] = {}
    own: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for dev, ts_ms, values in readings:
        if dev.gateway:
            by_gw.setdefault(dev.gateway, {}).setdefault(dev.id, []).append((ts_ms, values))
        else:
            own.setdefault(dev.id, []).append((ts_ms, values))
    msgs = [(gateway_topic(gw), gateway_payload(batch)) for gw, batch in by_gw.items()]
    msgs += [(device_topic(dev_id), device_payload(entries)) for dev_id, entries in own.items()]
    return msgs


# ------------------------------------------------------------------------------------------ publisher
@dataclass(slots=True)
class PublishStats:
    """Counters handed to the progress callback (and returned by :meth:`Publisher.run`)."""

    readings: int = 0
    messages: int = 0
    bytes: int = 0
    acked: int = 0  # telemetry messages confirmed (QoS 1/2: PUBACK/PUBCOMP; QoS 0: handed to the socket)
    sim_ts: float = 0.0  # sim time published up to (epoch s)
    wall_s: float = 0.0
    faults_active: int = 0
    lag_s: float = 0.0  # how far the sim clock is behind speed x wall time (rate cap or CPU bound)
    readings_per_s: float = 0.0  # over the last progress interval (whole run in the final stats)

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style access, so a progress callback may treat the stats as a dict."""
        return getattr(self, key, default) if key in self.__slots__ else default  # type: ignore[attr-defined]

    def __getitem__(self, key: str) -> Any:
        if key not in self.__slots__:  # type: ignore[attr-defined]
            raise KeyError(key)
        return getattr(self, key)


class Publisher:
    """Publishes a :class:`Fleet` over MQTT (paho-mqtt 2, one connection, QoS 1 by default)."""

    def __init__(
        self, fleet: Fleet, *, qos: int = 1, client_id: str | None = None, username: str | None = None,
        password: str | None = None, max_inflight: int = 1000, stats_topic: str | None = None,
    ):
        """``stats_topic``: if set, the progress stats are also published there as JSON (QoS 0) ~1/s."""
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        self.fleet = fleet
        self.qos = qos
        self.client_id = client_id or f"gridwatch-sim-{fleet.seed}-{int(time.time() * 1000) % 10**9}"
        self.username = username
        self.password = password
        self.max_inflight = max_inflight
        self.stats_topic = stats_topic
        self._stop = threading.Event()
        self._client: Any = None
        self._last_report: tuple[float, int] = (0.0, 0)
        self._acks = 0
        self._n_stats = 0
        # due buckets: a device with interval I and phase P (ms) reports at every k*I*1000 + P ms
        self._buckets: dict[int, list[np.ndarray]] = {}
        phase_s = fleet.phase_ms // 1000
        for interval in np.unique(fleet.interval).tolist():
            members = np.flatnonzero(fleet.interval == interval)
            slots = phase_s[members]
            order = np.argsort(slots, kind="stable")
            bounds = np.searchsorted(slots[order], np.arange(interval + 1))
            self._buckets[interval] = [members[order[bounds[s]: bounds[s + 1]]] for s in range(interval)]

    def stop(self) -> None:
        """Ask a running :meth:`run` to finish (flushes in-flight messages first)."""
        self._stop.set()

    def due(self, second: int) -> np.ndarray:
        """Indices of the devices that report within sim second ``second`` (epoch s)."""
        parts = [b[second % interval] for interval, b in self._buckets.items()]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def due_count(self, second: int) -> int:
        return sum(len(b[second % interval]) for interval, b in self._buckets.items())

    def messages_for(self, first_second: int, last_second: int) -> tuple[list[tuple[str, bytes]], int]:
        """MQTT messages for every reading due in sim seconds [first, last]; and the reading count."""
        fleet = self.fleet
        rows: list[tuple[Device, int, dict[str, Any]]] = []
        for s in range(first_second, last_second + 1):
            idx = self.due(s)
            if not len(idx):
                continue
            base = s * 1000
            phase = fleet.phase_ms
            for i, v in fleet.values_at(float(s), idx):
                rows.append((fleet.devices[i], base + int(phase[i] % 1000), v))
        return build_messages(rows), len(rows)

    def run(
        self,
        mqtt_host: str,
        mqtt_port: int,
        start_ts: float,
        speed: float = 1.0,
        duration_s: float | None = None,
        rate: float | None = None,
        progress: Callable[[PublishStats], None] | None = None,
        *,
        tick_s: int = 1,
        fault_rate_per_hour: float | None = None,
        connect_timeout_s: float = 10.0,
        flush_timeout_s: float = 30.0,
    ) -> PublishStats:
        """Publish until ``duration_s`` of sim time has passed (None: until :meth:`stop`).

        The sim clock starts at ``start_ts`` (epoch s) and runs ``speed`` x real time; every device
        reports once per ``report_interval_s`` of sim time at its own phase, so load is spread evenly.
        Gateway devices due within one tick (``tick_s`` sim seconds) share one gateway message.
        ``rate`` caps readings per real second; when it binds, the sim clock falls behind (lag_s).
        ``fault_rate_per_hour`` schedules random faults over the run (needs ``duration_s``, else 24 h).
        """
        import paho.mqtt.client as mqtt

        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 readings/s, got {rate}")
        if fault_rate_per_hour:
            self.fleet.random_faults(fault_rate_per_hour, start_ts, duration_s or 86400.0)
        self._stop.clear()
        stats = PublishStats(sim_ts=float(start_ts))
        lock = threading.Lock()
        connected = threading.Event()
        conn_rc: list[Any] = []

        def on_connect(client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
            conn_rc.append(reason_code)
            connected.set()

        self._acks = 0  # every on_publish, including the stats messages (QoS 0 fires it too)
        self._n_stats = 0  # stats messages published; acked = _acks - _n_stats

        def on_publish(client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
            with lock:
                self._acks += 1

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        if self.username:
            client.username_pw_set(self.username, self.password)
        client.on_connect = on_connect
        client.on_publish = on_publish
        self._client = client
        try:
            client.connect(mqtt_host, int(mqtt_port), keepalive=30)
        except OSError as e:
            raise ConnectionError(f"cannot reach MQTT broker {mqtt_host}:{mqtt_port}: {e}") from None
        client.loop_start()
        try:
            if not connected.wait(connect_timeout_s):
                raise ConnectionError(f"no CONNACK from MQTT broker {mqtt_host}:{mqtt_port} in {connect_timeout_s}s")
            if conn_rc and getattr(conn_rc[0], "is_failure", False):
                raise ConnectionError(f"MQTT broker {mqtt_host}:{mqtt_port} refused the connection: {conn_rc[0]}")
            self._loop(client, stats, lock, start_ts, speed, duration_s, rate, progress, max(1, int(tick_s)))
            stats.readings_per_s = stats.readings / stats.wall_s if stats.wall_s > 0 else 0.0
            if self.stats_topic:  # final counts (acked still growing: it is final in the returned stats)
                with lock:
                    self._n_stats += 1
                    stats.acked = self._acks - self._n_stats
                client.publish(self.stats_topic, _dumps(stats.as_dict()).encode(), qos=0)
            deadline = time.monotonic() + flush_timeout_s
            while time.monotonic() < deadline:  # wait for PUBACKs (QoS 0: until every message is sent)
                with lock:
                    if self._acks - self._n_stats >= stats.messages:
                        break
                time.sleep(0.01)
            with lock:
                stats.acked = self._acks - self._n_stats
        finally:
            client.disconnect()
            client.loop_stop()
            self._client = None
        if progress is not None:
            progress(stats)
        return stats

    def _bound_outstanding(self, lock: threading.Lock, published: int) -> None:
        """Wait while MAX_OUTSTANDING of the messages published so far still await their PUBACK."""
        while not self._stop.is_set():
            with lock:
                if published - (self._acks - self._n_stats) < MAX_OUTSTANDING:
                    return
            time.sleep(0.005)

    def _loop(
        self, client: Any, stats: PublishStats, lock: threading.Lock, start_ts: float, speed: float,
        duration_s: float | None, rate: float | None, progress: Callable[[PublishStats], None] | None, tick_s: int,
    ) -> None:
        t0 = time.monotonic()
        self._last_report = (t0, 0)
        next_s = math.ceil(start_ts)  # first sim second not yet published
        end_s = math.inf if duration_s is None else start_ts + duration_s  # seconds s < end_s are sent
        stop_s = math.inf if duration_s is None else math.ceil(end_s)  # exclusive
        next_progress = t0 + 1.0
        allowance = 0.0
        last_refill = t0
        max_readings = max(1, int(rate * 0.05)) if rate else 20_000  # keep each round short
        while not self._stop.is_set() and next_s < stop_s:
            now = time.monotonic()
            sim_now = start_ts + (now - t0) * speed
            # a second is published once the sim clock has passed its end; a tick groups tick_s seconds
            tick_end = min(next_s + tick_s, stop_s)  # exclusive
            ready_at = min(tick_end, end_s)
            if sim_now < ready_at:
                if (progress is not None or self.stats_topic) and now >= next_progress:
                    self._report(stats, lock, progress, t0, start_ts, speed, next_s)
                    next_progress = now + 1.0
                time.sleep(min(0.05, max(0.0005, (ready_at - sim_now) / speed)))
                continue
            # behind the clock (high speed, rate cap, slow CPU): take more whole ticks, up to max_readings
            n_due = sum(self.due_count(x) for x in range(next_s, tick_end))
            while tick_end < stop_s and min(tick_end + tick_s, stop_s, end_s) <= sim_now and n_due < max_readings:
                nxt = min(tick_end + tick_s, stop_s)
                n_due += sum(self.due_count(x) for x in range(tick_end, nxt))
                tick_end = nxt
            last = tick_end - 1
            msgs, n_read = self.messages_for(next_s, last)
            if rate:
                allowance = min(allowance + (now - last_refill) * rate, max(rate * 0.1, n_read))
                last_refill = now
                if n_read > allowance:
                    time.sleep((n_read - allowance) / rate)
                    allowance = 0.0
                    last_refill = time.monotonic()
                else:
                    allowance -= n_read
            qos = self.qos
            sent_bytes = 0
            for i, (topic, payload) in enumerate(msgs):
                if qos:
                    self._bound_outstanding(lock, stats.messages + i)
                check_queued(client.publish(topic, payload, qos=qos))
                sent_bytes += len(payload)
            with lock:
                stats.readings += n_read
                stats.messages += len(msgs)
                stats.bytes += sent_bytes
                stats.sim_ts = float(last + 1)
            next_s = last + 1
            if (progress is not None or self.stats_topic) and time.monotonic() >= next_progress:
                self._report(stats, lock, progress, t0, start_ts, speed, next_s)
                next_progress = time.monotonic() + 1.0
        with lock:
            stats.wall_s = time.monotonic() - t0
            stats.sim_ts = float(min(next_s, end_s)) if duration_s is not None else float(next_s)
            stats.faults_active = len(self.fleet.active_faults(stats.sim_ts))

    def _report(
        self, stats: PublishStats, lock: threading.Lock, progress: Callable[[PublishStats], None] | None,
        t0: float, start_ts: float, speed: float, next_s: int,
    ) -> None:
        now = time.monotonic()
        with lock:
            stats.wall_s = now - t0
            stats.lag_s = max(0.0, start_ts + (now - t0) * speed - next_s)
            stats.faults_active = len(self.fleet.active_faults(next_s))
            stats.acked = self._acks - self._n_stats
            t_prev, n_prev = self._last_report
            stats.readings_per_s = (stats.readings - n_prev) / (now - t_prev) if now > t_prev else 0.0
            self._last_report = (now, stats.readings)
            snapshot = PublishStats(**stats.as_dict())  # type: ignore[arg-type]
        if self.stats_topic and self._client is not None:
            with lock:
                self._n_stats += 1
            self._client.publish(self.stats_topic, _dumps(snapshot.as_dict()).encode(), qos=0)
        if progress is not None:
            progress(snapshot)
