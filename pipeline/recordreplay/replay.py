"""Replay a recording into an isolated namespace: recorded MQTT messages -> the bridge's router -> Kafka.

Design (why a direct Kafka path and not a second MQTT round trip):

* A replay writes only to ``<ns>.readings`` and ``<ns>.deadletter`` of a namespace ``ns`` that is not the
  live one (refused otherwise), and a worker for that namespace (``gridwatch worker --prefix ns``:
  own topics, own consumer group ``<app_id>-<ns>``, own Faust tables) turns them into ``<ns>.events``.
  Nothing is published on the live MQTT broker, so live devices, the live bridge and live operators
  never see replayed traffic; the worker ``gridwatch replay`` starts for the namespace also gets its
  alert and stats topics moved under ``replay/<ns>/`` and the InfluxDB sink off.
* Each recorded message goes through :class:`gridwatch.pipeline.sources.ingest.Router`, the code the live bridge
  runs, judged against its recorded receive time: the same readings land on the same partitions in
  the same order, and bad input becomes the same dead letters.
* Pacing follows the recorded receive times at ``speed`` x real time, or none at all (``max``). The
  agents only ever look at event time, so any speed gives the same grid events.
* Camera frames: a recording made with ``gridwatch record --frames`` holds the live ``<prefix>.frames``
  records (the frames the vision agent analysed).  They go, byte for byte except one header flag, to
  ``<ns>.frames`` with the same key (camera), so the same partition, in recorded order, interleaved with
  the MQTT messages on one recorded timeline.  The flag ``"replayed": true`` in the frame header tells the
  vision agent not to drop the frame as "lagging" (a wall-clock judgement that a replay at max speed
  would trigger, and that would make the events depend on the machine's speed).

The worker's progress is known exactly: the replay remembers the last offset it produced per
partition (readings and frames) and waits until the namespace's consumer group has committed past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gridwatch.core.settings import Settings
from gridwatch.pipeline.kafka_io import ensure_topics, start_producer
from gridwatch.pipeline.recordreplay.recording import RecordedFrame, RecordedMessage, RecordingReader, scan
from gridwatch.pipeline.schemas.mqtt_topics import ALERT_PREFIX, STATS_PREFIX, replay_prefix
from gridwatch.pipeline.schemas.readings import end_of_input
from gridwatch.pipeline.sources.ingest import Routed, Router, kafka_records

log = logging.getLogger("gridwatch.replay")

NS_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
FEED_BATCH_MESSAGES = 2000  # like the bridge's max_batch_messages: bounds one Kafka round
MAX_PENDING_ROUNDS = 8  # produce rounds in flight before the feeder waits for Kafka (back-pressure)
MAX_PENDING_FRAMES = 128  # frame records (JPEG, ~50 kB each) in flight before the feeder waits


class ReplayError(ValueError):
    """A replay cannot start (bad namespace, bad time slice, unreadable file); the message says why."""


def fresh_namespace(path: str | Path) -> str:
    """A new namespace name for a replay of ``path`` (Kafka topic-name safe)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(path).stem)[:40].strip("-") or "rec"
    return f"replay-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_namespace(ns: str, live_prefix: str) -> None:
    if not NS_RE.match(ns):
        raise ReplayError(f"namespace {ns!r}: use letters, digits, '.', '_' or '-' (it prefixes Kafka topics)")
    if ns == live_prefix:
        raise ReplayError(f"refusing to replay into the live namespace {ns!r}: pass another --prefix "
                          f"(or none, for a fresh replay-... namespace)")


def parse_time(value: str | None, first_ns: int) -> int | None:
    """A slice bound: ``+SECONDS`` after the recording's start, epoch seconds/ms, or ISO 8601 (local time)."""
    if value is None or value == "":
        return None
    v = value.strip()
    try:
        if v.startswith("+"):
            return first_ns + int(float(v[1:]) * 1e9)
        num = float(v)
        return int(num * 1e6) if num > 1e11 else int(num * 1e9)  # ms or s since the epoch
    except ValueError:
        pass
    try:
        return int(datetime.fromisoformat(v).timestamp() * 1e9)
    except ValueError:
        raise ReplayError(f"time {value!r}: use +SECONDS from the start, epoch seconds, or ISO 8601 "
                          f"(2026-11-20T22:00:00)") from None


