"""A changelog partition Faust paused is paused in aiokafka too (not fetched), and resumed with Faust."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from gridwatch.compat import sync_changelog_pauses


def test_paused_changelogs_follow_faust_and_streams_are_left_alone() -> None:
    asyncio.run(check())


async def check() -> None:  # (aiokafka's pause makes a future of the running loop)
    readings, own, read = TopicPartition("x.readings", 0), TopicPartition("t-changelog", 0), TopicPartition("t-changelog", 1)
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")  # never started: its subscription state only
    consumer._subscription.assign_from_user({readings, own, read})
    faust = SimpleNamespace(_paused_partitions={TP("t-changelog", 0), TP("x.readings", 0)}, _gw_pauses=1,
                            app=SimpleNamespace(tables=SimpleNamespace(changelog_topics={"t-changelog"})))
    sync_changelog_pauses(faust, consumer)
    assert consumer.paused() == {own}  # the stream partition is Faust's own business (flow control)

    faust._paused_partitions = {TP("t-changelog", 1)}  # e.g. recovery reads partition 0 again
    faust._gw_pauses += 1
    sync_changelog_pauses(faust, consumer)
    assert consumer.paused() == {read}
    await consumer.stop()
