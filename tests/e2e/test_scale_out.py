"""Two Faust workers share the partitions; when one dies the other takes its partitions over."""

from __future__ import annotations

import os
import time
from collections import Counter

from gridwatch.core.procs import Proc
from gridwatch.pipeline.kafka_io import partition_for
from tests.e2e.test_telemetry_e2e import NIGHT, REG, send
from tests.harness import ARTIFACTS, MqttPublisher, MqttWatcher, Pipeline, wait_for


def one_manhole_per_partition(skip: int) -> list:
    chosen: dict[int, object] = {}
    for d in [d for d in REG if d.kind == "manhole"][skip:]:
        chosen.setdefault(partition_for(d.shard_key, 8), d)
    return [chosen[p] for p in sorted(chosen)]


def test_two_workers_split_the_work_and_survive_one_dying(stack):
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url).start()
    second = Proc(f"{pipe.prefix}-worker2", ["worker", *pipe.common], ARTIFACTS, {**pipe.env, "GRIDWATCH_LIBRARY_LOG": os.environ.get("GW_DBG", "warning")}).start()
    watcher = MqttWatcher(stack.mqtt_url, ["gridwatch/alerts/#"])
    pub = MqttPublisher(stack.mqtt_url)
    try:
        # both workers end up with a share of the 8 readings partitions
        wait_for(lambda: "worker ready" in second.log() and pipe.worker.log().count("worker ready") >= 2, 90,
                 "a rebalance that gives both workers partitions")
        first_wave = one_manhole_per_partition(skip=200)
        for d in first_wave:
            send(pub, d, NIGHT, cover_open=True)

        def news(devs: list) -> Counter:
            ids = {d.id for d in devs}
            return Counter(m["subject"] for _, m in watcher.matching(
                lambda t, m: isinstance(m, dict) and m.get("subject") in ids and m.get("phase") == "new"))

        wait_for(lambda: len(news(first_wave)) == 8, 90, "an event from every partition")
        time.sleep(2.5)  # let the first worker commit (broker_commit_interval is 1 s)
        pipe.worker.kill()
        t0 = time.monotonic()
        second_wave = one_manhole_per_partition(skip=400)
        for d in second_wave:
            send(pub, d, NIGHT, cover_open=True)
        wait_for(lambda: len(news(second_wave)) == 8, 90, "the surviving worker to handle every partition")
        print(f"one of two workers killed: all partitions served again after {time.monotonic() - t0:.1f}s")
        time.sleep(2)
        assert set(news(first_wave).values()) == {1} and set(news(second_wave).values()) == {1}
    finally:
        watcher.close()
        pub.close()
        second.stop()
        pipe.stop()