def filter_devices(msg: RecordedMessage, devices: set[str]) -> RecordedMessage | None:
    """Keep only the listed devices: a device topic passes or not; a gateway payload is cut down to them."""
    parts = msg.topic.split("/")
    if len(parts) == 4 and parts[0] == "v1" and parts[1] == "devices":
        return msg if parts[2] in devices else None
    if len(parts) == 4 and parts[0] == "v1" and parts[1] == "gateway":
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return None  # malformed: it names no device we could keep
        if not isinstance(doc, dict):
            return None
        kept = {k: v for k, v in doc.items() if k in devices}
        if not kept:
            return None
        if len(kept) == len(doc):
            return msg
        payload = json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode()
        return RecordedMessage(msg.topic, payload, msg.recv_ns, msg.qos)
    return None


def mark_replayed(value: bytes) -> bytes:
    """A recorded frame record with ``"replayed": true`` in its header (JPEG bytes untouched); any other
    record (a camera_status, something malformed the live agent dead-lettered) is returned as it is."""
    from gridwatch.pipeline.schemas.frame_wire import with_header
    from gridwatch.pipeline.schemas.frames import peek_header

    head = peek_header(value)
    return value if head is None else with_header(value, {**head, "replayed": True})


@dataclass
class ReplayStats:
    namespace: str
    speed: float | None
    messages: int = 0
    readings: int = 0
    frames: int = 0
    dead_letters: Counter = field(default_factory=Counter)
    skipped_devices: int = 0
    records: int = 0
    first_ns: int = 0  # recorded receive time of the first / last message replayed
    last_ns: int = 0
    wall_s: float = 0.0
    end_offsets: dict[int, int] = field(default_factory=dict)  # readings partition -> next offset
    frame_offsets: dict[int, int] = field(default_factory=dict)  # frames partition -> next offset
    problems: list[str] = field(default_factory=list)
    complete_file: bool = True

    @property
    def recorded_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9 if self.last_ns > self.first_ns else 0.0

    @property
    def speedup(self) -> float:
        return self.recorded_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "speed": self.speed or "max", "messages": self.messages,
            "readings": self.readings, "frames": self.frames, "dead_letters": dict(self.dead_letters),
            "skipped_by_device_filter": self.skipped_devices, "kafka_records": self.records,
            "recorded_s": round(self.recorded_s, 3), "wall_s": round(self.wall_s, 3),
            "speedup": round(self.speedup, 1), "file_complete": self.complete_file, "problems": self.problems,
        }


def recording_span(path: str | Path) -> tuple[int, int, int]:
    """(first_ns, last_ns, messages) from the summary, or by reading the file when it has none."""
    with contextlib.suppress(Exception):
        from mcap.reader import make_reader

        with open(path, "rb") as fh:
            summary = make_reader(fh).get_summary()
        if summary is not None and summary.statistics is not None:
            st = summary.statistics
            return st.message_start_time, st.message_end_time, st.message_count
    rep = scan(path)
    return rep.first_ns, rep.last_ns, rep.messages


def recording_frames(path: str | Path) -> int:
    """How many frames-topic records a recording holds (summary statistics, else by reading it)."""
    from gridwatch.pipeline.recordreplay.recording import FRAME_ENCODING

    with contextlib.suppress(Exception):
        from mcap.reader import make_reader

        with open(path, "rb") as fh:
            summary = make_reader(fh).get_summary()
        if summary is not None and summary.statistics is not None:
            counts = summary.statistics.channel_message_counts
            return sum(counts.get(cid, 0) for cid, ch in summary.channels.items()
                       if ch.message_encoding == FRAME_ENCODING)
    return scan(path).frames


