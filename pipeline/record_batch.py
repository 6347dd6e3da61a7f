"""Kafka record batches (message format v2) built here, their CRC-32C computed by the CPU's own instruction.

Why: aiokafka's batch builder computes each batch's CRC-32C in software, about 0.45 µs per KB on this
machine kind. The incident worker writes whole incidents, ~9 KB per input, so the CRC was a quarter of the
transport floor's CPU and ~4 % of the worker's (``bench incidents``, ``perf record``). The ``crc32c``
package computes it with SSE 4.2 (or ARMv8's CRC instructions) at ~0.03 µs per KB. Appending a record here in
Python costs more than in aiokafka's C builder, but for records of a few KB the sum is less than half (1.1
against 2.6 µs per record for the incident worker's change records, 3 runs of the builders alone); for small
records aiokafka's builder stays cheaper, and :func:`new_batch` keeps it for them.

The batch is the one aiokafka's builder writes for the same records: same header, same record encoding, same
size limit (``tests/unit/test_record_batch.py`` compares the bytes). What it does not do, and where
:func:`new_batch` hands out aiokafka's own builder instead: compression, transactions, record headers, and a
CRC-32C without the CPU instruction (the package's software fallback is no faster than aiokafka's).
"""

from __future__ import annotations

import logging
import struct
import time
from functools import cache
from importlib.metadata import version
from typing import Any

import crc32c
from aiokafka.producer.message_accumulator import BatchBuilder

from gridwatch.compat import CHECKED

log = logging.getLogger("gridwatch.kafka")

# base offset, batch length, partition leader epoch, magic, CRC, attributes, last offset delta, first timestamp,
# max timestamp, producer id, producer epoch, base sequence, record count
HEADER = struct.Struct(">qiibIhiqqqhii")
CRC_AT = 17  # the CRC field
CRC_FROM = 21  # the CRC covers the batch from its attributes on
LEADER_EPOCH = -1  # as aiokafka writes it: the broker sets it
MAGIC = 2


def varint(n: int) -> bytes:
    """Kafka's varint: zigzag, then 7 bits per byte, low first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


# From about this size on average a record costs less here than in aiokafka's builder: per record this one
# spends ~0.3 µs more in Python (0.44 against 0.16 µs for 60-byte records) and saves ~0.4 µs per KB of CRC.
BIG = 1024
_SMALL = 8192
_VARINTS = [varint(n) for n in range(-1, _SMALL)]  # -1 (no key / value) up to 8 KB lengths: two bytes at most


def _as_bytes(data: Any, what: str) -> bytes:
    """A record's key or value as bytes, refused here (as aiokafka's builder refuses it on append) rather than when
    the producer's sender builds the batch."""
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"a record's {what} must be bytes or None, not {type(data).__name__}")


class RecordBatch(BatchBuilder):
    """aiokafka's ``BatchBuilder`` interface (``producer.send_batch`` queues it like its own), built in Python.

    Every record of a batch gets the batch's timestamp (when its first record was appended, unless the append
    gives one): the same CreateTime that aiokafka's builder gives records appended within the same moment."""

    def __init__(self, max_size: int) -> None:  # not BatchBuilder's: it would make a C builder to be thrown away
        self._max_size = max_size
        self._parts: list[bytes] = [bytes(HEADER.size)]  # the header, written over in _build
        self._size = HEADER.size
        self._relative_offset = 0
        self._first_ts: int | None = None
        self._max_ts = -1
        self._state = (-1, -1, 0)  # producer id, epoch, base sequence: what aiokafka's builder starts with
        self._buffer: bytearray | None = None
        self._closed = False

    def append(self, *, timestamp: int | None, key: bytes | None, value: bytes | None,
               headers: Any = None) -> bool | None:
        """Add a record (``timestamp`` in ms, None: the batch's); None when the batch is full or closed."""
        if headers:
            raise ValueError("RecordBatch takes no record headers: use the producer's own batch (new_batch)")
        if self._closed:
            return None
        first = self._first_ts
        if first is None:
            first = self._first_ts = int(time.time() * 1000) if timestamp is None else timestamp
        ts = first if timestamp is None else timestamp
        if type(key) is not bytes and key is not None:
            key = _as_bytes(key, "key")
        if type(value) is not bytes and value is not None:
            value = _as_bytes(value, "value")
        offset = self._relative_offset
        v = _VARINTS
        klen = -1 if key is None else len(key)
        vlen = -1 if value is None else len(value)
        # attributes (none), timestamp delta, offset delta, key length
        d = ts - first
        head = (b"\x00" + (v[d + 1] if 0 <= d < _SMALL else varint(d))
                + (v[offset + 1] if offset < _SMALL else varint(offset)) + (v[klen + 1] if klen < _SMALL else varint(klen)))
        mid = v[vlen + 1] if vlen < _SMALL else varint(vlen)
        body = len(head) + len(mid) + 1 + (klen if klen > 0 else 0) + (vlen if vlen > 0 else 0)  # 1: no headers
        length = v[body + 1] if body < _SMALL else varint(body)
        size = self._size + len(length) + body
        if offset and size > self._max_size:  # a first record always fits
            self._closed = True
            return None
        self._parts += (length + head, key or b"", mid, value or b"", b"\x00")
        self._size = size
        self._relative_offset = offset + 1
        if ts > self._max_ts:
            self._max_ts = ts
        return True

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self._state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytearray:
        self._closed = True
        if self._buffer is None:
            buf = bytearray().join(self._parts)
            first = self._first_ts if self._first_ts is not None else -1
            HEADER.pack_into(buf, 0, 0, len(buf) - 12, LEADER_EPOCH, MAGIC, 0, 0, self._relative_offset - 1, first,
                             self._max_ts if self._relative_offset else -1, *self._state, self._relative_offset)
            struct.pack_into(">I", buf, CRC_AT, crc32c.crc32c(memoryview(buf)[CRC_FROM:]))
            self._buffer, self._parts = buf, []
        return self._buffer

    def size(self) -> int:
        return len(self._buffer) if self._buffer is not None else self._size


def hardware_crc() -> bool:
    return bool(crc32c.hardware_based)


@cache
def _usable() -> bool:
    """The CPU has a CRC-32C instruction, and aiokafka is a release this builder's interface was checked on (its
    producer queues the batch and calls ``_build``, ``_set_producer_state``, ``size`` and ``record_count``)."""
    have = version("aiokafka")
    if have not in CHECKED["aiokafka"]:
        log.warning("record batches: aiokafka %s is not one this builder was checked on (%s): its own builder "
                    "builds them", have, ", ".join(CHECKED["aiokafka"]))
        return False
    return hardware_crc()


def new_batch(producer: Any, mean_size: float = BIG) -> Any:
    """An empty batch for ``producer.send_batch``: a :class:`RecordBatch` for records of ``mean_size`` bytes or more
    on average, where it writes what aiokafka's builder would; else aiokafka's own (small records, serializers,
    compression, transactions, or no CRC instruction on this CPU)."""
    txn = producer._txn_manager
    plain = producer._key_serializer is None and producer._value_serializer is None  # bytes in, bytes out
    if mean_size >= BIG and plain and producer._compression_type is None and (txn is None or txn.transactional_id is None) \
            and _usable():
        return RecordBatch(producer._message_accumulator._batch_size)
    return producer.create_batch()
