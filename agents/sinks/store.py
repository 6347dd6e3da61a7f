"""Store sink (``type: store``): incident changes (every version, with its timeline), resident reports,
operator actions and grid events -> the system of record (gridwatch/store). Its settings are
gridwatch.yaml's ``store:`` section.

Each agent takes what is buffered (``store.batch_size`` records, or ``store.within_s`` worth),
writes it in one transaction off the event loop and only then takes the next batch, so the records
count as done (offsets committed) after the database has them: a worker kill re-delivers them and the
upserts by id and version leave exactly one row each; a slow database slows the consumer
(back-pressure) instead of buffering without bound. On by default with the embedded SQLite store; a
deployment runs it as its own worker (``--agents store_sink --app-id gridwatch-store``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gridwatch.core.settings import StoreSettings
from gridwatch.store import open_store

from ..batch_take import take_batches
from ..runtime import AgentContext
from .base import Sink, register

log = logging.getLogger("gridwatch.store")


@register("store")
class Store(Sink):
    config_class = StoreSettings
    section = "store"
    config: StoreSettings

    def install(self, ctx: AgentContext) -> Any:
        return install(ctx, self.config)


def install(ctx: AgentContext, cfg: StoreSettings) -> Any:
    app, settings = ctx.app, ctx.settings
    store = open_store(settings, ctx.timezone)
    app.store = store  # type: ignore[attr-defined]
    log.info("store sink on: %s", store.engine.url.render_as_string(hide_password=True))

    def topic(family: str) -> Any:
        if family == "events":
            return ctx.events_topic
        return app.topic(settings.topic(family), key_serializer="raw", value_serializer="raw",
                         partitions=settings.kafka.partitions, internal=True)

    def make(family: str) -> Any:
        async def sink(stream: Any) -> None:
            async for events in take_batches(stream, cfg.batch_size, within=cfg.within_s):
                batch = store.batch()
                for ev in events:
                    batch.add_raw(family, ev.value)
                await asyncio.to_thread(store.write, batch)
                ctx.stats[f"store.{family}"] += batch.records
        sink.__name__ = sink.__qualname__ = f"store_{family}"
        return app.agent(topic(family), name=f"store_{family}")(sink)

    agents = [make(f) for f in ("incidents", "reports", "actions", "events")]
    return agents[0]
