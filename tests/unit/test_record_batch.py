"""The record batches built in Python (pipeline/record_batch.py) are byte for byte the ones aiokafka's C builder
writes for the same records, and aiokafka's reader takes them (CRC included)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record._crecords.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from gridwatch.pipeline.record_batch import RecordBatch, hardware_crc, new_batch, varint

BASE_TS = 1_763_600_000_000


def c_builder(limit: int) -> DefaultRecordBatchBuilder:
    """aiokafka's builder as its producer makes it (BatchBuilder: magic 2, no compression, not transactional,
    producer id and epoch -1, base sequence 0)."""
    return DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, limit)


def payload(rnd: random.Random) -> bytes | None:
    n = rnd.choice([0, 1, 63, 64, 127, 128, 500, 5_000, 8_191, 8_192, 20_000])
    return None if rnd.random() < 0.05 else rnd.randbytes(n)


def build_both(records: list[tuple[bytes | None, bytes | None, int]], limit: int,
               state: tuple[int, int, int] | None = None) -> tuple[bytes, bytes, int]:
    """Both builders fed the same records until the first says full: (C bytes, Python bytes, records taken)."""
    c, py = c_builder(limit), RecordBatch(limit)
    taken = 0
    for offset, (key, value, ts) in enumerate(records):
        got_c = c.append(offset, ts, key, value, [])
        got_py = py.append(timestamp=ts, key=key, value=value)
        assert (got_c is None) == (got_py is None), f"record {offset}: the builders disagree on full"
        if got_c is None:
            break
        taken += 1
        assert py.size() == c.size()
    if state is not None:
        c.set_producer_state(*state)
        py._set_producer_state(*state)
    return bytes(c.build()), bytes(py._build()), taken


@pytest.mark.parametrize("seed", range(40))
def test_the_same_bytes_as_aiokafkas_builder(seed: int) -> None:
    rnd = random.Random(seed)
    ts = BASE_TS + rnd.randrange(10**6)
    records = []
    for _ in range(rnd.randint(1, 80)):
        ts += rnd.choice([0, 0, 1, 7, 300, 70_000, -3])  # time deltas of one byte and more, and one backwards
        key = rnd.choice([None, b"3301", rnd.randbytes(rnd.choice([1, 20, 200]))])
        records.append((key, payload(rnd), ts))
    limit = rnd.choice([1_000, 16_384, 256 * 1024])
    state = rnd.choice([None, (4_711, 3, 17)])
    c, py, taken = build_both(records, limit, state)
    assert taken >= 1
    assert py == c
    batch = DefaultRecordBatch(py)
    assert batch.validate_crc()
    got = [(r.key, r.value, r.timestamp) for r in batch]
    assert got == [(k, v, t) for k, v, t in records[:taken]]


def test_records_without_a_timestamp_share_the_batchs_and_read_back() -> None:
    b = RecordBatch(1 << 20)
    for i in range(3):
        assert b.append(timestamp=None, key=b"k%d" % i, value=b"v" * (i * 4_000)) is not None
    batch = DefaultRecordBatch(bytes(b._build()))
    assert batch.validate_crc()
    recs = list(batch)
    assert [r.value for r in recs] == [b"", b"v" * 4_000, b"v" * 8_000]
    assert len({r.timestamp for r in recs}) == 1 and recs[0].timestamp > BASE_TS


def test_a_closed_or_built_batch_takes_no_more_records() -> None:
    b = RecordBatch(1 << 20)
    b.append(timestamp=BASE_TS, key=b"k", value=b"v")
    b.close()
    assert b.closed() and b.append(timestamp=BASE_TS, key=b"k", value=b"v") is None
    assert b.record_count() == 1 and b.size() == len(b._build())
    with pytest.raises(ValueError, match="headers"):
        RecordBatch(1 << 20).append(timestamp=None, key=b"k", value=b"v", headers=[("h", b"x")])
    with pytest.raises(TypeError, match="value must be bytes"):
        RecordBatch(1 << 20).append(timestamp=None, key=b"k", value="text")
    b = RecordBatch(1 << 20)
    b.append(timestamp=BASE_TS, key=bytearray(b"k"), value=memoryview(b"v"))
    assert [(r.key, r.value) for r in DefaultRecordBatch(bytes(b._build()))] == [(b"k", b"v")]


def test_new_batch_is_aiokafkas_own_where_this_one_would_write_other_bytes() -> None:
    async def batches() -> list[Any]:  # producers never started: only their settings are read
        return [new_batch(AIOKafkaProducer(bootstrap_servers="localhost:1", **kw))
                for kw in ({}, {"compression_type": "gzip"}, {"value_serializer": bytes})]

    async def small() -> Any:
        return new_batch(AIOKafkaProducer(bootstrap_servers="localhost:1"), mean_size=60)

    plain, compressed, serialized = asyncio.run(batches())
    assert isinstance(plain, RecordBatch) == hardware_crc()
    assert type(asyncio.run(small())) is BatchBuilder  # records of 60 bytes: aiokafka's builder is cheaper
    assert type(compressed) is BatchBuilder
    assert type(serialized) is BatchBuilder


def test_varint_is_kafkas_zigzag() -> None:
    assert [varint(n) for n in (0, -1, 1, 63, 64, -65, 8_191)] == [
        b"\x00", b"\x01", b"\x02", b"\x7e", b"\x80\x01", b"\x81\x01", b"\xfe\x7f"]
