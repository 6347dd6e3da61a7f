"""Byte-bounded records, one bounded dead letter per message, a dead-letter quota, produce error classes.

Pure functions on the bridge's path (no I/O); the same code runs live (tests/faults/test_poison.py).
"""

from __future__ import annotations

import json

import pytest
from aiokafka import errors

from gridwatch.core.settings import load_settings
from gridwatch.pipeline.schemas.deadletter import DeadLetter
from gridwatch.pipeline.schemas.readings import Reading, ReadingBatch
from gridwatch.pipeline.sources.deadletters import AMPLIFICATION, LetterGate, letter_budget, message_letter
from gridwatch.pipeline.sources.ingest import Router, cut_readings, out_records
from gridwatch.pipeline.sources.kafka_limits import (
    is_retriable,
    is_size_error,
    parse_record_limit,
    record_budget,
)
from gridwatch.pipeline.sources.telemetry_parser import Rejection

NOW = 1_763_647_200_000


class Dev:
    def __init__(self, id: str) -> None:
        self.id, self.gateway, self.shard_key = id, None, id


REG = {"M1": Dev("M1"), "M2": Dev("M2")}
SETTINGS = load_settings()


def big_reading_payload(kb: int, ts: int = NOW) -> bytes:
    n = kb * 1000 // 16
    return json.dumps({"ts": ts, "values": {f"f{i:06d}": 1.5 for i in range(n)}}).encode()


def test_records_are_cut_by_bytes_and_a_reading_too_large_is_dead_lettered():
    """The poison batch of main: 60 legal 250 KB readings of one device became one 15 MB record."""
    router = Router(REG, 8, SETTINGS.bridge)
    payload = big_reading_payload(250)
    assert 240_000 < len(payload) < SETTINGS.bridge.max_payload_bytes
    routed = router.route([("v1/devices/M1/telemetry", payload, NOW + i) for i in range(60)])
    assert routed.readings == 60 and not routed.dead
    recs = out_records(SETTINGS, routed, 1_000_000)
    assert all(len(r.value) <= 1_000_000 for r in recs)
    assert sum(len(ReadingBatch.decode(r.value).readings) for r in recs) == 60
    # below the broker's limit no record can carry one: each reading is a dead letter, the rest flows
    routed = router.route([("v1/devices/M1/telemetry", payload, NOW + i) for i in range(60)]
                          + [("v1/devices/M2/telemetry", json.dumps({"ts": NOW, "values": {"a": 1}}).encode(), NOW)])
    recs = out_records(SETTINGS, routed, 200_000)
    readings = [r for r in recs if r.readings is not None]
    assert [x.device_id for r in readings for x in r.readings] == ["M2"]
    letters = [r for r in recs if r.letter is not None]
    assert len(letters) == 60 and routed.reasons == {"record_too_large": 60} and routed.readings == 1
    assert all(len(r.value) <= letter_budget(len(payload)) for r in letters)


def test_cut_keeps_order_and_packs_close_to_the_limit():
    rs = [Reading("M1", NOW + i, {"v": i, "pad": float(i) * 1.5}) for i in range(5000)]
    out, too_large = cut_readings(3, rs, 20_000)
    assert not too_large and all(len(v) <= 20_000 for v, _ in out)
    assert [r.ts for _, part in out for r in part] == [r.ts for r in rs]
    assert sum(len(v) for v, _ in out) / len(out) > 15_000  # not one reading per record


@pytest.mark.parametrize("payload", [
    json.dumps([{"ts": NOW, "values": {"tilt_deg": 999}}] * 4000).encode(),  # 4,000 bad entries
    json.dumps([1] * 4000).encode(),  # main's 12 KB message of 4,000 bad entries (49 MB of dead letters there)
    json.dumps([0] * 4000 + ["x" * 3000]).encode(),  # the same with a long entry
    json.dumps([{"ts": NOW, "values": {"q": '"\\' * 40_000}}]).encode(),  # escaping doubles its JSON
    b"\xff\xfe" * 128_000,  # 256 KB of non-UTF-8: base64 grows it by a third
])
def test_one_bounded_dead_letter_per_message(payload):
    router = Router(REG, 8, SETTINGS.bridge)
    routed = router.route([("v1/devices/M1/telemetry", payload, NOW)])
    recs = out_records(SETTINGS, routed)
    assert len(recs) == 1 and recs[0].letter is not None
    size = len(recs[0].value)
    assert size <= max(2048, AMPLIFICATION * len(payload)), (size, len(payload))
    d = DeadLetter.decode(recs[0].value)
    assert d.payload_bytes == len(payload) and len(d.payload_sha256) == 64
    assert sum(d.counts.values()) == sum(routed.reasons.values())  # every entry counted, some listed
    assert len(d.reasons) + d.entries_omitted == sum(d.counts.values())


