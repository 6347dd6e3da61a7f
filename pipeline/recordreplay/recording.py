"""The recording container: MQTT messages (and a camera segment index) in an MCAP file.

Why MCAP: an open, self-describing, indexed container with readers in many languages and viewers
(``mcap info``, Foxglove), chunked and zstd-compressed, where a file cut short still yields every
complete chunk before the cut. A recording of a city is inspectable without gridwatch.

Layout (profile ``gridwatch.mqtt``, library ``gridwatch record``):

* Schema ``gridwatch.MqttMessage`` (encoding ``jsonschema``, see :data:`MQTT_MESSAGE_SCHEMA`); every MQTT
  message is one MCAP message with JSON data ``{"topic", "qos", "retain", "payload"}`` where ``payload``
  is the exact payload as UTF-8 text, or ``payload_b64`` (base64) when it is not valid UTF-8 — so
  malformed input is recorded byte for byte and a replay dead-letters it exactly as the live bridge did.
* One channel per MQTT subscription pattern (``v1/devices/+/telemetry``, ``v1/gateway/+/telemetry``, and
  the catch-all filter for anything else); the concrete topic is in the message.
* ``log_time`` = ``publish_time`` = when the recorder received the message (ns since the epoch, wall
  clock): replay paces on it. Messages are written in arrival order, which replay keeps.
* Schema ``gridwatch.VideoSegment`` on channel ``camera/<name>/segments``: one message per finished video
  segment (a file next to the recording, stored without re-encoding) with its wall-clock span.
* Schema ``gridwatch.FrameRecord`` on channel ``frames/<camera>`` (message encoding ``gridwatch.frame``):
  every record of the live ``<prefix>.frames`` topic — the frames the vision agent analysed, byte for
  byte (``GWF1`` header + JPEG, or a ``camera_status`` JSON record), keyed by the channel's camera;
  ``log_time`` = the Kafka record's timestamp (when the capture service produced it).  A replay feeds
  these, not a fresh decode of the segments, so the vision agent sees the very same frames and times.
* Metadata ``gridwatch.recording`` (start: filters, city, host) and ``gridwatch.recording.end`` (counts).

Chunks are closed at least every ``flush_s`` seconds and flushed to disk, so a recorder that is
killed leaves a readable prefix; a clean stop writes the summary and index (``finish()``).
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mcap.exceptions import McapError
from mcap.records import Channel as McapChannel
from mcap.records import Chunk, Footer, Header, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk
from mcap.writer import CompressionType, Writer

from gridwatch.pipeline.schemas.mqtt_topics import TELEMETRY_PATTERNS

PROFILE = "gridwatch.mqtt"
LIBRARY = "gridwatch record"
MQTT_SCHEMA_NAME = "gridwatch.MqttMessage"
SEGMENT_SCHEMA_NAME = "gridwatch.VideoSegment"
FRAME_SCHEMA_NAME = "gridwatch.FrameRecord"
FRAME_ENCODING = "gridwatch.frame"
DEFAULT_FILTERS = ("v1/#",)
# Channels for the device API's patterns; anything else lands on the channel of the filter it matched.
KNOWN_PATTERNS = TELEMETRY_PATTERNS

MQTT_MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": MQTT_SCHEMA_NAME,
    "description": "One MQTT message as the recorder received it. log_time = receive time (ns).",
    "type": "object",
    "properties": {
        "topic": {"type": "string", "description": "MQTT topic the message was published on"},
        "qos": {"type": "integer", "enum": [0, 1, 2]},
        "retain": {"type": "boolean"},
        "payload": {"type": "string", "description": "payload bytes as UTF-8 text (when valid UTF-8)"},
        "payload_b64": {"type": "string", "description": "payload bytes, base64 (when not valid UTF-8)"},
    },
    "required": ["topic"],
}
VIDEO_SEGMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": SEGMENT_SCHEMA_NAME,
    "description": "A finished video segment of a camera, stored as received (no re-encoding).",
    "type": "object",
    "properties": {
        "camera": {"type": "string"},
        "url": {"type": "string", "description": "RTSP source"},
        "file": {"type": "string", "description": "segment file, relative to the recording's folder"},
        "start_ns": {"type": "integer", "description": "wall clock of the first frame (ns since epoch)"},
        "end_ns": {"type": "integer", "description": "wall clock after the last frame (ns since epoch)"},
        "codec": {"type": "string"},
        "bytes": {"type": "integer"},
    },
    "required": ["camera", "file", "start_ns", "end_ns"],
}


FRAME_RECORD_SCHEMA = (
    b"A record of the <prefix>.frames Kafka topic as produced by the capture service, byte for byte: "
    b"'GWF1' + uint32 BE header length + JSON header + JPEG (see gridwatch.pipeline.schemas.frames), "
    b"or a JSON camera_status record. Kafka key = the channel's metadata 'camera'. log_time = the Kafka "
    b"record timestamp (ns).")


class RecordingError(ValueError):
    """The file is not a gridwatch recording, or is damaged; the message says where and what."""


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


def encode_message(topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> bytes:
    doc: dict[str, Any] = {"topic": topic, "qos": qos, "retain": retain}
    try:
        doc["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        doc["payload_b64"] = base64.b64encode(payload).decode("ascii")
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode_message(data: bytes) -> tuple[str, bytes, int]:
    """(topic, payload bytes, qos) of a recorded MQTT message; RecordingError if malformed."""
    try:
        doc = json.loads(data)
        topic = doc["topic"]
        if "payload" in doc:
            payload = doc["payload"].encode("utf-8")
        else:
            payload = base64.b64decode(doc.get("payload_b64", ""), validate=True)
        return topic, payload, int(doc.get("qos", 0))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise RecordingError(f"recorded message is not a {MQTT_SCHEMA_NAME}: {e}") from None


class RecordingWriter:
    """Writes MQTT messages to an MCAP file; call :meth:`maybe_flush` often and :meth:`close` at the end."""

    def __init__(self, path: str | Path, filters: tuple[str, ...] = DEFAULT_FILTERS, *,
                 metadata: dict[str, str] | None = None, chunk_size: int = 1 << 20, flush_s: float = 1.0) -> None:
        self.path = Path(path)
        self.filters = tuple(filters)
        self.flush_s = flush_s
        self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._writer = Writer(self._fh, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._writer.start(profile=PROFILE, library=LIBRARY)
        self._mqtt_schema = self._writer.register_schema(
            MQTT_SCHEMA_NAME, "jsonschema", json.dumps(MQTT_MESSAGE_SCHEMA).encode())
        self._segment_schema = 0
        self._frame_schema = 0
        self.frames = 0
        self._channels: dict[str, int] = {}
        self._last_flush_ns = 0
        self._unflushed = 0
        self.messages = 0
        self.bytes = 0
        self.first_ns = 0
        self.last_ns = 0
        self.by_channel: dict[str, int] = {}
        self.closed = False
        self._writer.add_metadata("gridwatch.recording", {"filters": ",".join(self.filters), **(metadata or {})})
        self._fh.flush()  # header and metadata on disk at once: even a recorder killed at once leaves MCAP

    def _channel_for(self, topic: str) -> int:
        pattern = next((p for p in KNOWN_PATTERNS if topic_matches(p, topic)), None)
        if pattern is None:
            pattern = next((f for f in self.filters if topic_matches(f, topic)), "#")
        cid = self._channels.get(pattern)
        if cid is None:
            cid = self._writer.register_channel(pattern, "json", self._mqtt_schema, {"mqtt_filter": pattern})
            self._channels[pattern] = cid
        return cid

    def add(self, topic: str, payload: bytes, recv_ns: int, qos: int = 0, retain: bool = False) -> None:
        cid = self._channel_for(topic)
        self._writer.add_message(cid, recv_ns, encode_message(topic, payload, qos, retain), recv_ns, self.messages)
        self.messages += 1
        self.bytes += len(payload)
        self._unflushed += 1
        self.first_ns = self.first_ns or recv_ns
        self.last_ns = max(self.last_ns, recv_ns)

    def add_segment(self, camera: str, info: dict[str, Any]) -> None:
        """Index a finished video segment (a file beside the recording) on ``camera/<name>/segments``."""
        if not self._segment_schema:
            self._segment_schema = self._writer.register_schema(
                SEGMENT_SCHEMA_NAME, "jsonschema", json.dumps(VIDEO_SEGMENT_SCHEMA).encode())
        name = f"camera/{camera}/segments"
        cid = self._channels.get(name)
        if cid is None:
            cid = self._writer.register_channel(name, "json", self._segment_schema, {"camera": camera})
            self._channels[name] = cid
        start = int(info["start_ns"])
        self._writer.add_message(cid, start, json.dumps({"camera": camera, **info}).encode(), start, 0)
        self._unflushed += 1

    def add_frame(self, camera: str, value: bytes, ts_ns: int) -> None:
        """Record one ``<prefix>.frames`` Kafka record (key ``camera``) on channel ``frames/<camera>``."""
        if not self._frame_schema:
            self._frame_schema = self._writer.register_schema(FRAME_SCHEMA_NAME, "", FRAME_RECORD_SCHEMA)
        name = f"frames/{camera}"
        cid = self._channels.get(name)
        if cid is None:
            cid = self._writer.register_channel(name, FRAME_ENCODING, self._frame_schema, {"camera": camera})
            self._channels[name] = cid
        self._writer.add_message(cid, ts_ns, value, ts_ns, self.frames)
        self.frames += 1
        self._unflushed += 1
        self.first_ns = self.first_ns or ts_ns
        self.last_ns = max(self.last_ns, ts_ns)

    def maybe_flush(self, now_ns: int) -> bool:
        """Close the open chunk and flush it to disk if ``flush_s`` passed: bounds what a kill loses."""
        if self._unflushed and now_ns - self._last_flush_ns >= self.flush_s * 1e9:
            self.flush()
            self._last_flush_ns = now_ns
            return True
        return False

    def flush(self) -> None:
        # mcap's Writer closes a chunk only when it is full or at finish(); a time bound needs its
        # chunk finaliser (name-mangled private method, present in mcap 1.x; checked in the tests).
        finalize = getattr(self._writer, "_Writer__finalize_chunk", None)
        if finalize is not None:
            finalize()
        self._fh.flush()
        self._unflushed = 0

    def close(self, end_metadata: dict[str, str] | None = None) -> None:
        """Write the summary and index (a valid, complete MCAP file) and close it."""
        if self.closed:
            return
        self.closed = True
        self._writer.add_metadata("gridwatch.recording.end", {
            "messages": str(self.messages), "payload_bytes": str(self.bytes), **(end_metadata or {})})
        self._writer.finish()
        self._fh.close()


@dataclass(slots=True)
class RecordedMessage:
    topic: str
    payload: bytes
    recv_ns: int
    qos: int = 0


@dataclass(slots=True)
class RecordedFrame:
    """One record of the live frames topic: Kafka key (camera), value bytes, Kafka timestamp."""

    camera: str
    value: bytes
    recv_ns: int


@dataclass
class ReadReport:
    """What reading a recording found: counts, and every problem with its byte offset."""

    path: str
    messages: int = 0
    frames: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    complete: bool = False  # the footer was reached: the file was closed cleanly
    first_ns: int = 0
    last_ns: int = 0
    damaged_chunks: int = 0
    bad_messages: int = 0

    @property
    def intact(self) -> bool:
        return self.complete and not self.problems


@dataclass
class _Tally:
    """What the file says it holds against what was read. A damaged record opcode can make a whole
    chunk vanish without any parse error (an unknown opcode is skipped, as MCAP allows); these counts
    make such a loss a named problem instead of a silently shorter replay."""

    orphans: int = 0  # messages on a channel whose Channel or Schema record was lost
    mqtt: int = 0
    next_seq: int = 0  # the writer numbers MQTT messages 0, 1, 2, ... in file order
    gaps: int = 0
    missing: int = 0

    def mqtt_message(self, sequence: int) -> None:
        if sequence != self.next_seq:
            self.gaps += 1
            self.missing += max(sequence - self.next_seq, 0)
        self.next_seq = sequence + 1
        self.mqtt += 1

    def problems(self, metadata: dict[str, dict[str, str]]) -> list[str]:
        out = []
        if self.orphans:
            out.append(f"{self.orphans} messages on channels whose definition was damaged or lost: skipped")
        if self.gaps:
            out.append(f"the recorder's message numbering jumps {self.gaps} time(s), {self.missing} messages "
                       f"missing: a damaged part of the file was skipped")
        wrote = metadata.get("gridwatch.recording.end", {}).get("messages", "")
        if wrote.isdigit() and int(wrote) != self.mqtt:
            out.append(f"the recorder wrote {int(wrote):,} MQTT messages but {self.mqtt:,} are in the file: "
                       f"a damaged part of it was skipped")
        return out


class RecordingReader:
    """Reads a recording front to back, tolerating damage: skips a corrupt chunk, stops at a cut.

    Why not mcap's indexed reader: it needs the summary at the end of the file, which a killed
    recorder never wrote, and it gives up on the first bad chunk. Reading the data section in order
    replays everything that is intact and reports exactly what was not.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"recording {self.path} does not exist")
        self.report = ReadReport(str(self.path))

    def _problem(self, text: str) -> None:
        self.report.problems.append(text)

    def records(self) -> Iterator[Any]:
        """Every record (chunks opened) in file order; damage becomes a problem, not an exception."""
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if head[:5] != b"\x89MCAP":
                raise RecordingError(f"{self.path} is not an MCAP recording (bad magic {head[:8]!r})")
            fh.seek(0)
            sr = StreamReader(fh, emit_chunks=True, record_size_limit=1 << 30)
            it = sr.records
            while True:
                offset = sr._stream.count
                try:
                    rec = next(it)
                except StopIteration:
                    break
                # OverflowError: a damaged length inside a record (a chunk's data length) past 2**63
                except (McapError, struct.error, EOFError, ValueError, MemoryError, OSError, OverflowError) as e:
                    why = type(e).__name__ + (f": {e}" if str(e) else "")
                    self._problem(f"recording ends abruptly at byte {offset} of {self.path.stat().st_size} "
                                  f"({why}); the recorder was probably killed or the file was cut. "
                                  f"Everything before that point was read.")
                    return
                if isinstance(rec, Chunk):
                    try:
                        inner = breakup_chunk(rec, validate_crc=True)
                    except Exception as e:  # noqa: BLE001 - zstd/CRC/struct errors: the chunk is lost, not the file
                        self.report.damaged_chunks += 1
                        span = f"{rec.message_start_time / 1e9:.3f}..{rec.message_end_time / 1e9:.3f}"
                        self._problem(f"damaged chunk at byte {offset} (messages received {span}, "
                                      f"{type(e).__name__}: {str(e)[:120]}): skipped")
                        continue
                    yield from inner
                    continue
                if isinstance(rec, Footer):
                    self.report.complete = True
                yield rec

    def messages(self, start_ns: int | None = None, end_ns: int | None = None, *,
                 frames: bool = False) -> Iterator[RecordedMessage | RecordedFrame]:
        """MQTT messages in arrival order, optionally only those received in [start_ns, end_ns);
        with ``frames``, the recorded frames-topic records too (:class:`RecordedFrame`), in file order."""
        schemas: dict[int, str] = {}
        channels: dict[int, int] = {}  # channel id -> schema id
        seg_channels: set[int] = set()
        frame_channels: dict[int, str] = {}  # channel id -> camera
        rep = self.report
        tally = _Tally()
        for rec in self.records():
            if isinstance(rec, Header):
                if rec.profile and rec.profile != PROFILE:
                    self._problem(f"profile is {rec.profile!r}, not {PROFILE!r}: reading MQTT messages anyway")
            elif isinstance(rec, Schema):
                schemas[rec.id] = rec.name
            elif isinstance(rec, McapChannel):
                channels[rec.id] = rec.schema_id
                if schemas.get(rec.schema_id) == SEGMENT_SCHEMA_NAME:
                    seg_channels.add(rec.id)
                elif schemas.get(rec.schema_id) == FRAME_SCHEMA_NAME:
                    frame_channels[rec.id] = rec.metadata.get("camera") or rec.topic.removeprefix("frames/")
            elif isinstance(rec, Metadata):
                rep.metadata[rec.name] = dict(rec.metadata)
            elif isinstance(rec, Message):
                sid = channels.get(rec.channel_id)
                if sid is None or (sid and sid not in schemas):
                    tally.orphans += 1  # its channel or schema record was in a part of the file that is lost
                    continue
                if rec.channel_id in seg_channels:
                    try:
                        rep.segments.append(json.loads(rec.data))
                    except ValueError:
                        rep.bad_messages += 1
                    continue
                cam = frame_channels.get(rec.channel_id)
                if cam is not None:
                    t = rec.log_time
                    if (start_ns is None or t >= start_ns) and (end_ns is None or t < end_ns):
                        rep.frames += 1
                        if frames:
                            yield RecordedFrame(cam, bytes(rec.data), t)
                    continue
                if schemas.get(channels.get(rec.channel_id, -1)) != MQTT_SCHEMA_NAME:
                    continue
                tally.mqtt_message(rec.sequence)
                t = rec.log_time
                rep.first_ns = rep.first_ns or t
                rep.last_ns = max(rep.last_ns, t)
                if (start_ns is not None and t < start_ns) or (end_ns is not None and t >= end_ns):
                    continue
                try:
                    topic, payload, qos = decode_message(rec.data)
                except RecordingError as e:
                    rep.bad_messages += 1
                    if rep.bad_messages <= 3:
                        self._problem(f"message #{rec.sequence} received {t / 1e9:.3f}: {e}; skipped")
                    continue
                rep.messages += 1
                yield RecordedMessage(topic, payload, t, qos)
        rep.bad_messages += tally.orphans
        for problem in tally.problems(rep.metadata):
            self._problem(problem)
        if not rep.complete and not any("ends abruptly" in p for p in rep.problems):
            self._problem("recording has no summary (the recorder did not stop cleanly); "
                          "read every complete chunk")


def scan(path: str | Path) -> ReadReport:
    """Read a whole recording for its report (counts, span, problems) without keeping messages."""
    reader = RecordingReader(path)
    for _ in reader.messages():
        pass
    return reader.report
