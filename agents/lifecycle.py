"""The five-ticket workflow of an incident, as pure functions over :class:`Incident` (no Kafka).

    reported -> dispatched -> accepted -> in_progress -> resolved -> evaluated
    any open status -> resolved (handled on the spot) / cancelled;  resolved -> closed (not evaluated)

Why pure: the fusion agent, the unit tests and the web console (to answer 409 before it produces
an action) share one definition of what is allowed. Every change appends a :class:`Transition` to
the incident's history with who, when (event time) and what it changed; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterator

from gridwatch.pipeline.schemas.events import LEVELS, level_rank
from gridwatch.pipeline.schemas.incidents import (
    OPEN_STATUSES,
    TERMINAL_STATUSES,
    WORK_TIERS,
    Incident,
    OperatorAction,
    Supervision,
    Transition,
)

from .routing import IncidentConfig


class LifecycleError(ValueError):
    """An action that the incident's state does not allow; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# action -> (statuses it is allowed from, status after it; None = unchanged)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "ack": ((*OPEN_STATUSES, "resolved"), None),
    "dispatch": (("reported", "dispatched"), "dispatched"),
    "accept": (("dispatched",), "accepted"),
    "start": (("accepted",), "in_progress"),
    "resolve": (OPEN_STATUSES, "resolved"),
    "escalate": (OPEN_STATUSES, None),
    "comment": (tuple(dict.fromkeys((*OPEN_STATUSES, "resolved", *TERMINAL_STATUSES))), None),
    "evaluate": (("resolved",), "evaluated"),
    "confirm": (("resolved",), None),
    "reopen": (("resolved", "closed"), None),  # back to the status it was resolved from
    "cancel": (OPEN_STATUSES, "cancelled"),
    "supervise": (OPEN_STATUSES, None),  # 督办: a notice with a deadline, by any tier's supervisor
}


def next_tier(tier: str) -> str | None:
    i = WORK_TIERS.index(tier)
    return WORK_TIERS[i + 1] if i + 1 < len(WORK_TIERS) else None


def raise_level(level: str) -> str:
    return LEVELS[min(len(LEVELS) - 1, level_rank(level) + 1)]


def fusable(inc: Incident) -> bool:
    """Can a new source join it? Open work, or a sensor auto-resolve nobody confirmed yet."""
    return inc.open or (inc.status == "resolved" and inc.pending_confirmation)


def open_until(inc: Incident) -> int | None:
    """The event time up to which a finished incident (not fusable, still in the table) was open to new
    sources, where that time is event time: its sensors' auto-resolve (then closed or evaluated). None after
    an operator's resolve or cancel: those carry the console's clock, which no source's event time can be
    compared with."""
    if inc.status == "cancelled":
        return None
    # the last entry that moved it to resolved (a source merged while resolved records resolved -> resolved)
    last = next((h for h in reversed(inc.history) if h.to_status == "resolved" != h.from_status), None)
    return last.ts if last is not None and last.action == "auto_resolve" else None


def supervision_deadline(inc: Incident) -> int | None:
    """The deadline of a supervision notice still running (open incident, not yet overdue)."""
    sv = inc.supervision
    return sv.deadline if inc.open and sv is not None and not sv.overdue else None


def next_deadline(inc: Incident, cfg: IncidentConfig) -> int | None:
    """The next event time at which supervision has something to do with this incident."""
    if inc.open:
        due = [d for d in (inc.sla_deadline_ts, supervision_deadline(inc)) if d is not None]
        return min(due) if due else None
    if inc.status == "resolved" and inc.resolved_ts is not None:
        return inc.resolved_ts + int(cfg.lifecycle.evaluation_window_s * 1000)
    if inc.status in TERMINAL_STATUSES and inc.closed_ts is not None:
        return inc.closed_ts + int(cfg.lifecycle.retain_closed_s * 1000)
    return None


def record(inc: Incident, ts: int, action: str, actor: str, *, note: str = "", from_status: str | None = None,
           ref: str = "", deadline: int | None = None) -> Transition:
    """Append a history entry describing the incident as it is now (after the change)."""
    t = Transition(ts=ts, action=action, actor=actor, note=note,
                   from_status=inc.status if from_status is None else from_status, to_status=inc.status,
                   level=inc.level, tier=inc.tier, department=inc.department, ref=ref, assist=list(inc.assist),
                   deadline=deadline)
    inc.history.append(t)
    inc.updated_ts = max(inc.updated_ts, ts)
    return t


def priority(inc: Incident, cfg: IncidentConfig) -> int:
    """Level weight + extra sources + sensor confirmation + escalations + supervised (see incidents.yaml)."""
    p = cfg.priority
    kinds = {s.kind for s in inc.sources}
    sv = inc.supervision
    return (p.level[inc.level] + p.per_extra_source * max(0, len(inc.sources) - 1)
            + (p.sensor_confirmed if kinds >= {"event", "report"} else 0) + p.per_escalation * inc.escalations
            + (p.supervised if sv is not None else 0))


