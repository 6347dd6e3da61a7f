"""Read the live ``<prefix>.frames`` topic from "now" on, for ``gridwatch record --frames``.

Why record the Kafka records and not only the RTSP segments: the capture service samples a live stream
by arrival time (detect fps, the motion gate, "newest frame wins" when Kafka is slow), so decoding the
segments again can never pick the same frames with the same timestamps.  The records on the frames
topic *are* what the vision agent analysed; recording them byte for byte lets a replay feed the agent
the same input and get the same vision events, at any speed.

The tap is a plain consumer without a group (it must not steal partitions from the workers).  It
starts at each partition's high watermark as a *fetch* reports it (right on every broker; the embedded
broker's ListOffsets answer is not trusted, see :func:`gridwatch.compat.true_highwaters`), so it records what is
produced after the recording started.  If the topic does not exist yet it waits for it and then reads
it from the beginning (everything in it is new).  It runs its own event loop in a thread: the recorder
is synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from gridwatch.core.settings import Settings
from gridwatch.pipeline.kafka_io import assign_from_start, fetch_highwaters

log = logging.getLogger("gridwatch.record")

FrameItem = tuple[str, bytes, int]  # camera (Kafka key), value, Kafka timestamp (ns)


class FrameTap:
    """Collects ``(camera, value, ts_ns)`` of every new frames-topic record; :meth:`take` drains them."""

    def __init__(self, settings: Settings, *, max_fetch_bytes: int = 16 << 20) -> None:
        self.settings = settings
        self.topic = settings.topic("frames")
        self.max_fetch_bytes = max_fetch_bytes
        self._q: queue.SimpleQueue[FrameItem] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.records = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start reading; returns once the start offsets are known (what is produced later is recorded)."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True, name="frame-tap")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"frames topic {self.topic}: no start offsets from Kafka within {timeout:.0f} s")
        if self.error is not None:
            raise self.error

    def take(self) -> list[FrameItem]:
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout: float = 15.0) -> None:
        """Read up to the topic's current end (what was produced before the stop), then stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    async def _main(self) -> None:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap(), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=self.max_fetch_bytes, fetch_max_bytes=self.max_fetch_bytes * 4)
        try:
            await c.start()
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self.error = e
            self._ready.set()
            return
        try:
            await self._run(c)
        except BaseException as e:  # noqa: BLE001 - the recorder logs it; the MQTT part goes on
            self.error = e
            log.exception("frame tap on %s failed", self.topic)
        finally:
            self._ready.set()
            await c.stop()

    async def _run(self, c: Any) -> None:
        exists = self.topic in await c.topics()
        if exists:
            tps = await assign_from_start(c, self.topic)
            ends = await fetch_highwaters(c, tps, 20.0)
            for tp, end in ends.items():
                c.seek(tp, end)
            log.info("frame tap: recording %s from offsets %s", self.topic,
                     {tp.partition: end for tp, end in ends.items()})
        self._ready.set()
        while not exists and not self._stop.is_set():
            await asyncio.sleep(0.5)
            exists = self.topic in await c.topics()
            if exists:
                await assign_from_start(c, self.topic)
                log.info("frame tap: %s appeared; recording it from the beginning", self.topic)
        if not exists:
            return
        stop_at: dict[Any, int] | None = None
        idle = 0
        while True:
            got = await c.getmany(timeout_ms=200)
            for recs in got.values():
                for r in recs:
                    cam = r.key.decode(errors="replace") if r.key else ""
                    self._q.put((cam, r.value or b"", int(r.timestamp) * 1_000_000))
                    self.records += 1
            idle = 0 if got else idle + 1
            if self._stop.is_set():
                if stop_at is None:  # the end as of the stop: read up to it, then finish
                    stop_at = {tp: c.highwater(tp) or 0 for tp in c.assignment()}
                done = all(await c.position(tp) >= end for tp, end in stop_at.items())
                if done or idle >= 25:
                    return
