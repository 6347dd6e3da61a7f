"""The README's manual run: stack, worker, bridge, `gridwatch simulate --speed 60`, nothing dead-lettered.

On main the simulated clock was > 600 s ahead of the wall clock after ~10 s and the bridge dead-lettered
almost every reading as bad_ts, silently. This CI run is short (SIM_WALL_S of wall time); that the clock
stays behind now for a 5-minute run is proven by tests/devices/test_simulator_clock.py. The second test
asks for the future (--allow-future) and checks that the bridge then says so loudly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gridwatch.core.procs import Proc
from tests.harness import ARTIFACTS, MqttWatcher, Pipeline, read_topic, wait_for

SIM_WALL_S = 40


@pytest.fixture(scope="module")
def run(stack) -> Iterator[tuple[Pipeline, MqttWatcher]]:
    pipe = Pipeline(stack.kafka_url, stack.mqtt_url).start()
    stats = MqttWatcher(stack.mqtt_url, [f"gridwatch/stats/bridge/br-{pipe.prefix}"])
    try:
        yield pipe, stats
    finally:
        stats.close()
        pipe.stop()


def simulate(pipe: Pipeline, *extra: str) -> Proc:
    return Proc(f"{pipe.prefix}-simulate", ["simulate", "--mqtt", pipe.mqtt_url, "--speed", "60", *extra],
                ARTIFACTS, pipe.env).start()


def latest(stats: MqttWatcher) -> dict:
    got = stats.matching(lambda t, b: isinstance(b, dict))
    return got[-1][1] if got else {}


def test_readme_manual_run_dead_letters_nothing(run):
    pipe, stats = run
    sim = simulate(pipe)
    try:
        time.sleep(SIM_WALL_S)
        assert not sim.dead(), sim.log()[-2000:]
    finally:
        sim.stop()
    b = wait_for(lambda: (lambda s: s if s.get("readings", 0) > 0 and s.get("in_flight", 0) == 0 else None)(latest(stats)),
                 60, "the bridge's stats with every reading produced")
    dead = [d for d in read_topic(pipe.kafka_url, pipe.topic("deadletter"), timeout=3)]
    print(f"simulate --speed 60 for {SIM_WALL_S}s: {b['messages']} messages, {b['readings']} readings, "
          f"{b['dead_letters_total']} dead-lettered entries, {len(dead)} dead letters")
    assert b["readings"] > 1000 and b["dead_letters_total"] == 0 and dead == []
    assert "MOST INPUT IS DEAD-LETTERED" not in pipe.bridge.log()


def test_a_bridge_dead_lettering_most_of_its_input_says_so(run):
    pipe, stats = run
    sim = simulate(pipe, "--allow-future", "--start", str(time.time()))  # main's clock: ahead within seconds
    try:
        wait_for(lambda: "MOST INPUT IS DEAD-LETTERED" in pipe.bridge.log(), 90, "the bridge's alarm in its log")
        alarm = wait_for(lambda: latest(stats).get("alarm"), 30, "the alarm in the bridge's stats")
    finally:
        sim.stop()
    assert "bad_ts" in alarm and "clock" in alarm
    print(f"bridge alarm: {alarm}")
