"""The bridge's dead letters: one per bad MQTT message, bounded in size and in rate.

Why: a dead letter per bad *entry*, each with a copy of the payload, let one 12 KB message of 4,000 bad
entries write 49 MB to Kafka. Here a message gives at most one letter: the reasons of its entries as a
capped list plus a count per reason, the payload once (its head when long, with the full size and
SHA-256), and the whole letter within ``AMPLIFICATION`` x the message's size (or ``MIN_LETTER_BYTES``
for tiny messages). Beyond a token bucket per sender (the device or gateway id of the topic) and one
for all senders, messages are only counted, and the counts go out as one summary letter per sender.

The buckets run on the messages' receive time, not the wall clock, so a replay of a recording makes
exactly the letters the live bridge made.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gridwatch.pipeline.schemas.codec import dumps
from gridwatch.pipeline.schemas.deadletter import DeadLetter

AMPLIFICATION = 1.2  # a letter's bytes / its message's bytes, at most (above MIN_LETTER_BYTES)
MIN_LETTER_BYTES = 2048  # the budget of a letter for a message smaller than this / AMPLIFICATION
MAX_LISTED = 20  # entries whose reason and detail are listed; the rest are only counted
MAX_DETAIL = 300
SUMMARY_INTERVAL_MS = 10_000  # a sender's suppressed messages are summarised at most this often
MAX_SENDERS = 10_000  # buckets kept (least recently used go; the all-senders bucket still bounds them)


def letter_budget(payload_bytes: int) -> int:
    return max(MIN_LETTER_BYTES, int(payload_bytes * AMPLIFICATION))


def message_letter(stage: str, source: str, payload: bytes, received_ms: int, rejections: Sequence[Any], *,
                   keep_payload_bytes: int = 65536, budget: int | None = None) -> DeadLetter:
    """One letter for a whole message, within ``budget`` bytes (default: :func:`letter_budget`)."""
    budget = budget or letter_budget(len(payload))
    counts = Counter(r.reason for r in rejections)
    listed = [{"reason": r.reason, "detail": r.detail[:MAX_DETAIL], "device_id": r.device_id}
              for r in rejections[:MAX_LISTED]]
    first = rejections[0]
    devices = {r.device_id for r in rejections}
    keep = min(len(payload), keep_payload_bytes)
    letter = DeadLetter(stage, first.reason, first.detail[:MAX_DETAIL * 2], source,
                        DeadLetter.payload_text(payload, keep), received_ms,
                        first.device_id if len(devices) == 1 else None,
                        reasons=listed, counts=dict(counts), payload_bytes=len(payload),
                        payload_sha256=hashlib.sha256(payload).hexdigest())
    return fit(letter, payload, keep, budget, len(rejections))


def fit(letter: DeadLetter, payload: bytes, keep: int, budget: int, entries: int) -> DeadLetter:
    """Shrink ``letter`` into ``budget`` bytes: fewer listed reasons first, then a shorter payload head."""
    size = len(letter.encode())
    while size > budget and len(letter.reasons) > 1:
        letter.reasons = letter.reasons[: len(letter.reasons) // 2]
        size = len(letter.encode())
    for _ in range(6):  # escaping makes the payload's encoded size differ from its raw size: converge
        if size <= budget or keep == 0:
            break
        encoded = len(dumps(letter.payload)) or 1
        room = budget - (size - encoded)
        keep = max(0, min(keep - 1, int(keep * room / encoded) - 16))
        letter.payload = DeadLetter.payload_text(payload, keep) if keep else ""
        size = len(letter.encode())
    letter.entries_omitted = entries - len(letter.reasons)
    letter.payload_truncated = len(payload) > keep or (keep > 0 and not letter.payload)
    return letter


@dataclass
class _Bucket:
    tokens: float
    at_ms: int

    def take(self, now_ms: int, rate: float, burst: float) -> bool:
        if now_ms > self.at_ms:
            self.tokens = min(burst, self.tokens + (now_ms - self.at_ms) / 1000 * rate)
            self.at_ms = now_ms
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Suppressed:
    source: str
    first_ms: int
    last_ms: int = 0
    messages: int = 0
    bytes: int = 0
    counts: Counter = field(default_factory=Counter)


class LetterGate:
    """Decides which bad messages are copied to the dead-letter topic and summarises the rest."""

    def __init__(self, rate_per_s: float, burst: int, total_rate_per_s: float, total_burst: int, *,
                 keep_payload_bytes: int = 65536, stage: str = "bridge") -> None:
        self.rate, self.burst = rate_per_s, float(burst)
        self.total_rate, self.total_burst = total_rate_per_s, float(total_burst)
        self.keep_payload_bytes = keep_payload_bytes
        self.stage = stage
        self._senders: OrderedDict[str, _Bucket] = OrderedDict()
        self._total: _Bucket | None = None
        self._suppressed: dict[str, _Suppressed] = {}
        self._next_due_ms = 0  # no summary is due before this receive time
        self.suppressed_messages = 0

    def letters(self, sender: str, source: str, payload: bytes, received_ms: int,
                rejections: Sequence[Any]) -> list[DeadLetter]:
        """The letters for one bad message: its own (unless over quota) and a summary of its sender."""
        bucket = self._senders.pop(sender, None) or _Bucket(self.burst, received_ms)
        self._senders[sender] = bucket
        if len(self._senders) > MAX_SENDERS:
            self._senders.popitem(last=False)
        if self._total is None:
            self._total = _Bucket(self.total_burst, received_ms)
        out: list[DeadLetter] = []
        own = bucket.take(received_ms, self.rate, self.burst)
        if own and self._total.take(received_ms, self.total_rate, self.total_burst):
            if sender in self._suppressed:
                out.append(self._summary(self._suppressed.pop(sender)))
            out.append(message_letter(self.stage, source, payload, received_ms, rejections,
                                      keep_payload_bytes=self.keep_payload_bytes))
            return out
        key = sender if not own else "*"  # over the all-senders quota: one summary for all of them
        s = self._suppressed.get(key)
        if s is None:
            s = self._suppressed[key] = _Suppressed(source if key != "*" else "*", received_ms)
            if len(self._suppressed) == 1:
                self._next_due_ms = received_ms + SUMMARY_INTERVAL_MS
        s.last_ms = received_ms
        s.messages += 1
        s.bytes += len(payload)
        s.counts.update(r.reason for r in rejections)
        self.suppressed_messages += 1
        return out

    def due(self, now_ms: int, force: bool = False) -> list[DeadLetter]:
        """Summaries of senders whose suppressed messages waited ``SUMMARY_INTERVAL_MS`` (all: ``force``)."""
        if not self._suppressed or (not force and now_ms < self._next_due_ms):
            return []
        ready = [k for k, s in self._suppressed.items() if force or now_ms - s.first_ms >= SUMMARY_INTERVAL_MS]
        out = [self._summary(self._suppressed.pop(k)) for k in ready]
        self._next_due_ms = min((s.first_ms for s in self._suppressed.values()), default=0) + SUMMARY_INTERVAL_MS
        return out

    def _summary(self, s: _Suppressed) -> DeadLetter:
        who = "all senders together" if s.source == "*" else s.source
        detail = (f"{s.messages} bad messages ({s.bytes} bytes) from {who} were counted, not copied: over the "
                  f"dead-letter quota (bridge.deadletter_rate_per_s / deadletter_total_rate_per_s). "
                  f"Reasons: {dict(s.counts.most_common(10))}")
        return DeadLetter(self.stage, "quota_exceeded", detail, s.source, "", s.last_ms, None,
                          counts=dict(s.counts), payload_bytes=s.bytes,
                          reasons=[{"reason": "quota_exceeded", "detail": f"first at {s.first_ms}, last at {s.last_ms}",
                                    "device_id": None}],
                          entries_omitted=s.messages)


def sender_of(topic: str) -> str:
    """The device or gateway id of a telemetry topic (the whole topic when it has another shape)."""
    parts = topic.split("/")
    return parts[2] if len(parts) == 4 and parts[0] == "v1" else topic
