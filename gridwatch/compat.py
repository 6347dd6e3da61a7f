"""Every patch gridwatch applies to third-party code, in one place, each checked on named versions.

A patch reaches into another project's internals, so it is only right for the versions it was read
against (:data:`CHECKED`, the same versions ``constraints.txt`` pins and ``./run`` installs). On any
other version a patch refuses to install with a :class:`CompatError` that says what to do, instead of
silently doing the wrong thing; ``GRIDWATCH_ALLOW_UNCHECKED_VERSIONS=1`` applies it anyway (logged).

* :func:`install_faust_seek_fix` — Faust loses stream records when it resumes partitions after a
  rebalance (any broker).
* :func:`install_faust_event_path_fix` — Faust's livelock check reads a position aiokafka 0.14 asserts
  (a worker crashed on Apache Kafka in a fail-over; any broker).
* :func:`install_faust_rebalance_wait_fix` — a rebalance waits until the group expels the worker for
  a record that one agent took and another agent's cleared buffer dropped (any broker).
* :func:`install_faust_changelog_pause_fix` — a changelog partition Faust paused is still fetched;
  each one's first new record held every partition's fetch back 100 ms (alert latency; any broker).
* :func:`install_faust_batch_delivery` — Faust delivers every fetched record to the streams through four
  new tasks; one task per fetched batch cut the incident worker's CPU per input by about a fifth (any broker).
* :func:`install_faust_event_class_cache` — Faust looks its Event class up in the settings for every record
  it delivers; once per app is enough (any broker).
* :func:`install_faust_raw_passthrough` — a raw topic's bytes go through Faust's codec registry and back
  unchanged for every record; they are handed over as they are (any broker).
* :func:`install_tansu_shims` — the embedded Tansu broker's ListOffsets answer and its slow waiting
  Fetch (only with ``kafka.tansu_quirks``).
* :func:`limit_plate_sessions` — agentclpr/agentocr build their ONNX sessions with every core and no
  thread setting; their sessions (and no one else's) get the plate reader's thread limit.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gridwatch.core.settings import KafkaSettings
from gridwatch.pipeline.kafka_io import fetch_highwaters

log = logging.getLogger("gridwatch.compat")

# The distribution versions each patch was read against and tested on (keep in step with constraints.txt).
CHECKED: dict[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.3",),
    "aiokafka": ("0.14.0",),
    "mode-streaming": ("0.7.1",),
    "agentclpr": ("1.1.0",),
    "agentocr": ("2.0.0",),
}
UNCHECKED_ENV = "GRIDWATCH_ALLOW_UNCHECKED_VERSIONS"
FETCH_MAX_WAIT_MS = 20
_installed: set[str] = set()


class CompatError(RuntimeError):
    """A patch was asked to install on a version of its target it was not checked on."""


def require_checked(patch: str, *dists: str) -> None:
    """Refuse (``CompatError``) unless every distribution ``patch`` touches is at a checked version."""
    for dist in dists:
        try:
            have = version(dist)
        except PackageNotFoundError:
            raise CompatError(f"{patch}: {dist} is not installed") from None
        if have in CHECKED[dist]:
            continue
        msg = (f"{patch} patches {dist} internals and was checked on {dist} {', '.join(CHECKED[dist])} only; "
               f"this environment has {have}. Install the checked versions (`pip install -c constraints.txt "
               f"-e .`, which ./run does), or re-check the patch against {have} and add it to "
               f"gridwatch.compat.CHECKED. {UNCHECKED_ENV}=1 applies it anyway.")
        if os.environ.get(UNCHECKED_ENV) == "1":
            log.warning("%s (applied anyway: %s=1)", msg, UNCHECKED_ENV)
            continue
        raise CompatError(msg)


# ---------------------------------------------------------------------------------- Faust resume fix


def install_faust_seek_fix() -> None:
    """Make Faust lose no stream record when it resumes partitions after a rebalance. Idempotent.

    Once table recovery is done, Faust (``Recovery.on_recovery_completed``, or ``_resume_streams``
    without tables) resumes the stream partitions, seeks them to their committed offsets, then resumes
    flow control, which clears every stream buffer. The consumer's flow is already active then (it
    was resumed to read the changelogs), so the fetcher hands records to the streams throughout:

    * records handed over *before* the seek are cleared, and read again only if the seek moves the
      partition back: aiokafka's ``seek_to_committed`` leaves a partition without a committed offset
      (never consumed, e.g. operator actions produced while every worker was down) where the fetch
      left it, past them. Fix 1: seek such partitions to the beginning (``auto_offset_reset=earliest``).
    * records handed over *after* the seek and still queued when the buffers are cleared are lost on
      every partition: the position is already past them. Seen as a survivor of a two-worker fail-over
      that never handles 1-4 records of the dead worker's partitions, and as an operator action sent
      during a restart that is never applied (logged: ``perform_seek end`` then ``clear drops 3:
      readings[6]@1, readings[4]@1, readings[5]@1``, none of them fetched again). Fix 2: stop the
      consumer's flow for the whole resume, so nothing is handed over until the seek and the clear are
      done; the original resumes the flow at its end.

    Downstream dedupes what is read twice.
    """
    if "faust_seek_fix" in _installed:
        return
    require_checked("the Faust resume fix", "faust-streaming", "aiokafka")
    from faust.tables.recovery import Recovery
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread.seek_to_committed

    async def seek_to_committed(self):  # type: ignore[no-untyped-def]
        committed = await original(self)
        fresh = [tp for tp, offset in committed.items()
                 if not offset and not tp.topic.endswith("-changelog") and "__assignor" not in tp.topic]
        if fresh:
            await self.call_thread(self._ensure_consumer().seek_to_beginning, *fresh)
        return committed

    driver.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed
    Recovery.on_recovery_completed = _flow_held(Recovery.on_recovery_completed)
    Recovery._resume_streams = _flow_held(Recovery._resume_streams)
    _installed.add("faust_seek_fix")


def _flow_held(resume: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Wrap a Faust ``Recovery`` resume step so that the consumer hands no record over while it runs.

    ``stop_flow`` (as Faust's own revoke does) also cancels a hand-over in progress, so no stale read
    offset lands after the seek; the seek rewinds whatever was handed over before.
    """

    async def held(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        consumer.stop_flow()
        try:
            await resume(self, generation_id)
        finally:
            # The original resumes the flow unless a newer rebalance overtook it; that one's recovery
            # resumes it then. On an error in this generation, leave the flow as the original would.
            if not consumer.flow_active and self.app.consumer_generation_id == generation_id:
                consumer.resume_flow()

    return held


# ------------------------------------------------------------------------- Faust changelog pause fix


def install_faust_changelog_pause_fix() -> None:
    """Stop the consumer fetching the table changelog partitions Faust has paused. Idempotent.

    Faust "pauses" a partition only in its own bookkeeping (it leaves it out of the partitions it takes
    records of); aiokafka still fetches it. A worker's own table writes therefore land in aiokafka's
    fetch buffer, where nobody takes them, and aiokafka holds the next fetch request for the node
    (``prefetch_backoff``, 100 ms) waiting for them to be taken: every partition of that broker, the
    readings and the events too, waits. That happens once per changelog partition, the first time it
    gets a record the fetcher has not parked yet, so after a start or a quiet period each alert-marker
    and sent-marker partition's first write stalled the fetch once: bench telemetry, publish -> alert
    p99 145-189 ms over the first ~8 s of alerts (fetcher trace: 100 ms with no fetch request each time
    a new ``...-changelog`` partition appeared in the buffer), 64-87 ms after.

    The fix mirrors Faust's pause of changelog partitions into aiokafka (``pause``/``resume``) in the
    consumer thread, right before each take of records, so a paused changelog is not fetched at all.
    Stream partitions are left as they are; a changelog Faust reads (recovery, standby) is resumed.
    """
    if "changelog_pause" in _installed:
        return
    require_checked("the changelog pause fix", "faust-streaming", "aiokafka")
    from faust.transport.consumer import Consumer
    from faust.transport.drivers import aiokafka as driver

    pause, resume = Consumer.pause_partitions, Consumer.resume_partitions

    def pause_partitions(self, tps):  # type: ignore[no-untyped-def]
        pause(self, tps)
        self._gw_pauses = getattr(self, "_gw_pauses", 0) + 1

    def resume_partitions(self, tps):  # type: ignore[no-untyped-def]
        resume(self, tps)
        self._gw_pauses = getattr(self, "_gw_pauses", 0) + 1

    original = driver.AIOKafkaConsumerThread._fetch_records

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):  # type: ignore[no-untyped-def]
        sync_changelog_pauses(self.consumer, consumer)
        return await original(self, consumer, active_partitions, timeout=timeout, max_records=max_records)

    Consumer.pause_partitions = pause_partitions
    Consumer.resume_partitions = resume_partitions
    driver.AIOKafkaConsumerThread._fetch_records = _fetch_records
    _installed.add("changelog_pause")