class Replayer:
    """Feeds one recording into a namespace; :meth:`run` returns the stats (await it)."""

    def __init__(self, settings: Settings, registry: Any, path: str | Path, *, speed: float | None = None,
                 start_ns: int | None = None, end_ns: int | None = None, devices: Iterable[str] | None = None,
                 progress: Callable[[ReplayStats, float], None] | None = None, frames: bool = True,
                 video: Iterator[RecordedFrame] | None = None) -> None:
        if speed is not None and speed <= 0:
            raise ReplayError(f"--speed must be > 0 (or --max), got {speed}")
        self.settings = settings
        self.registry = registry
        self.path = Path(path)
        self.speed = speed
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.devices = set(devices) if devices else None
        self.progress = progress
        self.frames = frames
        self.video = video  # frames re-captured from the segments (--video-from segments), in time order
        self.stats = ReplayStats(settings.kafka.topic_prefix, speed)
        self.reader = RecordingReader(self.path)

    def _messages(self) -> Iterator[RecordedMessage | RecordedFrame]:
        items: Iterator[RecordedMessage | RecordedFrame] = self.reader.messages(self.start_ns, self.end_ns,
                                                                                  frames=self.frames)
        if self.video is not None:
            video = (f for f in self.video if (self.start_ns is None or f.recv_ns >= self.start_ns)
                     and (self.end_ns is None or f.recv_ns < self.end_ns))
            items = heapq.merge(items, video, key=lambda m: m.recv_ns)
        for msg in items:
            if isinstance(msg, RecordedFrame):
                if self.devices is not None and msg.camera not in self.devices:
                    self.stats.skipped_devices += 1
                    continue
                yield msg
                continue
            if self.devices is not None:
                kept = filter_devices(msg, self.devices)
                if kept is None:
                    self.stats.skipped_devices += 1
                    continue
                msg = kept
            yield msg

    async def run(self, stop: asyncio.Event | None = None) -> ReplayStats:
        stop = stop or asyncio.Event()
        st = self.stats
        first, last, _total = recording_span(self.path)
        lo = max(first, self.start_ns or first)
        hi = min(last, self.end_ns or last) if last else last
        await ensure_topics(self.settings, ("readings", "events", "deadletter")
                            + (("frames",) if self.frames or self.video is not None else ()))
        producer = await start_producer(self.settings, linger_ms=20)
        frames_topic = self.settings.topic("frames")
        partitions = len(await producer.partitions_for(self.settings.topic("readings")))
        router = Router(self.registry, partitions, self.settings.bridge)
        pending: list[asyncio.Future] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        next_progress = t0 + 0.5
        origin_ns = 0  # recorded time that maps to t0

        async def send(routed: Routed) -> None:
            recs = kafka_records(self.settings, routed)
            futs = [await producer.send(topic, value, key=key, partition=partition)
                    for topic, key, value, partition in recs]
            st.records += len(recs)
            st.messages += routed.messages
            st.readings += routed.readings
            st.dead_letters.update(routed.reasons)
            pending.append(asyncio.ensure_future(self._confirm(futs)))
            while len(pending) > MAX_PENDING_ROUNDS:
                await pending.pop(0)

        async def send_frame(fr: RecordedFrame) -> None:
            # after the MQTT messages recorded before it; keyed by camera: the live partition, in order
            fut = await producer.send(frames_topic, mark_replayed(fr.value), key=fr.camera.encode())
            st.frames += 1
            st.records += 1
            pending.append(asyncio.ensure_future(self._confirm([fut])))
            while len(pending) > MAX_PENDING_FRAMES:
                await pending.pop(0)

        try:
            routed = Routed()
            for msg in self._messages():
                if stop.is_set():
                    st.problems.append("stopped before the end (Ctrl-C)")
                    break
                if not origin_ns:
                    origin_ns = msg.recv_ns
                    st.first_ns = msg.recv_ns
                st.last_ns = msg.recv_ns
                if self.speed is not None:
                    due = t0 + (msg.recv_ns - origin_ns) / 1e9 / self.speed
                    if due - loop.time() > 0.002:
                        if routed:  # what is due now goes out before waiting for the next message
                            await send(routed)
                            routed = Routed()
                        while (wait := due - loop.time()) > 0.002 and not stop.is_set():
                            await self._sleep(min(wait, 0.5), stop)
                            if loop.time() >= next_progress:
                                next_progress = loop.time() + 0.5
                                self._report(lo, hi, loop.time() - t0)
                if isinstance(msg, RecordedFrame):
                    if routed:
                        await send(routed)
                        routed = Routed()
                    await send_frame(msg)
                    continue
                router.add(routed, msg.topic, msg.payload, msg.recv_ns // 1_000_000)
                if routed.messages >= FEED_BATCH_MESSAGES:
                    await send(routed)
                    routed = Routed()
                if loop.time() >= next_progress:
                    next_progress = loop.time() + 0.5
                    self._report(lo, hi, loop.time() - t0)
            if routed:
                await send(routed)
            if not stop.is_set():  # the input has ended: the worker need not wait for silence
                readings = self.settings.topic("readings")
                futs = []
                for partition in range(partitions):
                    value, headers = end_of_input(partition)
                    futs.append(await producer.send(readings, value, partition=partition, headers=headers))
                pending.append(asyncio.ensure_future(self._confirm(futs)))
            for p in pending:
                await p
        finally:
            await producer.stop()
        st.wall_s = loop.time() - t0
        st.problems = self.reader.report.problems + st.problems
        st.complete_file = self.reader.report.complete
        self._report(lo, hi, st.wall_s, final=True)
        return st

    async def _confirm(self, futs: list[asyncio.Future]) -> None:
        for meta in await asyncio.gather(*futs):
            if meta.topic == self.settings.topic("readings"):
                ends = self.stats.end_offsets
            elif meta.topic == self.settings.topic("frames"):
                ends = self.stats.frame_offsets
            else:
                continue
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)

    @staticmethod
    async def _sleep(seconds: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def _report(self, lo: int, hi: int, elapsed: float, final: bool = False) -> None:
        if self.progress is None:
            return
        frac = (self.stats.last_ns - lo) / (hi - lo) if hi > lo else 1.0
        self.progress(self.stats, 1.0 if final else max(0.0, min(1.0, frac)))


# -- the worker's progress -------------------------------------------------------------------------
async def committed_offsets(settings: Settings, group: str, partitions: Iterable[int],
                            family: str = "readings") -> dict[int, int]:
    """Offsets a consumer group committed on the namespace's ``family`` topic (partition -> offset).

    The partitions are named explicitly: the "all partitions" form of OffsetFetch is not understood
    by every broker (the embedded one answers it with a response aiokafka cannot decode).
    """
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    topic = settings.topic(family)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap(), request_timeout_ms=10000)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=[TopicPartition(topic, p) for p in partitions])
    finally:
        await admin.close()
    return {tp.partition: om.offset for tp, om in got.items() if tp.topic == topic and om.offset >= 0}


