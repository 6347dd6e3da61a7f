"""Incident configuration: category groups, the routing table (group -> department), SLAs, priority.

Why one typed object: fusion, the lifecycle and the channels all read it, and a wrong key in
incidents.yaml must fail at start with the key's name rather than silently route nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gridwatch.core.settings import CONFIG_DIR
from gridwatch.core.yaml_files import read_yaml
from gridwatch.pipeline.schemas.events import LEVELS
from gridwatch.pipeline.schemas.incidents import WORK_TIERS

DEFAULT_PATH = CONFIG_DIR / "incidents.yaml"
ENV_PATH = "GRIDWATCH_INCIDENTS_CONFIG"


class IncidentConfigError(ValueError):
    """incidents.yaml is wrong; the message names the key to fix."""


@dataclass(slots=True)
class Group:
    name: str
    title: str
    department: str
    report_level: str = "blue"
    event_types: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()


@dataclass(slots=True)
class FusionConfig:
    radius_m: float = 250.0
    window_s: float = 86400.0
    unmapped_events: str = "ignore"
    unmapped_reports: str = "own"
    report_hold_s: float = 5.0


@dataclass(slots=True)
class PriorityConfig:
    level: dict[str, int] = field(default_factory=lambda: {"blue": 10, "yellow": 20, "red": 30})
    per_extra_source: int = 5
    sensor_confirmed: int = 15
    per_escalation: int = 10
    supervised: int = 20  # an incident under a supervision notice (督办)
    confirmation_raises_level: bool = True


@dataclass(slots=True)
class LifecycleConfig:
    sla_s: dict[str, float] = field(default_factory=lambda: {"red": 7200.0, "yellow": 86400.0, "blue": 259200.0})
    start_tier: str = "community"
    auto_dispatch: bool = False
    auto_resolve: bool = True
    evaluation_window_s: float = 604800.0
    retain_closed_s: float = 2592000.0


@dataclass(slots=True)
class SupervisionConfig:
    lateness_s: float = 5.0
    raise_level: bool = True
    raise_tier: bool = True


@dataclass
class IncidentConfig:
    fusion: FusionConfig = field(default_factory=FusionConfig)
    priority: PriorityConfig = field(default_factory=PriorityConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    groups: dict[str, Group] = field(default_factory=dict)
    channels: list[dict[str, Any]] = field(default_factory=list)
    source: str = "<defaults>"
    _by_event: dict[str, str] = field(default_factory=dict, repr=False)
    _by_service: dict[str, str] = field(default_factory=dict, repr=False)

    def index(self) -> IncidentConfig:
        """Build the type -> group lookups; a type claimed by two groups is an error."""
        self._by_event.clear()
        self._by_service.clear()
        for g in self.groups.values():
            for t in g.event_types:
                if t in self._by_event:
                    raise IncidentConfigError(f"{self.source}: event type {t!r} is in groups "
                                              f"{self._by_event[t]!r} and {g.name!r}")
                self._by_event[t] = g.name
            for s in g.service_codes:
                if s in self._by_service:
                    raise IncidentConfigError(f"{self.source}: service code {s!r} is in groups "
                                              f"{self._by_service[s]!r} and {g.name!r}")
                self._by_service[s] = g.name
        return self

    # -- lookups --------------------------------------------------------------------------------
    def group_of_event(self, event_type: str) -> str | None:
        """Category group of a grid-event type (None: do not make incidents of it)."""
        g = self._by_event.get(event_type)
        if g is None and self.fusion.unmapped_events == "own":
            return event_type
        return g

    def group_of_service(self, service_code: str) -> str | None:
        """Category group of an Open311 service code (None: do not make incidents of it)."""
        g = self._by_service.get(service_code)
        if g is None and self.fusion.unmapped_reports == "own":
            return service_code
        return g

    def department(self, group: str) -> str:
        """The routing table: the department a group's incidents are dispatched to."""
        g = self.groups.get(group)
        return g.department if g else (self.groups["other"].department if "other" in self.groups else "")

    def title(self, group: str) -> str:
        g = self.groups.get(group)
        return g.title if g else group.replace("_", " ").capitalize()

    def report_level(self, group: str) -> str:
        g = self.groups.get(group)
        return g.report_level if g else "blue"

    def sla_ms(self, level: str) -> int:
        return int(self.lifecycle.sla_s[level] * 1000)


