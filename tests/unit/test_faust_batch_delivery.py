"""Faust's drain loop with gridwatch's batch delivery: every fetched record reaches the streams once and in
order, one task per batch; a rebalance (``suspend_flow``) interrupts a blocked batch, and what it had not
delivered is not marked read. A unit test of the one patched function, with a stand-in for the consumer's
other parts (the end-to-end suites run every worker through it)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from mode import Service

from gridwatch.compat import install_faust_batch_delivery

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
        self.block_at: int | None = None  # offset whose delivery waits for ``release``
        self.release = asyncio.Event()
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: False))
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

    async def getmany(self, timeout: float) -> Any:
        self.fetches += 1
        if not self.batches:
            self.fetcher._stopped.set()  # nothing more: the fetcher stops, so does the loop
            return
        for tp, message in self.batches.pop(0):
            yield tp, message


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


def test_a_rebalance_interrupts_a_blocked_batch_and_leaves_the_rest_unread() -> None:
    """(Faust's own loop, run the same way, dropped 6, still delivered 7 and marked 7 read.)"""
    batch = [msg(TP0, 5), msg(TP0, 6), msg(TP0, 7)]
    d = asyncio.run(drain([batch], block_at=6))
    assert d.delivered == [(TP0, 5)]  # 6 was interrupted, 7 never started
    assert d._read_offset[TP0] == 5  # the partition's next owner (or this worker, after the seek) reads 6 again
    assert d.fetches == 2  # the loop went back to fetching, it did not wait for the blocked record