def sync_changelog_pauses(faust_consumer: Any, consumer: AIOKafkaConsumer) -> None:
    """Pause in aiokafka the changelog partitions Faust has paused, resume the others; on the consumer's
    own thread (aiokafka's pause makes a future of that loop). Only when Faust's pauses or the
    assignment changed since the last call (it runs before every take of records)."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return
    key = (getattr(faust_consumer, "_gw_pauses", 0), id(assignment))
    if getattr(consumer, "_gw_pause_key", None) == key:
        return
    paused = set(faust_consumer._paused_partitions)  # one copy: Faust's loop changes it on its own thread
    changelogs = faust_consumer.app.tables.changelog_topics
    for tp in assignment.tps:
        if tp.topic not in changelogs:
            continue
        state = assignment.state_value(tp)
        if (tp.topic, tp.partition) in paused:
            if not state.paused:
                consumer.pause(tp)
        elif state.paused:
            consumer.resume(tp)
    consumer._gw_pause_key = key  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- Tansu shims


async def true_highwaters(bootstrap: str | list[str], ends: Mapping[TopicPartition, int],
                          timeout: float = 4.0) -> dict[TopicPartition, int]:
    """High watermarks for partitions, given a ListOffsets answer that may be too low.

    Tansu 0.6 (memory storage) answers ListOffsets(latest) with "base offset of the last record batch
    + 1" instead of the log end offset once producers batch records; a Fetch response carries the true
    high watermark, so read the last batch once (:func:`fetch_highwaters`) and take the larger.
    """
    result = dict(ends)
    todo = [tp for tp, end in ends.items() if end > 0]
    if not todo:
        return result
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await c.start()
    try:
        c.assign(todo)
        for tp in todo:
            c.seek(tp, max(ends[tp] - 1, 0))
        seen = await fetch_highwaters(c, todo, timeout)
        missing = [tp for tp in todo if c.highwater(tp) is None]
        for tp in todo:
            result[tp] = max(seen[tp], ends[tp])
        if missing:
            log.warning("could not read high watermark of %s; using ListOffsets", sorted(map(str, missing)))
    finally:
        await c.stop()
    return result


def install_tansu_shims() -> None:
    """Patch Faust's aiokafka driver for the embedded Tansu broker (idempotent).

    * Faust reads table changelogs up to the ListOffsets answer during recovery, which Tansu gives too
      low (see :func:`true_highwaters`): a restarted worker would lose table updates.
    * Tansu does not answer a waiting Fetch when new records arrive: the consumer sits out the whole
      ``fetch_max_wait_ms`` (Faust hard-codes 1500 ms), measured as +0.2..0.6 s per hop. A short wait
      (:data:`FETCH_MAX_WAIT_MS`) brings a hop back to a few ms at the cost of more idle fetches.

    Real Apache Kafka needs neither; installed only when ``settings.kafka.quirks_enabled()``.
    """
    if "tansu_shims" in _installed:
        return
    require_checked("the Tansu shims", "faust-streaming", "aiokafka")
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self, partitions):  # type: ignore[no-untyped-def]
        if self.consumer.in_transaction:
            return await original(self, partitions)
        consumer = self._ensure_consumer()
        ends = await consumer.end_offsets(partitions)
        return await true_highwaters(consumer._client._bootstrap_servers, ends)

    driver.AIOKafkaConsumerThread._highwaters = _highwaters

    create = driver.AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self, transport):  # type: ignore[no-untyped-def]
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    driver.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
    _installed.add("tansu_shims")
    log.debug("Tansu shims installed")


# ------------------------------------------------------------------------------ plate reader threads


class _PlateOrt:
    """Stands in for the ``onnxruntime`` module inside agentclpr's and agentocr's session loaders only:
    their sessions get ``threads`` intra-op threads and the CPU provider; every other name is
    onnxruntime's own. ``onnxruntime.InferenceSession`` itself is never touched."""

    def __init__(self, ort: Any) -> None:
        self._ort = ort
        self.threads = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ort, name)

    def InferenceSession(self, path: Any, sess_options: Any = None, providers: Any = None, **kw: Any) -> Any:  # noqa: N802
        so = sess_options or self._ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return self._ort.InferenceSession(path, sess_options=so, providers=providers or ["CPUExecutionProvider"],
                                          **kw)




