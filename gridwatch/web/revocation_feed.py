"""Logouts made on any api instance, applied on this one: the ``logout`` entries of ``<prefix>.audit``.

Why through the audit topic: the console may run as several api processes behind one load balancer
(same ``web.session_secret``), so a token revoked on one must be refused by all. Every logout is in
the audit topic already; each api reads it from the beginning (no consumer group, like the incident
view) and keeps the entries whose token has not expired yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from .revocations import Revocations

log = logging.getLogger("gridwatch.web.revocations")


def apply_entry(revoked: Revocations, raw: bytes | None, now: float | None = None) -> bool:
    """Revoke the token of a ``logout`` entry; False for anything else (or junk)."""
    try:
        entry = json.loads(raw or b"")
    except ValueError:
        return False
    if not isinstance(entry, dict) or entry.get("event") != "logout":
        return False
    tid, exp = entry.get("token_id"), entry.get("expires")
    if not isinstance(tid, str) or not isinstance(exp, int | float) or exp < (now or time.time()):
        return False
    revoked.revoke(tid, float(exp))
    return True


async def follow(revoked: Revocations, bootstrap: str, topic: str, stop: asyncio.Event) -> None:
    """Apply every logout on ``topic`` until ``stop``; broker trouble is logged and retried."""
    while not stop.is_set():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=200)
        try:
            await consumer.start()
            parts = None
            while not parts:  # the topic appears with the first audit entry of any instance: wait for it
                if stop.is_set():
                    return
                await consumer.topics()
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=300, max_records=1000)).values():
                    for r in records:
                        apply_entry(revoked, r.value)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("following logouts on %s failed (%s); retrying", topic, e)
            await asyncio.sleep(2)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
