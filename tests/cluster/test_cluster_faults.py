"""Faults on a three-broker Apache Kafka cluster across network-namespace hosts (gridwatch.cluster).

Each test starts its own run (2 bridges on a shared MQTT subscription, 2 Faust workers, its own topic
prefix), publishes the same fixed script of readings (gridwatch.cluster_check.script), injects one fault
once 30% of it is out, and checks at the end: every reading Mosquitto acknowledged is in Kafka (a
duplicate is allowed: at-least-once, counted and printed), no grid event id+phase was published twice on
MQTT, and the incidents (id, version, status, level) equal those of the same script without a fault.
Recovery figures are printed and appended to test-artifacts/cluster-faults.jsonl.

"Delay + loss" here is not netem (this kernel has none): a tbf rate cap with a 200 ms queue on both
directions of the worker's link, plus 5% random drop both ways with iptables' statistic match.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from gridwatch.cluster import Run
from gridwatch.cluster_check import Feeder
from gridwatch.core.procs import wait_for
from tests.cluster.conftest import assert_held, feed_and_check


def readies(run: Run, host: str) -> int:
    return run.procs[host].log().count("worker ready")


def test_no_fault_run_is_complete(baseline):
    assert baseline  # the fixture asserted it; this test makes its figures show up on their own line


@pytest.mark.timeout(480)
def test_partition_leader_killed_and_restarted(cluster, baseline):
    def fault(run: Run, feeder: Feeder) -> dict[str, float]:
        leader = cluster.leader_of(run.topic("readings"), 0)
        cluster.kill(leader)  # SIGKILL
        others = {1, 2, 3} - {leader}
        failover = cluster.wait_ready(60, others)  # fenced, its partitions led by the others
        time.sleep(3)
        cluster.restart(leader)
        rejoin = cluster.wait_ready(90)
        return {"node": leader, "failover_s": round(failover, 1), "rejoin_s": round(rejoin, 1)}

    assert_held(feed_and_check(cluster, "leader-kill", baseline, fault))


@pytest.mark.timeout(480)  # the check waits up to 180 s for a group that is still rejoining
def test_broker_link_cut_and_healed(cluster, baseline):
    def fault(run: Run, feeder: Feeder) -> dict[str, float]:
        victim = cluster.leader_of(run.topic("readings"), 0)
        cluster.net.cut(f"k{victim}")
        try:
            failover = cluster.wait_ready(60, {1, 2, 3} - {victim})
            time.sleep(max(0.0, 10 - failover))
        finally:
            cluster.net.heal(f"k{victim}")
        rejoin = cluster.wait_ready(90)
        return {"node": victim, "failover_s": round(failover, 1), "rejoin_s": round(rejoin, 1)}

    assert_held(feed_and_check(cluster, "broker-link-cut", baseline, fault))


@pytest.mark.timeout(480)
def test_worker_frozen_past_its_session_timeout_then_woken(cluster, baseline):
    def fault(run: Run, feeder: Feeder) -> dict[str, float]:
        w1, before2, before1 = run.procs["w1"], readies(run, "w2"), readies(run, "w1")
        os.killpg(w1.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            wait_for(lambda: readies(run, "w2") > before2, 60, "w2 to take the frozen worker's partitions")
            takeover = time.monotonic() - t0
            time.sleep(max(0.0, 15 - takeover))  # session timeout 10 s: well past it
        finally:
            os.killpg(w1.pid, signal.SIGCONT)  # the zombie wakes up with its old assignment
        t1 = time.monotonic()
        # Within the group's rebalance timeout (60 s on Kafka): a survivor that waited on records its
        # cleared buffers had dropped stalled the rejoin until that timeout expelled it (67 s to minutes,
        # before gridwatch.compat.install_faust_rebalance_wait_fix)
        wait_for(lambda: readies(run, "w1") > before1, 55, "the woken worker to rejoin the group")
        return {"takeover_s": round(takeover, 1), "rejoin_s": round(time.monotonic() - t1, 1)}

    # frozen between the broker's PUBACK and the changelog's ack: the publish ledger tells the successor
    assert_held(feed_and_check(cluster, "worker-sigstop", baseline, fault))


def test_worker_killed(cluster, baseline):
    def fault(run: Run, feeder: Feeder) -> dict[str, float]:
        before = readies(run, "w2")
        t0 = time.monotonic()
        run.procs["w1"].kill()
        wait_for(lambda: readies(run, "w2") > before, 60, "w2 to take the killed worker's partitions")
        return {"takeover_s": round(time.monotonic() - t0, 1)}

    # killed between the broker's PUBACK and the changelog's ack: the publish ledger tells the successor
    assert_held(feed_and_check(cluster, "worker-sigkill", baseline, fault))


def test_worker_link_with_delay_and_loss(cluster, baseline):
    def fault(run: Run, feeder: Feeder) -> dict[str, float]:
        cluster.net.impair("w1", loss=0.05)
        try:
            time.sleep(15)
        finally:
            cluster.net.unimpair("w1")
        return {"impaired_s": 15}

    assert_held(feed_and_check(cluster, "worker-delay-loss", baseline, fault))


def test_bridge_killed_mid_batch(cluster, baseline):
    def fault(run: Run, feeder: Feeder) -> dict[str, float]:
        b1 = run.procs["b1"]
        b1.kill()  # SIGKILL while readings stream in: whatever it took and did not acknowledge comes back
        time.sleep(1)
        t0 = time.monotonic()
        b1.start()
        b1.wait_log("session present: True", 60)
        return {"reconnect_s": round(time.monotonic() - t0, 1)}

    assert_held(feed_and_check(cluster, "bridge-sigkill", baseline, fault))
