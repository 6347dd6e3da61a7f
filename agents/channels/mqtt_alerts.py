"""MQTT alert channel: each grid event on ``<topic_prefix>/<city>/<district>/<street>/<community>/<grid>/<type>``.

An operator subscribes to a whole tier with a wildcard, e.g. ``gridwatch/alerts/330100/330102/330102001/#``
for one street. A publish completes on the broker's PUBACK (QoS 1), so the Kafka event is acknowledged only
after MQTT has it. The broker also keeps this channel's publish ledger (pipeline/outputs/mqtt_ledger.py): a
worker that takes over a partition does not publish again what its dead or frozen predecessor got to the
broker before the fan-out's own record of it reached Kafka.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from gridwatch.pipeline.outputs.mqtt_ledger import PublishLedger
from gridwatch.pipeline.outputs.mqtt_publisher import AsyncMqttPublisher
from gridwatch.pipeline.schemas.mqtt_topics import ALERT_PREFIX, alert_topic

from .base import ChannelConfigError, EventChannel, EventItem, register


@register("mqtt_alerts")
class MqttAlertChannel(EventChannel):
    keys = frozenset({"topic_prefix", "timeout_s"})

    def configure(self, cfg: dict[str, Any]) -> None:
        default = self.settings.mqtt.alert_prefix if self.settings is not None else ALERT_PREFIX
        self.topic_prefix = str(cfg.get("topic_prefix") or default).rstrip("/")
        try:
            self.timeout_s = float(cfg.get("timeout_s", 30))
        except (TypeError, ValueError):
            raise ChannelConfigError(f"channel {self.name!r}.timeout_s: a number of seconds") from None
        self.publisher: AsyncMqttPublisher | None = None
        self.ledger: PublishLedger | None = None

    async def start(self) -> None:
        self.publisher = AsyncMqttPublisher(self.settings, client_id="")
        await self.publisher.start()
        self.ledger = PublishLedger(self.publisher, self.topic_prefix, self.group)
        await self.ledger.start()

    def delivered_before(self, item: EventItem) -> bool:
        assert self.ledger is not None, "start() first"
        return self.ledger.published(item.partition, item.offset, item.marker)

    def queue(self, item: EventItem) -> Awaitable[None]:
        assert self.publisher is not None and self.ledger is not None, "start() first"
        ev = item.event
        self.ledger.record(item.partition, item.offset, item.marker)
        return self.publisher.queue(alert_topic(self.topic_prefix, ev.tier_code, ev.grid_code, ev.type), item.body,
                                    qos=1, timeout=self.timeout_s)

    def batch_queued(self, partitions: set[int]) -> list[Awaitable[None]]:
        assert self.ledger is not None, "start() first"
        return self.ledger.write(partitions)  # right behind the alerts, on the same connection

    def remembered(self, partitions: set[int]) -> None:
        if self.ledger is not None:
            self.ledger.confirmed(partitions)

    def revoked(self, partitions: set[int]) -> None:
        if self.ledger is not None:
            self.ledger.forget(partitions)

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
