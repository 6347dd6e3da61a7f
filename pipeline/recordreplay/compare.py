"""Grid events of two runs, side by side: what a replay (or a rule change) added, removed or changed.

A run is a namespace's ``<ns>.events`` topic or an exported JSON-lines file (``gridwatch replay
--events-out``, ``gridwatch tail events``). Events are compared by their deterministic id: the same
condition on the same subject starting at the same event time has the same id in every run. An event
whose start moved (a threshold change raises it earlier or later) has another id; when exactly one
such event of the same type and subject is on each side, it is reported as *changed* (start moved)
rather than as one removed plus one added.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from gridwatch.core.settings import Settings, with_prefix
from gridwatch.pipeline.kafka_io import assign_from_start, fetch_highwaters
from gridwatch.pipeline.schemas.events import is_control

PHASE_ORDER = {"new": 0, "update": 1, "end": 2}


def _life(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One event's whole life from its records: the fields that must match between runs."""
    phases = sorted({(r["ts"], PHASE_ORDER.get(r["phase"], 9), r["phase"], r["level"], r.get("end_ts"))
                     for r in records})
    first = records[0]
    return {
        "id": first["id"], "type": first["type"], "subject": first["subject"], "grid_code": first.get("grid_code"),
        "device_kind": first.get("device_kind"), "start_ts": first["start_ts"],
        "phases": [{"phase": p, "level": lv, "ts": ts, "end_ts": end} for ts, _o, p, lv, end in phases],
        "level": max((r["level"] for r in records), key=lambda lv: ("blue", "yellow", "red").index(lv)
                     if lv in ("blue", "yellow", "red") else -1),
    }


def lives(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Event id -> life, duplicates (at-least-once re-deliveries) folded away."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if isinstance(r, dict) and "id" in r and "phase" in r:
            by_id[r["id"]].append(r)
    return {k: _life(v) for k, v in by_id.items()}


@dataclass
class Comparison:
    a: str
    b: str
    same: list[str] = field(default_factory=list)
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)  # {"a": life, "b": life, "what": [...]}

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical, "same": len(self.same),
                "added": self.added, "removed": self.removed, "changed": self.changed}

    def render(self, limit: int = 20) -> str:
        lines = [f"A: {self.a}", f"B: {self.b}",
                 f"events: {len(self.same)} same, {len(self.added)} added, {len(self.removed)} removed, "
                 f"{len(self.changed)} changed"]
        if self.identical:
            lines.append("identical: same ids, phases, levels and times")
            return "\n".join(lines)

        def by_type(items: list[dict[str, Any]]) -> str:
            c = Counter(i["type"] for i in items)
            return ", ".join(f"{t} {n}" for t, n in c.most_common())

        def short(life: dict[str, Any]) -> str:
            phases = " -> ".join(f"{p['phase']}/{p['level']}@{_hhmmss(p['ts'])}" for p in life["phases"])
            return f"{life['type']:<18} {life['subject']:<22} {life['id']}  {phases}"

        for title, items in (("added (only in B)", self.added), ("removed (only in A)", self.removed)):
            if items:
                lines.append(f"\n{title}: {by_type(items)}")
                lines += ["  + " + short(x) if title.startswith("added") else "  - " + short(x)
                          for x in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... {len(items) - limit} more")
        if self.changed:
            lines.append(f"\nchanged: {by_type([c['b'] for c in self.changed])}")
            for c in self.changed[:limit]:
                lines.append(f"  ~ {c['b']['type']:<18} {c['b']['subject']:<22} {'; '.join(c['what'])}")
            if len(self.changed) > limit:
                lines.append(f"  ... {len(self.changed) - limit} more")
        return "\n".join(lines)


def _hhmmss(ts_ms: int | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000)) if ts_ms else "-"


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    what = []
    if a["start_ts"] != b["start_ts"]:
        what.append(f"start {_hhmmss(a['start_ts'])} -> {_hhmmss(b['start_ts'])}")
    la = [(p["phase"], p["level"]) for p in a["phases"]]
    lb = [(p["phase"], p["level"]) for p in b["phases"]]
    if la != lb:
        what.append(f"phases {'/'.join(f'{p}:{lv}' for p, lv in la)} -> {'/'.join(f'{p}:{lv}' for p, lv in lb)}")
    elif a["phases"] != b["phases"]:
        what.append("phase times differ")
    return what


