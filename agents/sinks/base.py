"""Sink plug-in interface and registry, like the channel and rule plug-ins (gridwatch.core.plugins).

A sink keeps records of the pipeline's topics somewhere outside Kafka (InfluxDB for dashboards, the
system of record for case files). Each is a class in its own file here, registered under the literal
``type`` that an entry of gridwatch.yaml's ``sinks:`` list selects; ``install`` adds its Faust agents to
a worker. The worker knows a sink as the agent ``<name>_sink`` (``--agents store_sink``), where the name
is the entry's ``name`` or else its type.

Typed config: a sink's settings are a dataclass (``config_class``). A built-in sink whose settings have
their own section of gridwatch.yaml (``section``: ``influx:``, ``store:``) reads them there, with the
section's environment variables and ranges; any other sink reads its entry's own keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gridwatch.core.plugins import Plugins
from gridwatch.core.settings import Settings, SettingsError, fill

from ..runtime import AgentContext


class SinkConfigError(SettingsError):
    """An entry of the ``sinks:`` list is wrong; the message names the entry and the key."""


# The sink plug-ins: one file each in agents/sinks/ (found by pkgutil), or a module named by `module:`.
SINKS: Plugins[type[Sink]] = Plugins("sink", "gridwatch.agents.sinks", SinkConfigError)
register = SINKS.register

COMMON_KEYS = frozenset({"type", "name", "enabled", "module"})


@dataclass
class NoConfig:
    """The config of a sink without settings."""


class Sink:
    """Base class of sinks: ``install`` adds the sink's agents to the worker's Faust app."""

    type: ClassVar[str] = ""
    config_class: ClassVar[type] = NoConfig
    section: ClassVar[str] = ""  # the Settings section holding the config; "" = the entry's own keys

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    @property
    def agent_name(self) -> str:
        """What ``--agents`` / ``worker.agents`` call this sink."""
        return agent_name(self.name)

    def install(self, ctx: AgentContext) -> Any:
        """Add the agents; returns one of them (or None when the sink is off by its own settings)."""
        raise NotImplementedError


def agent_name(sink_name: str) -> str:
    return f"{sink_name}_sink"


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("type"))


def sink_agent_names(settings: Settings) -> list[str]:
    """The agent names of the configured sinks (disabled ones included: naming one is not an error)."""
    return [agent_name(_name(e)) for e in settings.sinks]


def build_sink(entry: dict[str, Any], settings: Settings, where: str) -> Sink:
    """The sink of one ``sinks:`` entry, its config read and type-checked."""
    cls = SINKS.get(entry.get("type"), entry.get("module"), where)
    own = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
    if cls.section:
        if own:
            raise SinkConfigError(f"{where} ({cls.type}): unknown key(s) {sorted(own)}; this sink's settings "
                                  f"are in the {cls.section}: section")
        config = getattr(settings, cls.section)
    else:
        config = cls.config_class()
        try:
            fill(config, own, f"{where} ({cls.type})")
        except SettingsError as e:
            raise SinkConfigError(str(e)) from None
    return cls(_name(entry), config)


def build_sinks(settings: Settings) -> dict[str, Sink]:
    """The enabled sinks of ``settings.sinks``, by agent name; two entries with one name are refused."""
    out: dict[str, Sink] = {}
    seen: set[str] = set()
    for i, entry in enumerate(settings.sinks):
        where = f"sinks[{i}]"
        sink = build_sink(entry, settings, where)
        if sink.agent_name in seen:
            raise SinkConfigError(f"{where}: a second sink named {sink.name!r}; give one a name: key")
        seen.add(sink.agent_name)
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise SinkConfigError(f"{where}.enabled: true or false, got {enabled!r}")
        if enabled:
            out[sink.agent_name] = sink
    return out