def test_a_256kb_bad_message_gives_one_letter_within_1_2x():
    payload = b"{" + b"x" * (256 * 1024 - 2) + b"}"
    letter = message_letter("bridge", "v1/devices/M1/telemetry", payload, NOW,
                            [Rejection("malformed_json", "payload is not valid JSON")])
    assert len(letter.encode()) <= 1.2 * len(payload)


def test_the_quota_counts_and_summarises_a_flooding_sender_but_not_the_others():
    gate = LetterGate(1.0, 5, 100.0, 1000, keep_payload_bytes=1000)
    rej = [Rejection("malformed_json", "not JSON")]
    letters: list[DeadLetter] = []
    for i in range(1000):  # 1,000 bad messages in one second from one device
        letters += gate.letters("M1", "v1/devices/M1/telemetry", b"junk" * 100, NOW + i, rej)
    assert len(letters) == 5 and gate.suppressed_messages == 995
    letters = gate.letters("M2", "v1/devices/M2/telemetry", b"junk", NOW + 1000, rej)  # another device
    assert [d.reason for d in letters] == ["malformed_json"]
    summary = gate.due(NOW + 20_000)
    assert [d.reason for d in summary] == ["quota_exceeded"]
    assert summary[0].counts == {"malformed_json": 995} and summary[0].payload_bytes == 995 * 400
    assert not gate.due(NOW + 40_000)


def test_the_quota_runs_on_receive_time_so_a_replay_makes_the_same_letters():
    def run() -> list[bytes]:
        router = Router(REG, 8, SETTINGS.bridge)
        routed = router.route([("v1/devices/M1/telemetry", b"{bad", NOW + i * 10) for i in range(200)])
        router.summaries(routed, NOW + 10**6, force=True)
        return [d.encode() for d in routed.dead]

    assert run() == run()


def test_produce_errors_are_classified():
    for e in (errors.KafkaTimeoutError(), errors.RequestTimedOutError(), errors.NotLeaderForPartitionError(),
              errors.KafkaConnectionError(), errors.LeaderNotAvailableError(), errors.NodeNotReadyError()):
        assert is_retriable(e), type(e).__name__
    for e in (errors.MessageSizeTooLargeError(), errors.RecordListTooLargeError(), errors.CorruptRecordException(),
              errors.InvalidMessageError(), errors.TopicAuthorizationFailedError(),
              errors.ClusterAuthorizationFailedError()):
        assert not is_retriable(e), type(e).__name__
    assert is_size_error(errors.MessageSizeTooLargeError()) and not is_size_error(errors.KafkaTimeoutError())


def test_record_limit_from_the_broker_or_the_config():
    class Resp:
        resources = [(0, None, 2, "gw.readings", [("max.message.bytes", "200000", False, 5, False, [])])]

    assert parse_record_limit([Resp()]) == 200_000
    assert parse_record_limit([type("R", (), {"resources": [(0, None, 2, "t", [])]})()]) is None
    assert record_budget(200_000, 0, 4 << 20) == 200_000 - 1024  # the broker says
    assert record_budget(None, 0, 4 << 20) == 1_000_000 - 1024  # it does not: the default
    assert record_budget(None, 300_000, 4 << 20) == 300_000 - 1024  # ... or the configured one
    assert record_budget(5_000_000, 0, 4 << 20) == (4 << 20) - 1024  # never above the producer's request


def test_a_parser_failure_costs_its_message_not_the_bridge():
    """Two inputs once raised out of the parser and stopped the bridge; any such bug is now a dead letter."""
    class Broken(dict):
        def get(self, key, default=None):
            if key == "M2":
                raise RuntimeError("registry lookup failed")
            return super().get(key, default)

    router = Router(Broken(REG), 8, SETTINGS.bridge)
    ok = json.dumps({"ts": NOW, "values": {"tilt_deg": 1.0}}).encode()
    routed = router.route([("v1/devices/M2/telemetry", ok, NOW), ("v1/devices/M1/telemetry", ok, NOW)])
    assert [r.device_id for rs in routed.by_partition.values() for r in rs] == ["M1"]
    assert routed.reasons == {"parser_error": 1}
    [letter] = [d for d in routed.dead if d.reason == "parser_error"]
    assert "RuntimeError: registry lookup failed" in letter.detail and letter.source == "v1/devices/M2/telemetry"
