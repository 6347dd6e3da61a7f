"""The sending side of the event-time merge: which upstream watermarks a worker announces, and when.

The telemetry agent owns some readings partitions (its upstreams "readings:<p>"). After the grid
events of a batch are confirmed, the partition's high mark is *confirmed*: no event raised later has
a lower order ts. Every ``interval`` (wall clock) the marks that moved since they were last sent go out
as one control record per events partition (see agents/telemetry.py for the sending).

Idleness (Flink's ``withIdleness``): a partition without input for ``idle_s`` (wall clock), and with
nothing of it left unprocessed in Kafka (the ``backlog`` of :meth:`WatermarkSender.due`), is announced
idle once, so it does not hold the merge back. Waking up is the delicate part: after a pause (a replay
fed into a waiting worker, a quiet night) one partition's input may be processed entirely before another
partition's input, which is already in Kafka, is even fetched; had that other partition stayed "idle",
the incident agent would release the first partition's events past it and the second one's would be
late. So the first input after a pause of the whole worker (every partition idle) wakes *every*
partition it owns, announced at their old marks *before* the events of that input are sent; each goes
idle again only after ``idle_s`` without input. While other partitions are busy, input on an idle one
wakes only that one (an empty or sparse partition must not hold a busy worker's merge back). Partitions are announced from their assignment on (mark 0 until they have input), so the
incident agent waits for each of them rather than treating one not heard of yet as absent.
Throttling and idleness only cost latency and lateness, never correctness of what is released: a mark
is only ever sent after the events it covers were confirmed (a woken mark is an old, lower one).

The slack (live only): between inputs a partition's mark follows the wall clock less a slack, so a sparse
city's incidents wait about the slack for the other partitions.  An input whose oldest reading is below
the mark the partition had when the input arrived (with no slack) by more than the slack arrives late: it
was delayed more than the input before it.  With a floor below the ceiling
(``worker.wall_clock_advance_slack_min_s``), the slack follows those shortfalls, as TCP sizes its
retransmission timeout from round trips (RFC 6298): their smoothed mean plus four smoothed mean deviations,
between the floor and the ceiling, and the ceiling until the first input was measured.  A quiet machine then
answers in tens of milliseconds; under load, or with devices whose clocks disagree, the slack grows back
to the ceiling.
No Kafka here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gridwatch.pipeline.schemas.events import UpstreamMark, Watermarks


@dataclass
class SlackEstimate:
    """Smoothed mean and mean deviation of how far inputs fell below their partition's zero-slack mark
    (RFC 6298's SRTT and RTTVAR, over shortfalls instead of round trips)."""

    mean: float = 0.0
    dev: float = 0.0
    n: int = 0

    def add(self, shortfall_s: float) -> None:
        if not math.isfinite(shortfall_s):
            return
        if self.n == 0:
            self.mean, self.dev = shortfall_s, shortfall_s / 2
        else:
            self.dev += (abs(shortfall_s - self.mean) - self.dev) / 4
            self.mean += (shortfall_s - self.mean) / 8
        self.n += 1

    def slack(self, floor_s: float, ceiling_s: float) -> float:
        if self.n < SLACK_WARMUP:
            return ceiling_s
        return min(ceiling_s, max(floor_s, self.mean + 4 * self.dev))


SLACK_WARMUP = 1  # inputs measured before the slack follows them (RFC 6298: the first one sets both)


@dataclass
class _Upstream:
    mark: int  # confirmed high mark (0: no input yet)
    last_input: float  # wall clock (monotonic) of the last batch or wake-up
    sent: int | None = None  # mark last sent (None: never announced)
    idle: bool = False  # announced idle and nothing since
    zero_slack_mark: float | None = None  # at the batch's start: the mark with no slack (None: none to follow)
    wake: bool = False  # woken: announce active even if the mark did not move


class WatermarkSender:
    def __init__(self, family: str, idle_s: float, advance_slack_s: float = 0.0,
                 min_slack_s: float | None = None) -> None:
        self.family = family
        self.idle_s = idle_s
        self.advance_slack_s = advance_slack_s  # 0: marks move with the data only; else the slack's ceiling
        # the slack's floor; None or not below the ceiling: the slack is fixed at the ceiling
        self.min_slack_s = advance_slack_s if min_slack_s is None else min(min_slack_s, advance_slack_s)
        self.estimate = SlackEstimate()
        self.ups: dict[str, _Upstream] = {}
        self.busy: set[str] = set()  # partitions with a batch in progress (never idle)

    def name(self, partition: int) -> str:
        return f"{self.family}:{partition}"

    def assigned(self, partition: int, now: float) -> None:
        """This worker owns the partition now: announce it (at mark 0 until it has input)."""
        self.ups.setdefault(self.name(partition), _Upstream(0, now))

    def begin(self, partition: int, now: float) -> bool:
        """A batch of this partition is about to be processed (its events will be in flight).
        True when marks must be announced *before* its events: the partition was never announced, or
        it was idle (with the whole worker paused, all its partitions wake up, see the module doc)."""
        name = self.name(partition)
        u = self.ups.setdefault(name, _Upstream(0, now))
        # where the mark would be now had it followed the wall clock with no slack since the last input (also
        # after idleness: how late the input is says the same about the delays; not after a failed batch)
        following = u.mark > 0 and name not in self.busy and math.isfinite(u.last_input)  # not after an end
        u.zero_slack_mark = u.mark + (now - u.last_input) * 1000 if following else None
        self.busy.add(name)
        urgent = u.sent is None
        paused = (u.idle or u.sent is None) and all(x.idle for x in self.ups.values() if x is not u)
        for other in self.ups.values():
            if other.idle and (paused or other is u):
                other.idle, other.wake, other.last_input = False, True, now
                urgent = True
        return urgent

    def confirmed(self, partition: int, mark: int, now: float, oldest_ms: int | None = None) -> None:
        """The batch's events are confirmed; ``mark`` is the partition's high mark now; ``oldest_ms``: the
        batch's oldest reading (event time), whose shortfall below the zero-slack mark at the batch's start
        (0 when above it) the slack follows."""
        name = self.name(partition)
        self.busy.discard(name)
        u = self.ups.setdefault(name, _Upstream(0, now))
        if oldest_ms is not None and u.zero_slack_mark is not None:
            self.estimate.add(max(0.0, u.zero_slack_mark - oldest_ms) / 1000)
        u.zero_slack_mark = None
        u.mark, u.last_input = max(u.mark, mark), now

    def slack_s(self) -> float:
        """The slack now (see the module doc)."""
        if self.min_slack_s >= self.advance_slack_s:
            return self.advance_slack_s
        return self.estimate.slack(self.min_slack_s, self.advance_slack_s)

    def due(self, now: float, backlog: Callable[[str], bool] | None = None) -> Watermarks | None:
        """The control record to send now (new, moved, woken or newly idle marks), or None.

        ``backlog(name)``: whether the partition still has input in Kafka or in the consumer's buffers
        that this worker has not processed. Such a partition is not quiet but starved (the worker was
        busy with the others, or the machine stalled), so it is never announced idle: its input would
        arrive late. Idleness then depends on what is in Kafka, not on how fast this machine is."""
        marks: dict[str, UpstreamMark] = {}
        for name, u in self.ups.items():
            if u.idle:
                continue
            quiet = name not in self.busy and now - u.last_input >= self.idle_s
            if quiet and not (backlog is not None and backlog(name)):
                u.idle, u.wake, u.sent = True, False, u.mark
                marks[name] = UpstreamMark(u.mark, idle=True)
            else:
                mark = self._advanced(name, u, now)
                if u.sent is None or mark > u.sent or u.wake:
                    u.sent, u.wake = mark, False
                    marks[name] = UpstreamMark(mark)
        return Watermarks(marks) if marks else None

    def _advanced(self, name: str, u: _Upstream, now: float) -> int:
        """The mark to announce: the high mark, or between inputs (live) the high mark moved on with the
        wall clock less the slack. A reading delayed by more than the slack becomes late; a replay turns
        this off (``worker.wall_clock_advance_slack_s: 0``) because its pace is not the recorded one."""
        if self.advance_slack_s <= 0 or u.mark <= 0 or name in self.busy:
            return u.mark
        return u.mark + max(0, int((now - u.last_input - self.slack_s()) * 1000))

    def passes_at(self, partition: int, order_ts: int) -> float | None:
        """When (monotonic wall clock) the marks of every *other* active upstream, moving on with the wall
        clock, pass ``order_ts`` (the order ts of events this partition just sent), so that the incident
        agent may release them. Announcing right then instead of at the next ``interval`` tick saves up to
        one interval per sparse event; it sends nothing :meth:`due` would not send a tick later.
        None: no wall-clock advance (replay), or some upstream waits for its first input (it goes idle)."""
        if self.advance_slack_s <= 0:
            return None
        own = self.name(partition)
        slack = self.slack_s()
        at = 0.0
        for name, u in self.ups.items():
            if name == own or u.idle:
                continue
            if u.mark <= 0:
                return None
            # _advanced: mark + int((now - last_input - slack) * 1000) > order_ts (ties need one ms more,
            # half a ms against float rounding)
            at = max(at, u.last_input + slack + (order_ts - u.mark + 1.5) / 1000)
        return at or None  # no other active upstream: the incident agent releases them on arrival

    def ended(self, partition: int) -> None:
        """The producer of this partition's input said it has no more: idle now, at its confirmed mark
        (announced by the next :meth:`due`); new input wakes it as after any idleness."""
        u = self.ups.setdefault(self.name(partition), _Upstream(0, 0.0))
        self.busy.discard(self.name(partition))
        u.last_input = float("-inf")

    def forget(self) -> None:
        """After a rebalance: the partitions may belong to another worker now (it announces them)."""
        self.ups.clear()
        self.busy.clear()
