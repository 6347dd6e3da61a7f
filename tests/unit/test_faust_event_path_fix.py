"""Faust's livelock check skips a partition that has no position yet instead of crashing the worker."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from gridwatch.compat import install_faust_event_path_fix


def test_partition_without_position_is_skipped_not_an_assertion() -> None:
    asyncio.run(check())


async def check() -> None:  # (aiokafka's subscription state wants a running loop)
    tp = TopicPartition("x.readings", 3)
    subs = SubscriptionState()
    subs.assign_from_user({tp})
    state = subs.subscription.assignment.state_value(tp)
    with pytest.raises(AssertionError):
        _ = state.position  # the premise: what faust 0.15.3 reads, on aiokafka 0.14
    install_faust_event_path_fix()
    thread = SimpleNamespace(_ensure_consumer=lambda: SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subs)))
    assert driver.AIOKafkaConsumerThread.verify_event_path(thread, time.monotonic(), TP("x.readings", 3)) is None
