"""Faust's drain loop with gridwatch's batch delivery: every fetched record reaches the streams once and in
order, one task per batch; a rebalance (``suspend_flow``) interrupts a blocked batch, and what it had not
delivered is not marked read. A unit test of the one patched function, with a stand-in for the consumer's
other parts (the end-to-end suites run every worker through it)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from faust.transport.consumer import Consumer
from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP
from mode import Service
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from gridwatch.compat import fetched_batch, install_faust_batch_delivery, lane_gate, raw_lanes

TP0, TP1 = TP("x.events", 0), TP("x.events", 1)


class Fetcher(Service):
    pass


class Drain(Service):
    """The parts of faust's Consumer that ``_drain_messages`` reads."""

    def __init__(self, batches: list[list[tuple[TP, Any]]], fetcher: Fetcher) -> None:
        super().__init__()
        self.batches, self.fetcher = batches, fetcher
        self.delivered: list[tuple[TP, int]] = []
        self.fetches = 0
        self.end_offsets: dict[TP, int] = {}
        self.flow_active = True
        self.active: set[TP] | None = None  # the assigned partitions the fetch reports (None: those fetched)
        self._buffered_partitions: set[TP] = set()
        self.scheduler = DefaultSchedulingStrategy()
        self.block_at: int | None = None  # offset whose delivery waits for ``release``
        self.release = asyncio.Event()
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: False),
                                   monitor=SimpleNamespace(track_tp_end_offset=self.end_offsets.__setitem__),
                                   consumer_generation_id=1)
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self.suspend_flow = asyncio.Event()
        self.consumer_stopped_errors = ()
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.tasks: list[Any] = []  # the tasks that delivered, each once (held, so no id is reused)

    async def callback(self, message: Any) -> None:
        task = asyncio.current_task()
        if not any(t is task for t in self.tasks):
            self.tasks.append(task)
        if message.offset == self.block_at:
            await self.release.wait()
        self.delivered.append((message.tp, message.offset))

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Any]], set[TP]]:
        """One fetch: the next batch's records by partition, as aiokafka's fetch returns them."""
        self.fetches += 1
        if not self.batches:
            self.fetcher._stopped.set()  # nothing more: the fetcher stops, so does the loop
            return {}, set()
        records: dict[TP, list[Any]] = {}
        for tp, message in self.batches.pop(0):
            records.setdefault(tp, []).append(message)
        return records, set(records) if self.active is None else self.active

    def _to_message(self, tp: TP, record: Any) -> Any:
        return record  # the stand-in's records are Messages already

    def highwater(self, tp: TP) -> int:
        return 100 + tp.partition


def msg(tp: TP, offset: int) -> tuple[TP, Any]:
    return tp, SimpleNamespace(tp=tp, topic=tp.topic, offset=offset)


async def drain(batches: list[list[tuple[TP, Any]]], block_at: int | None = None) -> Drain:
    install_faust_batch_delivery()
    d = Drain(batches, Fetcher())
    d.block_at = block_at
    task = asyncio.ensure_future(Consumer._drain_messages(d, d.fetcher))
    if block_at is not None:
        while not any(o == block_at - 1 for _, o in d.delivered):
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # the batch now waits in the delivery of ``block_at``
        d.suspend_flow.set()  # a rebalance starts
    await asyncio.wait_for(task, 5)
    return d


def test_every_record_is_delivered_once_in_order_one_task_per_batch() -> None:
    batches = [[msg(TP0, 0), msg(TP1, 0), msg(TP0, 1)], [msg(TP0, 2), msg(TP1, 1)]]
    d = asyncio.run(drain([list(b) for b in batches]))
    assert d.delivered == [(tp, m.offset) for b in batches for tp, m in b]
    assert dict(d._read_offset) == {TP0: 2, TP1: 1}
    assert len(d.tasks) == 2  # one per fetched batch (Faust made one per record)


def test_records_read_before_are_not_delivered_again_and_a_gap_is_noted() -> None:
    """As Faust's loop: after a seek back, an offset below the read one is not handed over again; a jump in an
    acking topic's offsets is noted as a gap before the record after it."""
    async def go() -> Drain:
        install_faust_batch_delivery()
        d = Drain([[msg(TP0, 4), msg(TP0, 5), msg(TP0, 6), msg(TP1, 9)]], Fetcher())
        d._read_offset[TP0] = 5
        d._read_offset[TP1] = 6
        d.gaps = []

        async def add_gap(tp: TP, start: int, end: int) -> None:
            d.gaps.append((tp, start, end))
        d._add_gap = add_gap
        d.app.topics.acks_enabled_for = lambda topic: True
        await asyncio.wait_for(Consumer._drain_messages(d, d.fetcher), 5)
        return d
    d = asyncio.run(go())
    assert sorted(d.delivered) == [(TP0, 5), (TP0, 6), (TP1, 9)]  # 4 was read before
    assert d.gaps == [(TP1, 7, 9)] and dict(d._read_offset) == {TP0: 6, TP1: 9}


