"""Channel plug-in interface and registry, like the rule plug-ins (agents/rules/base.py).

A channel is how something leaves the pipeline for people and other systems. It takes one stream:
- ``incidents`` (:class:`Channel`): every incident change (the full snapshot plus the change) that passes
  its filters, delivered somewhere: MQTT, a webhook, a WeCom group ... ``deliver`` either succeeds or
  raises :class:`DeliveryError` after its own retries; the fan-out agent (agent.py) then parks the change
  in the dead-letter topic with the reason, so one bad endpoint never stops the others.
- ``events`` (:class:`EventChannel`): grid events (alerts) as the rules raise them, in batches; the
  grid-event fan-out (agents/alerts.py) remembers what each channel delivered.
Both kinds are configured in one ``channels:`` list (incidents.yaml) and found in one registry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

from gridwatch.core.plugins import Plugins
from gridwatch.pipeline.schemas.codec import SchemaError, loads
from gridwatch.pipeline.schemas.events import LEVELS, GridEvent, Phase
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
    """Base class of incident-change channels: the filters (levels, changes) here; subclasses read their
    own keys in ``configure``."""

    type: ClassVar[str] = ""
    stream: ClassVar[str] = "incidents"
    keys: ClassVar[frozenset[str]] = frozenset()  # the subclass's own config keys
    filters: ClassVar[dict[str, tuple[str, ...]]] = {"levels": LEVELS, "changes": CHANGES}

    def __init__(self, name: str, cfg: dict[str, Any], settings: Any = None) -> None:
        self.name = name
        self.settings = settings
        common = {"name", "type", "enabled", "module", *self.filters}
        unknown = set(cfg) - common - self.keys
        if unknown:
            raise ChannelConfigError(f"channel {name!r} ({self.type}): unknown key(s) {sorted(unknown)} "
                                     f"(known: {', '.join(sorted(self.keys | common))})")
        for key, allowed in self.filters.items():
            setattr(self, key, self._subset(cfg, key, allowed))
        self.configure(cfg)

    levels: frozenset[str]
    changes: frozenset[str]

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


@dataclass(frozen=True, slots=True)
class EventItem:
    """One grid event for an event channel: decoded, its record as on the events topic, and where it sits
    there (``marker`` = ``<id>:<phase>:<ts>``, what the fan-out remembers as delivered)."""

    event: GridEvent
    body: bytes
    partition: int
    offset: int
    marker: str


class EventChannel(Channel):
    """Base class of grid-event channels (``stream: events``): the filters are levels and phases."""

    stream: ClassVar[str] = "events"
    filters: ClassVar[dict[str, tuple[str, ...]]] = {"levels": LEVELS, "phases": get_args(Phase)}
    phases: frozenset[str]
    group = "gridwatch"  # whose deliveries these are: the fan-out sets its Faust app id before start()

    def accepts_event(self, event: GridEvent) -> bool:
        return event.level in self.levels and event.phase in self.phases

    def delivered_before(self, item: EventItem) -> bool:
        """Did this event go out before the fan-out could remember it (a previous owner of its partition
        that died or froze right after delivering)? Only a channel whose receiver keeps a record can say."""
        return False

    def queue(self, item: EventItem) -> Awaitable[None]:
        """Start delivering one event; the result completes when the receiver took it. Events are queued
        in their partition's order, a batch at a time."""
        raise NotImplementedError

    def batch_queued(self, partitions: set[int]) -> list[Awaitable[None]]:
        """Called once a batch's events are queued (e.g. to record them with the receiver)."""
        return []

    def remembered(self, partitions: set[int]) -> None:
        """The fan-out's own record of these partitions' deliveries is durable (in Kafka) now."""

    def revoked(self, partitions: set[int]) -> None:
        """These partitions moved to another worker."""


def build_channels(entries: list[dict[str, Any]], settings: Any = None) -> list[Channel]:
    """The incident-change channels of incidents.yaml's ``channels:`` list (disabled ones and event
    channels left out: agents/alerts.py builds those)."""
    out = []
    for entry in entries:
        name = str(entry.get("name"))
        cls = CHANNELS.get(entry.get("type"), entry.get("module"), f"channel {name!r}")
        if entry.get("enabled", True) is False or cls.stream != "incidents":
            continue
        out.append(cls(name, entry, settings))
    return out
