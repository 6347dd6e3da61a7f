"""`gridwatch tail`: print a topic's records as JSON lines (operators, debugging, tests)."""

from __future__ import annotations

import asyncio
import json
import sys

from aiokafka import AIOKafkaConsumer

from gridwatch.core.settings import Settings
from gridwatch.pipeline.schemas.events import is_control


async def tail(settings: Settings, family: str, stop: asyncio.Event, *, from_beginning: bool = False,
               limit: int = 0) -> None:
    consumer = AIOKafkaConsumer(settings.topic(family), bootstrap_servers=settings.kafka_bootstrap(),
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                enable_auto_commit=False)
    await consumer.start()
    n = 0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for rec in records:
                    if is_control(rec.value):
                        continue  # watermarks of the incident agent's event-time merge (events topic)
                    try:
                        value = json.loads(rec.value)
                    except ValueError:
                        value = rec.value.decode("utf-8", "replace")
                    sys.stdout.write(json.dumps({"partition": rec.partition, "offset": rec.offset,
                                                 "value": value}, ensure_ascii=False) + "\n")
                    n += 1
                    if limit and n >= limit:
                        return
            sys.stdout.flush()
    finally:
        await consumer.stop()