def _partition_state(consumer: AIOKafkaConsumer, tp: Any) -> Any:
    """aiokafka's fetch state of an assigned partition (position, highwater), or None."""
    subscription = consumer._fetcher._subscriptions.subscription
    assignment = subscription.assignment if subscription is not None else None
    return assignment.state_value(TopicPartition(tp.topic, tp.partition)) if assignment is not None else None


def fetch_position(app: Any, tp: Any) -> tuple[int | None, int | None]:
    """(highwater, fetch position) that a Faust worker's consumer knows for an assigned partition; None
    where it does not know yet. Read from the consumer thread's state without a call into it (two ints),
    so a timer of the agents' loop can ask cheaply. Checked on the versions of ``require_checked``."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None) if thread is not None else None
    if consumer is None:
        return None, None
    state = _partition_state(consumer, tp)
    if state is None:
        return None, None
    position = state.position if state.has_valid_position else None
    return state.highwater, position


def unprocessed(app: Any, tp: Any, done: int | None) -> bool:
    """Whether an assigned partition has input in Kafka, or fetched, that the agent has not processed yet:
    the high water mark is past the fetch position, or past ``done`` (the offset of the last record the
    agent processed; None: none yet). False where the consumer does not know the partition yet."""
    highwater, position = fetch_position(app, tp)
    if highwater is None:
        return False
    return (position is not None and highwater > position) or (done is not None and highwater > done + 1)


def install_faust_event_path_fix() -> None:
    """Keep Faust's livelock check from crashing the worker on a partition that has no position yet.

    faust-streaming 0.15.3's commit-time check (``AIOKafkaConsumerThread.verify_event_path``) reads
    aiokafka's ``TopicPartitionState.position`` and tests it for None; aiokafka 0.14 asserts a position
    instead. When the check runs in the moment after a rebalance before a new partition's position is
    reset, the worker crashes ("Crashed reason=AssertionError", then "We experienced a crash"). Seen on
    Apache Kafka: the survivor of a two-worker fail-over died that way. Such a partition has nothing to
    verify yet, so the check skips it. Idempotent.
    """
    if "event_path" in _installed:
        return
    require_checked("the livelock check fix", "faust-streaming", "aiokafka")
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread.verify_event_path

    def verify_event_path(self, now, tp):  # type: ignore[no-untyped-def]
        state = _partition_state(self._ensure_consumer(), tp)
        if state is None or not state.has_valid_position:
            return None
        return original(self, now, tp)

    driver.AIOKafkaConsumerThread.verify_event_path = verify_event_path
    _installed.add("event_path")


# ---------------------------------------------------------------------------------- Faust rebalance wait fix

# Per record, how many of its agents' copies a flow-control clear dropped (weak: records come and go).
_dropped: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def left_to_next_owner(unacked: Iterable[Any], dropped: Mapping[Any, int]) -> set[Any]:
    """The records no agent will ever ack: every count they still hold is a copy a clear dropped."""
    return {m for m in unacked if not m.acked and 0 < m.refcount <= dropped.get(m, 0)}


def install_faust_rebalance_wait_fix() -> None:
    """Let a rebalance stop waiting for records no agent will ever finish. Idempotent.

    A record of a topic several agents read (grid events: alerts, incidents, store) holds one count per
    agent, and on revoke the consumer waits (``wait_empty``) until every count is acked. In the same
    revoke Faust clears the agents' input buffers (``flow_control.clear()``): a record one agent had
    already taken while it still sat in another agent's buffer keeps the dropped copy's count forever,
    so ``wait_empty`` waits until the group's rebalance timeout (60 s) expels the worker. Seen on the
    three-broker cluster: the survivor of a frozen worker, mid-takeover when the frozen one woke, logged
    ``wait_empty: Waiting for tasks`` with counts 1-2 left on records of a 3-agent topic, and the group
    stalled 67 s to minutes (tests/cluster, worker SIGSTOP). Fix: count the copies each clear drops, and
    stop waiting for a record whose every remaining count is a dropped one. That record stays un-acked,
    so the commit stays before it and the partition's next owner reads it again from there (downstream
    dedupes), exactly as the dropped copies are read again.
    """
    if "rebalance_wait" in _installed:
        return
    require_checked("the Faust rebalance wait fix", "faust-streaming", "mode-streaming")
    from faust.transport.consumer import Consumer
    from mode.utils.queues import FlowControlEvent

    clear = FlowControlEvent.clear

    def clear_counting(self):  # type: ignore[no-untyped-def]
        for queue in self._queues:
            for item in list(getattr(queue, "_queue", ())):
                message = getattr(item, "message", None)
                if message is not None:
                    _dropped[message] = _dropped.get(message, 0) + 1
        clear(self)

    clean = Consumer._clean_unacked_messages

    def clean_unacked_messages(self):  # type: ignore[no-untyped-def]
        clean(self)
        left = left_to_next_owner(self._unacked_messages, _dropped)
        if left:
            log.info("rebalance: %d records dropped from agent buffers are left to the partitions' next "
                     "owner (not committed): %s", len(left),
                     ", ".join(sorted(f"{m.topic}[{m.partition}]@{m.offset}" for m in left)[:10]))
            self._unacked_messages -= left

    FlowControlEvent.clear = clear_counting
    Consumer._clean_unacked_messages = clean_unacked_messages
    _installed.add("rebalance_wait")


async def fetched_batch(consumer: Any, timeout: float, lanes: Container[str] = ()) -> list[tuple[Any, Any]]:
    """What ``Consumer.getmany`` yields for one fetch, as one list and in the same order (the consumer's
    scheduler). getmany is an async generator that checks the flow, the consumer's generation and the
    partition's assignment and notes the partition's end offset for every record; drained into a list at once,
    as here, nothing can change between two records, so each is done once per fetch or partition.

    ``lanes``: topics whose records go to a raw lane. Each of their partitions comes first, as one
    ``(tp, LaneRun)`` entry with the fetch's records of it (aiokafka's, no Message built for each); the other
    topics follow as getmany yields them."""
    records, active = await consumer._wait_next_records(timeout)
    if records is None or consumer.should_stop:
        return []
    if not consumer.flow_active:  # as getmany: the flow stopped while the fetch waited
        consumer.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await consumer.perform_seek()
        except Exception as ex:  # noqa: BLE001 - as getmany
            consumer.log.warning(f"exception performing seek when flow not active {ex}")
        return []
    buffered = consumer._buffered_partitions
    live = {tp for tp in records if active is None or tp in active or tp in buffered}
    track_end = consumer.app.monitor.track_tp_end_offset
    for tp in live:
        track_end(tp, consumer.highwater(tp))
    out: list[tuple[Any, Any]] = []
    if lanes:
        generation = consumer.app.consumer_generation_id
        runs = [tp for tp, rs in records.items() if tp in live and tp.topic in lanes and rs]  # in fetch order
        out = [(tp, LaneRun(tp, records[tp], generation)) for tp in runs]
        if runs:
            live.difference_update(runs)
            records = {tp: rs for tp, rs in records.items() if tp in live}
    to_message = consumer._to_message
    out += [(tp, to_message(tp, record)) for tp, record in consumer.scheduler.iterate(records) if tp in live]
    return out


def install_faust_batch_delivery() -> None:
    """Deliver each fetched batch of records to the streams in one task instead of one task per record.

    Faust's ``Consumer._drain_messages`` hands every record to the streams through
    ``Service.wait_first(callback(message), suspend_flow.wait())``: four new tasks, an ``asyncio.wait`` and
    three cancellations per record, so that a rebalance (``suspend_flow``) or a stop interrupts a delivery
    blocked on a full stream buffer. In the incident worker's profile (``bench incidents``, py-spy) that
    machinery was about a tenth of the worker's CPU. Here the whole batch of one fetch is delivered
    by one task under the same ``wait_first`` (the batch is taken first, outside it, as Faust takes each
    record, with ``fetched_batch``: what ``getmany`` yields, as one list): a rebalance or a stop still
    interrupts it, and what it had not delivered is not marked read (Faust seeks the partitions to their
    committed offsets after a rebalance either way). The gap bookkeeping and the periodic commit run shielded, as they ran outside
    the per-record wait before. Idempotent.
    """
    if "batch_delivery" in _installed:
        return
    require_checked("the batch delivery patch", "faust-streaming", "mode-streaming")
    import asyncio

    from faust.transport.consumer import CONSUMER_FETCHING, Consumer

    async def _drain_messages(self, fetcher):  # type: ignore[no-untyped-def]
        callback = self.callback
        app = self.app
        lanes = raw_lanes(app)
        pressure: dict[Any, LanePressure] = {}
        announced: set[str] = set()
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        sleep = asyncio.sleep

        def due(r_offset, offset):  # type: ignore[no-untyped-def]
            """Whether a record needs :func:`catch_up` first: a gap after the read offset, or the commit due."""
            return (r_offset and offset - r_offset > 1) or (commit_every is not None and self._n_acked >= commit_every)

        async def catch_up(tp, r_offset, offset, topic):  # type: ignore[no-untyped-def]
            """What Faust does before it hands over a record, the rare part: a gap in an acking topic's offsets
            noted, the periodic commit."""
            if r_offset and offset - r_offset > 1 and acks_enabled_for(topic):
                await asyncio.shield(self._add_gap(tp, r_offset + 1, offset))
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await asyncio.shield(self.commit())

        async def deliver_run(tp, run, queue):  # type: ignore[no-untyped-def]
            """A lane's records of one partition, into its queue as one item, with the read offsets and gaps
            Faust keeps record by record: a run without a gap, past the read offset, is checked at its first
            record; else record by record, and records read before (a fetch after a seek back) are left out."""
            records = run.records
            first, last = records[0].offset, records[-1].offset
            r_offset = get_read_offset(tp)
            if last - first + 1 == len(records) and (r_offset is None or r_offset <= first):
                if due(r_offset, first):
                    await catch_up(tp, r_offset, first, run.topic)
            else:
                kept = []
                for record in records:
                    offset, r_offset = record.offset, get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue
                    if due(r_offset, offset):
                        await catch_up(tp, r_offset, offset, run.topic)
                    kept.append(record)
                    set_read_offset(tp, offset)
                if not kept:
                    return
                run.records = kept
            gate = lane_gate(app, queue)
            p = pressure.get(tp) or pressure.setdefault(tp, LanePressure(app, tp))
            if queue.full():  # as the conductor: wait for room (a rebalance or stop interrupts it)
                p.on_full(p.tp)
                await queue.put(run)
            else:
                queue.put_nowait(run)
            gate.added(queue, run, p)
            set_read_offset(tp, last)

        async def deliver(batch, queues):  # type: ignore[no-untyped-def]
            since_yield = 0
            if queues:  # what the conductor awaits per record, once for the batch's lane records
                if not announced.issuperset(queues):
                    announced.update(queues)
                    log.info("raw lane: %s delivered straight to its agent", ", ".join(sorted(queues)))
                await app.flow_control.acquire()
                await app.producer.buffer.wait_until_ebb()
            for tp, message in batch:
                if type(message) is LaneRun:
                    await deliver_run(tp, message, queues[tp.topic])
                    continue
                since_yield += 1
                if since_yield > 100:  # as Faust: let the loop breathe on a long batch
                    await sleep(0)
                    since_yield = 0
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is None or offset >= r_offset:
                    if due(r_offset, offset):
                        await catch_up(tp, r_offset, offset, message.topic)
                    await callback(message)
                    set_read_offset(tp, offset)

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                # taken outside the wait, as Faust does: the fetch itself waits while the flow is stopped
                queues = lane_queues(app, lanes) if lanes else {}
                batch = await fetched_batch(self, 1.0, queues)
                await self.sleep(0)
                if batch and not self.should_stop:
                    await self.wait_first(deliver(batch, queues), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    Consumer._drain_messages = _drain_messages
    _installed.add("batch_delivery")


# The consumer in the worker's own loop. Faust runs aiokafka's consumer in a thread of its own with a second event
# loop, and every call into it (each getmany, commit, position) crosses over: a queued method, a wake-up of the
# other loop's selector, a future resolved back across, and the two threads handing the GIL to each other. In
# the incident worker that thread cost ~10 µs of CPU per input where bare aiokafka's fetch costs ~2 µs
# (bench incidents, /proc per-thread CPU). Run in the worker's loop, the same aiokafka consumer does the same
# work and a call into it is a plain await: 3-6 µs per input less above the fusion (bench incidents, 9
# interleaved pairs, mean 5, median 3: the thread's cost goes, the fetch itself moves into the main thread); the
# telemetry worker's CPU and alert latency did not move beyond the noise (bench telemetry, 5 pairs). Faust's
# service bookkeeping (start, stop, crash, the rebalance callbacks through its method queue) is kept as it is;
# only where it runs changes. Its heartbeats now share the worker's loop, which is why blocking work stays in
# executor threads (the store's writes, model inference).


class _InLoopWorker:
    """Stands in for mode's WorkerThread: runs the service's ``_serve`` as a task of the same loop."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.task: Any = None

    def start(self) -> None:
        import asyncio

        self.task = asyncio.get_running_loop().create_task(self.service._serve(), name="faust-consumer")
        # A crash is already reported by ``_serve`` (the log, the service's start, the app's crash); taking the
        # exception here keeps asyncio from logging it once more as never retrieved.
        self.task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def stop(self) -> None:  # the thread's join: ServiceThread.stop already waited for the shutdown
        return None


