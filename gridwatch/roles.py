"""Worker roles: the two processes the default topology runs (`gridwatch worker --role ...`).

The incident agent gets a worker of its own: in the shared worker it waited behind the telemetry,
alerts and sink agents on one event loop (bench incidents: event -> incident change p99 87-507 ms
shared, 36-38 ms alone at 200 events/s; docs/benchmarks.md). It runs under its own app id, so its
consumer group and its table changelogs (incidents, event order) are its own; it reads the events and
reports topics and writes the incidents topic. Everything that reads that topic (incident_channels,
the sinks) stays in the telemetry worker with the telemetry, alerts and (opt-in) vision agents.
"""

from __future__ import annotations

from dataclasses import dataclass

from gridwatch.core.settings import Settings


@dataclass(frozen=True)
class Role:
    agents: str  # a worker.agents spec (app.resolve_agents)
    app_id_suffix: str  # appended to worker.app_id
    help: str


ROLES = {
    "telemetry": Role("-incidents", "", "every default agent but incidents, under worker.app_id"),
    "incidents": Role("incidents", "-incidents", "the incident agent alone, under app id <worker.app_id>-incidents"),
}


def apply_role(role: str, settings: Settings, agents: str | None = None) -> str:
    """Set the role's app id on ``settings``; return its agent spec, ``agents`` ("+vision") added."""
    r = ROLES[role]
    settings.worker.app_id += r.app_id_suffix
    return f"{r.agents},{agents}" if agents else r.agents


__all__ = ["ROLES", "Role", "apply_role"]
