"""Event-time merge of grid events from many upstream partitions (Flink / Kafka Streams style), no Kafka here.

Why: the incident agent's input partition (keyed by grid code) receives the grid events of one grid from
several readings partitions (sharded by device / lamp circuit), interleaved differently on every run.
Fusion depends on order (the incident id comes from the first source), so the agent must apply events
in an order that does not depend on that interleaving.

How: every grid event carries (upstream, order ts): the readings partition it came from and that
partition's event-time high mark when the event was raised (monotone per upstream). Within one upstream,
events arrive in emission order (Kafka keeps per-partition order and one producer writes them). Each
upstream also sends watermarks: "no event I send later has an order ts below wm". The buffer releases
events in (order ts, upstream, arrival seq) order once no other active upstream can still send one that
sorts before them (:meth:`MergeBuffer.ready`: its watermark is above the event's order ts, or equal with a
name that sorts after; the event's own upstream never holds it back, its later events sort after). An
upstream that says it is idle does not hold the others back (Flink's ``withIdleness``); its next event
or watermark makes it active again. With no active upstream everything buffered is released.

Late: an event whose order ts is below what was already released (only possible around idleness,
a worker fail-over or an upstream first heard of late) is not buffered; the caller applies it at once
and counts it. A re-delivered event is no different: it is late or buffered again, and the incident
processor recognises it as a duplicate when it is applied.

Crash safety: buffered events and the upstream marks are written to the caller's table (``q:<p>:<seq>``
and ``up:<p>``, through the same ``writes`` dict the incident processor persists after its changes are
confirmed) and restored by :meth:`MergeBuffer.restore`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gridwatch.pipeline.schemas.codec import dumps, loads

Writes = dict[str, tuple[int, bytes | None]]  # table key -> (changelog partition, value; None deletes)


@dataclass(order=True)
class Pending:
    order_ts: int
    upstream: str
    seq: int  # arrival order in this partition (emission order within one upstream)
    raw: bytes = field(compare=False)
    item: Any = field(compare=False)  # the decoded input


@dataclass
class Upstream:
    wm: int
    idle: bool = False


def queue_key(partition: int, seq: int) -> str:
    return f"q:{partition}:{seq:012d}"


def state_key(partition: int) -> str:
    return f"up:{partition}"


def forget(writes: Writes, partition: int, key: str) -> None:
    """Delete a table key that held something waiting; if it was queued in this same batch, it is never written."""
    if writes.get(key, (0, None))[1] is not None:
        del writes[key]
    else:
        writes[key] = (partition, None)


class MergeBuffer:
    """The merge of one input partition: upstream marks, buffered inputs, what was released."""

    def __init__(self, partition: int, decode: Callable[[bytes], Any]) -> None:
        self.partition = partition
        self.decode = decode
        self.upstreams: dict[str, Upstream] = {}
        self.heap: list[Pending] = []
        self.seq = 0
        self.frontier: int | None = None  # highest order ts released so far
        self.late = 0  # inputs below the frontier (applied at once, out of order)
        self.dirty = False  # upstream marks / counters changed since the last flush

    # -- inputs ---------------------------------------------------------------------------------
    def mark(self, upstream: str, wm: int, idle: bool = False) -> None:
        """An upstream's watermark (or idle marker). Marks only move forward."""
        u = self.upstreams.get(upstream)
        if u is None:
            self.upstreams[upstream] = Upstream(wm, idle)
            self.dirty = True
        elif wm > u.wm or idle != u.idle:
            u.wm, u.idle = max(u.wm, wm), idle
            self.dirty = True

    def push(self, upstream: str, order_ts: int, raw: bytes, item: Any, writes: Writes) -> bool:
        """Buffer an input; False when it is late (its order ts is below what was released): apply it now.

        An input is a watermark of its upstream too (nothing it sends later is ordered before it), and
        it re-activates an upstream that said it was idle.
        """
        self.mark(upstream, order_ts)
        if self.frontier is not None and order_ts < self.frontier:
            self.late += 1
            self.dirty = True
            return False
        p = Pending(order_ts, upstream, self.seq, raw, item)
        self.seq += 1
        self.dirty = True
        heapq.heappush(self.heap, p)
        writes[queue_key(self.partition, p.seq)] = (self.partition, dumps(
            {"up": upstream, "t": order_ts, "seq": p.seq, "raw": raw.decode()}))
        return True

    # -- output ---------------------------------------------------------------------------------
    def merged(self) -> int | None:
        """The minimum watermark of the active upstreams; None when none is active."""
        active = [u.wm for u in self.upstreams.values() if not u.idle]
        return min(active) if active else None

    def clock(self) -> int | None:
        """Event time the whole partition has reached: the merged watermark, or with every upstream
        idle the highest mark (all they sent is in). None before any upstream was heard of."""
        m = self.merged()
        if m is not None:
            return m
        return max((u.wm for u in self.upstreams.values()), default=None)

    def ready(self, p: Pending) -> bool:
        """Can no input still to come sort before ``p``?  Its own upstream cannot (per-upstream FIFO with
        monotone order ts); another active upstream cannot once its watermark is above p's order ts, or
        equal to it with a name that sorts after p's (ties go by upstream name). So an event waits only
        for the *other* upstreams, never for its own partition's next reading."""
        for name, u in self.upstreams.items():
            if u.idle or name == p.upstream:
                continue
            if u.wm < p.order_ts or (u.wm == p.order_ts and name < p.upstream):
                return False
        return True

    def release(self, writes: Writes) -> Iterator[Pending]:
        """Pop every input that can no longer be preceded by one still to come, in merge order."""
        while self.heap and self.ready(self.heap[0]):
            p = heapq.heappop(self.heap)
            if self.frontier is None or p.order_ts > self.frontier:
                self.frontier = p.order_ts
                self.dirty = True
            forget(writes, self.partition, queue_key(self.partition, p.seq))
            yield p

    def __len__(self) -> int:
        return len(self.heap)

    def head(self) -> int | None:
        """The order ts of the first input still buffered; None when nothing is."""
        return self.heap[0].order_ts if self.heap else None

    # -- persistence ----------------------------------------------------------------------------
    def flush(self, writes: Writes) -> None:
        """Queue the upstream marks for the table if they changed (buffered inputs are written by push)."""
        if self.dirty:
            writes[state_key(self.partition)] = (self.partition, dumps({
                "ups": {n: [u.wm, int(u.idle)] for n, u in sorted(self.upstreams.items())},
                "seq": self.seq, "frontier": self.frontier, "late": self.late}))
            self.dirty = False

    def restore(self, items: Iterable[tuple[str, Any]]) -> None:
        """Rebuild from the table's keys of this partition (others are ignored)."""
        qprefix, skey = f"q:{self.partition}:", state_key(self.partition)
        for key, value in items:
            if not value or not isinstance(key, str):
                continue
            if key == skey:
                d = loads(value)
                self.upstreams = {n: Upstream(int(m[0]), bool(m[1])) for n, m in d.get("ups", {}).items()}
                self.seq = max(self.seq, int(d.get("seq", 0)))
                self.frontier = d.get("frontier")
                self.late = int(d.get("late", 0))
            elif key.startswith(qprefix):
                d = loads(value)
                raw = d["raw"].encode()
                heapq.heappush(self.heap, Pending(int(d["t"]), d["up"], int(d["seq"]), raw, self.decode(raw)))
                self.seq = max(self.seq, int(d["seq"]) + 1)
        self.dirty = False