def _section(obj: Any, data: Any, where: str) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise IncidentConfigError(f"{where}: must be a mapping")
    known = {f.name for f in fields(obj)}
    for key, value in data.items():
        if key not in known:
            raise IncidentConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if isinstance(current, bool):
            ok = isinstance(value, bool)
        elif isinstance(current, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(current, float):
                value = float(value)
        else:
            ok = isinstance(value, type(current))
        if not ok:
            raise IncidentConfigError(f"{where}.{key}: expected {type(current).__name__}, got {value!r}")
        setattr(obj, key, value)


def _levels_map(d: dict[str, Any], where: str) -> None:
    missing = [lv for lv in LEVELS if lv not in d]
    extra = [k for k in d if k not in LEVELS]
    if missing or extra:
        raise IncidentConfigError(f"{where}: needs exactly the levels {', '.join(LEVELS)} "
                                  f"(missing {missing}, unknown {extra})")
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise IncidentConfigError(f"{where}.{k}: expected a number >= 0, got {v!r}")


def parse_config(data: dict[str, Any], source: str = "<memory>") -> IncidentConfig:
    """Validate a parsed incidents.yaml document."""
    if not isinstance(data, dict):
        raise IncidentConfigError(f"{source}: top level must be a mapping")
    cfg = IncidentConfig(source=source)
    known = {"fusion", "priority", "lifecycle", "supervision", "groups", "channels"}
    for key in data:
        if key not in known:
            raise IncidentConfigError(f"{source}: unknown section {key!r} (known: {', '.join(sorted(known))})")
    _section(cfg.fusion, data.get("fusion"), f"{source}:fusion")
    _section(cfg.priority, data.get("priority"), f"{source}:priority")
    _section(cfg.lifecycle, data.get("lifecycle"), f"{source}:lifecycle")
    _section(cfg.supervision, data.get("supervision"), f"{source}:supervision")
    _levels_map(cfg.priority.level, f"{source}:priority.level")
    _levels_map(cfg.lifecycle.sla_s, f"{source}:lifecycle.sla_s")
    if any(v <= 0 for v in cfg.lifecycle.sla_s.values()):
        raise IncidentConfigError(f"{source}:lifecycle.sla_s: every SLA must be > 0 s")
    if cfg.lifecycle.start_tier not in WORK_TIERS:
        raise IncidentConfigError(f"{source}:lifecycle.start_tier: one of {', '.join(WORK_TIERS)}")
    if cfg.fusion.report_hold_s < 0:
        raise IncidentConfigError(f"{source}:fusion.report_hold_s: a number of seconds >= 0")
    for key in ("unmapped_events", "unmapped_reports"):
        if getattr(cfg.fusion, key) not in ("own", "ignore"):
            raise IncidentConfigError(f"{source}:fusion.{key}: 'own' or 'ignore'")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise IncidentConfigError(f"{source}:groups: must be a mapping of group name -> settings")
    for name, g in groups.items():
        where = f"{source}:groups.{name}"
        if not isinstance(g, dict):
            raise IncidentConfigError(f"{where}: must be a mapping")
        unknown = set(g) - {"title", "department", "report_level", "event_types", "service_codes"}
        if unknown:
            raise IncidentConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        if not isinstance(g.get("department"), str) or not g["department"]:
            raise IncidentConfigError(f"{where}.department: required (the routing table's target)")
        level = g.get("report_level", "blue")
        if level not in LEVELS:
            raise IncidentConfigError(f"{where}.report_level: one of {', '.join(LEVELS)}")
        lists = {}
        for key in ("event_types", "service_codes"):
            v = g.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise IncidentConfigError(f"{where}.{key}: a list of names")
            lists[key] = tuple(v)
        cfg.groups[str(name)] = Group(str(name), str(g.get("title") or name), g["department"], level, **lists)
    channels = data.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, dict) for c in channels):
        raise IncidentConfigError(f"{source}:channels: a list of mappings")
    names = [c.get("name") for c in channels]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise IncidentConfigError(f"{source}:channels: every channel needs a unique name")
    cfg.channels = channels
    return cfg.index()


def config_path(settings: Any = None) -> Path:
    """$GRIDWATCH_INCIDENTS_CONFIG, else incidents.yaml beside the user's --config file, else the default."""
    env = os.environ.get(ENV_PATH)
    if env:
        return Path(env)
    return settings.config_path(DEFAULT_PATH.name) if settings is not None else DEFAULT_PATH


def load_incident_config(path: str | Path | None = None, settings: Any = None) -> IncidentConfig:
    p = Path(path) if path else config_path(settings)
    return parse_config(read_yaml(p, IncidentConfigError, "incident config") or {}, str(p))
