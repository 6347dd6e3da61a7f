"""Channel plug-in interface and registry, like the rule plug-ins (agents/rules/base.py).

A channel receives every incident change (the full snapshot plus the change) that passes its filters
and delivers it somewhere: MQTT, a webhook, ... ``deliver`` either succeeds or raises
:class:`DeliveryError` after its own retries; the fan-out agent then parks the change in the
dead-letter topic with the reason, so one bad endpoint never stops the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from gridwatch.core.plugins import Plugins
from gridwatch.pipeline.schemas.codec import SchemaError, loads
from gridwatch.pipeline.schemas.events import LEVELS
from gridwatch.pipeline.schemas.incidents import CHANGES, READABLE_VERSIONS

log = logging.getLogger("gridwatch.channels")


class ChannelConfigError(ValueError):
    """A channel entry in incidents.yaml is wrong; the message names the channel and the key."""


# The channel plug-ins: one file each in agents/channels/ (found by pkgutil), or a module named by `module:`.
CHANNELS: Plugins[type[Channel]] = Plugins("channel", "gridwatch.agents.channels", ChannelConfigError)
register = CHANNELS.register


class DeliveryError(RuntimeError):
    """A change could not be delivered (after the channel's retries)."""


@dataclass(frozen=True, slots=True)
class ChangeInfo:
    """What a channel needs of an incident change, read from its JSON without building the Incident
    objects (a change carries the whole incident; decoding it per channel was the fan-out's main cost)."""

    change: str  # created / source_added / escalated / ...
    incident_id: str
    version: int
    level: str
    status: str
    grid_code: str
    tiers: dict[str, str]  # tier -> code, city .. grid
    record: dict[str, Any]  # the parsed record, for plug-ins that want more

    @classmethod
    def parse(cls, raw: bytes) -> ChangeInfo:
        d = loads(raw)
        try:
            if d.get("v") not in READABLE_VERSIONS:
                raise SchemaError("incident change: unsupported or missing schema version")
            inc = d["incident"]
            return cls(d["change"], inc["id"], int(inc["version"]), inc["level"], inc["status"], inc["grid_code"],
                       {t["tier"]: t["code"] for t in inc["tiers"]}, d)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise SchemaError(f"incident change: {type(e).__name__}: {e}") from None

    def tier_code(self, tier: str) -> str | None:
        return self.tiers.get(tier)


class Channel:
    """Base class: filters (levels, changes) here; subclasses read their keys in ``configure``."""

    type: ClassVar[str] = ""
    keys: ClassVar[frozenset[str]] = frozenset()  # the subclass's own config keys
    common: ClassVar[frozenset[str]] = frozenset({"name", "type", "enabled", "levels", "changes", "module"})

    def __init__(self, name: str, cfg: dict[str, Any], settings: Any = None) -> None:
        self.name = name
        self.settings = settings
        unknown = set(cfg) - self.common - self.keys
        if unknown:
            raise ChannelConfigError(f"channel {name!r} ({self.type}): unknown key(s) {sorted(unknown)} "
                                     f"(known: {', '.join(sorted(self.keys | self.common))})")
        self.levels = self._subset(cfg, "levels", LEVELS)
        self.changes = self._subset(cfg, "changes", CHANGES)
        self.configure(cfg)

    def _subset(self, cfg: dict[str, Any], key: str, allowed: tuple[str, ...]) -> frozenset[str]:
        value = cfg.get(key, list(allowed))
        if not isinstance(value, list) or not set(value) <= set(allowed):
            raise ChannelConfigError(f"channel {self.name!r}.{key}: a list of {', '.join(allowed)}")
        return frozenset(value)

    def configure(self, cfg: dict[str, Any]) -> None:
        """Read the subclass's keys; raise ChannelConfigError naming the key when wrong."""

    def accepts(self, change: ChangeInfo) -> bool:
        return change.level in self.levels and change.change in self.changes

    async def start(self) -> None:
        """Open connections (called once, inside the worker's event loop)."""

    async def deliver(self, change: ChangeInfo, body: bytes) -> None:
        """Deliver one change (``body`` is its JSON record as it is on the incidents topic)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Close connections."""


def build_channels(entries: list[dict[str, Any]], settings: Any = None) -> list[Channel]:
    """Channels from incidents.yaml's ``channels:`` list (disabled ones left out)."""
    out = []
    for entry in entries:
        name = str(entry.get("name"))
        if entry.get("enabled", True) is False:
            continue
        cls = CHANNELS.get(entry.get("type"), entry.get("module"), f"channel {name!r}")
        out.append(cls(name, entry, settings))
    return out
