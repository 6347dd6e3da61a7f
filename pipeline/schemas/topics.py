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
# Topic configs per family at creation. Camera frames are bulky (~50 KB each) and only useful live:
# keep an hour (real Kafka; the embedded Tansu broker keeps everything in memory regardless).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {"frames": {"retention.ms": "3600000", "segment.ms": "600000",
                                                       "max.message.bytes": "4194304"}}
