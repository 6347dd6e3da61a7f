"""take_batches: an agent's records in batches straight from its channel. Every record once and in order, up to
``max_`` a batch; acked only after the agent asked for the next batch (a batch it did not finish stays unacked);
records of a previous consumer generation or of a stopped flow acked and never handed over; records of acking
topics tracked. A unit test of the one function, with a stand-in for the stream's app (the end-to-end suites run
every agent through it on a real worker)."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from gridwatch.agents.batch_take import take_batches
from gridwatch.compat import LaneRun, ack_lane_runs, lane_gate, raw_lanes


class Stream:
    """What take_batches reads of a Faust stream: its channel's queue, the app's consumer, flow and topics."""

    def __init__(self, generation: int = 1) -> None:
        self.channel = SimpleNamespace(queue=ThrowableQueue(maxsize=100, flow_control=FlowControlEvent()))
        self.acked: list[int] = []
        self.tracked: list[int] = []
        self.active = True
        self.app = SimpleNamespace(
            consumer=SimpleNamespace(track_message=lambda m: self.tracked.append(m.offset)),
            flow_control=SimpleNamespace(is_active=lambda: self.active),
            topics=SimpleNamespace(acking_topics={"gw.events"}),
            consumer_generation_id=generation)

    def put(self, *offsets: int, topic: str = "gw.events", generation: int = 1) -> None:
        for o in offsets:
            self.channel.queue.put_nowait(SimpleNamespace(message=SimpleNamespace(
                topic=topic, offset=o, generation_id=generation, tracked=False)))

    async def ack(self, event: Any) -> bool:
        self.acked.append(event.message.offset)
        return True


def offsets(batch: list[Any]) -> list[int]:
    return [e.message.offset for e in batch]


def test_takes_what_is_queued_up_to_max_in_order_and_acks_after_the_batch() -> None:
    async def go() -> None:
        s = Stream()
        s.put(*range(7))
        it = take_batches(s, 3)
        assert offsets(await it.__anext__()) == [0, 1, 2]
        assert s.acked == []  # the agent is still on it
        assert offsets(await it.__anext__()) == [3, 4, 5]
        assert s.acked == [0, 1, 2]
        assert offsets(await it.__anext__()) == [6]  # what is there, no waiting for a full batch
        assert s.acked == [0, 1, 2, 3, 4, 5]
        assert s.tracked == list(range(7))
        await it.aclose()
        assert s.acked == [0, 1, 2, 3, 4, 5]  # closed mid-batch: the last batch is read again by the next owner
    asyncio.run(go())


def test_waits_for_a_first_record_then_within_the_window_for_more() -> None:
    async def go() -> None:
        s = Stream()
        it = take_batches(s, 10, within=0.3)
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, s.put, 1)
        loop.call_later(0.1, s.put, 2)
        assert offsets(await it.__anext__()) == [1, 2]
        loop.call_later(0.05, s.put, 3)
        assert offsets(await asyncio.wait_for(it.__anext__(), 5)) == [3]
        s2 = Stream()
        it2 = take_batches(s2, 10)  # no window: only what is there when the first arrives
        loop.call_later(0.05, s2.put, 1)
        loop.call_later(0.15, s2.put, 2)
        assert offsets(await it2.__anext__()) == [1]
        assert offsets(await it2.__anext__()) == [2]
        assert s2.acked == [1]
    asyncio.run(go())


def test_skips_records_of_an_old_generation_or_a_stopped_flow_and_acks_them() -> None:
    async def go() -> None:
        s = Stream(generation=2)
        s.put(1, generation=1)  # fetched before the rebalance
        s.put(2, 3, generation=2)
        it = take_batches(s, 10)
        assert offsets(await it.__anext__()) == [2, 3]
        s.put(4)
        assert s.acked == []
        s.active = False  # a rebalance suspended the flow
        s.put(5, generation=2)
        with pytest.raises(asyncio.TimeoutError):  # nothing to hand over: waits for the next record
            await asyncio.wait_for(it.__anext__(), 0.2)
        assert s.acked == [1, 2, 3, 4, 5]
        assert s.tracked == [2, 3]  # a skipped record was never pending
    asyncio.run(go())


def test_tracks_records_of_acking_topics_once() -> None:
    async def go() -> None:
        s = Stream()
        s.put(1, topic="gw.events")
        s.put(2, topic="gw.reports")  # not an acking topic
        it = take_batches(s, 10)
        batch = await it.__anext__()
        assert offsets(batch) == [1, 2] and s.tracked == [1]
        assert batch[0].message.tracked and not batch[1].message.tracked
    asyncio.run(go())


def test_an_error_thrown_into_the_channel_reaches_the_agent() -> None:
    async def go() -> None:
        s = Stream()
        it = take_batches(s, 10)
        await s.channel.queue.throw(RuntimeError("stream failed"))
        with pytest.raises(RuntimeError, match="stream failed"):
            await it.__anext__()
    asyncio.run(go())


def test_the_stop_faust_throws_into_the_channel_ends_the_batches_and_leaves_what_was_taken_unacked() -> None:
    async def go() -> None:
        s = Stream()
        s.put(1)
        seen = []

        async def agent() -> None:
            async for batch in take_batches(s, 10, within=5.0):
                seen.append(offsets(batch))

        task = asyncio.ensure_future(agent())
        await asyncio.sleep(0.05)
        s.put(2)  # the first batch waits within its window for more
        await s.channel.queue.throw(StopAsyncIteration())  # Faust stopping the worker's streams
        await asyncio.wait_for(task, 5)  # the agent's loop ends; no RuntimeError out of the generator
        assert seen == [] and s.acked == []
    asyncio.run(go())


def faust_consumer(*acking: str) -> Any:
    """A real Faust consumer, never started: its ack bookkeeping (acked offsets, the unacked set) is what the
    lane writes to, and what its commits read."""
    app = faust.App("batch-take-test", broker="kafka://localhost:1")
    app.topics._acking_topics = set(acking)
    return app.consumer


def run_of(topic: str, partition: int, *offsets: int, generation: int = 1) -> LaneRun:
    """A fetch's records of one partition as the lane delivers them: aiokafka's records in one LaneRun."""
    return LaneRun(TopicPartition(topic, partition), [
        ConsumerRecord(topic, partition, o, 0, 0, b"g1", f"v{o}".encode(), None, 2, 2, [("h", b"1")])
        for o in offsets], generation)


class LaneStream(Stream):
    """The stand-in with a raw lane: the channel's topics, and a real Faust consumer for the lane's acks."""

    def __init__(self, generation: int = 1) -> None:
        super().__init__(generation)
        self.channel.topics = ("gw.events", "gw.reports")
        consumer = faust_consumer("gw.events")
        consumer.track_message = self.app.consumer.track_message  # the conductor's events, as Stream records them
        self.app.consumer = self.consumer = consumer

    def put_lane(self, *offsets: int, topic: str = "gw.events", generation: int = 1) -> LaneRun:
        run = run_of(topic, 0, *offsets, generation=generation)
        self.channel.queue.put_nowait(run)
        return run

    def consumer_acked(self, topic: str = "gw.events") -> list[int]:
        return list(self.consumer._acked[TP(topic, 0)])

    def pending(self) -> list[int]:
        """The sizes of the lane batches in the consumer's unacked set (a rebalance waits until it is empty)."""
        return sorted(x.size for x in self.consumer._unacked_messages)


