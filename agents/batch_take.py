"""Take an agent's records in batches straight from its channel: what ``Stream.take_events`` does, without the
per-record machinery in between.

Why: ``take_events`` fills its buffer through the stream's passive drainer, a task that takes one record per
turn of the event loop (Faust's stream iterator awaits ``sleep(0)`` before every record), runs it through a
processor coroutine and the stream's sensors, and wakes the agent on a full buffer or a timeout. In the incident
worker (``bench incidents``) that was 22,460 turns of the event loop for the 17,880 records of the fusion phase
(4,670 with this), and 16 of the 73 µs per input that the worker added to the fusion itself. Here the agent takes
every record its channel already holds (up to ``max_``) in one step, and acks them after its batch.

What Faust's stream does per record is kept: a record of a previous consumer generation (a rebalance came
between fetch and delivery) or one delivered while the flow is stopped is acked without being handed to the
agent, exactly as the stream skips it; a record of an acking topic is tracked as pending until it is acked, so
that the consumer commits past it only then. An exception thrown into the channel reaches the agent, but for the
``StopAsyncIteration`` with which Faust ends its streams on a stop: that ends the batches.
Vision keeps ``take_events``: its batch window feeds an inference thread, and what the stream costs per frame
is small beside the model's work on the frame.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from gridwatch.compat import LaneBatch, LaneRun, ack_lane_runs, lane_gate, raw_lanes


async def take_batches(stream: Any, max_: int, within: float = 0.0, *, lane: bool = False,
                       ) -> AsyncIterator[list[Any]]:
    """Yield lists of up to ``max_`` events of ``stream``'s channel: at least one, waited for, then what
    arrives within ``within`` seconds of it (0: only what is already there). The events of a list are acked
    when the agent asks for the next list. Unlike ``Stream.take_events``, which acks them when the generator is
    closed too, a batch the agent did not finish (it stopped or failed in the middle) stays unacked, so the
    consumer does not commit past it and the next owner of its partitions reads it again.

    ``lane``: the channel's topics (raw bytes, this agent their only subscriber) take the raw lane
    (gridwatch/compat.py): the consumer puts a fetch's records of each partition in the channel as one
    ``LaneRun``, without the conductor, and the agent acks them straight to the consumer, a batch at a time: the
    batch's records are pending in the consumer's unacked set as one entry (``LaneBatch``) until then. The lists
    then hold records, not events: each with ``topic``, ``partition``, ``offset``, ``value`` (the raw bytes) and
    ``headers`` (aiokafka's records from the lane; Faust's Message of a record the conductor delivered, which a
    topic with a second subscriber keeps). A list holds whole runs: up to ``max_`` records and the rest of the
    run that reached it."""
    app = stream.app
    queue = stream.channel.queue
    consumer = app.consumer
    gate = None
    if lane:
        for name in stream.channel.topics:
            raw_lanes(app)[name] = stream.channel
        gate = lane_gate(app, queue)
    flow = app.flow_control
    acking_topics = app.topics.acking_topics

    def taken(item: Any) -> int:
        """How many records ``item`` holds; a run's are counted off its lane's bound as soon as it is taken."""
        if type(item) is not LaneRun:
            return 1
        if gate is not None:
            gate.taken(queue, len(item.records))
        return len(item.records)

    while True:
        try:
            batch = [await queue.get()]
            deadline = time.monotonic() + within if within > 0 else None
            size = taken(batch[0])
            while size < max_:
                if not queue.empty():
                    item = queue.get_nowait()
                elif (left := deadline - time.monotonic() if deadline is not None else 0.0) <= 0:
                    break
                else:
                    try:
                        item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                batch.append(item)
                size += taken(item)
        except StopAsyncIteration:
            return  # Faust ends its streams so when the worker stops: what was taken stays unacked, read again
        live: list[Any] = []
        runs: list[LaneRun] = []  # the raw lane's records, acked together after the batch
        pending = 0  # of them, those the consumer must not commit past before they are acked
        generation = app.consumer_generation_id
        active = flow.is_active()
        for item in batch:
            if type(item) is LaneRun:
                runs.append(item)
                if active and item.generation_id == generation:
                    if item.topic in acking_topics:
                        pending += len(item.records)
                    live += item.records
                continue  # else skipped as below
            message = item.message
            if not active or message.generation_id != generation:
                continue  # skipped as Faust's stream skips it: acked below, never processed
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            live.append(message if lane else item)
        tracked = LaneBatch(consumer, pending) if pending else None  # pending until acked: a rebalance waits
        if live:
            yield live  # closed here (the agent stopped or failed mid-batch): none acked, all read again
        if runs:
            ack_lane_runs(consumer, runs)
            if tracked is not None:
                tracked.done(consumer)
        if len(runs) < len(batch):
            for item in batch:
                if type(item) is not LaneRun:
                    await stream.ack(item)
        await asyncio.sleep(0)  # a full channel: the conductor's delivery runs between batches