def consumer_in_loop(app: Any, value: bool | None = None) -> bool:
    """Whether ``app``'s consumer runs in its own loop (set by the app factory from ``worker.consumer_in_loop``
    before the consumer is made; an app nobody set keeps Faust's thread)."""
    if value is not None:
        app._gridwatch_consumer_in_loop = value
    return bool(getattr(app, "_gridwatch_consumer_in_loop", False))


def install_faust_consumer_in_loop() -> None:
    """Let an app run Faust's aiokafka consumer "thread" as tasks of its own event loop (idempotent); which apps
    do is :func:`consumer_in_loop`."""
    if "consumer_in_loop" in _installed:
        return
    require_checked("the in-loop consumer", "faust-streaming", "mode-streaming", "aiokafka")
    from faust.transport.drivers import aiokafka as driver
    from mode.utils.futures import maybe_async

    class InLoopConsumerThread(driver.AIOKafkaConsumerThread):  # type: ignore[misc,name-defined]
        Worker = _InLoopWorker  # type: ignore[assignment]

        async def call_thread(self, fun, *args, **kwargs):  # type: ignore[no-untyped-def]
            return await maybe_async(fun(*args, **kwargs))  # as mode's method queue: some are plain functions

        async def _gather_remaining_tasks(self) -> None:
            # the thread's sweep of its own loop's tasks: here that loop is the worker's, and its tasks are not ours
            return None

    original = driver.Consumer._new_consumer_thread

    def _new_consumer_thread(self):  # type: ignore[no-untyped-def]
        if not consumer_in_loop(self.app):
            return original(self)
        log.info("kafka consumer: in the worker's event loop (worker.consumer_in_loop)")
        return InLoopConsumerThread(self, loop=self.loop, thread_loop=self.loop, beacon=self.beacon)

    driver.Consumer._new_consumer_thread = _new_consumer_thread
    _installed.add("consumer_in_loop")


