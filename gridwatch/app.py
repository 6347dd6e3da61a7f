"""The Faust app factory: the app, its topics and tables declared in one place, agents installed.

Like Faust's word_count example, but built from settings so the same code serves the live city, a
replay namespace (another topic prefix and app id) and the tests.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from gridwatch.agents import alerts, incidents, telemetry, vision, worker_stats
from gridwatch.agents.channels import agent as incident_channels
from gridwatch.agents.runtime import AgentContext
from gridwatch.agents.sinks.base import build_sinks, sink_agent_names
from gridwatch.compat import (
    consumer_in_loop,
    install_faust_batch_delivery,
    install_faust_changelog_pause_fix,
    install_faust_consumer_in_loop,
    install_faust_event_class_cache,
    install_faust_event_path_fix,
    install_faust_idempotent_producer,
    install_faust_raw_passthrough,
    install_faust_rebalance_wait_fix,
    install_faust_seek_fix,
    install_tansu_shims,
)
from gridwatch.core import gc_policy
from gridwatch.core.settings import STATE_DIR, Settings
from gridwatch.devices.registry import city_of

log = logging.getLogger("gridwatch.app")

# Agents installed by default; each module has install(ctx) -> agent. The sinks follow them: one agent
# `<name>_sink` per entry of the `sinks:` list (agents/sinks/), e.g. influx_sink and store_sink.
AGENT_MODULES = {"telemetry": telemetry, "alerts": alerts, "incidents": incidents,
                 "incident_channels": incident_channels, "vision": vision}
# Installed only where asked (worker.agents / --agents "+vision"): vision loads an ONNX model.
OPT_IN_AGENTS = frozenset({"vision"})


def resolve_agents(spec: str | tuple[str, ...] | None, settings: Settings | None = None) -> tuple[str, ...]:
    """Agent names from ``worker.agents`` / ``--agents``: "" = defaults (all but opt-in), "all",
    "+vision" (defaults plus), "-incidents" (defaults without), or an explicit comma-separated list. The sink agents are those of
    ``settings.sinks`` (the shipped list without settings)."""
    if isinstance(spec, tuple):
        spec = ",".join(spec)
    items = [a.strip() for a in (spec or "").split(",") if a.strip()]
    known = [*AGENT_MODULES, *sink_agent_names(settings or Settings())]
    defaults = [n for n in known if n not in OPT_IN_AGENTS]
    if not items:
        return tuple(defaults)
    if items == ["all"]:
        return tuple(known)
    names = list(defaults) if all(a[0] in "+-" for a in items) else []
    for a in items:
        name = a.lstrip("+-")
        if name not in known:
            raise ValueError(f"unknown agent {name!r} in worker.agents (known: {', '.join(known)})")
        if a.startswith("-"):
            names = [n for n in names if n != name]
        elif name not in names:
            names.append(name)
    return tuple(names)


def create_app(settings: Settings, *, city: Any = None, agents: str | tuple[str, ...] | None = None) -> faust.App:
    quirks = settings.kafka.quirks_enabled()
    if quirks:
        install_tansu_shims()
    install_faust_seek_fix()  # any broker: records of never-committed partitions survive a rebalance
    install_faust_event_path_fix()  # any broker: the livelock check must not crash on a partition without a position
    install_faust_rebalance_wait_fix()  # any broker: a rebalance must not wait for records a clear dropped
    install_faust_changelog_pause_fix()  # any broker: a paused changelog must not hold every fetch back 100 ms
    install_faust_batch_delivery()  # any broker: one task per fetched batch, not four per record
    install_faust_event_class_cache()  # any broker: the Event class looked up once, not per record
    install_faust_raw_passthrough()  # any broker: raw topics' bytes not taken through the codec registry
    install_faust_consumer_in_loop()  # any broker: where worker.consumer_in_loop, no consumer thread
    if settings.kafka.idempotent:
        install_faust_idempotent_producer()  # a retried produce is not written twice (real Kafka only)
    city = city or city_of(settings)
    # The city (100k devices, thousands of polygons) lives as long as the process, and so does most of
    # what the agents build: out of the collector's walks, full collections stay short (tail latency).
    gc_policy.install(settings.worker.gc_full_every_s)
    prefix = settings.kafka.topic_prefix
    (STATE_DIR / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.worker.app_id}-{prefix}",
        broker=f"kafka://{settings.kafka_bootstrap()}",
        store="memory://",
        # Faust writes a small per-app folder even with memory tables; under the state dir, not cwd.
        datadir=str(STATE_DIR / "faust" / "{conf.name}-data"),
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        broker_commit_interval=1.0,
        # At most 500 records per fetch handed to the streams: an agent's buffer (4,096 records) pauses its
        # partition at 80 %, and a larger fetch overshot the rest, so that Faust delivered every record past
        # the brim through a task of its own (the incident worker under a backlog, bench incidents).
        broker_max_poll_records=500,
        stream_buffer_maxsize=settings.worker.stream_buffer,
        producer_linger=0.002,
        # Batches of up to 256 KB per partition instead of aiokafka's 16 KB: the producer has one request in
        # flight per partition, so a burst of incident changes (whole incidents, a few KB each) went out as a
        # queue of small requests, one broker round trip after the other.
        producer_max_batch_size=256 * 1024,
        # The embedded broker makes a new group wait half the session timeout before its first
        # join; short timeouts make a worker ready in ~5 s instead of ~30 s.
        broker_session_timeout=settings.worker.session_timeout_s or (6.0 if quirks else 30.0),
        broker_heartbeat_interval=1.0 if quirks or settings.worker.session_timeout_s else 3.0,
        broker_rebalance_timeout=6.0 if quirks else 60.0,
        broker_request_timeout=30.0 if quirks else 90.0,
        stream_recovery_delay=0.5 if quirks else 3.0,
        table_cleanup_interval=60.0,
        table_standby_replicas=0 if quirks else 1,
        logging_config=None,
    )
    consumer_in_loop(app, settings.worker.consumer_in_loop)
    topics = {
        name: app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw",
                        partitions=settings.kafka.partitions)
        for name in ("readings", "events", "deadletter")
    }
    ctx = AgentContext(app, settings, city.registry, city.gridmap, topics["readings"], topics["events"],
                       topics["deadletter"])

    @app.on_rebalance_complete.connect
    async def _ready(app_: Any, **kwargs: Any) -> None:
        assigned = app_.consumer.assignment() if app_.consumer else set()
        log.info("worker ready: %d partitions assigned (%s)", len(assigned),
                 ", ".join(sorted({tp.topic for tp in assigned})))
    ctx.timezone = getattr(city, "timezone", "UTC")
    sinks = build_sinks(settings)
    for name in resolve_agents(agents or settings.worker.agents, settings):
        if name in AGENT_MODULES:
            AGENT_MODULES[name].install(ctx)
        elif name in sinks:  # a sink its entry turned off (enabled: false) is known but not installed
            sinks[name].install(ctx)
    worker_stats.install(ctx)
    return app