def set_level(inc: Incident, level: str, ts: int, cfg: IncidentConfig) -> bool:
    """Raise (never lower) the level; an open incident's deadline tightens to the new level's SLA."""
    if level_rank(level) <= level_rank(inc.level):
        return False
    inc.level = level
    if inc.open and inc.sla_deadline_ts is not None:
        inc.sla_deadline_ts = min(inc.sla_deadline_ts, ts + cfg.sla_ms(level))
    return True


def check_action(inc: Incident, action: OperatorAction) -> None:
    """Raise LifecycleError if the action is not allowed now (scope, status, arguments)."""
    allowed, _ = TRANSITIONS[action.action]
    if action.actor_tier_code and action.actor_tier_code not in {t.code for t in inc.tiers}:
        raise LifecycleError("out_of_scope", f"{action.actor} (scope {action.actor_tier_code}) cannot act on "
                                             f"incident {inc.id} in grid {inc.grid_code}")
    if inc.status not in allowed:
        raise LifecycleError("invalid_transition", f"{action.action} is not allowed on incident {inc.id} in status "
                                                   f"{inc.status} (allowed from: {', '.join(allowed)})")
    if action.action == "ack" and inc.acked:
        raise LifecycleError("invalid_transition", f"incident {inc.id} is already acknowledged")
    if action.action == "confirm" and not inc.pending_confirmation:
        raise LifecycleError("invalid_transition", f"incident {inc.id} has no auto-resolve to confirm")
    if action.action == "evaluate" and not (isinstance(action.rating, int) and 1 <= action.rating <= 5):
        raise LifecycleError("bad_action", "evaluate needs a rating 1-5")
    if action.action in ("comment", "supervise") and not action.note.strip():
        raise LifecycleError("bad_action", f"a {action.action} needs a note")
    if action.action == "supervise" and not (isinstance(action.deadline, int) and action.deadline > action.ts):
        raise LifecycleError("bad_action", "a supervision notice needs a deadline after its time")
    if action.assist and action.action != "dispatch":
        raise LifecycleError("bad_action", "assisting departments are given with dispatch")
    if action.action == "escalate":
        if action.level and level_rank(action.level) < level_rank(inc.level):
            raise LifecycleError("bad_action", f"escalate cannot lower the level {inc.level} to {action.level}")
        if next_tier(inc.tier) is None and inc.level == LEVELS[-1] and action.level in ("", inc.level):
            raise LifecycleError("invalid_transition", f"incident {inc.id} is already red at the city tier")


def apply_action(inc: Incident, action: OperatorAction, cfg: IncidentConfig) -> Transition:
    """Apply an operator action (after :func:`check_action`); returns the history entry it added."""
    check_action(inc, action)
    a, ts, before = action.action, action.ts, inc.status
    _, to_status = TRANSITIONS[a]
    note = action.note
    if a == "ack":
        inc.acked = True
    elif a == "dispatch":
        inc.department = action.department or inc.department or cfg.department(inc.category_group)
        if action.assist is not None:  # 吹哨报到: a lead department plus assisting ones
            inc.assist = [d for d in dict.fromkeys(x.strip() for x in action.assist) if d and d != inc.department]
        elif inc.department in inc.assist:
            inc.assist = [d for d in inc.assist if d != inc.department]
        if action.level and action.level != inc.level:
            inc.level = action.level  # the dispatcher grades the incident (may lower a resident's guess)
            if inc.sla_deadline_ts is not None:
                inc.sla_deadline_ts = ts + cfg.sla_ms(inc.level)
    elif a == "resolve":
        _resolve(inc, ts, pending=False)
    elif a == "escalate":
        return escalate(inc, cfg, ts, action.actor, note=note, level=action.level, ref=action.id, by_sla=False)
    elif a == "evaluate":
        inc.rating = action.rating
        inc.pending_confirmation = False
        inc.closed_ts = ts
    elif a == "confirm":
        inc.pending_confirmation = False
    elif a == "reopen":
        return reopen(inc, cfg, ts, action.actor, note=note, ref=action.id)
    elif a == "cancel":
        inc.sla_deadline_ts = None
        inc.closed_ts = ts
    elif a == "supervise":
        assert action.deadline is not None  # check_action
        prev = inc.supervision
        inc.supervision = Supervision(by=action.actor, note=note, deadline=action.deadline, ts=ts,
                                      by_scope=action.actor_tier_code, notices=prev.notices + 1 if prev else 1)
        inc.priority = priority(inc, cfg)
        return record(inc, ts, a, action.actor, note=note, ref=action.id, deadline=action.deadline)
    if to_status:
        inc.status = to_status
    inc.priority = priority(inc, cfg)
    return record(inc, ts, a, action.actor, note=note, from_status=before, ref=action.id)


