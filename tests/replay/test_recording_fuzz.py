"""Byte-fuzz of the recording reader: a real recording, cut, bit-flipped or with garbage inserted.

Whatever the damage, reading raises nothing but :class:`RecordingError` (only for a broken magic), yields
every message that lies wholly before the first damaged byte, in order, and never changes what it
yields without saying so in its :class:`ReadReport`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcap.records import Chunk
from mcap.stream_reader import StreamReader, breakup_chunk

from gridwatch.pipeline.recordreplay.recording import (
    MQTT_SCHEMA_NAME,
    RecordingError,
    RecordingReader,
    RecordingWriter,
    scan,
)

T0 = 1_763_647_200_000_000_000
CASES = {"truncated": 0, "flipped": 0, "inserted": 0}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Base:
    """The intact recording, its messages and, per message, the byte where its chunk ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.messages = read(path)[0]
        assert self.messages is not None
        self.chunk_end: list[int] = []  # per MQTT message, in file order
        self.chunk_start: list[int] = []
        with open(path, "rb") as fh:
            sr = StreamReader(fh, emit_chunks=True)
            mqtt_channels: set[int] = set()
            schemas: dict[int, str] = {}
            pos = 0  # where the record just read began
            for rec in sr.records:
                begin, pos = pos, sr._stream.count
                if isinstance(rec, Chunk):
                    self.chunk_start.append(begin)
                    for inner in breakup_chunk(rec):
                        if type(inner).__name__ == "Schema":
                            schemas[inner.id] = inner.name
                        elif type(inner).__name__ == "Channel" and schemas.get(inner.schema_id) == MQTT_SCHEMA_NAME:
                            mqtt_channels.add(inner.id)
                        elif type(inner).__name__ == "Message" and inner.channel_id in mqtt_channels:
                            self.chunk_end.append(sr._stream.count)
        assert len(self.chunk_end) == len(self.messages)
        assert len(set(self.chunk_end)) >= 5, "the recording should span several chunks"

    def intact_before(self, offset: int) -> list[tuple]:
        """The messages whose chunk ends at or before ``offset`` (the first damaged byte)."""
        return [m for m, end in zip(self.messages, self.chunk_end, strict=True) if end <= offset]


def read(path: Path) -> tuple[list[tuple] | None, object]:
    """(messages, report) as replay reads them; (None, report) on RecordingError, the one allowed exception."""
    reader = RecordingReader(path)
    try:
        return [(m.topic, m.payload, m.recv_ns, m.qos) for m in reader.messages()], reader.report
    except RecordingError:
        return None, reader.report


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    path = tmp_path_factory.mktemp("fuzz") / "base.mcap"
    w = RecordingWriter(path, ("v1/#", "city/#"), metadata={"city": "sample"})
    for i in range(60):
        if i % 3 == 2:  # not UTF-8: stored as base64
            w.add(f"v1/gateway/GW{i % 4}/telemetry", bytes([0xFF, i, 0x00, 0x80]) * 3, T0 + i * 10**6, qos=1)
        else:
            w.add(f"v1/devices/D{i % 7}/telemetry", b'{"ts": %d, "values": {"tilt_deg": %d}}' % (i, i), T0 + i * 10**6)
        if i == 30:
            w.add("city/other", "ü-not-a-device".encode(), T0 + i * 10**6 + 1)
            w.add_segment("cam1", {"start_ns": T0, "end_ns": T0 + 10**9, "file": "cam1-000.mp4"})
        if i % 6 == 5:
            w.flush()  # several chunks, as a live recorder writes them
    w.close()
    yield Base(path)
    total = sum(CASES.values())
    b = Base(path)
    print(f"\nrecording byte-fuzz: {total} damaged copies of a {len(b.data):,}-byte recording with "
          f"{len(b.chunk_start)} chunks read ({CASES}), every one without a crash")


def check(base: Base, damaged: bytes, first: int, kind: str, tmp: Path) -> None:
    """Read a damaged copy (first damaged byte at ``first``) and hold the reader to its promises."""
    path = tmp / f"{kind}.mcap"
    path.write_bytes(damaged)
    CASES[kind] += 1
    got, report = read(path)
    if got is None:
        assert first < 8, f"RecordingError although the magic (bytes 0-7) is intact; first damage at {first}"
        with pytest.raises(RecordingError):
            scan(path)
        return
    prefix = base.intact_before(first)
    assert got[:len(prefix)] == prefix, f"{kind} at {first}: the intact prefix was not replayed"
    if kind == "truncated":
        assert got == prefix
    if got != base.messages:
        assert report.problems, f"{kind} at {first}: the messages changed but the report names no problem"
    rep = scan(path)
    assert rep.messages == len(got) and rep.problems == report.problems


@FUZZ
@given(st.data())
def test_truncated_anywhere(base: Base, tmp_path: Path, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(base.data) - 1), label="cut")
    check(base, base.data[:cut], cut, "truncated", tmp_path)


@FUZZ
@given(st.data())
def test_random_bytes_flipped(base: Base, tmp_path: Path, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(base.data) - 1), st.integers(1, 255)),
                               min_size=1, max_size=4), label="flips")
    damaged = bytearray(base.data)
    for at, xor in flips:
        damaged[at] ^= xor
    check(base, bytes(damaged), min(at for at, _ in flips), "flipped", tmp_path)


@FUZZ
@given(st.data())
def test_garbage_inserted(base: Base, tmp_path: Path, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(base.data)), label="at")
    garbage = data.draw(st.one_of(
        st.binary(min_size=1, max_size=64),
        # a plausible record header: opcode + a length that points far past the end of the file
        st.tuples(st.integers(0, 255), st.integers(0, 2**64 - 1)).map(lambda t: struct.pack("<BQ", *t)),
    ), label="garbage")
    check(base, base.data[:at] + garbage + base.data[at:], at, "inserted", tmp_path)


def test_regressions_found_by_the_fuzz(base: Base, tmp_path: Path) -> None:
    c0 = base.chunk_start[0]
    # the first chunk's opcode flipped (Chunk -> Message): the chunk with every channel definition is
    # gone, so every later message is on an unknown channel; that used to be silent (0 messages, no problem)
    damaged = bytearray(base.data)
    damaged[c0] ^= 3
    check(base, bytes(damaged), c0, "flipped", tmp_path)
    assert any("definition was damaged or lost" in p for p in read(tmp_path / "flipped.mcap")[1].problems)
    # a chunk's opcode made unknown (Chunk 0x06 -> 0x00): MCAP readers skip unknown records, so the
    # chunk vanished without a trace; now the numbering gap (middle) or the recorder's count (last) says so
    for i, what in ((len(base.chunk_start) // 2, "numbering jumps"), (-1, "the recorder wrote")):
        damaged = bytearray(base.data)
        damaged[base.chunk_start[i]] ^= 6
        check(base, bytes(damaged), base.chunk_start[i], "flipped", tmp_path)
        assert any(what in p for p in read(tmp_path / "flipped.mcap")[1].problems)
    # one byte inserted into a chunk header: its data length became > 2**63 (OverflowError escaped)
    check(base, base.data[:c0 + 52] + b"\x80" + base.data[c0 + 52:], c0 + 52, "inserted", tmp_path)
