"""Rule plug-in interface and registry.

A rule looks at one reading of one device and says: the condition is present (fault), absent
(clear) or this reading says nothing about it. Debounce, hysteresis bookkeeping, one-active-event
per device and type, deterministic ids and the new/update/end lifecycle live in the engine, once, so
a new rule is one small file plus a config entry:

    # agents/rules/my_rule.py
    @register("my_rule")
    class MyRule(Rule):
        def check(self, values, device, active, ctx): ...

    # gridwatch/config/rules.yaml
    - type: my_rule
      name: my_event_type
      kinds: [manhole]
      level: yellow
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from gridwatch.core.plugins import Plugins
from gridwatch.core.yaml_files import read_yaml_list
from gridwatch.pipeline.schemas.events import LEVELS


class RuleConfigError(ValueError):
    """rules.yaml is wrong; the message names the entry and the key to fix."""


# The rule plug-ins: one file each in agents/rules/ (found by pkgutil), or a module named by `module:`.
RULES: Plugins[type[Rule]] = Plugins("rule", "gridwatch.agents.rules", RuleConfigError)
register = RULES.register


@dataclass(slots=True)
class Verdict:
    fault: bool | None  # True: condition present; False: absent; None: this reading cannot tell
    level: str | None = None  # overrides the rule's level (escalation within one event)
    message: str = ""


@dataclass(slots=True)
class RuleContext:
    ts: int  # event time of the reading, ms
    group: dict[str, Any] | None = None  # shared state of the device's group (group rules only)
    group_size: int = 0


@dataclass
class Rule:
    """Base class; subclasses implement ``check`` (and read extra keys from ``cfg``)."""

    type: ClassVar[str] = ""
    # group rules keep one state for all devices sharing this attribute (e.g. "circuit")
    group_by: ClassVar[str | None] = None
    # watermark rules are judged when event time advances, not per reading (e.g. offline)
    watermark_driven: ClassVar[bool] = False

    name: str
    kinds: tuple[str, ...]
    level: str
    raise_after: int = 1  # consecutive fault readings before the event is raised
    clear_after: int = 1  # consecutive clear readings before it ends
    evidence_fields: tuple[str, ...] = ()
    cfg: dict[str, Any] = field(default_factory=dict)

    def check(self, values: dict[str, Any], device: Any, active: bool, ctx: RuleContext) -> Verdict | None:
        raise NotImplementedError

    def validate(self) -> None:
        """Subclasses check their own keys here, at load time rather than on the first reading."""

    def param(self, key: str, default: Any = ..., types: type | tuple[type, ...] = (int, float)) -> Any:
        if key not in self.cfg:
            if default is ...:
                raise RuleConfigError(f"rule {self.name!r} ({self.type}): missing key {key!r}")
            return default
        value = self.cfg[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in (
                types if isinstance(types, tuple) else (types,)):
            raise RuleConfigError(f"rule {self.name!r} ({self.type}): {key!r} must be {types}, got {value!r}")
        return value


BASE_KEYS = {"type", "name", "kinds", "level", "raise_after", "clear_after", "evidence", "module", "enabled"}


def build_rule(entry: dict[str, Any], where: str) -> Rule | None:
    if not isinstance(entry, dict):
        raise RuleConfigError(f"{where}: each rule must be a mapping")
    if entry.get("enabled") is False:
        return None
    type_name = entry.get("type")
    if not isinstance(type_name, str):
        raise RuleConfigError(f"{where}: missing 'type' (one of: {RULES.known()})")
    cls = RULES.get(type_name, entry.get("module"), where)
    name = entry.get("name", type_name)
    level = entry.get("level", "yellow")
    if level not in LEVELS:
        raise RuleConfigError(f"{where} ({name}): level must be one of {LEVELS}, got {level!r}")
    kinds = entry.get("kinds", [])
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise RuleConfigError(f"{where} ({name}): 'kinds' must be a non-empty list of device kinds")
    for key in ("raise_after", "clear_after"):
        if not isinstance(entry.get(key, 1), int) or entry.get(key, 1) < 1:
            raise RuleConfigError(f"{where} ({name}): {key} must be an integer >= 1")
    cfg = {k: v for k, v in entry.items() if k not in BASE_KEYS}
    rule = cls(name=name, kinds=tuple(kinds), level=level, raise_after=entry.get("raise_after", 1),
               clear_after=entry.get("clear_after", 1), evidence_fields=tuple(entry.get("evidence", ())), cfg=cfg)
    rule.validate()
    return rule


def load_rules(path: str | Path) -> list[Rule]:
    entries = read_yaml_list(path, "rules", RuleConfigError, "rules file")
    rules = [r for i, e in enumerate(entries) if (r := build_rule(e, f"{path}: rules[{i}]")) is not None]
    names = [r.name for r in rules]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuleConfigError(f"{path}: duplicate rule names {sorted(dupes)} (a name is the event type)")
    return rules
