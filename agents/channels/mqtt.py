"""MQTT channel: each incident change on ``<topic_prefix>/<city>/<district>/<street>/<community>/<grid>``.

The same tier path as grid alerts (pipeline/schemas/mqtt_topics.tier_path), so an operator subscribes to a whole
tier with a wildcard, e.g. ``gridwatch/incidents/330100/330102/330102001/#`` for one town. A publish
completes on the broker's PUBACK (QoS 1), so the Kafka record is acknowledged only after MQTT has it.
"""

from __future__ import annotations

from typing import Any

from gridwatch.pipeline.outputs.mqtt_publisher import AsyncMqttPublisher
from gridwatch.pipeline.schemas import mqtt_topics
from gridwatch.pipeline.schemas.mqtt_topics import INCIDENTS_PREFIX

from .base import ChangeInfo, Channel, ChannelConfigError, DeliveryError, register


def incident_topic(prefix: str, change: ChangeInfo) -> str:
    return mqtt_topics.incident_topic(prefix, change.tier_code, change.grid_code)


@register("mqtt")
class MqttChannel(Channel):
    keys = frozenset({"topic_prefix", "qos", "timeout_s"})

    def configure(self, cfg: dict[str, Any]) -> None:
        self.topic_prefix = str(cfg.get("topic_prefix", INCIDENTS_PREFIX)).rstrip("/")
        self.qos = cfg.get("qos", 1)
        if self.qos not in (0, 1, 2):
            raise ChannelConfigError(f"channel {self.name!r}.qos: 0, 1 or 2")
        self.timeout_s = float(cfg.get("timeout_s", 30))
        self.publisher: AsyncMqttPublisher | None = None

    async def start(self) -> None:
        self.publisher = AsyncMqttPublisher(self.settings, client_id="")
        await self.publisher.start()

    async def deliver(self, change: ChangeInfo, body: bytes) -> None:
        assert self.publisher is not None, "start() first"
        topic = incident_topic(self.topic_prefix, change)
        try:
            await self.publisher.publish(topic, body, qos=self.qos, timeout=self.timeout_s)
        except (TimeoutError, ConnectionError) as e:
            raise DeliveryError(f"MQTT publish to {topic} failed: {type(e).__name__}: {e}") from None

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