def record_offsets(batch: list[Any]) -> list[int]:
    return [r.offset for r in batch]


def test_a_lane_registers_its_topics_and_hands_over_its_records_in_order_with_the_conductors() -> None:
    async def go() -> None:
        s = LaneStream()
        first = s.put_lane(1, 2)
        s.put(3)  # an Event (the conductor's path) between lane runs keeps its place
        last = s.put_lane(4, topic="gw.reports")
        it = take_batches(s, 10, lane=True)
        batch = await it.__anext__()
        assert raw_lanes(s.app) == {"gw.events": s.channel, "gw.reports": s.channel}
        assert record_offsets(batch) == [1, 2, 3, 4]
        assert batch[:2] == first.records and batch[3:] == last.records  # aiokafka's records themselves
        assert [r.value for r in [*batch[:2], batch[3]]] == [b"v1", b"v2", b"v4"]
        assert not isinstance(batch[2], ConsumerRecord) and batch[2].topic == "gw.events"  # the Event's Message
        assert s.pending() == [2]  # gw.events' two records pending until acked; gw.reports is not an acking topic
        assert s.tracked == [3] and s.consumer_acked() == [] and s.acked == []
        assert not first.acked and not last.acked
        s.put_lane(5)
        await it.__anext__()
        assert s.consumer_acked() == [1, 2] and s.acked == [3]  # the lane's acks go straight to the consumer
        assert first.acked and last.acked and s.consumer._n_acked == 2
        assert s.pending() == [1]  # the first batch's acked; the next one's pending
        waiting = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0.05)  # the agent is done with the batch, and nothing more has come
        assert s.pending() == [] and s.consumer_acked() == [1, 2, 5]
        waiting.cancel()
    asyncio.run(go())


def test_a_lane_batch_holds_whole_runs_up_to_max() -> None:
    async def go() -> None:
        s = LaneStream()
        s.put_lane(1, 2)
        s.put_lane(3, 4)
        s.put_lane(5)
        it = take_batches(s, 4, lane=True)
        assert record_offsets(await it.__anext__()) == [1, 2, 3, 4]  # counted in records, not runs
        assert record_offsets(await it.__anext__()) == [5]
        s.put_lane(6, 7, 8)
        s.put_lane(9, 10)
        s.put_lane(11)
        assert record_offsets(await it.__anext__()) == [6, 7, 8, 9, 10]  # the run that reached 4, whole
        assert record_offsets(await it.__anext__()) == [11]
        assert s.consumer_acked() == list(range(1, 11))
    asyncio.run(go())


