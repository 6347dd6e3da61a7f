"""InfluxDB 2 sink: line protocol from readings, grid events, incident changes; batched async writes.

Why hand-written line protocol: ``influxdb_client.Point`` costs ~10 us a point in Python; a city sends
tens of thousands of readings a second. The writes themselves go through ``influxdb-client``'s async
v2 write API.

Delivery: :meth:`InfluxSink.put` waits while ``max_pending_points`` are unwritten (a bounded queue),
so a slow or absent database slows the consuming agent down (and Kafka keeps the backlog) instead of
filling memory. Failed writes are retried with exponential back-off and jitter on 429, 5xx and network
errors; a batch the server rejects as malformed (other 4xx) is dropped and counted, since retrying
cannot fix it. The agent writes a take of Kafka records with :meth:`InfluxSink.write_take`: the points
are put record by record, so the first batches are on the wire while the rest are built, and it returns
only once every point is confirmed; the agent then moves on (its records count as done), so a crash
re-writes rather than loses points: InfluxDB keeps one value per (series, timestamp), which makes the
re-write harmless.

Schema (tags are what dashboards filter and group by; every point carries ``ns``, the topic namespace,
so a replay never mixes with live data):

=================  =========================================================  ==================================
measurement        tags                                                       fields
=================  =========================================================  ==================================
reading            ns kind grid district street community [device]            the reading's values (bool/number)
grid_event         ns type level phase kind source grid district street       count=1i active duration_s id
                   community subject
incident           ns status level category change tier grid district street  version opened closed open overdue
                   community incident                                         escalations sources age_s
device_presence    ns kind district partition                                 online total rate
=================  =========================================================  ==================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, TypeVar

import numpy as np
import orjson

from gridwatch.core.gc_policy import gc_paused
from gridwatch.core.settings import InfluxSettings
from gridwatch.pipeline.schemas.codec import SchemaError, loads

log = logging.getLogger("gridwatch.influx")

TIERS = ("district", "street", "community")
R = TypeVar("R")
_READING = operator.itemgetter("d", "ts", "v")  # (device, ts, values) of a reading in a readings record
_DEVICE, _TS, _VALUES = operator.itemgetter("d"), operator.itemgetter("ts"), operator.itemgetter("v")

# PointBuilder._bulk: orjson writes the fields of a whole record at once. It writes a float as repr()
# does, except below 1e-4 (1e-05 as 0.00001, 1.5e-07 as 1.5e-7), and NaN/inf as null; a record with
# any of these, or with an empty field set, takes the loop instead.
_BULK_TYPES = frozenset({bool, int, float})
_NOT_AS_LOOP = (b":null", b"{}", b":0.0000", b":-0.0000", b"e-")
_BULK_INT = re.compile(rb"(:-?\d+)(?=[,}])")  # an int value: floats always hold a '.' or an 'e'
_COLON_TO_EQ = bytes.maketrans(b":", b"=")


# -- line protocol -----------------------------------------------------------------------------------
def _tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ").replace("\n", "\\n")


def _field_str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _fields(values: dict[str, Any]) -> str:
    parts = []
    for k, v in values.items():
        if v is None:
            continue
        if isinstance(v, bool):
            fv = "true" if v else "false"
        elif isinstance(v, int):
            fv = f"{v}i"
        elif isinstance(v, float):
            fv = repr(v)
        else:
            fv = _field_str(str(v))
        parts.append(f"{_tag(k)}={fv}")
    return ",".join(parts)


def line(measurement: str, tags: dict[str, str], values: dict[str, Any], ts_ms: int) -> str | None:
    """One point in line protocol (ms precision); None when it has no field."""
    f = _fields(values)
    if not f:
        return None
    t = "".join(f",{_tag(k)}={_tag(v)}" for k, v in sorted(tags.items()) if v)
    return f"{_tag(measurement)}{t} {f} {int(ts_ms)}"


class PointBuilder:
    """Turns pipeline records into line protocol; caches each device's and grid's tag string."""

    def __init__(self, registry: Any, gridmap: Any, namespace: str, *, device_tag: bool = True) -> None:
        self.registry = registry
        self.gridmap = gridmap
        self.ns = namespace
        self.device_tag = device_tag
        self._dev_tags: dict[str, str] = {}
        self._grid_tags: dict[str, dict[str, str]] = {}
        self._safe_keys: set[str] = set()  # field names that need no escaping
        self._bulk_keys: set[str] = set()  # ... and that orjson writes as they are, with no ':{}' in them
        self._prefixes: dict[str, str] = {}  # device id -> "reading<its tags> "

    def grid_tags(self, grid_code: str) -> dict[str, str]:
        """grid + district/street/community codes of a grid (from the grid map; code prefix otherwise)."""
        tags = self._grid_tags.get(grid_code)
        if tags is None:
            tags = {"grid": grid_code}
            try:
                for area in self.gridmap.chain(grid_code):
                    if area.tier in TIERS:
                        tags[area.tier] = area.code
            except (KeyError, AttributeError):
                # CJ/T 213: 6 district + 3 street + 3 community + 3 sequence digits
                if len(grid_code) == 15 and grid_code.isdigit():
                    tags.update(district=grid_code[:6], street=grid_code[:9], community=grid_code[:12])
            self._grid_tags[grid_code] = tags
        return tags

    def _device_tagstr(self, device_id: str) -> str | None:
        s = self._dev_tags.get(device_id)
        if s is None:
            dev = self.registry.get(device_id)
            if dev is None:
                return None
            tags = {"ns": self.ns, "kind": dev.kind, **self.grid_tags(dev.grid_code)}
            if self.device_tag:
                tags["device"] = dev.id
            s = "".join(f",{_tag(k)}={_tag(v)}" for k, v in sorted(tags.items()) if v)
            self._dev_tags[device_id] = s
        return s

    def readings(self, readings: Iterable[Any]) -> list[str]:
        """Lines of Reading objects (see :meth:`batch` for the fast path over a raw Kafka record)."""
        return self._lines(((r.device_id, r.ts, r.values) for r in readings), None)

    def batch(self, raw: bytes) -> tuple[int, list[str], list[tuple[str, int]]]:
        """(partition, lines, [(device, ts)]) of a raw ``readings`` record, decoded straight from JSON.

        Why not ReadingBatch.decode: its per-field checks cost as much as building the points; the
        bridge validated every reading already. A malformed record raises SchemaError.
        """
        seen: list[tuple[str, int]] = []
        try:
            doc = loads(raw)
            partition = int(doc["p"])
            readings = doc["readings"]
            bulk = self._bulk(readings)
            if bulk is not None:
                return partition, bulk[0], bulk[1]
            # the readings' dicts as they are: a tuple per reading first cost a tenth of the building
            return partition, self._lines(map(_READING, readings), seen), seen
        except (ValueError, KeyError, TypeError) as e:
            raise SchemaError(f"readings record: {e}") from None

    def _bulk(self, readings: list[dict[str, Any]]) -> tuple[list[str], list[tuple[str, int]]] | None:
        """Lines and (device, ts) of a record's readings, the fields of all of them written by one
        ``orjson.dumps``; the same bytes as :meth:`_lines`, which handles what this returns None for:
        an unknown device, a name that needs escaping, a str/None/NaN/tiny value, a non-int ts.

        Why: formatting each value in Python (float repr, the f-strings) was two thirds of the
        building (bench_sink); here it is one C call per record and one f-string per line.
        """
        if not readings:
            return None
        try:
            values = list(map(_VALUES, readings))
            types = set(map(type, chain.from_iterable(map(dict.values, values))))
            if not types <= _BULK_TYPES or not self._bulk_names(values):
                return None
            devices = list(map(_DEVICE, readings))
            tss = list(map(_TS, readings))
            if set(map(type, tss)) != {int}:
                return None
            prefixes = list(map(self._prefixes.get, devices))
            if None in prefixes:
                prefixes = list(map(self._prefix, devices))
                if None in prefixes:
                    return None
            blob = orjson.dumps(values)  # [{"name":value,...},...]
        except TypeError:  # a reading's "v" is not a mapping, an int beyond 64 bits: the loop decides
            return None
        if any(p in blob for p in _NOT_AS_LOOP):
            return None
        if int in types:
            blob = _BULK_INT.sub(rb"\1i", blob)
        fields = blob.translate(_COLON_TO_EQ, b'"').decode()[2:-2].split("},{")
        return [f"{p}{f} {t}" for p, f, t in zip(prefixes, fields, tss, strict=True)], list(zip(devices, tss, strict=True))

    def _bulk_names(self, values: list[dict[str, Any]]) -> bool:
        """Whether every field name of a record can go through :meth:`_bulk` (learnt once per name)."""
        names = set(chain.from_iterable(values))
        if names <= self._bulk_keys:
            return True
        for k in names - self._bulk_keys:
            if not (isinstance(k, str) and _tag(k) == k and k.isprintable() and not any(c in k for c in ':"{}')):
                return False
            self._bulk_keys.add(k)
        return True

    def _prefix(self, device_id: str) -> str | None:
        """``reading<tags> `` of a device, None when it is not in the registry."""
        tags = self._device_tagstr(device_id)
        if tags is None:
            return None
        p = self._prefixes[device_id] = f"reading{tags} "
        return p

    def _lines(self, items: Iterable[tuple[str, int, dict[str, Any]]], seen: list[tuple[str, int]] | None) -> list[str]:
        out: list[str] = []
        append = out.append
        cache = self._dev_tags
        safe = self._safe_keys
        for device_id, ts, values in items:
            tags = cache.get(device_id)
            if tags is None:
                tags = self._device_tagstr(device_id)
                if tags is None:
                    continue
            parts: list[str] = []
            for k, v in values.items():
                if k not in safe:
                    if _tag(k) != k:  # a name that needs escaping: the general (slower) path
                        f = _fields({k: v})
                        if f:
                            parts.append(f)
                        continue
                    safe.add(k)
                if v is True:
                    parts.append(k + "=true")
                elif v is False:
                    parts.append(k + "=false")
                elif type(v) is float:
                    parts.append(f"{k}={v!r}")
                elif type(v) is int:
                    parts.append(f"{k}={v}i")
            if parts:
                append(f"reading{tags} {','.join(parts)} {ts if type(ts) is int else int(ts)}")
                if seen is not None:
                    seen.append((device_id, ts))
        return out

    def event(self, ev: Any) -> str | None:
        tags = {"ns": self.ns, "type": ev.type, "level": ev.level, "phase": ev.phase, "kind": ev.device_kind,
                "source": ev.source, "subject": ev.subject, **self.grid_tags(ev.grid_code)}
        values: dict[str, Any] = {"count": 1, "active": 0 if ev.phase == "end" else 1, "id": ev.id}
        if ev.phase == "end" and ev.end_ts:
            values["duration_s"] = (ev.end_ts - ev.start_ts) / 1000.0
        return line("grid_event", tags, values, ev.ts)

    def incident(self, change: Any) -> str | None:
        inc = change.incident
        tags = {"ns": self.ns, "status": inc.status, "level": inc.level, "category": inc.category_group,
                "change": change.change, "tier": inc.tier, "incident": inc.id, **self.grid_tags(inc.grid_code)}
        closed = inc.closed_ts is not None and inc.closed_ts == change.ts
        values: dict[str, Any] = {
            "version": int(inc.version), "opened": 1 if change.change == "created" else 0, "closed": 1 if closed else 0,
            "open": 1 if inc.open else 0, "overdue": 1 if inc.overdue else 0, "escalations": int(inc.escalations),
            "sources": len(inc.sources), "age_s": max(0, change.ts - inc.created_ts) / 1000.0,
        }
        return line("incident", tags, values, change.ts)


NEVER = -(1 << 62)  # last-seen time of a device not seen yet: offline at any emit time


@dataclass
class _Partition:
    """The devices of one Kafka partition as arrays, so that an emit counts the online devices in numpy
    instead of looking each one up in Python (that walk was a fifth of the sink's CPU, bench_sink)."""

    index: dict[str, int]  # device id -> its position in the arrays
    allowance: Any  # int64 ms: offline allowance of each device
    group: Any  # intp: position of each device's (kind, district) in ``keys``
    keys: list[tuple[str, str]]  # (kind, district), in the order of first appearance
    totals: list[int]  # devices per key
    last: Any  # int64 ms: event time each device was last seen (NEVER: not yet)


class Presence:
    """Device online rate per kind and district, by event time: online = reported within its offline
    allowance (3 report intervals, at least a minute). One point set per ``interval_ms`` of event time
    and Kafka partition (tag ``partition``; dashboards sum over partitions, so sink workers can share them).
    """

    def __init__(self, registry: Any, builder: PointBuilder, partitions: int, interval_ms: int,
                 partition_of: Any) -> None:
        self.registry = registry
        self.b = builder
        self.interval_ms = max(1000, interval_ms)
        self.next_emit: dict[int, int] = {}
        self.partition_of = partition_of
        self.partitions = partitions
        self._parts: dict[int, _Partition] | None = None

    def _partition(self, partition: int) -> _Partition | None:
        """The arrays of a partition's devices (all partitions worked out on first use)."""
        if self._parts is None:
            members: dict[int, list[tuple[tuple[str, str], str, int]]] = {}
            for d in self.registry:
                key = (d.kind, self.b.grid_tags(d.grid_code).get("district", ""))
                allowance = max(3 * d.report_interval_s * 1000, 60_000)
                members.setdefault(self.partition_of(d.shard_key, self.partitions), []).append((key, d.id, allowance))
            self._parts = {p: self._arrays(ms) for p, ms in members.items()}
        return self._parts.get(partition)

    @staticmethod
    def _arrays(members: list[tuple[tuple[str, str], str, int]]) -> _Partition:
        keys: dict[tuple[str, str], int] = {}
        group = [keys.setdefault(key, len(keys)) for key, _, _ in members]
        totals = [0] * len(keys)
        for g in group:
            totals[g] += 1
        return _Partition(index={dev: i for i, (_, dev, _) in enumerate(members)},
                          allowance=np.array([a for _, _, a in members], dtype=np.int64),
                          group=np.array(group, dtype=np.intp), keys=list(keys), totals=totals,
                          last=np.full(len(members), NEVER, dtype=np.int64))

    def forget(self) -> None:
        """Drop what was seen (partitions revoked: another worker may own them now)."""
        self.next_emit.clear()
        for part in (self._parts or {}).values():
            part.last.fill(NEVER)

    def observe(self, partition: int, seen_pairs: Iterable[tuple[str, int]]) -> list[str]:
        """Note (device, ts) pairs of a partition; returns presence points for every period passed.

        Per record, not per reading: the pairs go into the partition's arrays in one numpy call.
        """
        pairs = list(seen_pairs)
        if not pairs:
            return []
        devices, times = zip(*pairs, strict=True)
        ts = np.fromiter(times, dtype=np.int64, count=len(times))
        max_ts = int(ts.max())
        part = self._partition(partition)
        if part is not None:
            pos = np.fromiter(map(part.index.get, devices, repeat(-1)), dtype=np.intp, count=len(devices))
            known = pos >= 0
            np.maximum.at(part.last, pos[known], ts[known])
        if max_ts <= 0:
            return []
        nxt = self.next_emit.get(partition)
        if nxt is None:
            self.next_emit[partition] = (max_ts // self.interval_ms + 1) * self.interval_ms
            return []
        out: list[str] = []
        while max_ts >= nxt:
            if part is not None:
                out += self._emit(partition, part, nxt)
            nxt += self.interval_ms
        self.next_emit[partition] = nxt
        return out

    def _emit(self, partition: int, part: _Partition, at: int) -> list[str]:
        online = np.bincount(part.group[at - part.last <= part.allowance], minlength=len(part.keys)).tolist()
        out = []
        for (kind, district), n, up in zip(part.keys, part.totals, online, strict=True):
            p = line("device_presence", {"ns": self.b.ns, "kind": kind, "district": district,
                                         "partition": str(partition)},
                     {"online": up, "total": n, "rate": up / n}, at)
            if p:
                out.append(p)
        return out


# -- the writer --------------------------------------------------------------------------------------
class WriteRejected(Exception):
    """The server refused a batch for what it contains (4xx other than 429): retrying cannot help."""


@dataclass
class SinkStats:
    points: int = 0  # written and confirmed
    batches: int = 0
    retries: int = 0
    dropped_points: int = 0  # rejected by the server, or out of retries
    errors: Counter = field(default_factory=Counter)
    waited_s: float = 0.0  # time producers spent blocked on the full queue (back-pressure)

    def as_dict(self) -> dict[str, Any]:
        return {"points": self.points, "batches": self.batches, "retries": self.retries,
                "dropped_points": self.dropped_points, "errors": dict(self.errors),
                "waited_s": round(self.waited_s, 3)}


class InfluxSink:
    """Batches line-protocol points and writes them with ``writers`` concurrent requests.

    ``write_fn`` (tests, benchmarks) replaces the HTTP write: ``async (body: str) -> None``.
    """

    def __init__(self, cfg: InfluxSettings, write_fn: Any = None) -> None:
        self.cfg = cfg
        self.stats = SinkStats()
        self._write_fn = write_fn
        self._client: Any = None
        self._api: Any = None
        depth = max(1, cfg.max_pending_points // max(1, cfg.batch_size))
        self._queue: asyncio.Queue[list[str]] = asyncio.Queue(maxsize=depth)
        self._buf: list[str] = []
        self._tasks: list[asyncio.Task] = []
        self._started = False
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            if self._write_fn is None:
                from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

                self._client = InfluxDBClientAsync(url=self.cfg.url, token=self.cfg.token or "none", org=self.cfg.org,
                                                   timeout=int(self.cfg.timeout_s * 1000))
                self._api = self._client.write_api()
            self._tasks = [asyncio.create_task(self._writer(i)) for i in range(max(1, self.cfg.writers))]
            self._tasks.append(asyncio.create_task(self._ticker()))
            self._started = True

    async def stop(self) -> None:
        """Write what is queued, then close."""
        if not self._started:
            return
        await self.flush()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._client is not None:
            await self._client.close()
        self._started = False

    async def put(self, lines: Iterable[str]) -> None:
        """Queue points; waits while the queue is full (back-pressure)."""
        if not self._started:
            await self.start()
        size = self.cfg.batch_size
        for ln in lines:
            self._buf.append(ln)
            if len(self._buf) >= size:
                await self._enqueue()

    async def write_take(self, records: Iterable[R], to_lines: Callable[[R], list[str]]) -> int:
        """Write the points of a take of records and return their number once all are confirmed.

        Why record by record: building a take's points is CPU work in this thread and writing them is
        the database's; built all at once and then written, the two took turns. Put per record, with
        the event loop run between records, a full batch starts its write while the next is built.
        """
        n = 0
        for rec in records:
            with gc_paused():
                lines = to_lines(rec)
            if lines:
                n += len(lines)
                await self.put(lines)
            await asyncio.sleep(0)  # let the writers send and read while the next record is built
        await self.flush()
        return n

    async def _enqueue(self) -> None:
        batch, self._buf = self._buf, []
        if not batch:
            return
        if self._queue.full():
            t0 = time.monotonic()
            await self._queue.put(batch)
            self.stats.waited_s += time.monotonic() - t0
        else:
            self._queue.put_nowait(batch)

    async def flush(self) -> None:
        """Return once every point put so far is written (or dropped after its retries)."""
        await self._enqueue()
        await self._queue.join()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.flush_interval_ms / 1000)
            if self._buf:
                await self._enqueue()

    async def _writer(self, n: int) -> None:
        while True:
            batch = await self._queue.get()
            try:
                await self._write_with_retry(batch)
            finally:
                self._queue.task_done()

    async def _send(self, body: str) -> None:
        if self._write_fn is not None:
            await self._write_fn(body)
            return
        from influxdb_client.rest import ApiException

        try:
            await self._api.write(bucket=self.cfg.bucket, org=self.cfg.org, record=body, write_precision="ms")
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                raise WriteRejected(f"HTTP {e.status}: {(e.body or e.reason or '')[:300]}") from None
            raise

    async def _write_with_retry(self, batch: list[str]) -> None:
        body = "\n".join(batch)
        for attempt in range(self.cfg.max_retries + 1):
            try:
                await self._send(body)
                self.stats.points += len(batch)
                self.stats.batches += 1
                return
            except WriteRejected as e:
                self.stats.errors["rejected"] += 1
                self.stats.dropped_points += len(batch)
                log.error("InfluxDB rejected %d points (%s); dropped", len(batch), e)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - network errors, 429, 5xx: retry with back-off
                self.stats.errors[type(e).__name__] += 1
                if attempt == self.cfg.max_retries:
                    break
                self.stats.retries += 1
                delay = min(self.cfg.retry_max_s, self.cfg.retry_base_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                log.warning("InfluxDB write of %d points failed (%s: %s); retry %d in %.1fs", len(batch),
                            type(e).__name__, str(e)[:200], attempt + 1, delay)
                await asyncio.sleep(delay)
        self.stats.dropped_points += len(batch)
        log.error("InfluxDB write of %d points failed %d times; dropped", len(batch), self.cfg.max_retries + 1)
