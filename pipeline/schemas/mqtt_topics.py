"""The MQTT topics gridwatch speaks, in one place: device and gateway telemetry in (ThingsBoard's
layout, the id in the topic), alerts, incident changes and statistics out, and the replay namespace.

The bridge subscribes to, the parser accepts, the recorder files, the simulator publishes and the
broker ACLs allow exactly these patterns.
"""

from __future__ import annotations

from collections.abc import Callable

from gridwatch.core.settings import MqttSettings

DEVICE = "devices"
GATEWAY = "gateway"


def device_topic(device_id: str) -> str:
    """Where a device publishes its own telemetry (``+`` for every device, ``%u`` in a Mosquitto ACL)."""
    return f"v1/{DEVICE}/{device_id}/telemetry"


def gateway_topic(gateway_id: str) -> str:
    """Where an edge gateway publishes the telemetry of the devices behind it."""
    return f"v1/{GATEWAY}/{gateway_id}/telemetry"


# What the bridge and the recorder subscribe to.
TELEMETRY_PATTERNS = (device_topic("+"), gateway_topic("+"))
# Mosquitto ACL: every device and gateway may publish on its own topic only (%u = its username).
TELEMETRY_ACL_PATTERNS = (device_topic("%u"), gateway_topic("%u"))

ALERT_PREFIX = MqttSettings.alert_prefix  # grid events: <prefix>/<city>/<district>/<street>/<community>/<grid>/<type>
STATS_PREFIX = MqttSettings.stats_prefix  # bridge, simulator and vision statistics
INCIDENTS_PREFIX = "gridwatch/incidents"  # incident changes (the MQTT channel's default topic_prefix)
# the workers' publish ledgers (retained, one per alert prefix, app and partition): what reached the broker
LEDGER_PREFIX = "gridwatch/ledger"


def telemetry_source(topic: str) -> tuple[str, str] | None:
    """``(DEVICE or GATEWAY, id)`` of a telemetry topic; None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "v1" or parts[3] != "telemetry" or parts[1] not in (DEVICE, GATEWAY):
        return None
    return parts[1], parts[2]


TIER_ORDER = ("city", "district", "street", "community", "grid")


def tier_path(tier_code: Callable[[str], str | None], grid_code: str) -> list[str]:
    """Codes city -> district -> street -> community -> grid ("_" where unknown): grid alerts and incident
    changes go out under the grid's tier path, so an operator subscribes to a whole tier with a wildcard,
    e.g. ``gridwatch/alerts/330100/330102/330102001/#`` for one street."""
    codes = [tier_code(t) or "_" for t in TIER_ORDER]
    if codes[-1] == "_":
        codes[-1] = grid_code
    return codes


def alert_topic(prefix: str, tier_code: Callable[[str], str | None], grid_code: str, event_type: str) -> str:
    """A grid event: ``<prefix>/<city>/<district>/<street>/<community>/<grid>/<type>``."""
    return "/".join([prefix, *tier_path(tier_code, grid_code), event_type])


def incident_topic(prefix: str, tier_code: Callable[[str], str | None], grid_code: str) -> str:
    """An incident change: ``<prefix>/<city>/<district>/<street>/<community>/<grid>``."""
    return "/".join([prefix, *tier_path(tier_code, grid_code)])


def replay_prefix(ns: str, prefix: str) -> str:
    """A replay's outbound topics live under ``replay/<ns>/`` (``+`` for every replay, in an ACL)."""
    return f"replay/{ns}/{prefix}"