# Raw lanes: records handed to one agent's channel a fetch's partition at a time, not as Events through the
# conductor.
#
# Why: per record the conductor takes an asyncio lock, awaits the flow control and the producer buffer, counts
# references and builds an Event, and the stream's ack goes back through the Event, the Message's reference
# count and four sensor calls. For an agent that takes raw bytes in batches (agents/batch_take.py, ``lane=True``)
# none of that carries information: in ``bench incidents`` (10 interleaved pairs) the lane took the incident
# worker from 55.7 to 50.3 µs per input above the fusion. The lane first carried one Faust Message per record;
# now it carries aiokafka's records of one partition and fetch as one ``LaneRun``: no Message is built, the
# delivery, the queue, the take and the ack work once per run (5 interleaved pairs: the fusion's share of the
# incident worker's CPU from a mean 0.698 to 0.733). What stays the same: the read offsets and gaps (the batch
# delivery above; a run without a gap is checked at its first record), the flow control and producer buffer
# (awaited once per delivered batch), the buffer's bound and pressure (``LaneGate``: counted in records, pausing
# the partition as the conductor does), tracking a record as unacked until the agent is done with it, and the ack
# that lets the consumer commit past it. What the lane skips: Faust's Monitor sensors (message in/out, stream
# event in/out), which nothing here reads.


