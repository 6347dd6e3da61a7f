"""MQTT -> Kafka bridge with at-least-once delivery.

A QoS 1 message is acknowledged to the MQTT broker only after Kafka confirmed the produce of every
reading in it (paho's manual_ack), so a bridge crash loses nothing: the broker redelivers whatever was
not acknowledged to the persistent session. Readings are grouped per Kafka partition (the partition
of the device's shard: its lamp circuit, or itself) so a device's readings stay in order and Faust
pays its per-record cost per batch. Bad input becomes a dead letter with the reason; the bridge never
stops on it.

Produce errors are classified (pipeline/kafka_limits.py): a timeout, leader change or lost connection
is retried with back-off while the acks are held, and the stall shows in the stats and the log within
seconds; a record Kafka refuses for what it is (too large, invalid, not authorised) is split or
dead-lettered and the message acknowledged, so one device cannot stop the others. On SIGTERM/SIGINT
the bridge waits at most ``bridge.drain_s`` for Kafka, then stops without acknowledging what Kafka has
not confirmed: the MQTT broker redelivers it to the next bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

from gridwatch.core.settings import Settings
from gridwatch.pipeline.kafka_io import ensure_topics, start_producer
from gridwatch.pipeline.mqtt_client import Client, connect, make_client
from gridwatch.pipeline.schemas.mqtt_topics import TELEMETRY_PATTERNS
from gridwatch.pipeline.schemas.readings import ReadingBatch
from gridwatch.pipeline.sources.deadletters import message_letter
from gridwatch.pipeline.sources.ingest import OutRecord, Routed, Router, letter_record, out_records
from gridwatch.pipeline.sources.kafka_limits import (
    is_retriable,
    is_size_error,
    record_budget,
    topic_record_limit,
)
from gridwatch.pipeline.sources.telemetry_parser import Rejection

log = logging.getLogger("gridwatch.bridge")

SUBSCRIPTIONS = TELEMETRY_PATTERNS
PRODUCER_MAX_REQUEST = 4 << 20
STALL_WARN_S = 3.0  # a flush Kafka has not confirmed for this long is logged (and again every ALARM_EVERY_S)
ALARM_WINDOW_S = 10.0  # dead-letter share measured over this long
ALARM_MIN_MESSAGES = 20
ALARM_EVERY_S = 15.0
HINTS = {
    "bad_ts": "device clocks ahead of the bridge's or readings in seconds, not ms (bridge.max_future_skew_s); a "
              "simulator whose clock runs ahead of now?",
    "unknown_device": "devices missing from the city's registry (city.path) or a gateway speaking for others",
    "malformed_json": "senders that do not send JSON",
    "parser_error": "a bug in the bridge's parser: the bridge log has the traceback; report it with the dead letter",
    "record_too_large": "readings larger than a Kafka record (bridge.max_record_bytes / max.message.bytes)",
    "kafka_refused": "Kafka refuses the records: check the broker log and the bridge's Kafka account",
}
T = TypeVar("T")


class Stopped(Exception):
    """SIGTERM/SIGINT arrived while the bridge was starting."""


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    recv_ms: int
    generation: int


@dataclass
class BridgeStats:
    messages: int = 0
    readings: int = 0
    dead_letters: Counter = field(default_factory=Counter)  # bad entries per reason
    bad_messages: int = 0
    dead_letter_records: int = 0  # confirmed by Kafka
    dead_letter_bytes: int = 0
    dead_letters_lost: int = 0  # letters Kafka refused even when shrunk (logged as errors)
    input_bytes: int = 0
    suppressed: int = 0  # bad messages over the dead-letter quota: counted, summarised, not copied
    qos0_dropped: int = 0
    flushes: int = 0
    kafka_retries: int = 0
    kafka_errors: Counter = field(default_factory=Counter)  # per error class
    kafka_last_error: str = ""
    kafka_waiting_s: float = 0.0  # how long the current flush has waited for Kafka (0 = none waiting)
    in_flight: int = 0  # messages received and not acknowledged yet (queued + being produced)
    record_limit: int = 0
    acked: int = 0
    last_flush_ms: float = 0.0
    deadletter_share: float = 0.0  # of the messages of the last ALARM_WINDOW_S
    alarm: str = ""
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {
            "messages": self.messages, "readings": self.readings, "dead_letters": dict(self.dead_letters),
            "dead_letters_total": sum(self.dead_letters.values()), "bad_messages": self.bad_messages,
            "dead_letter_records": self.dead_letter_records, "dead_letter_bytes": self.dead_letter_bytes,
            "dead_letters_lost": self.dead_letters_lost, "input_bytes": self.input_bytes,
            "deadletter_amplification": round(self.dead_letter_bytes / self.input_bytes, 3) if self.input_bytes else 0.0,
            "suppressed": self.suppressed, "qos0_dropped": self.qos0_dropped, "flushes": self.flushes,
            "kafka_retries": self.kafka_retries, "kafka_errors": dict(self.kafka_errors),
            "kafka_last_error": self.kafka_last_error, "kafka_waiting_s": round(self.kafka_waiting_s, 1),
            "in_flight": self.in_flight, "record_limit": self.record_limit, "acked": self.acked,
            "last_flush_ms": round(self.last_flush_ms, 2), "deadletter_share": round(self.deadletter_share, 3),
            "alarm": self.alarm, "uptime_s": round(time.time() - self.started, 1),
        }


class MqttBridge:
    def __init__(self, settings: Settings, registry: Any) -> None:
        self.settings = settings
        self.registry = registry
        self.stats = BridgeStats()
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        # Messages from paho's thread wait here; the event loop is woken once per burst, not once per
        # message (a wake-up per message made the two threads trade the GIL for every 256 KB junk message
        # of a flooding device: a quarter of the bridge's time went to call_soon_threadsafe)
        self._inbox: deque[Incoming] = deque()
        self._wake_pending = False
        self._generation = 0
        self._connected = asyncio.Event()
        self.client: Client | None = None
        self._batch_len = 0  # messages of the flush in progress
        self._flush_started: float | None = None
        self._last_stall_log = 0.0
        self._window: deque[tuple[float, int, int, Counter]] = deque()  # (time, messages, bad, reasons)
        self._last_alarm_log = 0.0

    # -- MQTT side (paho network thread) -------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("MQTT broker refused the bridge: %s. Check mqtt.username and GRIDWATCH_MQTT_PASSWORD "
                      "(see `gridwatch mqtt-credentials`).", rc)
            return
        self._generation += 1
        group = self.settings.bridge.share_group
        subs = [(f"$share/{group}/{t}" if group else t, 1) for t in SUBSCRIPTIONS]
        client.subscribe(subs)
        log.info("MQTT connected (session present: %s); subscribed to %s", flags.session_present,
                 ", ".join(s for s, _ in subs))
        self._loop.call_soon_threadsafe(self._connected.set)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc != 0:
            log.warning("MQTT connection lost (%s); reconnecting", rc)
        self._loop.call_soon_threadsafe(self._connected.clear)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.qos == 0 and self._waiting() >= self.settings.bridge.qos0_queue_max:
            self.stats.qos0_dropped += 1  # QoS 0 promises no delivery; the bridge's memory stays bounded
            return
        self._inbox.append(Incoming(msg.topic, msg.payload, msg.mid, msg.qos, int(time.time() * 1000),
                                    self._generation))
        if not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._move_inbox)

    def _move_inbox(self) -> None:
        """On the event loop: everything paho's thread received since the last wake-up, in order."""
        self._wake_pending = False  # first: a message appended from now on schedules the next wake-up
        inbox, queue = self._inbox, self._queue
        while inbox:
            queue.put_nowait(inbox.popleft())

    def _waiting(self) -> int:
        return self._queue.qsize() + len(self._inbox)

    # -- Kafka side (asyncio) -------------------------------------------------------------------
    async def _take(self) -> list[Incoming]:
        first = await self._queue.get()
        batch = [first]
        cap = self.settings.bridge.max_batch_messages
        deadline = self._loop.time() + self.settings.bridge.linger_ms / 1000
        while len(batch) < cap:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _route(self, batch: list[Incoming]) -> tuple[Routed, list[OutRecord]]:
        routed = self.router.route((item.topic, item.payload, item.recv_ms) for item in batch)
        records = out_records(self.settings, routed, self.record_limit)  # may add record_too_large letters
        st = self.stats
        st.dead_letters.update(routed.reasons)
        st.readings += routed.readings
        st.messages += len(batch)
        st.bad_messages += routed.bad_messages
        st.input_bytes += routed.input_bytes
        st.suppressed = self.router.gate.suppressed_messages
        self._window.append((time.monotonic(), len(batch), routed.bad_messages, routed.reasons))
        return routed, records

    async def _send_all(self, records: list[OutRecord]) -> list[BaseException | None]:
        """Send every record and wait for each one's outcome (None = confirmed)."""
        futures: list[Awaitable[Any] | BaseException] = []
        for r in records:
            try:
                futures.append(await self.producer.send(r.topic, r.value, key=r.key, partition=r.partition))
            except Exception as e:  # noqa: BLE001 - refused before sending (size, timeout waiting for metadata)
                futures.append(e)
        out: list[BaseException | None] = []
        for f in futures:
            if isinstance(f, BaseException):
                out.append(f)
                continue
            try:
                await f
                out.append(None)
            except Exception as e:  # noqa: BLE001 - classified by the caller
                out.append(e)
        return out

    async def _produce(self, records: list[OutRecord]) -> None:
        """Send everything until Kafka confirmed it or refused it for good (then it is dead-lettered).

        Retriable errors are retried with back-off, without end: Kafka being away must not lose a
        reading. Shutdown does not wait for this beyond ``bridge.drain_s`` (see :meth:`run`).
        """
        pending = records
        delay = 0.2
        while pending:
            results = await self._send_all(pending)
            retry: list[OutRecord] = []
            transient: BaseException | None = None
            for rec, err in zip(pending, results, strict=True):
                if err is None:
                    if rec.letter is not None:
                        self.stats.dead_letter_records += 1
                        self.stats.dead_letter_bytes += len(rec.value)
                    continue
                self.stats.kafka_errors[type(err).__name__] += 1
                self.stats.kafka_last_error = f"{type(err).__name__}: {err}"[:300]
                if is_retriable(err):
                    retry.append(rec)
                    transient = err
                else:
                    retry.extend(self._refused(rec, err))
            if transient is not None:
                self.stats.kafka_retries += 1
                held = sum(len(r.readings or ()) for r in retry)
                log.warning("Kafka produce failed (%s: %s); holding %d records (%d readings) un-acknowledged, "
                            "retry in %.1fs", type(transient).__name__, transient, len(retry), held, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            pending = retry

    def _refused(self, rec: OutRecord, err: BaseException) -> list[OutRecord]:
        """What to send instead of a record Kafka refused for good: halves of it, or a dead letter."""
        name = type(err).__name__
        if rec.readings is not None and is_size_error(err) and len(rec.readings) > 1:
            self.record_limit = min(self.record_limit, max(4096, len(rec.value) - 1))
            self.stats.record_limit = self.record_limit
            log.warning("Kafka refused a record of %d bytes (%s): splitting it, records now at most %d bytes",
                        len(rec.value), name, self.record_limit)
            half = len(rec.readings) // 2
            return [OutRecord(rec.topic, rec.key, ReadingBatch(rec.partition or 0, part).encode(), rec.partition,
                              readings=part) for part in (rec.readings[:half], rec.readings[half:])]
        if rec.readings is not None:
            n = len(rec.readings)
            self.stats.readings -= n
            self.stats.dead_letters["kafka_refused"] += n
            devices = sorted({r.device_id for r in rec.readings})
            log.error("Kafka refused a record of %d readings (%d bytes) for good (%s: %s): dead-lettered, "
                      "devices %s", n, len(rec.value), name, err, ", ".join(devices[:5]))
            why = Rejection("kafka_refused", f"Kafka refused a record of {n} readings ({len(rec.value)} bytes) of "
                            f"devices {', '.join(devices[:20])}: {name}: {err}", devices[0] if len(devices) == 1 else None)
            letter = message_letter("bridge", rec.topic, rec.value, rec.readings[0].recv_ms, [why],
                                    keep_payload_bytes=min(self.settings.bridge.deadletter_payload_bytes,
                                                           self.record_limit // 2))
            return [letter_record(self.settings, letter)]
        assert rec.letter is not None
        if rec.letter.payload and is_size_error(err):  # once more without the payload's head
            rec.letter.payload, rec.letter.reasons, rec.letter.payload_truncated = "", rec.letter.reasons[:1], True
            return [letter_record(self.settings, rec.letter)]
        self.stats.dead_letters_lost += 1
        log.error("Kafka refused a dead letter for good (%s: %s); it is lost: %s", name, err,
                  rec.letter.detail[:300])
        return []

    def _ack(self, batch: list[Incoming]) -> None:
        assert self.client is not None
        # A message from an earlier connection will be redelivered; its mid means nothing now.
        acks = [(item.mid, item.qos) for item in batch if item.qos > 0 and item.generation == self._generation]
        self.client.ack_all(acks)
        self.stats.acked += len(acks)

    def _watch(self) -> None:
        """Make a stall and a bridge that dead-letters most of its input visible in the stats and the log."""
        now = time.monotonic()
        st = self.stats
        st.in_flight = self._waiting() + self._batch_len
        st.kafka_waiting_s = now - self._flush_started if self._flush_started is not None else 0.0
        if st.kafka_waiting_s >= STALL_WARN_S and now - self._last_stall_log >= STALL_WARN_S:
            self._last_stall_log = now
            log.warning("Kafka has not confirmed the current flush for %.0fs: %d MQTT messages held un-acknowledged "
                        "(last error: %s)", st.kafka_waiting_s, st.in_flight, st.kafka_last_error or "none yet")
        while self._window and self._window[0][0] < now - ALARM_WINDOW_S:
            self._window.popleft()
        messages = sum(w[1] for w in self._window)
        bad = sum(w[2] for w in self._window)
        st.deadletter_share = bad / messages if messages else 0.0
        if messages >= ALARM_MIN_MESSAGES and st.deadletter_share > self.settings.bridge.deadletter_alarm_share:
            reasons: Counter = Counter()
            for w in self._window:
                reasons.update(w[3])
            top, n = reasons.most_common(1)[0]
            st.alarm = (f"{st.deadletter_share:.0%} of the last {messages} messages were dead-lettered, mostly "
                        f"{top} ({n} entries): check {HINTS.get(top, 'the dead-letter topic')}")
            if now - self._last_alarm_log >= ALARM_EVERY_S:
                self._last_alarm_log = now
                log.error("MOST INPUT IS DEAD-LETTERED: %s. Details: Kafka topic %s (gridwatch tail).", st.alarm,
                          self.settings.topic("deadletter"))
        else:
            st.alarm = ""

    async def _publish_stats(self, stop: asyncio.Event) -> None:
        topic = f"{self.settings.mqtt.stats_prefix}/bridge/{self.settings.bridge.client_id}"
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.bridge.stats_interval_s)
            self._watch()
            if self.client is not None:
                self.client.publish(topic, json.dumps(self.stats.snapshot()), qos=0)

    async def _unless_stopped(self, work: Awaitable[T], stop: asyncio.Event) -> T:
        """Await ``work`` unless a stop signal comes first (start-up must not delay Ctrl-C either)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise Stopped
        return task.result()

    async def _start(self, stop: asyncio.Event) -> mqtt.Client:
        await self._unless_stopped(ensure_topics(self.settings), stop)
        self.producer = await self._unless_stopped(
            start_producer(self.settings, max_request_size=PRODUCER_MAX_REQUEST), stop)
        readings = self.settings.topic("readings")
        self._partitions = len(await self._unless_stopped(self.producer.partitions_for(readings), stop))
        broker_limit = await self._unless_stopped(topic_record_limit(self.settings.kafka_bootstrap(), readings), stop)
        self.record_limit = record_budget(broker_limit, self.settings.bridge.max_record_bytes, PRODUCER_MAX_REQUEST)
        self.stats.record_limit = self.record_limit
        log.info("Kafka records at most %d bytes (%s)", self.record_limit,
                 f"topic {readings} max.message.bytes={broker_limit}" if broker_limit else
                 "the broker does not report max.message.bytes: bridge.max_record_bytes or 1,000,000")
        self.router = Router(self.registry, self._partitions, self.settings.bridge)
        client = make_client(self.settings, self.settings.bridge.client_id, clean_session=False, manual_ack=True,
                             max_inflight=2000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        await self._unless_stopped(asyncio.to_thread(connect, client), stop)
        client.loop_start()
        return client

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self.producer = None
        try:
            client = await self._start(stop)
        except Stopped:
            log.info("bridge stopped while starting")
            await self._close_producer(self.settings.bridge.drain_s)
            return
        stats_task = asyncio.create_task(self._publish_stats(stop))
        log.info("bridge running: MQTT %s:%d -> Kafka %s (%d partitions, topic %s)",
                 *client._gridwatch_endpoint, self.settings.kafka_bootstrap(), self._partitions,  # type: ignore[attr-defined]
                 self.settings.topic("readings"))
        stopper = asyncio.create_task(stop.wait())
        unconfirmed = 0
        try:
            while not stop.is_set():
                taker = asyncio.create_task(self._take())
                done, _ = await asyncio.wait({taker, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if taker not in done:
                    taker.cancel()
                    break
                batch = taker.result()
                self._batch_len = len(batch)
                t0 = time.perf_counter()
                self._flush_started = time.monotonic()
                flush = asyncio.create_task(self._produce(self._route(batch)[1]))
                await asyncio.wait({flush, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not flush.done():  # stopping: give Kafka the drain time, then leave it unacknowledged
                    done, _ = await asyncio.wait({flush}, timeout=self.settings.bridge.drain_s)
                    if not done:
                        flush.cancel()
                        with contextlib.suppress(BaseException):
                            await flush
                        unconfirmed = len(batch)
                        break
                flush.result()
                self._ack(batch)
                self._flush_started = None
                self._batch_len = 0
                self.stats.flushes += 1
                self.stats.last_flush_ms = (time.perf_counter() - t0) * 1000
        finally:
            stop.set()
            stats_task.cancel()
            stopper.cancel()
            if unconfirmed:
                log.warning("stopping after %.1fs of drain time: %d MQTT messages Kafka has not confirmed stay "
                            "un-acknowledged; the MQTT broker redelivers them to the next bridge",
                            self.settings.bridge.drain_s, unconfirmed)
            client.disconnect()
            client.loop_stop()
            await self._close_producer(2.0 if unconfirmed else self.settings.bridge.drain_s)
            self._watch()
            log.info("bridge stopped: %s", self.stats.snapshot())

    async def _close_producer(self, timeout: float) -> None:
        """Stop the producer, bounded: with Kafka away aiokafka would wait for its batches without end."""
        if self.producer is None:
            return
        try:
            await asyncio.wait_for(self.producer.stop(), timeout)
        except (TimeoutError, Exception) as e:  # noqa: BLE001 - leaving anyway; nothing was acknowledged
            log.warning("Kafka producer did not close within %.1fs (%s); leaving it", timeout, type(e).__name__)
