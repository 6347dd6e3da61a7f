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

from faust.types import Message

from gridwatch.compat import LaneBatch, ack_lane_messages, raw_lanes


class LaneEvent:
    """A record of a raw lane as the agent sees it: the Faust Message and its value (raw bytes), as an Event
    of a raw topic would carry them."""

    __slots__ = ("message", "value")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.value = message.value


async def take_batches(stream: Any, max_: int, within: float = 0.0, *, lane: bool = False,
                       ) -> AsyncIterator[list[Any]]:
    """Yield lists of up to ``max_`` events of ``stream``'s channel: at least one, waited for, then what
    arrives within ``within`` seconds of it (0: only what is already there). The events of a list are acked
    when the agent asks for the next list. Unlike ``Stream.take_events``, which acks them when the generator is
    closed too, a batch the agent did not finish (it stopped or failed in the middle) stays unacked, so the
    consumer does not commit past it and the next owner of its partitions reads it again.

    ``lane``: the channel's topics (raw bytes, this agent their only subscriber) take the raw lane
    (gridwatch/compat.py): the consumer puts their Messages in the channel without the conductor, and the agent
    gets ``LaneEvent``s (``.message``, ``.value``) and acks them straight to the consumer, a batch at a time: the
    batch's records are pending in the consumer's unacked set as one entry (``LaneBatch``) until then."""
    app = stream.app
    queue = stream.channel.queue
    consumer = app.consumer
    if lane:
        for name in stream.channel.topics:
            raw_lanes(app)[name] = stream.channel
    flow = app.flow_control
    acking_topics = app.topics.acking_topics
    while True:
        try:
            batch = [await queue.get()]
            deadline = time.monotonic() + within if within > 0 else None
            while len(batch) < max_:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                left = deadline - time.monotonic() if deadline is not None else 0.0
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
        except StopAsyncIteration:
            return  # Faust ends its streams so when the worker stops: what was taken stays unacked, read again
        live = []
        lane: list[Message] = []  # the raw lane's records, acked together after the batch
        pending = 0  # of them, those the consumer must not commit past before they are acked
        generation = app.consumer_generation_id
        active = flow.is_active()
        for event in batch:
            if isinstance(event, Message):  # a raw lane's record
                lane.append(event)
                if active and event.generation_id == generation:
                    if event.topic in acking_topics:
                        pending += 1
                    live.append(LaneEvent(event))
                continue  # else skipped as below
            message = event.message
            if not active or message.generation_id != generation:
                continue  # skipped as Faust's stream skips it: acked below, never processed
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            live.append(event)
        tracked = LaneBatch(consumer, pending) if pending else None  # pending until acked: a rebalance waits
        if live:
            yield live  # closed here (the agent stopped or failed mid-batch): none acked, all read again
        if lane:
            ack_lane_messages(consumer, lane)
            if tracked is not None:
                tracked.done(consumer)
        if len(lane) < len(batch):
            for event in batch:
                if not isinstance(event, Message):
                    await stream.ack(event)
        await asyncio.sleep(0)  # a full channel: the conductor's delivery runs between batches