def raw_lanes(app: Any) -> dict[str, Any]:
    """Topic name -> the channel that takes its records as Messages (registered by ``take_batches``)."""
    lanes = getattr(app, "_gridwatch_raw_lanes", None)
    if lanes is None:
        lanes = {}
        app._gridwatch_raw_lanes = lanes
    return lanes


def lane_queues(app: Any, lanes: Mapping[str, Any]) -> dict[str, Any]:
    """The lanes' queues, for the topics that channel alone subscribes to now: a second subscriber (another
    agent on the same topic) needs the conductor's fan-out, so that topic goes through it."""
    index = app.topics._topic_name_index
    return {name: channel.queue for name, channel in lanes.items() if index.get(name) == {channel}}


class LanePressure:
    """The conductor's per-partition pressure callbacks: a buffer filling up pauses fetching its partition,
    and fetching resumes once it drained. ``tp`` as Faust's own TP: the fetched batch's keys are aiokafka's
    TopicPartition, which Faust's consumer refuses (an assertion) when it pauses or resumes the partition.
    One per partition: the queue keeps ``drop`` in a set, and bound methods of one object compare equal."""

    def __init__(self, app: Any, tp: Any) -> None:
        from faust.types import TP

        self.tp = TP(tp.topic, tp.partition)
        self.consumer = app.consumer
        self.on_full = app.sensors.on_topic_buffer_full

    def high(self) -> None:
        self.on_full(self.tp)
        self.consumer.on_buffer_full(self.tp)

    def drop(self) -> None:
        self.consumer.on_buffer_drop(self.tp)


class LaneRun:
    """One fetch's records of one partition of a raw lane: what the lane delivers, the agent takes and the consumer
    acks as one item. ``records`` are aiokafka's ConsumerRecords (``topic``, ``partition``, ``offset``, ``key``,
    ``value``, ``headers``); ``generation_id`` is the consumer generation they were fetched in, as a Message's."""

    __slots__ = ("acked", "generation_id", "records", "topic", "tp")

    def __init__(self, tp: Any, records: list[Any], generation_id: int) -> None:
        from faust.types import TP

        self.tp = TP(tp.topic, tp.partition)  # Faust's own: its consumer's books are keyed by it
        self.topic = tp.topic
        self.records = records
        self.generation_id = generation_id
        self.acked = False

    def __repr__(self) -> str:
        return f"<LaneRun {self.tp.topic}[{self.tp.partition}] {len(self.records)} records>"