def test_a_fetch_is_taken_as_faust_getmany_yields_it() -> None:
    """fetched_batch against Faust's own getmany on the same fetches: the same messages in the same (round-robin)
    order, a partition no longer assigned left out, the end offsets noted; nothing while the flow is stopped."""
    reports = TP("x.reports", 0)
    gone = TP("x.events", 7)  # fetched, then revoked before the fetch returned

    def fetches() -> list[list[tuple[TP, Any]]]:
        return [[msg(TP0, 0), msg(TP0, 1), msg(TP1, 0), msg(reports, 3), msg(gone, 9), msg(TP1, 1), msg(reports, 4)]]

    async def go() -> None:
        taken = []
        for take in ("faust", "gridwatch"):
            d = Drain(fetches(), Fetcher())
            d.active = {TP0, TP1, reports}
            got = [x async for x in Consumer.getmany(d, 1.0)] if take == "faust" else await fetched_batch(d, 1.0)
            taken.append(([(tp, m.offset) for tp, m in got], d.end_offsets))
        assert taken[0] == taken[1]
        assert taken[1][0] == [(TP0, 0), (reports, 3), (TP1, 0), (reports, 4), (TP0, 1), (TP1, 1)]
        assert taken[1][1] == {TP0: 100, TP1: 101, reports: 100}
        d = Drain(fetches(), Fetcher())
        d.flow_active = False  # a rebalance stopped the flow while the fetch waited: Faust seeks back instead
        seeks = []

        async def perform_seek() -> None:
            seeks.append(1)
        d.perform_seek = perform_seek
        assert await fetched_batch(d, 1.0) == [] and seeks == [1]
        d = Drain(fetches(), Fetcher())
        d.active = {TP0, TP1, reports}
        got = await fetched_batch(d, 1.0, {"x.events"})  # a raw lane's topic: one run per partition, first
        assert [(tp, type(x).__name__) for tp, x in got] == [(TP0, "LaneRun"), (TP1, "LaneRun"),
                                                             (reports, "SimpleNamespace"), (reports, "SimpleNamespace")]
        assert [[r.offset for r in x.records] for _, x in got[:2]] == [[0, 1], [0, 1]]
        assert [x.offset for _, x in got[2:]] == [3, 4] and got[0][1].generation_id == 1
        assert d.end_offsets == {TP0: 100, TP1: 101, reports: 100}  # the revoked partition left out, as above
    asyncio.run(go())


def test_a_rebalance_interrupts_a_blocked_batch_and_leaves_the_rest_unread() -> None:
    """(Faust's own loop, run the same way, dropped 6, still delivered 7 and marked 7 read.)"""
    batch = [msg(TP0, 5), msg(TP0, 6), msg(TP0, 7)]
    d = asyncio.run(drain([batch], block_at=6))
    assert d.delivered == [(TP0, 5)]  # 6 was interrupted, 7 never started
    assert d._read_offset[TP0] == 5  # the partition's next owner (or this worker, after the seek) reads 6 again
    assert d.fetches == 2  # the loop went back to fetching, it did not wait for the blocked record


class Channel:
    """A subscriber of a topic in the conductor's index (hashable, as Faust's channels are)."""

    def __init__(self, queue: Any = None) -> None:
        self.queue = queue


class Lanes(Drain):
    """The same loop with a raw lane registered for ``x.events`` (agents/batch_take.py, ``lane=True``): the parts
    of the app that the lane reads besides."""

    def __init__(self, batches: list[list[tuple[TP, Any]]], subscribers: int = 1, maxsize: int = 100) -> None:
        super().__init__(batches, Fetcher())
        self.channel = Channel(ThrowableQueue(maxsize=maxsize, flow_control=FlowControlEvent()))
        self.channel.queue._flow_control.resume()
        others = {Channel() for _ in range(subscribers - 1)}
        self.paused: list[TP] = []
        self.resumed: list[TP] = []
        self.flow_waits = 0

        async def acquire() -> None:
            self.flow_waits += 1

        async def ebb() -> None:
            return None

        self.app = SimpleNamespace(
            monitor=self.app.monitor, consumer_generation_id=1,
            topics=SimpleNamespace(acks_enabled_for=lambda topic: False,
                                   _topic_name_index={"x.events": {self.channel, *others}}),
            flow_control=SimpleNamespace(acquire=acquire), producer=SimpleNamespace(buffer=SimpleNamespace(
                wait_until_ebb=ebb)), sensors=SimpleNamespace(on_topic_buffer_full=lambda tp: None),
            consumer=SimpleNamespace(on_buffer_full=self.pause, on_buffer_drop=self.resume))
        raw_lanes(self.app)["x.events"] = self.channel

    def pause(self, tp: Any) -> None:
        assert isinstance(tp, TP), tp  # Faust's consumer asserts it too, when it pauses or resumes partitions
        self.paused.append(tp)

    def resume(self, tp: Any) -> None:
        assert isinstance(tp, TP), tp
        self.resumed.append(tp)


