"""What the record/replay tests compare between a live run and its replays (one definition for all)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gridwatch.core.settings import load_settings, with_prefix
from gridwatch.pipeline.recordreplay.compare import read_topic_all


def settings_for(stack: Any, prefix: str = "gw") -> Any:
    return with_prefix(load_settings(None, {"kafka.url": stack.kafka_url, "mqtt.url": stack.mqtt_url}), prefix)


def key_set(records: list[dict]) -> set[tuple]:
    """Grid event records as comparable tuples: id, type, subject, phase, level and their times."""
    return {(r["id"], r["type"], r["subject"], r["phase"], r["level"], r["ts"], r["start_ts"], r.get("end_ts"))
            for r in records}


def incident_keys(stack: Any, prefix: str) -> set[tuple]:
    """Every incident change of a namespace: incident id, version, change, status, level, event time."""
    recs = asyncio.run(read_topic_all(settings_for(stack, prefix), f"{prefix}.incidents"))
    out = set()
    for raw in recs:
        d = json.loads(raw)
        inc = d["incident"]
        out.add((inc["id"], inc["version"], d["change"], inc["status"], inc["level"], d["ts"]))
    return out


def late_events(stack: Any, prefix: str) -> int:
    """The most grid events the incident agent applied late (out of event-time order) on any of its
    partitions: the ``late`` counter of the merge state it checkpoints (agents/event_order.py)."""
    topic = f"gridwatch-{prefix}-incidents-changelog"
    most = 0
    for raw in asyncio.run(read_topic_all(settings_for(stack, prefix), topic)):
        try:
            d = json.loads(raw) if raw else None
        except ValueError:
            continue
        if isinstance(d, dict) and "ups" in d and "late" in d:
            most = max(most, int(d["late"]))
    return most
