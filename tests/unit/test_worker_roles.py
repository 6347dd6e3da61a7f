"""The two worker roles of the default topology split the default agents between them, nothing lost."""

from __future__ import annotations

from gridwatch.app import resolve_agents
from gridwatch.core.settings import Settings
from gridwatch.roles import ROLES, apply_role


def test_the_roles_run_every_default_agent_once_under_two_app_ids():
    s = Settings()
    defaults = resolve_agents("", s)
    telemetry, incidents = Settings(), Settings()
    t_agents = resolve_agents(apply_role("telemetry", telemetry), s)
    i_agents = resolve_agents(apply_role("incidents", incidents), s)
    assert i_agents == ("incidents",)
    assert sorted(t_agents + i_agents) == sorted(defaults)
    assert telemetry.worker.app_id == s.worker.app_id
    assert incidents.worker.app_id == f"{s.worker.app_id}-incidents"
    assert set(ROLES) == {"telemetry", "incidents"}


def test_agents_add_to_a_role_and_a_minus_removes_from_the_defaults():
    s = Settings()
    assert resolve_agents(apply_role("telemetry", Settings(), "+vision"), s)[-1] == "vision"
    assert "incidents" not in resolve_agents("-incidents,+vision", s)
    assert resolve_agents("-incidents", s) == tuple(a for a in resolve_agents("", s) if a != "incidents")
