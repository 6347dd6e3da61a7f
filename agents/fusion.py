"""Fusion of grid events and resident reports into incidents, per Kafka partition (no Kafka here).

Events, reports and operator actions are all keyed by grid code, so one partition sees every input
about its grids. For each partition the processor keeps its incidents (recovered from the durable
store, a Faust table), an index of source id -> incident, the fusable incidents per category group, a
watermark (highest input event time minus lateness), a heap of supervision deadlines, and the
event-time merge of grid events from many upstream partitions (agents/event_order.py).

Replay safety: only event time is used; incident ids come from the first source; grid events that carry
an order (telemetry) are applied in merge order, not arrival order, with supervision run up to each
event's order ts before it, so the same events give the same incidents however their upstreams
interleaved; a re-delivered input is recognised (event phase + ts already seen, report or action id
already in the incident) and changes nothing; an escalation is recorded at the deadline that passed,
not when it was noticed.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gridwatch.pipeline.schemas.codec import dumps, loads, require_finite
from gridwatch.pipeline.schemas.events import GridEvent, TierRef, Watermarks, tier_refs
from gridwatch.pipeline.schemas.incidents import (
    VERSION,
    Incident,
    IncidentSource,
    OperatorAction,
    Transition,
    incident_id,
    plain,
)
from gridwatch.pipeline.schemas.reports import ResidentReport

from . import lifecycle as lc
from .event_order import MergeBuffer, forget
from .routing import IncidentConfig

log = logging.getLogger("gridwatch.incidents")
EARTH_M = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(a)))


class StateStore(Protocol):
    """The durable key -> JSON bytes store behind the processor (a Faust table with raw values).

    Keys: ``inc:<partition>:<incident id>`` -> the incident's JSON, ``wm:<partition>`` -> the watermark,
    ``q:<partition>:<seq>`` -> a buffered grid event, ``up:<partition>`` -> the upstream marks of the merge.
    """

    def get(self, key: str) -> Any: ...

    def items(self) -> Iterable[tuple[str, Any]]: ...


@dataclass
class Rejected:
    reason: str  # machine-readable: unknown_incident, invalid_transition, out_of_scope, outside_grid, ...
    detail: str


@dataclass
class Outcome:
    """What one batch produced: records for <prefix>.incidents, table writes, rejections."""

    changes: list[tuple[str, bytes]] = field(default_factory=list)  # (grid code key, IncidentChange JSON)
    writes: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)  # key -> (partition, JSON; None: delete)
    rejected: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    late: int = 0  # ordered grid events that arrived after later ones were applied (applied at once)


@dataclass
class PartitionState:
    partition: int
    max_ts: int = 0
    incidents: dict[str, Incident] = field(default_factory=dict)
    by_source: dict[str, str] = field(default_factory=dict)  # "event:<id>" / "report:<id>" -> incident id
    fusable: dict[str, set[str]] = field(default_factory=dict)  # group -> incident ids open to new sources
    # group -> finished incidents still in the table -> until when they were open (lifecycle.open_until; those
    # with an event time only), and per group a bound on those times (never lowered): see _candidate
    finished: dict[str, dict[str, int]] = field(default_factory=dict)
    finished_max: dict[str, int] = field(default_factory=dict)
    heap: list[tuple[int, str]] = field(default_factory=list)  # (deadline, incident id), lazily invalidated
    scheduled: dict[str, int] = field(default_factory=dict)  # incident id -> deadline last pushed
    last_ts: dict[str, int] = field(default_factory=dict)  # incident id -> latest event time of its sources
    report_ts: int = 0  # latest report time not yet on the clock (advance() moves it once the events caught up)
    # reports waiting for the grid events before them (see on_report): sorted (time, id, report, wall time held)
    held: list[tuple[int, str, ResidentReport, float]] = field(default_factory=list)
    held_ids: set[str] = field(default_factory=set)
    wm_dirty: bool = False
    order: MergeBuffer = field(init=False)

    def __post_init__(self) -> None:
        self.order = MergeBuffer(self.partition, GridEvent.decode)


def seen_ts(src: IncidentSource) -> int:
    """When a source was seen: a report's time, an event's latest phase (its ``ts`` is when the condition
    began, which a dwell or grace rule reports long after)."""
    return src.ts if src.kind == "report" else src.last_ts


def inc_key(partition: int, iid: str) -> str:
    return f"inc:{partition}:{iid}"


def held_key(partition: int, report_id: str) -> str:
    return f"rq:{partition}:{report_id}"


def finite_event(ev: GridEvent) -> None:
    """The floats a grid event brings into an incident are finite: Incident.encode relies on it (a record
    decoded from Kafka always passes; this catches events built in Python)."""
    require_finite((ev.lat, ev.lon, ev.evidence), f"grid event {ev.id}")


class IncidentProcessor:
    def __init__(self, cfg: IncidentConfig, gridmap: Any, store: StateStore,
                 wall_clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.gridmap = gridmap
        self.store = store
        # how long a report has waited for a silent upstream (fusion.report_hold_s); a replay of records passes a
        # clock that stands still, so that no report is released by the hold and the result is the same every run
        self.wall_clock = wall_clock
        self.partitions: dict[int, PartitionState] = {}
        self.lateness_ms = int(cfg.supervision.lateness_s * 1000)
        self.window_ms = int(cfg.fusion.window_s * 1000)
        self.ignored_types: set[str] = set()

    def reset(self) -> None:
        """Forget memory after a rebalance: the store (table) is the truth and is read again lazily."""
        self.partitions.clear()

    # -- partition state ------------------------------------------------------------------------
    def partition(self, p: int) -> PartitionState:
        ps = self.partitions.get(p)
        if ps is None:
            ps = self.partitions[p] = PartitionState(p)
            wm = self.store.get(f"wm:{p}")
            if wm:
                ps.max_ts = int(loads(wm).get("max_ts", 0))
            prefix = f"inc:{p}:"
            items = list(self.store.items())
            for key, value in items:
                if isinstance(key, str) and key.startswith(prefix) and value:
                    inc = Incident.decode(value)
                    ps.incidents[inc.id] = inc
                    self._index(ps, inc)
            ps.order.restore(items)
            held = f"rq:{p}:"
            now = self.wall_clock()
            ps.held = sorted((r.requested_ms, r.service_request_id, r, now) for key, value in items
                             if isinstance(key, str) and key.startswith(held) and value
                             for r in (ResidentReport.decode(value),))
            ps.held_ids = {h[1] for h in ps.held}
            if ps.incidents or ps.order.upstreams or ps.held:
                log.info("partition %d: recovered %d incidents (%d open), watermark %d, %d grid events buffered "
                         "from %d upstreams, %d reports waiting for them", p, len(ps.incidents),
                         sum(1 for i in ps.incidents.values() if i.open), ps.max_ts - self.lateness_ms, len(ps.order),
                         len(ps.order.upstreams), len(ps.held))
        return ps

    def _index(self, ps: PartitionState, inc: Incident) -> None:
        for s in inc.sources:
            ps.by_source[f"{s.kind}:{s.id}"] = inc.id
        ps.last_ts[inc.id] = max(s.last_ts for s in inc.sources)
        ids = ps.fusable.setdefault(inc.category_group, set())
        done = ps.finished.setdefault(inc.category_group, {})
        fusable = lc.fusable(inc)
        until = None if fusable else lc.open_until(inc)
        if fusable:
            ids.add(inc.id)
        else:
            ids.discard(inc.id)
        if until is None:
            done.pop(inc.id, None)
        else:
            done[inc.id] = until
            ps.finished_max[inc.category_group] = max(until, ps.finished_max.get(inc.category_group, until))
        d = lc.next_deadline(inc, self.cfg)
        if d is not None and ps.scheduled.get(inc.id) != d:
            ps.scheduled[inc.id] = d
            heapq.heappush(ps.heap, (d, inc.id))

    def _emit(self, ps: PartitionState, out: Outcome, inc: Incident, change: str, ts: int,
              transition: Transition | None, source_id: str = "") -> None:
        """Version the incident, queue its change record and its table write, re-index it."""
        inc.version += 1
        snap = inc.encode()  # serialised once: the change record embeds it, the table stores it
        rest = dumps({"change": change, "ts": ts,
                      "transition": plain(transition) if transition else None,
                      "source_id": source_id, "v": VERSION})
        out.changes.append((inc.grid_code, b'{"incident":' + snap + b"," + rest[1:]))
        out.writes[inc_key(ps.partition, inc.id)] = (ps.partition, snap)
        self._index(ps, inc)

    def _advance_ts(self, ps: PartitionState, ts: int) -> None:
        if ts > ps.max_ts:
            ps.max_ts = ts
            ps.wm_dirty = True

    # -- inputs ---------------------------------------------------------------------------------
    def on_ordered_event(self, p: int, upstream: str, order_ts: int, raw: bytes, out: Outcome) -> None:
        """A grid event with an order (see agents/event_order.py): buffered until no event still to
        come can precede it, then applied in merge order; applied at once when it is late.
        Raises SchemaError (nothing buffered) when the record is not a grid event."""
        ps = self.partition(p)
        ev = GridEvent.decode(raw)  # codec.loads refuses NaN and infinities: no finite_event needed here
        if not ps.order.push(upstream, order_ts, raw, ev, out.writes):
            out.late += 1
            if ps.order.late <= 10 or ps.order.late % 1000 == 0:
                log.warning("partition %d: late grid event %s %s@%d from %s (order ts %d < %d already applied; "
                            "%d late so far): applied out of order", p, ev.type, ev.phase, ev.ts, upstream,
                            order_ts, ps.order.frontier or 0, ps.order.late)
            self._ordered(ps, ev, order_ts, out)
        self._release(ps, out)

    def on_watermarks(self, p: int, rec: Watermarks, out: Outcome) -> None:
        """Upstream watermarks / idle markers: release what they allow, move the partition's clock."""
        ps = self.partition(p)
        for upstream, m in rec.marks.items():
            ps.order.mark(upstream, m.wm, m.idle)
        self._release(ps, out)

    def _release(self, ps: PartitionState, out: Outcome) -> None:
        for item in ps.order.release(out.writes):
            while ps.held and ps.held[0][0] < item.order_ts:  # a report before this event in event time
                self._apply_held(ps, out)
            self._ordered(ps, item.item, item.order_ts, out)
        self._release_reports(ps, out)
        clock = ps.order.clock()
        if clock is not None:
            self._advance_ts(ps, clock)

    def _report_ready(self, ps: PartitionState, t: int) -> bool:
        """Can no grid event from before ``t`` still come? None buffered at or before it, and every active
        upstream's watermark past it (a report and an event of the same millisecond: the event first)."""
        head = ps.order.head()
        if head is not None and head <= t:
            return False
        merged = ps.order.merged()
        return merged is None or merged > t

    def _release_reports(self, ps: PartitionState, out: Outcome, now: float | None = None) -> None:
        """Apply the held reports the grid events allow, in time order; with ``now`` (wall clock, the grid
        events all read) also those held longer than ``fusion.report_hold_s``."""
        hold = self.cfg.fusion.report_hold_s
        while ps.held:
            if not self._report_ready(ps, ps.held[0][0]):
                if now is None or now - ps.held[0][3] < hold:
                    break
                log.info("partition %d: report %s applied after waiting %.0f s for grid events of silent readings "
                         "partitions (fusion.report_hold_s)", ps.partition, ps.held[0][1], now - ps.held[0][3])
            self._apply_held(ps, out)

    def _apply_held(self, ps: PartitionState, out: Outcome) -> None:
        _, rid, rep, _ = ps.held.pop(0)
        ps.held_ids.discard(rid)
        forget(out.writes, ps.partition, held_key(ps.partition, rid))
        self._apply_report(ps, rep, out)

    def _ordered(self, ps: PartitionState, ev: GridEvent, order_ts: int, out: Outcome) -> None:
        """Apply a merged event after supervision has run up to its order ts, so that deadlines and
        events interleave the same way on every run (not as batches or watermarks happened to fall)."""
        self._advance_ts(ps, order_ts)
        self._advance_ts(ps, ev.ts)
        self._supervise(ps, out)
        self._apply_event(ps, ev, out)

    def on_event(self, p: int, ev: GridEvent, out: Outcome) -> None:
        """A grid event without an order (vision agent, camera service, tools): applied on arrival.

        It moves the partition's supervision clock only where no merged upstream does: arrival order
        is not reproducible, and a camera with its own clock (or a skewed one) must not escalate the
        sensors' incidents at a moment that differs from run to run.
        Raises SchemaError (nothing changed) for a NaN or an infinity in its position or evidence."""
        finite_event(ev)
        ps = self.partition(p)
        if not ps.order.upstreams:
            self._advance_ts(ps, ev.ts)
        self._apply_event(ps, ev, out)

    def _apply_event(self, ps: PartitionState, ev: GridEvent, out: Outcome) -> None:
        iid = ps.by_source.get(f"event:{ev.id}")
        if iid is not None and iid in ps.incidents:
            self._event_update(ps, ps.incidents[iid], ev, out)
            return
        if ev.phase == "end":
            return  # the end of an event that never made an incident (unmapped type, or evicted)
        group = self.cfg.group_of_event(ev.type)
        if group is None:
            if ev.type not in self.ignored_types:
                self.ignored_types.add(ev.type)
                log.info("event type %s is in no incident group (incidents.yaml): no incidents of it", ev.type)
            return
        src = IncidentSource(kind="event", id=ev.id, type=ev.type, ts=ev.start_ts, last_ts=ev.ts, subject=ev.subject,
                             device_kind=ev.device_kind, level=ev.level, active=ev.active, end_ts=ev.end_ts,
                             lat=ev.lat, lon=ev.lon, message=ev.message, evidence=list(ev.evidence),
                             origin=ev.source, seen=[f"{ev.phase}@{ev.ts}"])
        actor = f"{'camera' if ev.source == 'vision' else 'sensor'}:{ev.subject}"
        self._add_source(ps, out, group, src, ev.grid_code, list(ev.tiers), ev.level, actor)

    def on_report(self, p: int, rep: ResidentReport, out: Outcome) -> None:
        """A resident report. In a partition with merged grid events it waits, persisted, until no grid event
        from before it can still come (:meth:`_report_ready`), so that which source opens an incident follows
        event time, not which topic the worker read first; applied at once where no upstream merges.
        Its time moves the partition's supervision clock at the batch's end (:meth:`advance`)."""
        require_finite((rep.lat, rep.lon), f"report {rep.service_request_id}")
        ps = self.partition(p)
        rid = rep.service_request_id
        if f"report:{rid}" in ps.by_source or rid in ps.held_ids:
            out.duplicates += 1
            return
        placed = self._placed(rep, out)
        if placed is None:
            return
        if self._report_ready(ps, rep.requested_ms):  # always where no upstream merges
            self._apply_report(ps, rep, out, placed)
            return
        bisect.insort(ps.held, (rep.requested_ms, rid, rep, self.wall_clock()), key=lambda h: (h[0], h[1]))
        ps.held_ids.add(rid)
        out.writes[held_key(p, rid)] = (p, rep.encode())

    def _placed(self, rep: ResidentReport, out: Outcome) -> tuple[str, str] | None:
        """(group, grid) of a report, or None with the reason in ``out.rejected``."""
        group = self.cfg.group_of_service(rep.service_code)
        if group is None:
            out.rejected.append(Rejected("unmapped_service", f"service_code {rep.service_code!r} is in no incident "
                                                             "group (incidents.yaml)"))
            return None
        grid = rep.grid_code if rep.grid_code in self.gridmap else self.gridmap.locate(rep.lat, rep.lon)
        if not grid:
            out.rejected.append(Rejected("outside_grid", f"report {rep.service_request_id} at {rep.lat},{rep.lon} "
                                                         f"(grid {rep.grid_code!r}) is in no grid of the city"))
            return None
        return group, grid

    def _apply_report(self, ps: PartitionState, rep: ResidentReport, out: Outcome,
                      placed: tuple[str, str] | None = None) -> None:
        placed = placed or self._placed(rep, out)
        if placed is None:
            return
        group, grid = placed
        ps.report_ts = max(ps.report_ts, rep.requested_ms)
        tiers = list(tier_refs(self.gridmap, grid))
        src = IncidentSource(kind="report", id=rep.service_request_id, type=rep.service_code, ts=rep.requested_ms,
                             last_ts=rep.requested_ms, subject=rep.device_id, lat=rep.lat, lon=rep.lon,
                             message=rep.description, media_url=rep.media_url, origin=rep.source,
                             external_id=rep.external_id)
        self._add_source(ps, out, group, src, grid, tiers, self.cfg.report_level(group),
                         f"resident:{rep.service_request_id}")

    def on_action(self, p: int, act: OperatorAction, out: Outcome) -> None:
        # Actions carry the console's clock, not the sensors' event time: they do not move the
        # watermark (a replayed city acted on today would otherwise escalate everything at once).
        ps = self.partition(p)
        inc = ps.incidents.get(act.incident_id)
        if inc is None:
            out.rejected.append(Rejected("unknown_incident", f"no incident {act.incident_id} in partition {p}; the "
                                                             "action's key must be the incident's grid code"))
            return
        if any(h.ref == act.id for h in inc.history):
            out.duplicates += 1
            return
        try:
            t = lc.apply_action(inc, act, self.cfg)
        except lc.LifecycleError as e:
            out.rejected.append(Rejected(e.reason, str(e)))
            return
        change = {"escalate": "escalated", "reopen": "reopened", "supervise": "supervised"}.get(act.action, "action")
        self._emit(ps, out, inc, change, act.ts, t, act.id)

    # -- fusion ---------------------------------------------------------------------------------
    def _candidate(self, ps: PartitionState, group: str, grid: str, src: IncidentSource) -> Incident | None:
        """The open incident of the same group this source joins: same device first, then same grid,
        then nearest within the radius; ties by age and id, so the choice is deterministic.

        A source seen before a finished incident's sensors auto-resolved it (lifecycle.open_until) may also join
        that incident, closed or evaluated since: a worker catching up can read the reports topic days of event
        time behind the grid events, and in event-time order such a report would have joined the incident, not
        opened a new one that at once breaches its SLA. Whether it joins depends on event times alone, never on
        the worker's clock or where a batch ended (an incident still resolved, pending confirmation, takes it
        the same way). A live source is seen after every auto-resolve the table holds, and skips the scan."""
        best: tuple[Any, ...] | None = None
        found: Incident | None = None
        radius = self.cfg.fusion.radius_m
        max_dlat = radius / 111_000.0  # a cheap box test before the great circle
        ids: Iterable[str] = ps.fusable.get(group, ())
        seen = seen_ts(src)
        if ps.finished.get(group) and seen <= ps.finished_max.get(group, seen - 1):
            ids = [*ids, *(i for i, until in ps.finished[group].items() if seen <= until)]
        for iid in ids:
            inc = ps.incidents[iid]
            if not (inc.created_ts - self.window_ms <= src.ts <= ps.last_ts[iid] + self.window_ms):
                continue
            same_grid = inc.grid_code == grid
            if not same_grid and abs(inc.lat - src.lat) > max_dlat:
                continue
            dist = distance_m(inc.lat, inc.lon, src.lat, src.lon)
            if not same_grid and dist > radius:
                continue
            same_subject = bool(src.subject) and any(s.subject == src.subject for s in inc.sources)
            rank = (not same_subject, not same_grid, round(dist, 3), inc.created_ts, inc.id)
            if best is None or rank < best:
                best, found = rank, inc
        return found

    def _add_source(self, ps: PartitionState, out: Outcome, group: str, src: IncidentSource, grid: str,
                    tiers: list[TierRef], level: str, actor: str) -> None:
        inc = self._candidate(ps, group, grid, src)
        ref = f"{src.kind}:{src.id}"
        if inc is None:
            self._create(ps, out, group, src, grid, tiers, level, actor)
            return
        was_confirmed = {s.kind for s in inc.sources} >= {"event", "report"}
        finished = not lc.fusable(inc)  # a late source joining a closed incident: its level stays as it closed
        inc.sources.append(src)
        ts = seen_ts(src)
        if not finished:
            lc.set_level(inc, level, ts, self.cfg)
        inc.title = self._title(inc)
        # Resolved: a source after the resolution says the problem is back. One from before it (a worker
        # catching up reads the reports topic behind the events, which resolved it meanwhile) is merged as
        # what it was, so the incident ends as it would have had the inputs come in event-time order.
        if inc.status == "resolved" and ts > (inc.resolved_ts or 0):
            t = lc.reopen(inc, self.cfg, ts, actor, note=f"{src.type} again", ref=ref)
            self._after_source(inc, ts)
            self._emit(ps, out, inc, "reopened", ts, t, src.id)
            return
        t = lc.record(inc, ts, "merged", actor, note=f"{src.kind} {src.type}: {src.message}"[:500], ref=ref)
        self._after_source(inc, ts)
        self._emit(ps, out, inc, "source_added", ts, t, src.id)
        if not was_confirmed and {s.kind for s in inc.sources} >= {"event", "report"}:
            self._confirmed(ps, out, inc, ts, actor, src.id, raise_level=not finished)

    def _confirmed(self, ps: PartitionState, out: Outcome, inc: Incident, ts: int, actor: str, sid: str, *,
                   raise_level: bool = True) -> None:
        """A sensor and a resident agree: priority (and once, the level) goes up."""
        if raise_level and self.cfg.priority.confirmation_raises_level:
            lc.set_level(inc, lc.raise_level(inc.level), ts, self.cfg)
        inc.priority = lc.priority(inc, self.cfg)
        t = lc.record(inc, ts, "confirmed", actor, note="a sensor event and a resident report agree")
        self._emit(ps, out, inc, "source_added", ts, t, sid)

    def _after_source(self, inc: Incident, ts: int) -> None:
        inc.priority = lc.priority(inc, self.cfg)
        inc.updated_ts = max(inc.updated_ts, ts)

    def _create(self, ps: PartitionState, out: Outcome, group: str, src: IncidentSource, grid: str,
                tiers: list[TierRef], level: str, actor: str) -> None:
        cfg = self.cfg
        tier = cfg.lifecycle.start_tier
        inc = Incident(
            id=incident_id(src.kind, src.id), category_group=group, title="", level=level, priority=0,
            status="reported", tier=tier, tier_code="", department=cfg.department(group), grid_code=grid,
            tiers=tiers, lat=src.lat, lon=src.lon, created_ts=src.ts, updated_ts=src.ts,
            sla_deadline_ts=src.ts + cfg.sla_ms(level), sources=[src])
        inc.tier_code = inc.tier_code_of(tier) or grid
        inc.title = self._title(inc)
        inc.priority = lc.priority(inc, cfg)
        ps.incidents[inc.id] = inc
        t = lc.record(inc, src.ts, "created", actor, note=f"{src.type}: {src.message}"[:500], from_status="",
                      ref=f"{src.kind}:{src.id}")
        self._emit(ps, out, inc, "created", src.ts, t, src.id)
        if cfg.lifecycle.auto_dispatch:
            t = lc.apply_action(inc, OperatorAction(inc.id, grid, "dispatch", "system", src.ts,
                                                    note="routing table"), cfg)
            self._emit(ps, out, inc, "action", src.ts, t, "")

    def _title(self, inc: Incident) -> str:
        types = sorted({s.type for s in inc.sources if s.kind == "event"})
        reports = sum(1 for s in inc.sources if s.kind == "report")
        parts = [", ".join(types)] if types else []
        if reports:
            parts.append(f"{reports} report{'s' if reports > 1 else ''}")
        return f"{self.cfg.title(inc.category_group)}: {' + '.join(parts)}"

    def _event_update(self, ps: PartitionState, inc: Incident, ev: GridEvent, out: Outcome) -> None:
        src = next(s for s in inc.sources if s.kind == "event" and s.id == ev.id)
        marker = f"{ev.phase}@{ev.ts}"
        if marker in src.seen:
            out.duplicates += 1
            return
        src.seen.append(marker)
        src.last_ts = max(src.last_ts, ev.ts)
        src.level = ev.level
        if ev.message:
            src.message = ev.message
        if ev.evidence:
            src.evidence = list(ev.evidence)
        actor = f"{'camera' if ev.source == 'vision' else 'sensor'}:{ev.subject}"
        if ev.phase == "end":
            src.active = False
            src.end_ts = ev.end_ts if ev.end_ts is not None else ev.ts
        else:
            src.active = True
        terminal = not (inc.open or inc.status == "resolved")
        if not terminal and ev.phase != "end":
            lc.set_level(inc, ev.level, ev.ts, self.cfg)
        if inc.status == "resolved" and inc.pending_confirmation and ev.phase != "end":
            t = lc.reopen(inc, self.cfg, ev.ts, actor, note=f"{ev.type} active again", ref=f"event:{ev.id}")
            self._after_source(inc, ev.ts)
            self._emit(ps, out, inc, "reopened", ev.ts, t, ev.id)
            return
        self._after_source(inc, ev.ts)
        action = "source_end" if ev.phase == "end" else "source_update"
        t = lc.record(inc, ev.ts, action, actor, note=f"{ev.type} {ev.phase}: {ev.message}"[:500],
                      ref=f"event:{ev.id}:{marker}")
        self._emit(ps, out, inc, "source_updated", ev.ts, t, ev.id)
        if ev.phase == "end" and self.cfg.lifecycle.auto_resolve:
            t2 = lc.auto_resolve(inc, ev.ts, actor)
            if t2 is not None:
                inc.priority = lc.priority(inc, self.cfg)
                self._emit(ps, out, inc, "auto_resolved", ev.ts, t2, ev.id)

    # -- supervision ----------------------------------------------------------------------------
    def reports_held_since(self, before: float) -> list[int]:
        """Partitions with a report held (waiting for grid events) since before ``before`` (wall clock)."""
        return [p for p, ps in self.partitions.items() if ps.held and min(h[3] for h in ps.held) <= before]

    def reports_waiting(self) -> list[int]:
        """Partitions whose reports' time waits for their grid events (see :meth:`advance`)."""
        return [p for p, ps in self.partitions.items() if ps.report_ts or ps.held]

    def watermark(self, p: int) -> int:
        return self.partition(p).max_ts - self.lateness_ms

    def advance(self, p: int, out: Outcome, events_behind: bool = False, now: float | None = None) -> None:
        """Run supervision up to the partition's watermark; persist the watermark and merge state if they moved.

        ``events_behind``: grid events of this partition are still unread in Kafka (a worker catching up after
        an outage reads the small reports topic ahead of them). The reports' time then waits: moving the
        clock to a report hours ahead would escalate incidents whose sensors' "end" is still unread. Live,
        the events are caught up at nearly every batch's end, and a report moves the clock as before.
        Grid events read but still in the merge buffer (waiting for another upstream's watermark) hold it
        back the same way: the clock moves to the first of them, the rest of the report's time waits until
        they are applied, so whether a report came before or after their release changes nothing."""
        ps = self.partition(p)
        if ps.held and not events_behind:  # the grid events are all read: a silent upstream holds reports so long
            self._release_reports(ps, out, self.wall_clock() if now is None else now)
        if ps.report_ts and not events_behind:
            head = ps.order.head()
            if head is None or ps.report_ts <= head:
                self._advance_ts(ps, ps.report_ts)
                ps.report_ts = 0
            else:
                self._advance_ts(ps, head)
        self._supervise(ps, out)
        if ps.wm_dirty:
            out.writes[f"wm:{p}"] = (p, dumps({"max_ts": ps.max_ts}))
            ps.wm_dirty = False
        ps.order.flush(out.writes)

    def _supervise(self, ps: PartitionState, out: Outcome) -> None:
        wm = ps.max_ts - self.lateness_ms
        heap = ps.heap
        while heap and heap[0][0] < wm:
            deadline, iid = heapq.heappop(heap)
            if ps.scheduled.get(iid) == deadline:
                del ps.scheduled[iid]
            inc = ps.incidents.get(iid)
            if inc is None or lc.next_deadline(inc, self.cfg) != deadline:
                continue  # stale entry: the incident changed since and was rescheduled
            if inc.status in ("evaluated", "closed", "cancelled") and inc.closed_ts is not None:
                self._evict(ps, out, inc)
                continue
            for change, t in lc.supervise(inc, self.cfg, wm):
                self._emit(ps, out, inc, change, t.ts, t, "")

    def _evict(self, ps: PartitionState, out: Outcome, inc: Incident) -> None:
        """Drop a long-finished incident from the table (its records stay on the incidents topic)."""
        ps.incidents.pop(inc.id, None)
        ps.scheduled.pop(inc.id, None)
        ps.last_ts.pop(inc.id, None)
        for s in inc.sources:
            ps.by_source.pop(f"{s.kind}:{s.id}", None)
        ps.fusable.get(inc.category_group, set()).discard(inc.id)
        ps.finished.get(inc.category_group, {}).pop(inc.id, None)
        out.writes[inc_key(ps.partition, inc.id)] = (ps.partition, None)

    # -- queries (tests, bench, diagnostics) ------------------------------------------------------
    def incidents(self) -> list[Incident]:
        return [i for ps in self.partitions.values() for i in ps.incidents.values()]