class LaneGate:
    """A raw lane's buffer bound, counted in records. Its queue holds runs (a fetch's records of a partition as
    one item), so the queue's own size no longer says how many records wait. As Faust's queue does for Messages
    (mode's ratios), a lane at ``maxsize / 1.25`` records pauses fetching the partitions that fill it, and they
    resume once the agent took it down to ``0.4 * maxsize``."""

    def __init__(self, maxsize: int) -> None:
        self.queued = 0
        self.high = maxsize / 1.25
        self.low = maxsize * 0.4
        self.paused: set[LanePressure] = set()

    def added(self, queue: Any, run: LaneRun, pressure: LanePressure) -> None:
        """``run`` was just put in ``queue``."""
        if queue.qsize() == 1:  # the queue was empty: every run before was taken, or Faust cleared the queue
            self.queued = 0  # (it does on a resume after a rebalance), and those were never taken
        self.queued += len(run.records)
        if self.queued >= self.high and pressure not in self.paused:
            self.paused.add(pressure)
            pressure.high()

    def taken(self, queue: Any, records: int) -> None:
        """A run of ``records`` was just taken from ``queue``."""
        self.queued = max(0, self.queued - records) if queue.qsize() else 0
        if self.paused and self.queued <= self.low:
            for pressure in self.paused:
                pressure.drop()
            self.paused.clear()


def lane_gate(app: Any, queue: Any) -> LaneGate:
    """The gate of the lane whose queue is ``queue`` (made on first use, sized by the queue's maxsize)."""
    gates = getattr(app, "_gridwatch_lane_gates", None)
    if gates is None:
        gates = app._gridwatch_lane_gates = weakref.WeakKeyDictionary()
    gate = gates.get(queue)
    if gate is None:
        gate = gates[queue] = LaneGate(queue.maxsize or 4096)
    return gate


class LaneBatch:
    """A batch of a raw lane's records, pending in the consumer's unacked set as one entry until it is acked.

    Faust tracks each record in that set (a WeakSet) and takes it out again on its ack; a rebalance
    (``Consumer.wait_empty``) waits until the set is empty or holds only acked entries. The lane's records are
    taken and acked a batch at a time, so one entry a batch holds the rebalance as long: about 0.3 µs a record
    less (a micro-benchmark on the checked Faust). Like a Message it goes from the set when it is acked, or when
    nothing holds it any more (the agent failed mid-batch: the records stay unacked, the commit before them)."""

    __slots__ = ("acked", "refcount", "size", "__weakref__")

    def __init__(self, consumer: Any, size: int) -> None:
        self.acked = False
        self.refcount = size  # what wait_empty's log shows of a Message: how many still hold it
        self.size = size
        consumer._unacked_messages.add(self)

    def done(self, consumer: Any) -> None:
        self.acked = True
        self.refcount = 0
        consumer._unacked_messages.discard(self)

    def __repr__(self) -> str:
        return f"<LaneBatch of {self.size} records{', acked' if self.acked else ''}>"


def ack_lane_runs(consumer: Any, runs: Iterable[LaneRun]) -> None:
    """``Consumer.ack`` for each record of a lane's runs, in order: the same bookkeeping (the acked offsets the
    consumer commits up to), under one hold of Faust's ack lock, a run's offsets added at once, and with one
    wake-up of a waiting ``wait_empty`` for them all. The runs themselves are never in the unacked set: their
    LaneBatch is. Per record, Faust's ack takes the lock, looks its settings up and notifies: about 0.5 µs a
    record more (a micro-benchmark on the checked Faust)."""
    from faust.types.tuples import ack_lock
    from mode.utils.futures import notify

    acks_enabled_for = consumer.app.topics.acks_enabled_for
    committed_offsets = consumer._committed_offset
    acked_indexes = consumer._acked_index
    acked_lists = consumer._acked
    enabled: dict[str, bool] = {}
    n = 0
    with ack_lock:
        for run in runs:
            if run.acked:
                continue
            run.acked = True
            on = enabled.get(run.topic)
            if on is None:
                on = enabled[run.topic] = acks_enabled_for(run.topic)
            if not on:
                continue
            tp = run.tp
            offsets = [r.offset for r in run.records]
            committed = committed_offsets[tp]
            if committed is not None and offsets[0] < committed:  # offsets ascend within a partition
                offsets = [o for o in offsets if o >= committed]
            acked_index = acked_indexes[tp]
            if not acked_index.isdisjoint(offsets):
                offsets = [o for o in offsets if o not in acked_index]
            acked_index.update(offsets)
            acked_lists[tp].extend(offsets)
            n += len(offsets)
        consumer._n_acked += n
        notify(consumer._waiting_for_ack)


def install_faust_event_class_cache() -> None:
    """Make each record's ``faust.Event`` with the class looked up once per app, not once per record.

    Faust's ``App.create_event`` reads ``self.conf.Event`` for every record it delivers: a settings lookup
    through two descriptors (``SettingsRegistry.__getattribute__``, ``Param.__get__``), about 2 % of the
    incident worker's CPU under a backlog (``bench incidents``, py-spy). The class is a setting fixed when
    the app is configured. Idempotent."""
    if "event_class_cache" in _installed:
        return
    require_checked("the Faust event class cache", "faust-streaming")
    from faust.app.base import App

    def create_event(self, key, value, headers, message):  # type: ignore[no-untyped-def]
        cached = self.__dict__.get("_gridwatch_event_cls")
        if cached is None or cached[0] is not self._conf:  # first event, or the app was configured anew
            cls = self.conf.Event  # configures the app if nothing did yet
            cached = self._gridwatch_event_cls = (self._conf, cls)
        return cached[1](self, key, value, headers, message)

    App.create_event = create_event
    _installed.add("event_class_cache")