def test_a_lane_skips_runs_of_an_old_generation_or_a_stopped_flow_and_acks_them() -> None:
    async def go() -> None:
        s = LaneStream(generation=2)
        stale = s.put_lane(1, generation=1)
        s.put_lane(2, generation=2)
        it = take_batches(s, 10, lane=True)
        assert record_offsets(await it.__anext__()) == [2]
        assert s.pending() == [1]  # the skipped record was never pending
        s.active = False
        s.put_lane(3, generation=2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(it.__anext__(), 0.2)
        assert s.consumer_acked() == [1, 2, 3] and stale.acked
        assert s.pending() == []
    asyncio.run(go())


def test_a_lane_batch_the_agent_did_not_finish_stays_unacked_and_leaves_the_pending_set_with_it() -> None:
    async def go() -> None:
        s = LaneStream()
        sent = s.put_lane(1, 2, 3)
        it = take_batches(s, 10, lane=True)
        await it.__anext__()
        assert s.pending() == [3]
        await it.aclose()  # the agent failed mid-batch
        gc.collect()
        assert s.consumer_acked() == [] and not sent.acked  # read again by the next owner
        assert s.pending() == []  # as a dropped Message leaves Faust's weak set: nothing left to wait for
    asyncio.run(go())


def test_lane_acks_keep_the_books_faust_keeps_for_each_ack() -> None:
    """ack_lane_runs against Faust's own ``Consumer.ack``, record by record, on the same records: acking and
    non-acking topics, offsets below the committed one (a run across it too), an offset acked twice, a run
    acked before."""
    def runs() -> list[LaneRun]:
        out = [run_of("gw.events", 0, 5, 6), run_of("gw.reports", 0, 1), run_of("gw.events", 1, 2),
               run_of("gw.events", 0, 2, 3, 4), run_of("gw.events", 1, 2, 9), run_of("gw.events", 0, 7)]
        out[-1].acked = True
        return out

    books = []
    for lane in (False, True):
        consumer = faust_consumer("gw.events")
        consumer._committed_offset[TP("gw.events", 0)] = 4  # offsets 2 and 3 are below it: not counted again
        rs = runs()
        if lane:
            ack_lane_runs(consumer, rs)
        else:
            for run in rs:
                for r in run.records:
                    m = ConsumerMessage(r.topic, r.partition, r.offset, 0.0, 0, [], r.key, r.value, None)
                    m.acked = run.acked
                    consumer.ack(m)
                run.acked = True
        books.append((dict(consumer._acked), dict(consumer._acked_index), consumer._n_acked, [r.acked for r in rs]))
    assert books[0] == books[1]
    assert books[1][0] == {TP("gw.events", 0): [5, 6, 4], TP("gw.events", 1): [2, 9]} and books[1][2] == 5


class Pressure:
    """What the lane's gate calls on a partition: pause its fetching (high), resume it (drop)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def high(self) -> None:
        self.calls.append("pause")

    def drop(self) -> None:
        self.calls.append("resume")


def test_a_lane_counts_its_bound_in_records_and_the_take_resumes_a_paused_partition() -> None:
    """A queue of 100: pressure from 80 records, drained at 40 (mode's ratios), counted in records however many runs
    hold them; a queue Faust cleared (a resume after a rebalance does) does not count what it held."""
    async def go() -> None:
        s = LaneStream()
        queue, p = s.channel.queue, Pressure()
        gate = lane_gate(s.app, queue)

        def deliver(*offsets: int) -> None:  # as the batch delivery puts a run
            run = s.put_lane(*offsets)
            gate.added(queue, run, p)  # type: ignore[arg-type]
        deliver(*range(50))
        deliver(*range(50, 79))
        assert p.calls == [] and gate.queued == 79
        deliver(79)
        assert p.calls == ["pause"]
        deliver(80, 81)
        assert p.calls == ["pause"]  # paused once
        it = take_batches(s, 10, lane=True)
        assert record_offsets(await it.__anext__()) == list(range(50))  # one run: 10 reached
        assert p.calls == ["pause", "resume"] and gate.queued == 32  # 82 - 50: at 40 or below
        deliver(*range(82, 130))
        assert p.calls == ["pause", "resume", "pause"] and gate.queued == 80
        queue.clear()  # Faust's flow control clears the queue on a resume: those 80 are never taken
        deliver(130)
        assert gate.queued == 1
        assert record_offsets(await it.__anext__()) == [130]
        assert p.calls == ["pause", "resume", "pause", "resume"] and gate.queued == 0
    asyncio.run(go())
