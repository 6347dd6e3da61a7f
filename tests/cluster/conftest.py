"""One three-broker cluster (gridwatch.cluster) for every cluster test, and the no-fault run they compare with.

Needs root (network namespaces), iproute2, iptables and the Kafka jars: `./run setup` provides them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gridwatch.cluster import Cluster, Run
from gridwatch.cluster_check import Feeder, Verdict, Watcher, check, script
from tests.harness import ARTIFACTS

RESULTS = ARTIFACTS / "cluster-faults.jsonl"  # one line per fault run: the figures of RELIABILITY.md


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster tests make network namespaces: run them as root (CI and ./run test do)")
    workdir = ARTIFACTS / f"cluster-{int(time.time())}"
    with Cluster(workdir) as c:
        yield c
    for i in (1, 2, 3):  # logs stay for a failed run's post-mortem; the partitions do not
        shutil.rmtree(workdir / f"k{i}" / "data", ignore_errors=True)


def feed_and_check(cluster: Cluster, name: str, baseline: set | None,
                   fault: Callable[[Run, Feeder], dict[str, float]] | None = None, workers: int = 2,
                   env: dict[str, str] | None = None) -> Verdict:
    """Start a run (2 bridges, ``workers`` workers), publish the script, inject ``fault`` once 30% of it is
    out, then check. ``fault`` returns its recovery figures (seconds), printed and kept in RESULTS."""
    run = Run(cluster, f"{name}-{uuid.uuid4().hex[:4]}", workers=workers, env=env or {}).start()
    alerts = Watcher(cluster.mqtt_url, [f"{run.alert_prefix}/#"])
    feeder = Feeder(cluster.mqtt_url, script()).start()
    figures: dict[str, Any] = {}
    try:
        if fault is not None:
            feeder.wait_progress(0.3)
            at = feeder.sent
            t0 = time.monotonic()
            figures = fault(run, feeder)
            figures["fault_s"] = round(time.monotonic() - t0, 1)
            # the fault landed while readings were flowing, not before the first or after the last
            assert 0 < at < len(feeder.messages), at
            figures["fault_at_message"] = at
        acked = feeder.finish()
        t1 = time.monotonic()
        verdict = check(cluster.bootstrap, run.prefix, acked, alerts, baseline)
        figures["settle_s"] = round(time.monotonic() - t1, 1)
    finally:
        alerts.close()
        run.stop()
    print(f"\n[{name}] {verdict.line()}; figures (s): {figures}")
    with open(RESULTS, "a") as f:
        f.write(json.dumps({"fault": name, "time": time.time(), "lost": verdict.lost,
                            "duplicated": verdict.duplicated, "events_twice": len(verdict.events_twice),
                            "incidents_equal": verdict.incidents_equal, **figures}) + "\n")
    return verdict


@pytest.fixture(scope="session")
def baseline(cluster: Cluster) -> set:
    """The incidents of the script with no fault (the same cluster, 2 bridges, 2 workers)."""
    v = feed_and_check(cluster, "no-fault", None)
    assert v.lost == 0 and not v.events_twice and v.incidents, v.line()
    return v.incidents


def assert_held(v: Verdict) -> None:
    """Nothing acknowledged lost, no alert (event id+phase) twice on MQTT, the incidents exact."""
    assert v.lost == 0, v.line()
    assert not v.events_twice, f"{v.line()}: {v.events_twice[:5]}"
    assert v.incidents_equal, v.line()