def _resolve(inc: Incident, ts: int, *, pending: bool) -> None:
    inc.status = "resolved"
    inc.resolved_ts = ts
    inc.sla_deadline_ts = None
    inc.pending_confirmation = pending


def escalate(inc: Incident, cfg: IncidentConfig, ts: int, actor: str, *, note: str = "", level: str = "",
             ref: str = "", by_sla: bool = True) -> Transition:
    """Move the work order up a tier and the level up a step, with a new SLA deadline.

    By supervision (``by_sla``) ``ts`` is the deadline that passed, so a replay or a late scan records
    the same escalation at the same event time. At the city tier and red there is nowhere to go:
    the incident stays flagged overdue and gets no new deadline.
    """
    before_level, before_tier = inc.level, inc.tier
    sv = cfg.supervision
    if level:
        inc.level = level
    elif not by_sla or sv.raise_level:
        inc.level = raise_level(inc.level)
    up = next_tier(inc.tier)
    if up and (not by_sla or sv.raise_tier):
        inc.tier = up
        inc.tier_code = inc.tier_code_of(up) or inc.tier_code
    moved = (inc.level, inc.tier) != (before_level, before_tier)
    inc.escalations += 1
    if by_sla:
        inc.overdue = True
    inc.sla_deadline_ts = ts + cfg.sla_ms(inc.level) if moved else None
    inc.priority = priority(inc, cfg)
    if not note:
        note = (f"SLA passed: {before_level}/{before_tier} -> {inc.level}/{inc.tier}" if by_sla
                else f"escalated: {before_level}/{before_tier} -> {inc.level}/{inc.tier}")
    return record(inc, ts, "overdue" if by_sla else "escalate", actor, note=note, ref=ref)


def reopen(inc: Incident, cfg: IncidentConfig, ts: int, actor: str, *, note: str = "", ref: str = "") -> Transition:
    """Back to the open status it was resolved from, with a fresh SLA deadline."""
    before = inc.status
    prior = next((h.from_status for h in reversed(inc.history)
                  if h.to_status == "resolved" and h.from_status in OPEN_STATUSES), "reported")
    inc.status = prior
    inc.pending_confirmation = False
    inc.closed_ts = None
    inc.sla_deadline_ts = ts + cfg.sla_ms(inc.level)
    inc.priority = priority(inc, cfg)
    return record(inc, ts, "reopen", actor, note=note, from_status=before, ref=ref)


def auto_resolve(inc: Incident, ts: int, actor: str) -> Transition | None:
    """Resolve, pending confirmation, an open incident whose sensor/camera events all ended."""
    events = [s for s in inc.sources if s.kind == "event"]
    if not inc.open or not events or any(s.active for s in events):
        return None
    before = inc.status
    _resolve(inc, ts, pending=True)
    return record(inc, ts, "auto_resolve", actor, note="every sensor event ended; an operator should confirm",
                  from_status=before)


def supervise(inc: Incident, cfg: IncidentConfig, watermark: int) -> Iterator[tuple[str, Transition]]:
    """What supervision does to one incident once the watermark reached ``watermark``.

    Yields (change kind, transition) one step at a time (the caller snapshots the incident between
    steps), in deadline order: an escalation for every SLA deadline passed (several if the watermark
    jumped), "supervision_overdue" when a supervision notice's deadline passed with the incident still
    open (recorded at that deadline), or "closed" for a resolved incident nobody evaluated in time.
    """
    while inc.open:
        sla = inc.sla_deadline_ts if inc.sla_deadline_ts is not None and inc.sla_deadline_ts < watermark else None
        sv = supervision_deadline(inc)
        sv = sv if sv is not None and sv < watermark else None
        if sv is not None and (sla is None or sv <= sla):
            assert inc.supervision is not None
            inc.supervision.overdue = True
            yield "supervision_overdue", record(inc, sv, "supervision_overdue", "supervision", deadline=sv,
                                                note=f"supervision deadline passed (notice by {inc.supervision.by})")
        elif sla is not None:
            yield "escalated", escalate(inc, cfg, sla, "supervision")
        else:
            break
    if inc.status == "resolved" and inc.resolved_ts is not None:
        close_at = inc.resolved_ts + int(cfg.lifecycle.evaluation_window_s * 1000)
        if close_at < watermark:
            before = inc.status
            inc.status = "closed"
            inc.pending_confirmation = False
            inc.closed_ts = close_at
            yield "closed", record(inc, close_at, "auto_close", "supervision",
                                   note="not evaluated within the evaluation window", from_status=before)