def install_faust_raw_passthrough() -> None:
    """Hand a raw topic's key and value bytes to the Event as they are, without Faust's codec registry.

    gridwatch's agents read their topics as ``key_serializer="raw", value_serializer="raw"`` with no key or
    value type and decode the bytes themselves (pipeline/schemas). For such a topic Faust still takes every
    record's key and value through ``Registry.loads_key`` / ``loads_value``, the ``raw`` codec and
    ``Model._maybe_reconstruct``, which give back the same bytes (None stays None): about 4 % of the
    incident worker's CPU under a backlog (``bench incidents``, py-spy). Any other schema decodes as
    before. Idempotent."""
    if "raw_passthrough" in _installed:
        return
    require_checked("the Faust raw passthrough", "faust-streaming")
    from faust.serializers.codecs import get_codec, raw
    from faust.serializers.registry import Registry
    from faust.serializers.schemas import Schema

    compile_ = Schema.compile

    def plain_raw(schema, app):  # type: ignore[no-untyped-def]
        """Faust's own decode of this schema gives back the record's bytes: raw both ways, no types, no
        subclass or registry of the user's own, Faust's own raw codec."""
        return (schema.key_type is None and schema.value_type is None and schema.key_serializer == "raw"
                and schema.value_serializer == "raw" and type(schema).loads_key is Schema.loads_key
                and type(schema).loads_value is Schema.loads_value and type(app.serializers) is Registry
                and type(get_codec("raw")) is raw)

    def compile(self, app, **kwargs):  # type: ignore[no-untyped-def]
        if not plain_raw(self, app):
            return compile_(self, app, **kwargs)
        create_event = app.create_event

        async def decode(message, *, propagate=False):  # type: ignore[no-untyped-def]
            return create_event(message.key, message.value, message.headers, message)

        return decode

    Schema.compile = compile
    _installed.add("raw_passthrough")


def install_faust_idempotent_producer() -> None:
    """Give the worker's own producer (events, incidents, changelogs) ``enable_idempotence``, as the
    bridges' producers have with ``kafka.idempotent``: a produce that aiokafka retries after a lost
    acknowledgement (a leader fail-over, a cut link) is not written twice. Faust turns idempotence on only
    inside exactly-once transactions. Idempotent."""
    if "idempotent_producer" in _installed:
        return
    require_checked("the Faust idempotent producer", "faust-streaming", "aiokafka")
    from faust.transport.drivers.aiokafka import Producer

    extra = Producer._settings_extra

    def settings_extra(self):  # type: ignore[no-untyped-def]
        return {**extra(self), "acks": "all", "enable_idempotence": True}

    Producer._settings_extra = settings_extra
    _installed.add("idempotent_producer")


def worker_producer(app: Any) -> Any:
    """The worker's own aiokafka producer behind Faust's (``agents/batch_send.py`` appends whole record
    batches to it). Faust has no public accessor; checked on the pinned versions like the patches."""
    if "worker_producer" not in _installed:
        require_checked("the worker's aiokafka producer", "faust-streaming", "aiokafka")
        _installed.add("worker_producer")
    return app.producer._ensure_producer()


# What Tansu answers in DescribeCluster unless started with another --cluster-id.
TANSU_CLUSTER_ID = "tansu_cluster"


async def detect_tansu(bootstrap: str) -> bool:
    """Whether the broker at ``bootstrap`` is Tansu (its default cluster id); False if it cannot tell.

    A Tansu started with another cluster id is not recognised: set kafka.tansu_quirks: on for it.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        await admin.start()
        return (await admin.describe_cluster()).get("cluster_id") == TANSU_CLUSTER_ID
    except Exception as e:  # noqa: BLE001 - an unreachable broker is reported by the worker itself
        log.warning("could not ask %s which broker it is (%s): Tansu work-arounds stay off", bootstrap, e)
        return False
    finally:
        await admin.close()

def limit_plate_sessions(threads: int) -> None:
    """Sessions that agentclpr/agentocr build from now on use ``threads`` threads (they offer no setting).

    Call it under the caller's lock, right before building ``CLPSystem``; the thread count applies to
    the sessions built next.
    """
    require_checked("the plate reader's session limit", "agentclpr", "agentocr")
    import agentclpr.infer.utility as clp_utility
    import agentocr.infer.utility as ocr_utility

    for module in (clp_utility, ocr_utility):
        if not isinstance(module.ort, _PlateOrt):
            module.ort = _PlateOrt(module.ort)
        module.ort.threads = threads


async def broker_is_tansu(kafka: KafkaSettings, bootstrap: str) -> bool:
    """Whether Tansu's work-arounds apply: the setting says so, or (``auto``, a broker given by URL) the
    broker answers like Tansu."""
    if kafka.quirks_enabled():
        return True
    return kafka.tansu_quirks == "auto" and kafka.url != "embedded" and await detect_tansu(bootstrap)


async def fetch_wait_ms(kafka: KafkaSettings, bootstrap: str, default_ms: int) -> int:
    """``fetch_max_wait_ms`` for a consumer outside Faust (the api's feed): :data:`FETCH_MAX_WAIT_MS` on
    Tansu, which holds a waiting Fetch for all of it even when records arrive (every record would wait
    up to ``default_ms``), ``default_ms`` on Apache Kafka, which answers as soon as records arrive."""
    return FETCH_MAX_WAIT_MS if await broker_is_tansu(kafka, bootstrap) else default_ms
