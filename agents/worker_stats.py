"""Every worker's figures: the counters its agents keep (``AgentContext.stats``: readings, events, alerts,
incident inputs and changes, channel deliveries, store writes, dead letters by reason), every
``worker.stats_interval_s`` (wall clock) to the log as what moved since the last line, and to MQTT
``<stats_prefix>/worker/<app id>-<host>-<pid>`` as the totals. An operator sees a worker at work, or
idle, or dead-lettering, without reading Kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from gridwatch.pipeline.outputs.stats_publisher import StatsPublisher

from .runtime import AgentContext

log = logging.getLogger("gridwatch.worker")


def moved(before: Mapping[str, int], now: Mapping[str, int]) -> dict[str, int]:
    """The counters that changed since ``before``, by how much, in name order."""
    return {k: now[k] - before.get(k, 0) for k in sorted(now) if now[k] != before.get(k, 0)}


def figures_line(before: Mapping[str, int], now: Mapping[str, int], seconds: float) -> str | None:
    """One log line of what moved in the last ``seconds`` (total in brackets); None when nothing did."""
    delta = moved(before, now)
    if not delta:
        return None
    parts = ", ".join(f"{k} {d:+,} ({now[k]:,})" for k, d in delta.items())
    return f"worker figures, last {seconds:.0f} s: {parts}"


def install(ctx: AgentContext) -> Any:
    interval = ctx.settings.worker.stats_interval_s
    if interval <= 0:
        return None
    figures = StatsPublisher(ctx.settings, "worker")
    last: dict[str, Any] = {"counts": {}, "at": time.monotonic()}

    async def worker_stats() -> None:
        now = dict(ctx.stats)
        t = time.monotonic()
        line = figures_line(last["counts"], now, t - last["at"])
        if line is None:
            return  # idle: no line, no message (the last totals stand)
        log.info("%s", line)
        last.update(counts=now, at=t)
        await figures.publish({"worker": ctx.settings.worker.app_id, "counts": now, "ts": int(time.time() * 1000)})

    return ctx.app.timer(interval)(worker_stats)
