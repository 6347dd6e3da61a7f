"""The Kafka topic families, declared in one place. A topic's name is ``<kafka.topic_prefix>.<family>``
(``Settings.topic``); every family has ``kafka.partitions`` partitions.

| family       | key                 | records (module of this package)                | written by                    |
|--------------|---------------------|-------------------------------------------------|-------------------------------|
| `readings`   | device shard        | `readings.ReadingBatch`                         | bridge, replay                |
| `events`     | grid code           | `events.GridEvent`, `events.Watermarks`         | telemetry and vision agents   |
| `deadletter` | —                   | `deadletter.DeadLetter`                         | every stage, with the reason  |
| `reports`    | grid code           | `reports.ResidentReport`                        | Open311 API, chat import, 12345 hotline |
| `actions`    | grid code           | `incidents.OperatorAction`                      | operator console, residents (evaluate) |
| `incidents`  | grid code           | `incidents.IncidentChange`                      | incidents agent               |
| `frames`     | camera id           | `frames` (GWF1 frames, camera status)           | camera service, replay        |
"""

from __future__ import annotations

TOPICS = ("readings", "events", "deadletter", "reports", "actions", "incidents", "frames")
# Topic configs per family at creation (Apache Kafka; Tansu keeps everything in memory regardless).
# Kafka is the spine, not the archive: the database holds case files for months. Camera frames are bulky
# (~50 KB each) and only useful live: an hour. Readings: three days to replay or re-run rules on.
# Grid events, incidents, resident reports and operator actions are small and what a restarted or new
# consumer (sink, database filler, a replay comparison) must still find: 30 days. Dead letters: 14 days
# for an operator to inspect. segment.ms lets Kafka delete by age in steps smaller than the retention.
_HOUR_MS = 3600 * 1000
_DAY_MS = 24 * _HOUR_MS


def _retain(ms: int, **more: str) -> dict[str, str]:
    return {"retention.ms": str(ms), "segment.ms": str(min(ms // 6, _DAY_MS)), **more}


TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "frames": _retain(_HOUR_MS, **{"max.message.bytes": "4194304"}),
    "readings": _retain(3 * _DAY_MS),
    "deadletter": _retain(14 * _DAY_MS),
    "events": _retain(30 * _DAY_MS),
    "incidents": _retain(30 * _DAY_MS),
    "reports": _retain(30 * _DAY_MS),
    "actions": _retain(30 * _DAY_MS),
}
