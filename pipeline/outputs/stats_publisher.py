"""A service's figures on MQTT (``<stats_prefix>/<service>/<name>``), best effort: the vision agent's and
every worker's. The demo's dashboard and an operator's MQTT client read them (the operator account may
read ``<stats_prefix>/#``). The connection opens on the first publish; a broker that is away costs a debug
line, never the agent that publishes."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from gridwatch.core.settings import Settings
from gridwatch.pipeline.schemas.codec import dumps

log = logging.getLogger("gridwatch.stats")


def process_name(settings: Settings) -> str:
    """``<app id>-<host>-<pid>``: one topic per worker process, so two workers never overwrite each other."""
    return f"{settings.worker.app_id}-{socket.gethostname()}-{os.getpid()}"


class StatsPublisher:
    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.topic = f"{settings.mqtt.stats_prefix}/{service}/{process_name(settings)}"
        self._publisher: Any = None

    async def publish(self, figures: dict[str, Any]) -> bool:
        """Publish ``figures`` as JSON (QoS 0); False when the broker could not be reached."""
        try:
            if self._publisher is None:
                from .mqtt_publisher import AsyncMqttPublisher

                pub = AsyncMqttPublisher(self.settings, client_id="")
                await pub.start(connect_timeout=0)  # one try per tick: no retry loop, no warning per try
                self._publisher = pub
            await self._publisher.publish(self.topic, dumps(figures), qos=0)
            return True
        except Exception as e:  # noqa: BLE001 - figures are best effort
            log.debug("figures not published to %s: %s", self.topic, e)
            return False
