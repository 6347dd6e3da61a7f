"""``gridwatch record``: capture device and gateway MQTT traffic (and camera streams) into a recording.

The MQTT side is a plain subscriber (clean session, QoS 1, by default ``v1/#``): the network thread only
queues what arrives with its receive time, the calling thread writes it to the MCAP file in arrival
order and closes a chunk at least every second, so a killed recorder leaves a readable file and a
stopped one (Ctrl-C, SIGTERM, ``--duration``) leaves a complete, indexed one.
Cameras are recorded beside the file by :mod:`gridwatch.pipeline.recordreplay.camera_record` (no re-encoding); each
finished segment is indexed in the recording with its wall-clock span.  With ``frames`` the recorder also
keeps every record of the live ``<prefix>.frames`` topic produced while it runs (:mod:`.frame_tap`): the
frames the vision agent analysed, which a replay feeds back so vision events come out the same.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gridwatch.core.settings import Settings
from gridwatch.pipeline.mqtt_client import connect, make_client
from gridwatch.pipeline.recordreplay.recording import DEFAULT_FILTERS, RecordingWriter

log = logging.getLogger("gridwatch.record")


@dataclass
class RecordStats:
    path: str
    messages: int = 0
    payload_bytes: int = 0
    file_bytes: int = 0
    elapsed_s: float = 0.0
    rate: float = 0.0  # messages/s over the last second
    segments: int = 0
    frames: int = 0
    cameras: dict[str, str] = field(default_factory=dict)  # name -> state
    reconnects: int = 0

    def line(self) -> str:
        m, s = divmod(int(self.elapsed_s), 60)
        cams = f"  cameras {self.segments} segments" if self.cameras else ""
        cams += f"  {self.frames:,} frames" if self.frames else ""
        return (f"recording {m:02d}:{s:02d}  {self.messages:,} messages ({self.rate:,.0f}/s)  "
                f"{self.payload_bytes / 1e6:,.1f} MB in, {self.file_bytes / 1e6:,.1f} MB on disk{cams}")


class Recorder:
    """Records until :meth:`stop` or ``duration_s``; :meth:`run` blocks and returns the final stats."""

    def __init__(self, settings: Settings, out: str | Path, *, filters: tuple[str, ...] = DEFAULT_FILTERS,
                 cameras: dict[str, str] | None = None, duration_s: float | None = None,
                 segment_s: float = 10.0, flush_s: float = 1.0, frames: bool = False) -> None:
        self.settings = settings
        self.out = Path(out)
        self.filters = tuple(filters) or DEFAULT_FILTERS
        self.cameras = dict(cameras or {})
        self.duration_s = duration_s
        self.segment_s = segment_s
        self.flush_s = flush_s
        self.frames = frames
        self._q: queue.SimpleQueue[tuple[str, bytes, int, int, bool]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self.stats = RecordStats(str(self.out))

    def stop(self) -> None:
        self._stop.set()

    # paho network thread: keep it short, the writer does the rest
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._q.put((msg.topic, msg.payload, time.time_ns(), msg.qos, bool(msg.retain)))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            log.error("MQTT connect refused: %s", rc)
            return
        client.subscribe([(f, 1) for f in self.filters])

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc != 0 and not self._stop.is_set():
            self.stats.reconnects += 1
            log.warning("MQTT connection lost (%s); reconnecting (messages sent meanwhile are not recorded)", rc)

    def run(self, progress: Callable[[RecordStats], None] | None = None, ready: threading.Event | None = None) -> RecordStats:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        host, port, _user, _pw = self.settings.mqtt_endpoint()
        meta = {"mqtt": f"{host}:{port}", "host": socket.gethostname(), "city": self.settings.city.path,
                "kafka_partitions": str(self.settings.kafka.partitions), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cameras": ",".join(f"{k}={v}" for k, v in self.cameras.items()),
                "frames_topic": self.settings.topic("frames") if self.frames else ""}
        writer = RecordingWriter(self.out, self.filters, metadata=meta, flush_s=self.flush_s)
        client = make_client(self.settings, f"gridwatch-record-{os.getpid()}-{int(time.time()) % 100000}",
                             clean_session=True, max_inflight=1000)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        cams = None
        tap = None
        try:
            connect(client)
            client.loop_start()
            if not self._subscribed.wait(15):
                raise ConnectionError(f"MQTT broker {host}:{port} did not confirm the subscription to "
                                      f"{', '.join(self.filters)}")
            if self.frames:
                from gridwatch.pipeline.recordreplay.frame_tap import FrameTap

                tap = FrameTap(self.settings)
                tap.start()
            log.info("recorder subscribed to %s", ", ".join(self.filters)
                     + (f" and Kafka {self.settings.topic('frames')}" if tap else ""))
            if self.cameras:
                from gridwatch.pipeline.recordreplay.camera_record import CameraRecorder

                cams = CameraRecorder(self.cameras, self.out, segment_s=self.segment_s)
                cams.start()
            if ready is not None:
                ready.set()
            self._loop(writer, cams, tap, progress)
        finally:
            client.disconnect()
            client.loop_stop()
            if tap is not None:
                tap.stop()  # reads up to the topic's end first: the frames of the recorded span
                self._add_frames(writer, tap)
                if tap.error is not None:
                    log.error("frames were not fully recorded: %s", tap.error)
            if cams is not None:
                for cam, info in cams.stop():
                    writer.add_segment(cam, info)
                    self.stats.segments += 1
            self._drain(writer)
            writer.close({"stopped": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "reconnects": str(self.stats.reconnects)})
            self.stats.file_bytes = self.out.stat().st_size if self.out.exists() else 0
            if progress is not None:
                progress(self.stats)
        return self.stats

    def _drain(self, writer: RecordingWriter, limit: int = 1 << 30) -> int:
        n = 0
        while n < limit:
            try:
                topic, payload, recv_ns, qos, retain = self._q.get_nowait()
            except queue.Empty:
                break
            writer.add(topic, payload, recv_ns, qos, retain)
            n += 1
        self.stats.messages = writer.messages
        self.stats.payload_bytes = writer.bytes
        return n

    def _add_frames(self, writer: RecordingWriter, tap: Any) -> int:
        items = tap.take()
        for cam, value, ts_ns in items:
            writer.add_frame(cam, value, ts_ns)
        self.stats.frames = writer.frames
        return len(items)

    def _loop(self, writer: RecordingWriter, cams: Any, tap: Any,
              progress: Callable[[RecordStats], None] | None) -> None:
        t0 = time.monotonic()
        next_report = t0 + 1.0
        last_count = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.duration_s is not None and now - t0 >= self.duration_s:
                break
            n = self._drain(writer, 20_000)
            if tap is not None:
                n += self._add_frames(writer, tap)
            if not n:
                time.sleep(0.02)
            writer.maybe_flush(time.time_ns())
            if cams is not None:
                for cam, info in cams.poll():
                    writer.add_segment(cam, info)
                    self.stats.segments += 1
                self.stats.cameras = cams.states()
            if now >= next_report:
                self.stats.elapsed_s = now - t0
                self.stats.rate = (writer.messages - last_count) / max(1e-3, now - next_report + 1.0)
                last_count = writer.messages
                self.stats.file_bytes = self.out.stat().st_size
                next_report = now + 1.0
                if progress is not None:
                    progress(self.stats)
        self.stats.elapsed_s = time.monotonic() - t0