def group_id(settings: Settings) -> str:
    """The Faust consumer group of a namespace's workers (see gridwatch.app.create_app)."""
    return f"{settings.worker.app_id}-{settings.kafka.topic_prefix}"


async def wait_processed(settings: Settings, end_offsets: dict[int, int], timeout: float = 600.0,
                         progress: Callable[[int, int], None] | None = None, family: str = "readings") -> bool:
    """Wait until the namespace's workers committed every ``family`` record the replay produced."""
    group = group_id(settings)
    total = sum(end_offsets.values())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = await committed_offsets(settings, group, end_offsets, family)
        except Exception as e:  # noqa: BLE001 - the group may not exist yet; keep asking
            log.debug("offsets of %s: %s", group, e)
            done = {}
        behind = sum(max(0, end - done.get(p, 0)) for p, end in end_offsets.items())
        if progress is not None:
            progress(total - behind, total)
        if behind == 0:
            return True
        await asyncio.sleep(0.5)
    return False


async def wait_events_merged(settings: Settings, settle_s: float, timeout: float = 600.0) -> bool:
    """After the readings: wait until the workers consumed every ``<ns>.events`` record, idle markers included.

    The incident agent releases the last grid events of a readings partition only once the telemetry
    agent has announced that partition idle (here at once: the replay ends every readings partition with
    an end-of-input marker; see agents/event_order.py), so a replay that stopped its worker right after
    the readings would lose the run's last incidents. ``settle_s``: how long the idle markers take to go out.
    """
    from gridwatch.pipeline.recordreplay.compare import high_watermarks

    await asyncio.sleep(settle_s)  # the idle markers are out by then
    end = await high_watermarks(settings, settings.topic("events"))
    return await wait_processed(settings, {p: o for p, o in end.items() if o > 0}, timeout, family="events")


def worker_env(ns: str, settings: Settings | None = None) -> dict[str, str]:
    """A replay's worker: alert/stats MQTT topics under replay/<ns>/, no InfluxDB writes into live data,
    vision snapshots in ``<evidence>/replay/<ns>/`` (not over the live run's pictures of the same ids)."""
    env = {"GRIDWATCH_MQTT_ALERT_PREFIX": replay_prefix(ns, ALERT_PREFIX),
           "GRIDWATCH_MQTT_STATS_PREFIX": replay_prefix(ns, STATS_PREFIX),
           "GRIDWATCH_INFLUX_ENABLED": "false",
           # order by the data alone, never by the machine's speed: no wall-clock advance of the marks, and
           # a partition idles at the replay's end-of-input marker (or after a day), not after a pause of this machine
           "GRIDWATCH_WORKER_WALL_CLOCK_ADVANCE_SLACK_S": "0",
           "GRIDWATCH_WORKER_UPSTREAM_IDLE_S": "86400"}
    if settings is not None:
        from gridwatch.pipeline.sources.camera_service import evidence_root

        env["GRIDWATCH_WEB_EVIDENCE_DIR"] = str(evidence_root(settings) / "replay" / ns)
    return env
