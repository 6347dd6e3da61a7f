"""`gridwatch stack --engine kafka` is durable: a stopped and restarted stack still has its grid events and
incidents, and a worker started against it afterwards recovers its tables from the changelogs on disk.

Runs the real command (its own state folder), a real bridge and Faust worker, real Mosquitto.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gridwatch.core.procs import Proc
from gridwatch.kafka_server import stored_cluster_id
from gridwatch.pipeline.schemas.incidents import OperatorAction
from tests.conftest import engines
from tests.e2e.test_incidents_e2e import produce, snapshots
from tests.e2e.test_telemetry_e2e import NIGHT, REG, send
from tests.harness import ARTIFACTS, MqttPublisher, MqttWatcher, Pipeline, read_topic, wait_for

ALERTS = "gridwatch/alerts/#"
INCIDENTS = "gridwatch/incidents/#"


def start_stack(state: Path, n: int) -> tuple[Proc, dict[str, Any]]:
    proc = Proc(f"stack-kafka-{uuid.uuid4().hex[:8]}-{n}", ["stack", "--engine", "kafka"], ARTIFACTS,
                {"GRIDWATCH_STATE_DIR": str(state)}).start()
    proc.wait_log("embedded stack running", 240)
    return proc, json.loads((state / "stack.json").read_text())


def recovered_incidents(log: str) -> int:
    """Incidents the worker says it recovered from the changelog, summed over its partitions."""
    return sum(int(n) for n in re.findall(r"partition \d+: recovered (\d+) incidents", log))


def new_events(watcher: MqttWatcher, subject: str) -> list[dict]:
    return [m for _, m in watcher.matching(lambda t, m: isinstance(m, dict) and m.get("subject") == subject
                                           and m.get("phase") == "new")]


@pytest.mark.timeout(1200)  # two Kafka starts and two pipeline starts: minutes on a loaded 2-core machine
def test_restarted_kafka_stack_keeps_events_and_incidents_and_a_worker_recovers_its_tables(request, tmp_path):
    if "kafka" not in engines(request.config):
        pytest.skip("needs --kafka-engine kafka or both")
    stack, state = start_stack(tmp_path, 1)
    pipe = watcher = pub = None
    try:
        assert state["engine"] == "kafka"
        cluster = stored_cluster_id(tmp_path / "stack" / "kafka" / "data")
        assert cluster
        pipe = Pipeline(state["kafka"], state["mqtt"]).start()
        watcher = MqttWatcher(state["mqtt"], [ALERTS, INCIDENTS])
        pub = MqttPublisher(state["mqtt"])
        dev = next(d for d in REG if d.kind == "manhole" and not d.gateway)
        send(pub, dev, NIGHT, cover_open=True)
        incident = wait_for(lambda: snapshots(watcher, lambda i: i["sources"][0]["subject"] == dev.id), 240,
                            "an incident from the open cover")
        [(iid, before)] = incident.items()
        assert len(new_events(watcher, dev.id)) == 1
        time.sleep(2)  # let the worker commit its offsets and changelog writes
        events = read_topic(state["kafka"], pipe.topic("events"))
        incidents = read_topic(state["kafka"], pipe.topic("incidents"))
        assert [e["subject"] for e in events if e.get("phase") == "new"] == [dev.id]
        assert any(c["incident"]["id"] == iid for c in incidents)
        pipe.stop()
        watcher.close()
        pub.close()
        watcher = pub = None
        assert stack.stop(timeout=60) == 0

        stack, again = start_stack(tmp_path, 2)
        # the same broker came back: same cluster (not reformatted), same address for the clients
        assert stored_cluster_id(tmp_path / "stack" / "kafka" / "data") == cluster
        assert (again["kafka"], again["mqtt"], again["engine"]) == (state["kafka"], state["mqtt"], "kafka")
        assert read_topic(state["kafka"], pipe.topic("events")) == events
        assert read_topic(state["kafka"], pipe.topic("incidents")) == incidents

        # a worker started against the restarted broker recovers its tables from the changelogs
        watcher = MqttWatcher(state["mqtt"], [ALERTS, INCIDENTS])
        pub = MqttPublisher(state["mqtt"])
        pipe.start()
        # incidents table: an operator's comment continues the recovered incident's history
        act = OperatorAction(iid, before["grid_code"], "comment", "op-city", NIGHT + 60_000, note="after the restart")
        produce(state["kafka"], pipe.topic("actions"), [(act.grid_code, act.encode())])
        after = wait_for(lambda: (s := snapshots(watcher, lambda i: i["id"] == iid)) and
                         any(h.get("note") == "after the restart" for h in s[iid]["history"]) and s, 240,
                         "the comment applied to the recovered incident")[iid]
        assert after["history"][:len(before["history"])] == before["history"]
        assert after["version"] > before["version"]
        # (the incident agent loads a partition's incidents from its table when first touched, and says so)
        assert recovered_incidents(pipe.worker.log().split("==== start")[-1]) >= 1
        # telemetry and alert tables: the cover still open is no new event; closing it ends the old one
        send(pub, dev, NIGHT + 120_000, cover_open=True)
        for k in (3, 4):
            send(pub, dev, NIGHT + k * 60_000, cover_open=False)
        wait_for(lambda: watcher.matching(lambda t, m: isinstance(m, dict) and m.get("subject") == dev.id
                                          and m.get("phase") == "end"), 240, "the cover's event to end")
        time.sleep(2)
        assert new_events(watcher, dev.id) == []  # (this watcher joined after the first "new")
        ends = [e for e in read_topic(state["kafka"], pipe.topic("events")) if e.get("phase") == "end"]
        assert [e["id"] for e in ends] == [e["id"] for e in events if e.get("phase") == "new"]
    finally:
        for c in (watcher, pub):
            if c is not None:
                c.close()
        if pipe is not None:
            pipe.stop()
        stack.stop(timeout=60)