def lane_msg(tp: TP, offset: int) -> tuple[TP, Any]:
    return tp, SimpleNamespace(tp=tp, topic=tp.topic, offset=offset)


async def drain_lanes(d: Lanes) -> Lanes:
    install_faust_batch_delivery()
    await asyncio.wait_for(Consumer._drain_messages(d, d.fetcher), 5)
    return d


def runs_of(queue: Any) -> list[tuple[TP, list[int]]]:
    return [(run.tp, [r.offset for r in run.records]) for run in (queue.get_nowait() for _ in range(queue.qsize()))]


def test_a_raw_lane_takes_its_topic_records_into_the_channel_and_the_rest_goes_through_the_conductor() -> None:
    reports = TP("x.reports", 0)
    batches = [[lane_msg(TP0, 0), lane_msg(reports, 0), lane_msg(TP1, 0)], [lane_msg(TP0, 1)]]
    d = asyncio.run(drain_lanes(Lanes([list(b) for b in batches])))
    first = d.channel.queue._queue[0]
    assert first.records[0] is batches[0][0][1]  # the fetched records themselves, no Message built
    assert runs_of(d.channel.queue) == [(TP0, [0]), (TP1, [0]), (TP0, [1])]  # a run per partition and fetch
    assert d.delivered == [(reports, 0)]  # the conductor's callback saw only the other topic
    assert dict(d._read_offset) == {TP0: 1, TP1: 0, reports: 0}  # read offsets as for every record
    assert d.flow_waits == 2  # the flow control, once per delivered batch


def test_a_lane_run_keeps_gaps_and_read_offsets_as_faust_keeps_them_per_record() -> None:
    """A gap inside a run is noted (for an acking topic); after a seek back, what was read is not handed over
    again (an offset below the read one), as Faust's loop skips it record by record."""
    d = Lanes([[lane_msg(TP0, o) for o in (0, 1, 3)], [lane_msg(TP0, o) for o in (2, 3, 4)],
               [lane_msg(TP1, o) for o in (7, 8)]])
    gaps: list[tuple[TP, int, int]] = []

    async def add_gap(tp: TP, start: int, end: int) -> None:
        gaps.append((tp, start, end))
    d._add_gap = add_gap
    d._read_offset[TP1] = 5  # read up to 5 before: 6 is missing
    d.app.topics.acks_enabled_for = lambda topic: True
    asyncio.run(drain_lanes(d))
    assert gaps == [(TP0, 2, 3), (TP1, 6, 7)]
    assert runs_of(d.channel.queue) == [(TP0, [0, 1, 3]), (TP0, [3, 4]), (TP1, [7, 8])]
    assert dict(d._read_offset) == {TP0: 4, TP1: 8}


def test_a_topic_with_a_second_subscriber_keeps_the_conductor() -> None:
    batch = [lane_msg(TP0, 0), lane_msg(TP0, 1)]
    d = asyncio.run(drain_lanes(Lanes([list(batch)], subscribers=2)))
    assert d.channel.queue.qsize() == 0
    assert d.delivered == [(TP0, 0), (TP0, 1)]


def test_a_filling_lane_pauses_its_partition_and_a_drained_one_resumes_it() -> None:
    """A lane of 10 records: under pressure from 8 (mode's 1.25 ratio), counted in records, not in the runs its
    queue holds; drained at 4 (0.4), as the agent takes runs. The fetched batch is keyed by aiokafka's
    TopicPartition, as the consumer's is."""
    fetched = TopicPartition(TP0.topic, TP0.partition)
    d = asyncio.run(drain_lanes(Lanes([[lane_msg(fetched, o) for o in range(5)],
                                       [lane_msg(fetched, o) for o in range(5, 9)]], maxsize=10)))
    assert d.paused == [TP0] and d.resumed == []
    q = d.channel.queue
    gate = lane_gate(d.app, q)
    assert gate.queued == 9 and q.qsize() == 2
    q.get_nowait()
    gate.taken(q, 5)
    assert d.resumed == [TP0] and gate.queued == 4
    q.get_nowait()
    gate.taken(q, 4)
    assert gate.queued == 0 and d.resumed == [TP0]