def compare(a_records: list[dict[str, Any]], b_records: list[dict[str, Any]], a_name: str = "A",
            b_name: str = "B") -> Comparison:
    la, lb = lives(a_records), lives(b_records)
    out = Comparison(a_name, b_name)
    only_a = {k: v for k, v in la.items() if k not in lb}
    only_b = {k: v for k, v in lb.items() if k not in la}
    for k in sorted(la.keys() & lb.keys()):
        what = _differences(la[k], lb[k])
        if what:
            out.changed.append({"a": la[k], "b": lb[k], "what": what})
        else:
            out.same.append(k)
    # the same (type, subject) once on each side with another start: one event that moved
    key = lambda life: (life["type"], life["subject"])  # noqa: E731
    ga: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    gb: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for v in only_a.values():
        ga[key(v)].append(v)
    for v in only_b.values():
        gb[key(v)].append(v)
    for k in sorted(ga.keys() | gb.keys()):
        xa, xb = ga.get(k, []), gb.get(k, [])
        if len(xa) == 1 and len(xb) == 1:
            out.changed.append({"a": xa[0], "b": xb[0], "what": _differences(xa[0], xb[0])})
        else:
            out.removed += xa
            out.added += xb
    order = lambda life: (life["start_ts"], life["type"], life["subject"])  # noqa: E731
    out.added.sort(key=order)
    out.removed.sort(key=order)
    out.changed.sort(key=lambda c: order(c["b"]))
    return out


# -- sources ---------------------------------------------------------------------------------------
def read_events_file(path: str | Path) -> list[dict[str, Any]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise ValueError(f"{path}:{n}: not a JSON line ({e})") from None
    return out


async def read_topic_all(settings: Settings, topic: str, idle_s: float = 1.5, timeout: float = 120.0) -> list[bytes]:
    """Every record of a topic, oldest first per partition; stops at each partition's high watermark.

    The high watermark comes from fetch responses (right on every broker, the embedded one included);
    ``idle_s`` without records ends the read when a partition never reports one.
    """
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap(), enable_auto_commit=False,
                         auto_offset_reset="earliest", group_id=None)
    await c.start()
    values: list[bytes] = []
    try:
        if topic not in await c.topics():  # also refreshes the metadata partitions_for_topic reads
            raise ValueError(f"topic {topic} does not exist (no such namespace on {settings.kafka_bootstrap()})")
        tps = await assign_from_start(c, topic)
        if not tps:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_new = loop.time()
        while loop.time() < deadline:
            got = await c.getmany(timeout_ms=200)
            for recs in got.values():
                values.extend(r.value for r in recs)
            if got:
                last_new = loop.time()
            caught_up = True
            for tp in tps:
                hw = c.highwater(tp)
                if hw is None or await c.position(tp) < hw:
                    caught_up = False
                    break
            if caught_up or loop.time() - last_new > idle_s:
                break
    finally:
        await c.stop()
    return values


async def read_events(settings: Settings, namespace: str) -> list[dict[str, Any]]:
    """Every grid event record of a namespace (``<ns>.events``)."""
    s = with_prefix(settings, namespace)
    out = []
    for raw in await read_topic_all(s, s.topic("events")):
        if is_control(raw):
            continue  # a watermark record of the event-time merge, not an event
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def load_run(settings: Settings | None, source: str) -> list[dict[str, Any]]:
    """Events of a run: an exported JSON-lines file if ``source`` is a file, else a namespace's topic."""
    if Path(source).is_file():
        return read_events_file(source)
    if settings is None:
        raise ValueError(f"{source}: no such file (and no Kafka settings to read a namespace)")
    return asyncio.run(read_events(settings, source))


def write_events(records: list[dict[str, Any]], path: str | Path) -> int:
    """Export events as JSON lines, sorted (start, id, phase time) so two exports diff cleanly."""
    rows = sorted(records, key=lambda r: (r.get("start_ts", 0), r.get("id", ""), r.get("ts", 0),
                                          PHASE_ORDER.get(r.get("phase", ""), 9)))
    seen = set()
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            k = (r.get("id"), r.get("phase"), r.get("ts"), r.get("level"))
            if k in seen:
                continue
            seen.add(k)
            fh.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    return n


async def high_watermarks(settings: Settings, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Next offset per partition of a topic, from fetch responses (the embedded broker's ListOffsets
    answer is not trusted; see gridwatch.compat)."""
    c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap(), enable_auto_commit=False, group_id=None)
    await c.start()
    try:
        if topic not in await c.topics():
            return {}
        tps = await assign_from_start(c, topic)
        return {tp.partition: hw for tp, hw in (await fetch_highwaters(c, tps, timeout)).items()}
    finally:
        await c.stop()
