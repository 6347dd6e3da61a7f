"""The publish ledger on a real Mosquitto: a worker that published alerts and died before its Kafka
changelog had the markers leaves, in the broker, what its successor needs to not publish them again.

The full pipeline's version of this fault (a worker frozen or killed mid-batch on the three-broker
cluster) is in tests/cluster; here the ledger's own contract, against the broker that keeps it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gridwatch.core.settings import load_settings
from gridwatch.pipeline.outputs.mqtt_ledger import PublishLedger
from gridwatch.pipeline.outputs.mqtt_publisher import AsyncMqttPublisher
from tests.harness import MqttWatcher, wait_for


@pytest.fixture
def settings(stack):
    return load_settings(overrides={"mqtt.url": stack.mqtt_url})


def run(coro):
    return asyncio.run(coro)


async def started(settings, prefix: str, app_id: str, ttl_s: float = 300.0) -> PublishLedger:
    publisher = AsyncMqttPublisher(settings)
    await publisher.start()
    ledger = PublishLedger(publisher, prefix, app_id, ttl_s=ttl_s)
    await ledger.start()
    return ledger


def test_a_successor_sees_what_a_dead_worker_got_to_the_broker(settings, stack):
    prefix, app = f"test/alerts-{uuid.uuid4().hex[:8]}", "gw-ledger"
    watcher = MqttWatcher(stack.mqtt_url, [f"{prefix}/#"])

    async def first_owner() -> None:
        ledger = await started(settings, prefix, app)
        pubs = []
        for offset in (7, 8):
            ledger.record(3, offset, f"ev-{offset}:open:1000")
            pubs.append(ledger.publisher.queue(f"{prefix}/g1/lamp_out", b"alert %d" % offset))
        await asyncio.gather(*pubs, *ledger.write({3}))
        # dies here: no changelog, no clean disconnect
        ledger.publisher.client.loop_stop()
        ledger.publisher.client._sock_close()

    async def successor() -> tuple[bool, ...]:
        ledger = await started(settings, prefix, app)
        try:
            return (ledger.published(3, 7, "ev-7:open:1000"), ledger.published(3, 8, "ev-8:open:1000"),
                    ledger.published(3, 9, "ev-9:open:1000"),   # never published
                    ledger.published(3, 7, "ev-x:open:1000"),   # another event at that offset (a new topic)
                    ledger.published(2, 7, "ev-7:open:1000"))   # another partition
        finally:
            await ledger.publisher.stop()

    try:
        run(first_owner())
        # the premise: the alerts did reach subscribers before the owner died
        wait_for(lambda: len(watcher.messages) >= 2, 10, "the first owner's two alerts")
        assert run(successor()) == (True, True, False, False, False)
    finally:
        watcher.close()


def test_a_ledger_confirmed_in_the_changelog_or_past_its_ttl_is_not_honoured(settings):
    prefix, app = f"test/alerts-{uuid.uuid4().hex[:8]}", "gw-ledger"

    async def scenario() -> tuple[bool, bool, bool]:
        owner = await started(settings, prefix, app)
        owner.record(0, 1, "a:open:1")
        owner.record(1, 1, "b:open:1")
        await asyncio.gather(*owner.write({0, 1}))
        owner.confirmed({0})  # the changelog has partition 0's markers: its next ledger lists none
        await asyncio.gather(*owner.write({0}))
        await owner.publisher.stop()
        fresh = await started(settings, prefix, app)
        stale = await started(settings, prefix, app, ttl_s=0.0)
        try:
            return fresh.published(0, 1, "a:open:1"), fresh.published(1, 1, "b:open:1"), \
                stale.published(1, 1, "b:open:1")
        finally:
            await fresh.publisher.stop()
            await stale.publisher.stop()

    assert run(scenario()) == (False, True, False)
